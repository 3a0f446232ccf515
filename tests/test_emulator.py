"""The emulator itself: REST starts dial the app, XML is obeyed, callbacks are signed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from vobiz_async.events import AudioReceived, CheckpointOutcome
from vobiz_async.server import StreamSession, serve
from vobiz_async.signatures import verify_request
from vobiz_async.testing import FakeVobiz, tone


class CallbackSink:
    """A local status-callback endpoint that verifies signatures and records events."""

    def __init__(self, token: str, fail_first: int = 0) -> None:
        self.token = token
        self.fail_first = fail_first
        self.events: list[dict[str, str]] = []
        self.schemes: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        result = verify_request(str(request.url), request.headers, self.token, mode="require")
        self.schemes.append(result.scheme)
        form = await request.post() if request.method == "POST" else request.query
        self.events.append({k: str(v) for k, v in form.items()})
        return web.Response(text="ok")

    async def __aenter__(self) -> CallbackSink:
        app = web.Application()
        app.router.add_route("*", "/status", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/status?tenant=4"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def names(self) -> list[str]:
        return [e["Event"] for e in self.events]


@pytest.fixture
async def fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(callback_retry_delay=0.01) as fake:
        yield fake


async def test_rest_start_dials_and_callbacks_are_signed(fake: FakeVobiz) -> None:
    """A REST start makes the media peer dial; the lifecycle callbacks arrive signed."""
    outcomes: list[CheckpointOutcome] = []

    async def agent(session: StreamSession) -> None:
        async for event in session:
            if isinstance(event, AudioReceived) and event.sequence_number == 10:
                await session.play(tone(500, 0.2, 8000))
                outcomes.append(await session.checkpoint("hi"))
                await session.play(tone(500, 1.0, 8000))
                await session.clear()
                await session.stop()

    async with CallbackSink(fake.auth_token) as sink, serve(agent, "127.0.0.1", 0) as server:
        call = fake.call(seconds=10)
        async with fake.client() as client:
            started = await client.streams.start(
                call.call_uuid,
                server.url,
                bidirectional=True,
                content_type="audio/x-mulaw;rate=8000",
                status_callback_url=sink.url,
                extra_headers={"session": "abc"},
            )
            session = await started.session(server)
            report = await call.peers[0].wait_closed()
            await session.wait_closed()
            await asyncio.sleep(0.2)
            stream = await client.streams.get(call.call_uuid, started.stream_id)
    assert outcomes == [CheckpointOutcome.PLAYED]
    assert report.stopped and report.played_checkpoints == ["hi"] and report.clears == 1
    assert sink.names() == ["StartStream", "PlayedStream", "ClearedAudio", "StopStream"]
    assert set(sink.schemes) == {"v3"}
    first = sink.events[0]
    assert first["StreamID"] == started.stream_id and first["CallUUID"] == call.call_uuid
    assert first["ServiceURL"] == server.url and first["X-VH-session"] == "abc"
    assert sink.events[1]["Name"] == "hi"
    assert stream.status == "completed"


async def test_json_boolean_bidirectional_gives_a_one_way_stream(fake: FakeVobiz) -> None:
    """Played audio is discarded on a stream started with a boolean (Vobiz's quirk)."""
    import aiohttp

    async def agent(session: StreamSession) -> None:
        await session.play(tone(500, 0.3, 8000))
        await session.checkpoint("never", timeout=0.5)
        await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server, aiohttp.ClientSession() as http:
        call = fake.call(seconds=5)
        url = f"{fake.base_url}/api/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/Stream/"
        headers = {"X-Auth-ID": fake.auth_id, "X-Auth-Token": fake.auth_token}
        body = {
            "service_url": server.url,
            "bidirectional": True,
            "content_type": "audio/x-mulaw;rate=8000",
        }
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 202
        report = await (await call.next_peer()).wait_closed()
    assert report.play_frames > 0 and report.heard_ms == 0 and report.played_checkpoints == []


async def test_answer_xml_stream_is_obeyed_then_the_call_hangs_up(fake: FakeVobiz) -> None:
    """A bidirectional keepCallAlive <Stream> dials in L16 16 kHz; after it ends, <Hangup/>."""
    formats: list[str] = []

    async def agent(session: StreamSession) -> None:
        formats.append(session.inbound_format.content_type)
        await session.play(tone(300, 0.2, 24000), 24000)
        await session.checkpoint("bye")
        await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response>'
            '<Stream bidirectional="true" keepCallAlive="true" audioTrack="inbound" '
            f'contentType="audio/x-l16;rate=16000">{server.url}?a=1&amp;b=2</Stream>'
            "<Hangup/></Response>"
        )
        call = fake.call(seconds=10, answer_xml=xml)
        peer = await call.next_peer()
        report = await peer.wait_closed()
        for _ in range(100):
            if not call.live:
                break
            await asyncio.sleep(0.02)
    assert formats == ["audio/x-l16;rate=16000"]
    assert peer.url.endswith("?a=1&b=2") and report.played_checkpoints == ["bye"]
    assert not call.live and fake.streams[peer.stream_id].origin == "xml"


