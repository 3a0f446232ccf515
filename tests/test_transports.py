"""The same media-server behaviour over every transport: the built-in listener
(``serve``), Starlette under a real uvicorn, and ``aiohttp.web``, each on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from starlette.websockets import WebSocket

from vobiz_async.adapters._transport import QueuedTransport
from vobiz_async.adapters.starlette import handle
from vobiz_async.errors import ValidationError
from vobiz_async.events import AudioCleared, AudioReceived, CheckpointOutcome, Event
from vobiz_async.server import Limits, MediaServer, Pacing, StreamSession
from vobiz_async.testing._audio import speech_like, tone
from vobiz_async.testing._media import MediaPeer
from vobiz_async.tokens import sign_stream_url

from ._transports import KINDS, Launch, launcher


@pytest.fixture(params=KINDS)
def launch(request: pytest.FixtureRequest) -> Launch:
    """Start a media server over each transport in turn."""
    return launcher(request.param)


@pytest.mark.parametrize(
    ("suffix", "status"),
    [("", 401), ("?token=wrong", 403), ("/wrong", 403), ("?token=s3cret", None), ("/s3cret", None)],
)
async def test_token_is_checked_before_the_upgrade(
    launch: Launch, suffix: str, status: int | None
) -> None:
    """Without the secret (query or last segment) the upgrade is refused 401/403."""

    async def handler(session: StreamSession) -> None:
        await session.stop()

    async with launch(handler, token="s3cret") as running:
        report = await MediaPeer(running.url + suffix, seconds=0.2).wait_closed()
        rejected = running.server.stats.rejected_auth
    assert report.rejected_status == status
    if status is None:
        assert report.stopped and rejected == 0
    else:
        assert report.frames_sent == 0 and rejected == 1


async def test_signed_per_call_urls(launch: Launch) -> None:
    """A signed URL admits its own call only (another closes 1008), and not once expired."""
    seen: list[str] = []

    async def handler(session: StreamSession) -> None:
        seen.append(session.call_id)
        await session.stop()

    async with launch(handler, token="k") as running:
        good = sign_stream_url(running.url, "k", "call-1")
        ok = await MediaPeer(good, call_id="call-1", seconds=0.2).wait_closed()
        other = await MediaPeer(good, call_id="call-2", seconds=0.2).wait_closed()
        expired = sign_stream_url(running.url, "k", "call-3", ttl=-10)
        old = await MediaPeer(expired, call_id="call-3", seconds=0.2).wait_closed()
    assert seen == ["call-1"] and ok.stopped
    assert other.close_code == 1008 and old.rejected_status == 403


async def test_max_sessions_refuses_with_503(launch: Launch) -> None:
    """An upgrade beyond max_sessions is refused with 503 before the WebSocket opens."""
    gate = asyncio.Event()

    async def handler(session: StreamSession) -> None:
        await gate.wait()

    async with launch(handler, limits=Limits(max_sessions=1)) as running:
        first = MediaPeer(running.url, seconds=3.0)
        first.start()
        await running.server.wait_for_call(first.call_id, timeout=5)
        second = await MediaPeer(running.url, seconds=0.2).wait_closed()
        gate.set()
        rejected = running.server.stats.rejected_limit
    assert second.rejected_status == 503 and rejected == 1


async def test_oversized_message_closes_with_1009(launch: Launch) -> None:
    """A message over max_message_bytes closes that stream with 1009, counted."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with launch(handler, limits=Limits(max_message_bytes=4096)) as running:
        peer = MediaPeer(running.url, seconds=5.0, hangup_when_done=False)
        peer.start()
        await running.server.wait_for_call(peer.call_id, timeout=5)
        await peer.send_raw(json.dumps({"event": "media", "junk": "x" * 8000}))
        report = await peer.wait_closed()
        # aiohttp's reader sends the 1009 before the handler task reads the error and
        # counts it: wait for the count (bounded) rather than for a fixed moment.
        for _ in range(200):
            if running.server.stats.oversized_messages:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # nothing more is counted for the one message
        oversized = running.server.stats.oversized_messages
    assert report.close_code == 1009 and oversized == 1


async def test_malformed_frames_are_counted_and_skipped(launch: Launch) -> None:
    """Garbage and binary frames mid-call are counted; the audio and the call go on."""
    counts: list[int] = []
    sessions: list[StreamSession] = []

    async def handler(session: StreamSession) -> None:
        sessions.append(session)
        counts.append(sum([1 async for _ in session.audio()]))

    async with launch(handler) as running:
        peer = MediaPeer(running.url, audio=speech_like(1.0), seconds=1.0)
        peer.start()
        await running.server.wait_for_call(peer.call_id, timeout=5)
        junk: list[str | bytes] = ["{oops", "[]", '{"event":"media"}', b"\x01\x02"]
        for frame in junk:
            await peer.send_raw(frame)
        report = await peer.wait_closed()
        await asyncio.sleep(0.05)
    [session] = sessions
    assert counts == [50] and report.close_code == 1000 and report.malformed == 0
    assert session.stats.malformed == 4 and session.close_code == 1000


