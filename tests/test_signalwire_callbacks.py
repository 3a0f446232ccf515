"""SignalWire stream status callbacks: verified, deduplicated by content, routed, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from vobiz_async.callbacks import CallbackLimits
from vobiz_async.server import StreamSession, serve
from vobiz_async.signalwire import (
    CompatCallbackHandler,
    CompatStreamCallback,
    StreamEvent,
    callback_handler,
    compute_signature,
    parse_callback,
)
from vobiz_async.testing import FakeSignalWire, FakeVobiz

SW_KEY = "PSKexample0123456789abcdef"
V4_PARAMS = {
    "AccountSid": "3f1c2b7a-8d4e-4f60-9a1b-2c3d4e5f6a7b",
    "CallSid": "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4",
    "StreamSid": "5b0e1f2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "StreamName": "agent-9e8d7c6b",
    "StreamEvent": "stream-started",
    "Timestamp": "2026-05-04T10:02:11.000Z",
}
V4_SIGNATURE = "iI0D1/n763YTDmooAJSaFYll1nw="
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_parse_every_documented_field() -> None:
    """StreamEvent is typed (unknown kept), SignalWire extras read, Timestamp is aware."""
    cb = parse_callback(
        {
            **V4_PARAMS,
            "StreamEvent": "stream-error",
            "StreamError": "connection_refused",
            "StreamTrack": "inbound_track",
            "Unique-ID": "u-1",
            "ConferenceSid": "",
        }
    )
    assert cb.event is StreamEvent.ERROR and cb.stream_error == "connection_refused"
    assert (cb.stream_track, cb.unique_id, cb.conference_sid) == ("inbound_track", "u-1", None)
    assert cb.timestamp is not None and cb.timestamp.utcoffset() is not None
    assert cb["StreamSid"] == V4_PARAMS["StreamSid"] and cb.get("Nope") is None
    assert parse_callback({"StreamEvent": "stream-paused"}).event == "stream-paused"
    assert parse_callback({"StreamEvent": "stream-stopped", "Timestamp": "soon"}).timestamp is None


@asynccontextmanager
async def running(
    handler: CompatCallbackHandler, path: str = "/sw/stream-status"
) -> AsyncIterator[str]:
    """Serve ``handler`` on loopback; yields the URL."""
    app = web.Application()
    handler.add_to(app, path)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


async def test_the_spec_callback_is_verified_and_retries_dropped() -> None:
    """Spec 6.4's signed callback is taken once; its retry is 200 and not delivered again."""
    got: list[CompatStreamCallback] = []
    handler = callback_handler(
        got.append, signing_key=SW_KEY, public_base_url="https://hooks.example.com"
    )
    assert handler.mode == "require"
    async with running(handler) as url, aiohttp.ClientSession() as http:
        headers = {**FORM, "X-SignalWire-Signature": V4_SIGNATURE}
        for _ in range(2):
            async with http.post(url, data=urlencode(V4_PARAMS), headers=headers) as r:
                assert r.status == 200
        stopped = {**V4_PARAMS, "StreamEvent": "stream-stopped"}
        sig = compute_signature("https://hooks.example.com/sw/stream-status", stopped, SW_KEY)
        async with http.post(
            url, data=urlencode(stopped), headers={**FORM, "X-Twilio-Signature": sig}
        ) as r:
            assert r.status == 200
        await asyncio.sleep(0.05)
    assert [cb.event for cb in got] == [StreamEvent.STARTED, StreamEvent.STOPPED]
    assert (handler.stats.delivered, handler.stats.duplicates) == (2, 1)


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, urlencode(V4_PARAMS), 401),
        ({"X-SignalWire-Signature": "AAAA" + V4_SIGNATURE[4:]}, urlencode(V4_PARAMS), 403),
        (
            {"X-SignalWire-Signature": V4_SIGNATURE},
            urlencode({**V4_PARAMS, "StreamEvent": "stream-error"}),
            403,
        ),
        ({"X-SignalWire-Signature": V4_SIGNATURE}, b"\xff\xfe", 400),
        ({"X-SignalWire-Signature": V4_SIGNATURE}, "a=" + "x" * 70_000, 413),
    ],
)
async def test_forged_or_broken_callbacks_are_refused(
    headers: dict[str, str], body: str | bytes, status: int
) -> None:
    """Missing, wrong or replayed-onto-other-content signatures and bad bodies get a 4xx."""
    got: list[CompatStreamCallback] = []
    handler = callback_handler(
        got.append, signing_key=SW_KEY, public_base_url="https://hooks.example.com"
    )
    async with running(handler) as url, aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={**FORM, **headers}) as r:
            assert r.status == status
        await asyncio.sleep(0.05)
    assert got == [] and handler.stats.received == 1


