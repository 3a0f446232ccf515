"""Status callbacks: parsing every documented shape, the aiohttp handler, routing, CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from vobiz_async.callbacks import (
    CallbackLimits,
    StreamCallbackEvent,
    StreamStatusCallback,
    callback_handler,
    parse_callback,
)
from vobiz_async.server import StreamSession, serve
from vobiz_async.signatures import compute_signature, sign_headers
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
        self.handler = callback_handler(self.on_event, auth_token=TOKEN, **self.kwargs)  # type: ignore[arg-type]
        self.handler.add_to(app, "/vobiz/status")
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
    """A signed callback is taken once; a retry with the same nonce is answered 200 and dropped."""
    async with App(mode="require") as app:
        body = urlencode(FIELDS)
        signed = sign_headers(app.url, TOKEN, "1" * 20)
        assert await post(http, app.url, body, signed) == 200
        assert await post(http, app.url, body, signed) == 200
        async with http.get(
            app.url, params=FIELDS, headers=sign_headers(app.url, TOKEN, "3" * 20)
        ) as r:
            assert r.status == 200
        await asyncio.sleep(0.05)
        stats = app.handler.stats
    assert len(app.received) == 2 and app.received[0].stream_id == FIELDS["StreamID"]
    assert (stats.delivered, stats.duplicates, stats.received) == (2, 1, 3)


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
    # The handler returned and the stream closed: the session was released, so nothing
    # is queued for a reader that is gone (only status_callbacks, bounded, remain).
    assert session.released and [e async for e in session] == []


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


# --------------------------------------------------------------- issue 11, findings 6-9
def cleared(n: int, stream_id: str = FIELDS["StreamID"]) -> str:
    """A ClearedAudio callback body; ``n`` only varies the From number."""
    return urlencode({**FIELDS, "Event": "ClearedAudio", "StreamID": stream_id, "From": str(n)})


async def test_a_token_means_signatures_are_required(http: aiohttp.ClientSession) -> None:
    """With an auth token and no mode, an unsigned forged callback is 401 and reaches nobody."""
    async with App() as app:
        assert app.handler.mode == "require"
        assert await post(http, app.url, urlencode(FIELDS), {}) == 401
        await asyncio.sleep(0.05)
        assert app.handler.stats.refused_signature == 1
    assert app.received == []
    assert callback_handler(print).mode == "off"


async def test_a_flood_of_forged_callbacks_is_counted_but_logged_once_per_interval(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """300 unsigned and 300 wrongly signed posts: all refused and counted, one log line
    per reason; after the interval the next line says how many were held back."""
    caplog.set_level(logging.WARNING, logger="vobiz_async.callbacks")
    bad = {"X-Vobiz-Signature-V3": "bm9wZQ==", "X-Vobiz-Signature-V3-Nonce": "1" * 20}
    async with App(limits=CallbackLimits(refusal_log_interval=3600)) as app:
        for _ in range(300):
            assert await post(http, app.url, urlencode(FIELDS), {}) == 401
            assert await post(http, app.url, urlencode(FIELDS), bad) == 403
        refused = app.handler.stats.refused_signature
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == 600 and app.received == []
    assert len(lines) == 2 and lines[0] == "refused a status callback: signature missing"
    caplog.clear()
    async with App(limits=CallbackLimits(refusal_log_interval=1.0)) as app:
        for _ in range(5):  # on loopback, well within the second
            assert await post(http, app.url, urlencode(FIELDS), {}) == 401
        await asyncio.sleep(1.1)
        assert await post(http, app.url, urlencode(FIELDS), {}) == 401
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) <= 3 and "more not logged" in lines[-1]


async def test_session_callback_history_is_bounded() -> None:
    """300 callbacks for one live stream leave at most history_per_session on the session."""
    sessions: list[StreamSession] = []
    release = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await release.wait()

    async with FakeVobiz() as fake, serve(agent, "127.0.0.1", 0) as server:
        call = fake.call(seconds=30)
        async with fake.client() as client:
            started = await client.streams.start(call.call_uuid, server.url)
        session = await server.wait_for_session(started.stream_id)
        async with App(server=server, limits=CallbackLimits(history_per_session=50)) as app:
            async with aiohttp.ClientSession() as http:
                for n in range(300):
                    nonce = f"{n:020d}"
                    body = cleared(n, session.stream_id)
                    assert (
                        await post(http, app.url, body, sign_headers(app.url, TOKEN, nonce)) == 200
                    )
            stats = app.handler.stats
        release.set()
        await fake.hangup(call.call_uuid)
    assert len(session.status_callbacks) == 50 and session.status_callbacks[-1]["From"] == "299"
    assert (stats.delivered, stats.history_trimmed) == (300, 250)


async def test_dispatch_is_bounded_503_and_cancelled_at_shutdown() -> None:
    """Over max_pending running on_event calls the answer is 503; shutdown leaves no task."""
    gate = asyncio.Event()
    started: list[str] = []
    cancelled: list[str] = []

    async def slow(cb: StreamStatusCallback) -> None:
        started.append(cb["From"])
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(cb["From"])
            raise

    limits = CallbackLimits(max_pending=8, shutdown_grace=0.0)
    handler = callback_handler(slow, auth_token=TOKEN, limits=limits)
    app = web.Application()
    handler.add_to(app, "/cb")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/cb"  # type: ignore[union-attr]
    codes: list[int] = []
    async with aiohttp.ClientSession() as http:
        for n in range(20):
            codes.append(await post(http, url, cleared(n), sign_headers(url, TOKEN, f"{n:020d}")))
    await asyncio.sleep(0.05)
    busy = handler.stats
    await runner.cleanup()
    after = handler.stats
    assert codes == [200] * 8 + [503] * 12
    assert (busy.pending, busy.refused_busy, len(started)) == (8, 12, 8)
    assert (after.pending, after.cancelled_at_close, sorted(cancelled)) == (0, 8, sorted(started))


async def test_replay_without_the_v3_headers_is_refused(http: aiohttp.ClientSession) -> None:
    """Nonces are keyed alone: a V2+V3 request replayed with V2 only, or V3's nonce alone, fails."""
    async with App() as app:
        signed = sign_headers(app.url, TOKEN, "4" * 20)
        v2_only = {k: v for k, v in signed.items() if "V3" not in k}
        assert await post(http, app.url, urlencode(FIELDS), signed) == 200
        forged = urlencode({**FIELDS, "Event": "StopStream"})
        assert await post(http, app.url, forged, v2_only) == 403
        assert await post(http, app.url, urlencode(FIELDS), v2_only) == 200  # a retry: dropped
        # Different nonces for V3 and V2 in one request: both are recorded.
        two = {
            "X-Vobiz-Signature-V3": compute_signature(app.url, "5" * 20, TOKEN, version=3),
            "X-Vobiz-Signature-V3-Nonce": "5" * 20,
            "X-Vobiz-Signature-V2": compute_signature(app.url, "6" * 20, TOKEN, version=2),
            "X-Vobiz-Signature-V2-Nonce": "6" * 20,
        }
        assert await post(http, app.url, cleared(1), two) == 200
        v2_of_two = {k: v for k, v in two.items() if "V3" not in k}
        assert await post(http, app.url, forged, v2_of_two) == 403
        await asyncio.sleep(0.05)
    assert [str(cb.event) for cb in app.received] == ["StartStream", "ClearedAudio"]