async def test_paced_playback_checkpoint_played_and_stop(launch: Launch) -> None:
    """1.5 s of audio is paced (the queue stays near the lead), the checkpoint plays,
    and stop ends the stream."""
    outcomes: list[CheckpointOutcome] = []

    async def handler(session: StreamSession) -> None:
        await session.play(speech_like(1.5, 8000))
        outcomes.append(await session.checkpoint("turn-1"))
        await session.stop()

    async with launch(handler, pacing=Pacing(lead_ms=200)) as running:
        report = await MediaPeer(running.url, seconds=5.0, hangup_when_done=False).wait_closed()
    assert outcomes == [CheckpointOutcome.PLAYED]
    assert report.played_checkpoints == ["turn-1"] and report.stopped
    assert report.play_frames == 75 and report.max_queued_ms < 700


async def test_coalesced_writes_carry_the_same_paced_audio(launch: Launch) -> None:
    """Pacing.coalesce_ms=60 sends the same 1.5 s in under half the paced writes of
    coalesce_ms=0, still paced (the peer's queue stays under lead + coalesce)."""
    writes: dict[float, int] = {}

    for coalesce in (0.0, 60.0):

        async def handler(session: StreamSession, coalesce: float = coalesce) -> None:
            await session.play(speech_like(1.5, 8000))
            await session.checkpoint("end")
            writes[coalesce] = session.stats.paced_writes
            await session.stop()

        pacing = Pacing(lead_ms=200, coalesce_ms=coalesce)
        async with launch(handler, pacing=pacing) as running:
            report = await MediaPeer(running.url, seconds=5.0, hangup_when_done=False).wait_closed()
        assert report.play_frames == 75 and report.played_checkpoints == ["end"]
        assert report.max_queued_ms < 200 + coalesce + 300
    # 0 ms: the lead burst, then one write per frame; 60 ms: a burst, then up to 4 at
    # a time (play() queues 100 ms slices, so a slice's tail can go alone).
    assert writes[0.0] > 55 and writes[60.0] < writes[0.0] / 2


async def test_clear_voids_checkpoint_and_waits_for_cleared_audio(launch: Launch) -> None:
    """clear() voids the pending checkpoint, and returns once clearedAudio arrived."""
    results: dict[str, Any] = {}
    events: list[Event] = []

    async def handler(session: StreamSession) -> None:
        play = asyncio.create_task(session.play(speech_like(3.0, 8000)))
        checkpoint = asyncio.create_task(session.checkpoint("answer"))
        await asyncio.sleep(0.5)
        await session.clear()
        results["round_trips"] = len(session.stats.clear_round_trip_ms)
        results["played_ms"] = await play
        results["checkpoint"] = await checkpoint
        await session.stop()
        events.extend([e async for e in session])

    async with launch(handler) as running:
        report = await MediaPeer(running.url, seconds=10.0, hangup_when_done=False).wait_closed()
    assert results["checkpoint"] is CheckpointOutcome.CLEARED and results["round_trips"] == 1
    assert results["played_ms"] < 3000 and report.clears == 1 and report.stopped
    assert report.played_checkpoints == []
    assert any(isinstance(e, AudioCleared) for e in events)


async def test_binding_by_stream_and_by_call(launch: Launch) -> None:
    """wait_for_session and wait_for_call find the stream, before or after its start."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with launch(handler) as running:
        server = running.server
        peer = MediaPeer(running.url, seconds=1.0)
        waiter = asyncio.create_task(server.wait_for_session(peer.stream_id, timeout=5))
        peer.start()
        assert (await waiter).call_id == peer.call_id
        assert (await server.wait_for_call(peer.call_id)).stream_id == peer.stream_id
        with pytest.raises(TimeoutError):
            await server.wait_for_call("never", timeout=0.05)
        await peer.wait_closed()


async def test_recording_from_the_start(launch: Launch) -> None:
    """MediaServer(record=True) records both sides of every stream."""
    recorders = []

    async def handler(session: StreamSession) -> None:
        recorders.append(session.recorder)
        await session.play(tone(600, 0.5, 8000))
        await session.checkpoint("done")
        await session.stop()

    async with launch(handler, record=True, pacing=Pacing(lead_ms=100)) as running:
        await MediaPeer(
            running.url, audio=tone(300, 2.0), seconds=3.0, hangup_when_done=False
        ).wait_closed()
    [recorder] = recorders
    assert recorder is not None and recorder.sample_rate == 8000
    assert len(recorder.caller_pcm) > 0 and len(recorder.agent_pcm) >= 8000  # 0.5 s played
    assert any(recorder.agent_pcm)


async def test_shutdown_closes_every_stream_with_1001(launch: Launch) -> None:
    """server.close() with calls in flight closes each with 1001; no stream after it."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with launch(handler) as running:
        server = running.server
        peers = [MediaPeer(running.url, seconds=30.0) for _ in range(2)]
        for peer in peers:
            peer.start()
        for peer in peers:
            await server.wait_for_call(peer.call_id, timeout=5)
        await server.close(grace=0.1)
        reports = await asyncio.gather(*(p.wait_closed() for p in peers))
        late = await MediaPeer(running.url, seconds=0.2).wait_closed()
    assert [r.close_code for r in reports] == [1001, 1001] and not server.sessions
    assert late.stream_id not in {s.stream_id for s in server.sessions}
    assert late.rejected_status == 503 or late.connect_error is not None