async def test_routed_to_the_live_session_by_stream_sid() -> None:
    """A callback whose StreamSid is a live stream's id reaches that session, bounded."""
    sessions: list[StreamSession] = []
    release = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await release.wait()

    async with FakeVobiz() as vobiz, serve(agent, "127.0.0.1", 0) as server:
        call = vobiz.call(seconds=30)
        async with vobiz.client() as client:
            started = await client.streams.start(call.call_uuid, server.url)
        session = await server.wait_for_session(started.stream_id)
        limits = CallbackLimits(history_per_session=3)
        handler = callback_handler(signing_key=SW_KEY, server=server, limits=limits)
        async with running(handler) as url, aiohttp.ClientSession() as http:
            for n in range(5):
                params = {**V4_PARAMS, "StreamSid": session.stream_id, "Timestamp": str(n)}
                sig = compute_signature(url, params, SW_KEY)
                headers = {**FORM, "X-SignalWire-Signature": sig}
                async with http.post(url, data=urlencode(params), headers=headers) as r:
                    assert r.status == 200
        release.set()
        await vobiz.hangup(call.call_uuid)
    assert [cb["Timestamp"] for cb in session.status_callbacks] == ["2", "3", "4"]
    assert handler.stats.history_trimmed == 2


async def test_fake_signalwire_posts_signed_stream_stopped_by_post_and_get() -> None:
    """FakeSignalWire's signed stream-stopped callbacks verify (POST form and GET query)."""
    got: list[CompatStreamCallback] = []
    async with FakeSignalWire(callback_retry_delay=0.01) as fake:
        handler = callback_handler(got.append, signing_key=fake.signing_key)
        async with running(handler) as url, fake.client() as client:
            call = fake.call()
            a = await client.streams.start(call.call_sid, "wss://a.example/m", status_callback=url)
            b = await client.streams.start(
                call.call_sid,
                "wss://a.example/n",
                status_callback=url + "?t=1",
                status_callback_method="GET",
            )
            await client.streams.stop(call.call_sid, a.sid)
            await fake.hangup(call.call_sid)
            for _ in range(100):
                if len(fake.callbacks) == 2:
                    break
                await asyncio.sleep(0.02)
    assert sorted(r.status or 0 for r in fake.callbacks) == [200, 200]
    assert sorted((cb.stream_sid or "", cb.event) for cb in got) == sorted(
        [(a.sid, StreamEvent.STOPPED), (b.sid, StreamEvent.STOPPED)]
    )


async def test_dispatch_is_bounded_and_closed_at_shutdown() -> None:
    """Over max_pending running on_event calls the answer is 503; shutdown cancels them."""
    gate = asyncio.Event()

    async def slow(cb: CompatStreamCallback) -> None:
        await gate.wait()

    limits = CallbackLimits(max_pending=2, shutdown_grace=0.0)
    handler = callback_handler(slow, mode="off", limits=limits)
    codes = []
    async with running(handler) as url, aiohttp.ClientSession() as http:
        for n in range(4):
            body = urlencode({**V4_PARAMS, "Timestamp": str(n)})
            async with http.post(url, data=body, headers=FORM) as r:
                codes.append(r.status)
    assert codes == [200, 200, 503, 503]
    assert (
        handler.stats.pending,
        handler.stats.cancelled_at_close,
        handler.stats.refused_busy,
    ) == (
        0,
        2,
        2,
    )
    with pytest.raises(ValueError, match="signing_key"):
        callback_handler(mode="require")