async def test_a_retry_after_a_400_is_taken_and_forms_parse_leniently(
    http: aiohttp.ClientSession,
) -> None:
    """A nonce is recorded only once the body parsed; a trailing '&' is not a 400."""
    async with App() as app:
        signed = sign_headers(app.url, TOKEN, "7" * 20)
        assert await post(http, app.url, urlencode({"CallUUID": "x"}), signed) == 400
        assert await post(http, app.url, urlencode(FIELDS) + "&", signed) == 200
        other = sign_headers(app.url, TOKEN, "8" * 20)
        assert await post(http, app.url, "Event=StopStream&&StreamID=s-1&", other) == 200
        await asyncio.sleep(0.05)
    assert [str(cb.event) for cb in app.received] == ["StartStream", "StopStream"]
    assert app.received[1].stream_id == "s-1"


async def raw_post(url: str, head: str, parts: list[bytes]) -> int:
    """POST over a raw socket, one write per part with a pause between; the status."""
    host_port = url.split("/")[2]
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.encode())
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.1)
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_body_in_two_segments_is_read_whole_and_oversize_is_413() -> None:
    """A 20 KB body sent in two TCP segments reaches the app whole; a chunked 70 KB one is 413."""
    fields = {**FIELDS, "Event": "PlayedStream", "Name": "n" * 20_000}
    body = urlencode(fields).encode()
    async with App() as app:
        path = "/vobiz/status"
        headers = "".join(
            f"{k}: {v}\r\n" for k, v in sign_headers(app.url, TOKEN, "9" * 20).items()
        )
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {app.url.split('/')[2]}\r\n{headers}"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        assert await raw_post(app.url, head, [body[:5000], body[5000:]]) == 200
        chunk = b"a=" + b"x" * 35_000
        chunked = (
            f"POST {path} HTTP/1.1\r\nHost: {app.url.split('/')[2]}\r\n"
            f"{headers}"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        one = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        assert await raw_post(app.url, chunked, [one, one, b"0\r\n\r\n"]) == 413
        await asyncio.sleep(0.05)
        assert app.handler.stats.too_large == 1
    [cb] = app.received
    assert cb.fields == fields and cb.name == "n" * 20_000


async def test_lookalike_callbacks_are_all_delivered(http: aiohttp.ClientSession) -> None:
    """Two ClearedAudio in one second reach the app: unsigned always, signed with two nonces."""
    async with App(mode="if-present") as app:
        body = urlencode({**FIELDS, "Event": "ClearedAudio"})
        assert await post(http, app.url, body, {}) == 200
        assert await post(http, app.url, body, {}) == 200
        assert await post(http, app.url, body, sign_headers(app.url, TOKEN, "1" * 20)) == 200
        assert await post(http, app.url, body, sign_headers(app.url, TOKEN, "2" * 20)) == 200
        await asyncio.sleep(0.05)
    assert [str(cb.event) for cb in app.received] == ["ClearedAudio"] * 4


async def test_a_callback_that_overtakes_its_stream_waits_for_the_session() -> None:
    """StartStream can arrive before the stream's start frame: it is held (bounded) and
    delivered once the session exists; a stream that never comes is counted unrouted."""
    from vobiz_async.testing import MediaPeer

    sessions: list[StreamSession] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await session.wait_closed()

    async with serve(agent, "127.0.0.1", 0) as server:
        handler = callback_handler(server=server, limits=CallbackLimits(route_wait=0.5))
        app = web.Application()
        handler.add_to(app, "/status")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/status"
        async with aiohttp.ClientSession() as http:
            for stream_id in ("late-stream", "never-stream"):
                form = {"Event": "StartStream", "StreamID": stream_id, "CallUUID": "c"}
                async with http.post(url, data=form) as resp:
                    assert resp.status == 200
            peer = MediaPeer(server.url, stream_id="late-stream", seconds=0.3)
            await peer.wait_closed()
            await asyncio.sleep(0.7)
        await runner.cleanup()
    [session] = sessions
    assert [str(cb.event) for cb in session.status_callbacks] == ["StartStream"]
    assert handler.stats.unrouted == 1