async def test_max_retries_redial_with_new_stream_ids(fake: FakeVobiz) -> None:
    """A refused socket is retried maxRetries times, each with a new stream id."""

    async def agent(session: StreamSession) -> None:
        await session.stop()

    async with serve(agent, "127.0.0.1", 0, token="right") as server:
        xml = (
            '<Response><Stream bidirectional="true" keepCallAlive="true" maxRetries="2">'
            f"{server.url}?token=wrong</Stream></Response>"
        )
        call = fake.call(seconds=1, answer_xml=xml)
        await call.next_peer(2)
        reports = await call.wait_done()
    assert [r.rejected_status for r in reports] == [403, 403, 403]
    assert len({r.stream_id for r in reports}) == 3


async def test_callbacks_are_retried_after_failures(fake: FakeVobiz) -> None:
    """A callback answered with 500 is retried (up to 3 times) until it gets a 200."""

    async def agent(session: StreamSession) -> None:
        await session.stop()

    async with (
        CallbackSink(fake.auth_token, fail_first=2) as sink,
        serve(agent, "127.0.0.1", 0) as server,
    ):
        call = fake.call(seconds=2)
        async with fake.client() as client:
            await client.streams.start(call.call_uuid, server.url, status_callback_url=sink.url)
        await call.wait_done()
        await asyncio.sleep(0.3)
    start = next(c for c in fake.callbacks if c.event == "StartStream")
    assert start.attempts == 3 and start.status == 200
    assert "StartStream" in sink.names()


async def test_dropped_stream_when_the_app_closes_the_socket(fake: FakeVobiz) -> None:
    """If our server drops the socket, Vobiz reports DroppedStream (not StopStream)."""

    async def agent(session: StreamSession) -> None:
        return  # returning closes the stream from our side

    async with CallbackSink(fake.auth_token) as sink, serve(agent, "127.0.0.1", 0) as server:
        call = fake.call(seconds=3)
        async with fake.client() as client:
            await client.streams.start(call.call_uuid, server.url, status_callback_url=sink.url)
        await call.wait_done()
        await asyncio.sleep(0.2)
    assert sink.names() == ["StartStream", "DroppedStream"]
    assert sink.events[1]["Error"] == "connection disconnected with the remote service"


async def test_24khz_inbound_and_invalid_xml_behave_like_vobiz(fake: FakeVobiz) -> None:
    """24 kHz inbound never delivers media; malformed answer XML drops the call."""
    bad = fake.call(seconds=1, answer_xml="<Response><Stream>ws://x?a=1&b=2</Stream></Response>")
    for _ in range(100):
        if not bad.live:
            break
        await asyncio.sleep(0.01)
    assert not bad.live and not bad.peers
    call = fake.call(seconds=1)
    xml_24k = '<Response><Stream contentType="audio/x-l16;rate=24000">ws://127.0.0.1:9/x</Stream></Response>'
    other = fake.call(seconds=1, answer_xml=xml_24k)
    await asyncio.sleep(0.1)
    assert not other.peers and call.live


async def test_the_emulator_dials_loopback_only(fake: FakeVobiz) -> None:
    """A stream to a non-loopback URL is recorded but never dialed: tests stay local."""
    call = fake.call(seconds=1)
    async with fake.client() as client:
        started = await client.streams.start(call.call_uuid, "wss://agent.example.net/media")
    await asyncio.sleep(0.05)
    assert call.peers == [] and fake.streams[started.stream_id].status == "in-progress"