async def test_audio_reaches_the_handler_intact(launch: Launch) -> None:
    """Every inbound frame reaches the handler, in order, decoded."""
    frames: list[AudioReceived] = []

    async def handler(session: StreamSession) -> None:
        async for event in session:
            if isinstance(event, AudioReceived):
                frames.append(event)

    async with launch(handler) as running:
        peer = MediaPeer(running.url, audio=tone(440, 0.6), seconds=0.6)
        await peer.wait_closed()
        await asyncio.sleep(0.05)
    assert len(frames) == 30 and b"".join(f.pcm for f in frames)


async def test_source_address_allowlist(launch: Launch) -> None:
    """A peer outside allow_from never gets a stream (dropped at accept, or 403)."""

    async def handler(session: StreamSession) -> None:
        await session.stop()

    async with launch(handler, allow_from=["10.0.0.0/8"]) as running:
        report = await MediaPeer(running.url, seconds=0.2).wait_closed()
        stats = running.server.stats
    assert report.frames_sent == 0 and stats.sessions == 0 and stats.rejected_ip == 1
    assert report.rejected_status == 403 or report.connect_error is not None


class _GatedTransport(QueuedTransport):
    """The adapters' queued writer over a socket whose sends wait for ``gate``."""

    def __init__(self, server: MediaServer) -> None:
        super().__init__(server)
        self.gate = asyncio.Event()
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.aborted = asyncio.Event()

    async def _send(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)

    async def _close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def _abort(self) -> None:
        self.aborted.set()


async def _idle(session: StreamSession) -> None:
    await session.wait_closed()


async def test_adapter_writer_backpressure_order_and_close() -> None:
    """Queued frames over write_buffer_bytes pause writing until drained, go out in
    order, and a close is sent after them."""
    async with MediaServer(_idle, limits=Limits(write_buffer_bytes=100)) as server:
        transport = _GatedTransport(server)
        transport.send_text("a" * 60)
        assert not transport.write_paused
        transport.send_text("b" * 60)
        assert transport.write_paused
        transport.close(1000, "done")
        transport.send_text("c")  # after close: ignored
        transport.gate.set()
        for _ in range(100):  # bounded: the writer task drains in a few loop turns
            if transport.closed_with is not None:
                break
            await asyncio.sleep(0.01)
        assert transport.sent == ["a" * 60, "b" * 60] and not transport.write_paused
        assert transport.closed_with == (1000, "done") and transport.close_code_sent == 1000
        transport.finished(None)
        await transport.wait_writer()
        assert server.stats.active_connections == 0 and server.stats.connections == 1


async def test_adapter_writer_drops_a_stalled_peer() -> None:
    """A peer that stops reading past write_stall_timeout is dropped and counted."""
    limits = Limits(write_buffer_bytes=10, write_stall_timeout=0.05, close_timeout=0.05)
    async with MediaServer(_idle, limits=limits) as server:
        transport = _GatedTransport(server)
        transport.send_text("x" * 20)
        await asyncio.wait_for(transport.aborted.wait(), 5)
        assert server.stats.write_stalls == 1 and transport.sent == []
        transport.finished(None)
        await transport.wait_writer()


async def test_adapter_close_aborts_when_the_handshake_stalls() -> None:
    """A close that cannot be sent within close_timeout drops the connection."""
    async with MediaServer(_idle, limits=Limits(close_timeout=0.05)) as server:
        transport = _GatedTransport(server)
        transport.send_text("x")
        transport.close(1001, "bye")
        await asyncio.wait_for(transport.aborted.wait(), 5)
        assert transport.closed_with is None and server.stats.write_stalls == 0
        transport.finished(None)
        await transport.wait_writer()


async def test_a_socketless_server_has_no_url_of_its_own() -> None:
    """Without a socket or public_url, .url raises; url_for signs the app's own URL."""
    async with MediaServer(_idle, path="/media", token="k") as server:
        with pytest.raises(ValidationError):
            _ = server.url
        signed = server.url_for("call-1", base_url="wss://agent.example/media")
    assert signed.startswith("wss://agent.example/media?token=")


async def test_starlette_refuses_with_1008_without_the_denial_extension() -> None:
    """An ASGI server without websocket.http.response gets a close 1008, not an accept."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/media",
        "raw_path": b"/media",
        "query_string": b"token=wrong",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "extensions": {},
    }
    async with MediaServer(_idle, path="/media", token="k") as server:
        await handle(WebSocket(scope, receive, send), server)
        rejected = server.stats.rejected_auth
    assert [m["type"] for m in sent] == ["websocket.close"] and sent[0]["code"] == 1008
    assert rejected == 1
