"""Status callbacks: parsing every documented shape, the aiohttp handler, routing, CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from vobiz_async.callbacks import (
    StreamCallbackEvent,
    StreamStatusCallback,
    callback_handler,
    parse_callback,
)
from vobiz_async.events import StatusCallbackReceived
from vobiz_async.server import StreamSession, serve
from vobiz_async.signatures import sign_headers
from vobiz_async.testing import FakeVobiz

TOKEN = "cb-token"
FIELDS = {
    "From": "919800000001",
    "To": "918000000002",
    "CallUUID": "cc17957f-b076-4ba8-a49d-31f632801096",
    "Event": "StartStream",
    "StreamID": "4f23e5e8-6fdb-45ad-bfaf-b694111cf476",
    "ServiceURL": "wss://agent.example.net/media",
    "ParentAuthID": "MA_AB12CD34",
    "status_callback_url": "https://agent.example.net/vobiz/stream-status",
    "status_callback_method": "POST",
    "Timestamp": "2026-05-04 15:32:11",
    "Error": "",
    "X-VH-session": "abc",
    "Surprise": "kept",
}


def test_parse_the_spec_example_and_keep_everything() -> None:
    """Every documented field is typed; X-VH- headers and unknown fields are kept."""
    cb = parse_callback(FIELDS)
    assert cb.event is StreamCallbackEvent.START_STREAM
    assert (cb.call_uuid, cb.stream_id, cb.parent_auth_id) == (
        FIELDS["CallUUID"],
        FIELDS["StreamID"],
        "MA_AB12CD34",
    )
    assert cb.timestamp is not None and cb.timestamp.hour == 15 and cb.error is None
    assert cb.service_url == FIELDS["ServiceURL"] and cb.extra_headers == {"session": "abc"}
    assert cb.fields["Surprise"] == "kept" and cb.from_number == "919800000001"
    assert cb["CallUUID"] == FIELDS["CallUUID"] and cb.get("Nope") is None


@pytest.mark.parametrize(
    ("event", "extra"),
    [
        ("PlayedStream", {"Name": "turn-3"}),
        ("ClearedAudio", {}),
        ("DegradedStream", {"Error": "connection degraded"}),
        ("DroppedStream", {"Error": "connection disconnected with the remote service"}),
        ("StopStream", {}),
        ("MediaError", {}),
    ],
)
def test_every_documented_event_parses(event: str, extra: dict[str, str]) -> None:
    """Known events become enum members, unknown ones stay strings; extras are read."""
    cb = parse_callback({**FIELDS, "Event": event, **extra})
    assert str(cb.event) == event
    assert isinstance(cb.event, StreamCallbackEvent) == (event != "MediaError")
    assert cb.name == extra.get("Name") and cb.error == (extra.get("Error") or None)


class App:
    """A real aiohttp app on loopback with the callback route."""

    def __init__(self, **kwargs: object) -> None:
        self.received: list[StreamStatusCallback] = []
        self.kwargs = kwargs
        self.url = ""

    async def on_event(self, cb: StreamStatusCallback) -> None:
        self.received.append(cb)

    async def __aenter__(self) -> App:
        app = web.Application()
        app.router.add_route(
            "*",
            "/vobiz/status",
            callback_handler(self.on_event, auth_token=TOKEN, **self.kwargs),  # type: ignore[arg-type]
        )
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/vobiz/status"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: str | bytes, headers: dict[str, str]
) -> int:
    headers = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status


async def test_handler_verifies_answers_and_dedupes(http: aiohttp.ClientSession) -> None:
    """A signed callback is taken once; Vobiz's retry of it is answered 200 and dropped."""
    async with App(mode="require") as app:
        body = urlencode(FIELDS)
        assert await post(http, app.url, body, sign_headers(app.url, TOKEN, "1" * 20)) == 200
        assert await post(http, app.url, body, sign_headers(app.url, TOKEN, "2" * 20)) == 200
        async with http.get(
            app.url, params=FIELDS, headers=sign_headers(app.url, TOKEN, "3" * 20)
        ) as r:
            assert r.status == 200
        await asyncio.sleep(0.05)
    assert len(app.received) == 1 and app.received[0].stream_id == FIELDS["StreamID"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, urlencode(FIELDS), 401),
        ("wrong-token", urlencode(FIELDS), 403),
        ("replay", urlencode(FIELDS), 403),
        ("ok", "%%%not=form&&=", 400),
        ("ok", b"\xff\xfe\x00garbage", 400),
        ("ok", "a=" + "x" * 70_000, 413),
        ("ok", urlencode({"CallUUID": "x"}), 400),
    ],
)
async def test_hostile_callbacks_get_a_clear_4xx_and_touch_nothing(
    http: aiohttp.ClientSession, headers: object, body: str | bytes, status: int
) -> None:
    """Wrong or missing signatures, replays, garbage and oversize bodies are refused."""
    async with App(mode="require") as app:
        if headers == "wrong-token":
            hdrs = sign_headers(app.url, "not-the-token", "5" * 20)
        elif headers in ("ok", "replay"):
            hdrs = sign_headers(app.url, TOKEN, "6" * 20)
            if headers == "replay":
                other = urlencode({**FIELDS, "Event": "StopStream"})
                assert await post(http, app.url, other, hdrs) == 200
        else:
            hdrs = {}
        assert await post(http, app.url, body, hdrs) == status
        await asyncio.sleep(0.05)
    assert [str(cb.event) for cb in app.received] == (["StopStream"] if headers == "replay" else [])


async def test_callbacks_route_to_the_media_session() -> None:
    """In one process, a DroppedStream for a stream is visible on its (closed) session."""
    sessions: list[StreamSession] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)  # returning at once drops the stream from our side

    async with FakeVobiz(callback_retry_delay=0.01) as fake, serve(agent, "127.0.0.1", 0) as server:
        app = web.Application()
        handler = callback_handler(auth_token=fake.auth_token, mode="require", server=server)
        app.router.add_route("*", "/status", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        call = fake.call(seconds=3)
        async with fake.client() as client:
            await client.streams.start(
                call.call_uuid, server.url, status_callback_url=f"http://127.0.0.1:{port}/status"
            )
        await call.wait_done()
        for _ in range(100):
            if len(sessions[0].status_callbacks) >= 2:
                break
            await asyncio.sleep(0.02)
        await runner.cleanup()
    [session] = sessions
    events = {str(cb.event) for cb in session.status_callbacks}
    assert events == {"StartStream", "DroppedStream"}
    queued = [e async for e in session]
    assert {e.event for e in queued if isinstance(e, StatusCallbackReceived)} == events


async def test_cli_callbacks_serve_prints_json_lines() -> None:
    """`vobiz-async callbacks serve` prints each verified callback as one JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "callbacks",
        "serve",
        "--port",
        "0",
        "--auth-token",
        TOKEN,
        "--path",
        "/status",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            banner = (await proc.stderr.readline()).decode()
            url = banner.split()[2]
            async with aiohttp.ClientSession() as http:
                assert (
                    await post(http, url, urlencode(FIELDS), sign_headers(url, TOKEN, "7" * 20))
                    == 200
                )
                assert await post(http, url, urlencode(FIELDS), {}) == 401
            line = json.loads(await proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    assert line["event"] == "StartStream" and line["stream_id"] == FIELDS["StreamID"]
    assert proc.returncode == 0
