"""The media server over real loopback sockets, driven by the emulator's media peer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests._wire import raw_websocket, text_frame
from vobiz_async.codec import pcm16_to_ulaw, ulaw_to_pcm16
from vobiz_async.errors import LocalProtocolError, StreamClosedError, ValidationError
from vobiz_async.events import (
    AudioCleared,
    AudioReceived,
    CheckpointOutcome,
    DtmfReceived,
    Event,
    StreamStopped,
    UnknownEvent,
)
from vobiz_async.server import Limits, MediaServer, Pacing, StreamSession, serve
from vobiz_async.testing._audio import speech_like, tone
from vobiz_async.testing._media import MediaPeer
from vobiz_async.tokens import sign_stream_url

Handler = Callable[[StreamSession], Awaitable[None]]


async def collect(session: StreamSession, into: list[Event]) -> None:
    async for event in session:
        into.append(event)


async def test_echo_round_trip_in_the_streams_own_format() -> None:
    """An echo handler plays every inbound frame back; the caller hears its own audio."""

    async def echo(session: StreamSession) -> None:
        async for pcm in session.audio():
            await session.play(pcm, session.inbound_format.sample_rate)

    async with serve(echo, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, audio=tone(440, 0.6, 8000), seconds=0.8)
        report = await peer.wait_closed()
    assert report.frames_sent == 40 and report.play_frames >= 30
    assert report.malformed == 0 and report.close_code == 1000
    caller = peer.caller_pcm
    heard = peer.heard_pcm
    assert any(heard) and len(heard) == len(caller)
    # Echo through mu-law: what was heard is the caller's audio, mu-law quantised.
    chunk = caller[3200:3520]
    assert ulaw_to_pcm16(pcm16_to_ulaw(chunk)) in heard


async def test_play_encoded_calls_play_in_call_order_when_pacing_holds_audio_back() -> None:
    """A short play_encoded whose audio the pacing holds back keeps the floor: a second
    call made meanwhile plays after all of it, in order, nothing lost."""
    results: list[float] = []

    async def handler(session: StreamSession) -> None:
        first = asyncio.create_task(session.play_encoded(b"\x11" * 640))  # 80 ms
        await asyncio.sleep(0)  # the first has written what was due and now waits
        results.append(await session.play_encoded(b"\x22" * 320))  # 40 ms
        results.insert(0, await first)
        await session.checkpoint("done")
        await session.stop()

    pacing = Pacing(lead_ms=20, coalesce_ms=0)
    async with serve(handler, "127.0.0.1", 0, pacing=pacing) as server:
        peer = MediaPeer(server.url, seconds=3.0, hangup_when_done=False)
        report = await peer.wait_closed()
    assert results == [80.0, 40.0] and report.play_frames == 6
    a, b = ulaw_to_pcm16(b"\x11"), ulaw_to_pcm16(b"\x22")
    heard = [peer.heard_pcm[i : i + 2] for i in range(0, len(peer.heard_pcm), 2)]
    at_a = [i for i, sample in enumerate(heard) if sample == a]
    at_b = [i for i, sample in enumerate(heard) if sample == b]
    assert len(at_a) == 640 and len(at_b) == 320 and max(at_a) < min(at_b)


async def test_speaking_is_true_while_our_audio_can_still_be_heard() -> None:
    """session.speaking: False before any audio, True while play() runs and until the
    audio sent has played out by the pacing clock, False after; False once closed."""
    seen: dict[str, bool] = {}

    async def handler(session: StreamSession) -> None:
        seen["before"] = session.speaking
        playing = asyncio.create_task(session.play(tone(440, 0.6, 8000), 8000))
        await asyncio.sleep(0)
        seen["during"] = session.speaking
        await playing
        seen["sent"] = session.speaking  # the last 200 ms are still playing out there
        assert await session.checkpoint("end") is CheckpointOutcome.PLAYED
        for _ in range(100):  # bounded: the estimate runs out within the lead
            if not session.speaking:
                break
            await asyncio.sleep(0.02)
        seen["after"] = session.speaking
        await session.stop()
        await session.wait_closed()
        seen["closed"] = session.speaking

    async with serve(handler, "127.0.0.1", 0) as server:
        await MediaPeer(server.url, seconds=3.0, hangup_when_done=False).wait_closed()
    assert seen == {"before": False, "during": True, "sent": True, "after": False, "closed": False}


async def test_a_short_play_never_overtakes_a_call_waiting_for_its_turn() -> None:
    """While a long play holds the floor, a short play_encoded called by another task
    waits its turn: a later short call from the first task plays after it."""

    async def handler(session: StreamSession) -> None:
        async def first() -> None:
            await session.play_encoded(b"\x11" * 1600)  # 200 ms, over the short size
            await session.play_encoded(b"\x33" * 160)  # called after the other's

        async def second() -> None:
            await asyncio.sleep(0.02)
            await session.play_encoded(b"\x22" * 160)  # waits for the floor

        await asyncio.gather(first(), second())
        await session.checkpoint("done")
        await session.stop()

    pacing = Pacing(lead_ms=20, coalesce_ms=0)
    async with serve(handler, "127.0.0.1", 0, pacing=pacing) as server:
        peer = MediaPeer(server.url, seconds=3.0, hangup_when_done=False)
        await peer.wait_closed()
    heard = [peer.heard_pcm[i : i + 2] for i in range(0, len(peer.heard_pcm), 2)]
    order = [s for i, s in enumerate(heard) if i == 0 or s != heard[i - 1]]
    codes = {ulaw_to_pcm16(bytes([c])): c for c in (0x11, 0x22, 0x33)}
    assert [codes[s] for s in order if s in codes] == [0x11, 0x22, 0x33]


async def test_after_stop_the_session_answers_calmly_until_the_close() -> None:
    """Between stop() and the close: a second stop() waits for the close, checkpoint()
    is CLOSED, play()/clear() raise StreamClosedError (never a protocol error)."""
    seen: dict[str, object] = {}

    async def handler(session: StreamSession) -> None:
        stopping = asyncio.create_task(session.stop())
        await asyncio.sleep(0)
        seen["checkpoint"] = await session.checkpoint("late")
        for name, call in (("play", session.play(bytes(320))), ("clear", session.clear())):
            try:
                await call
            except StreamClosedError:
                seen[name] = "closed"
        await session.stop()
        await stopping
        seen["closed"] = session.closed

    async with serve(handler, "127.0.0.1", 0) as server:
        await MediaPeer(server.url, seconds=3.0, hangup_when_done=False).wait_closed()
    assert seen == {
        "checkpoint": CheckpointOutcome.CLOSED,
        "play": "closed",
        "clear": "closed",
        "closed": True,
    }


async def test_audio_in_chunks_yields_every_sample_a_chunk_at_a_time() -> None:
    """audio(chunk_ms=100) yields >= 100 ms per chunk (the last may be shorter), and the
    chunks joined are exactly the frames read one by one would be."""
    chunks: list[bytes] = []

    async def handler(session: StreamSession) -> None:
        async for pcm in session.audio(chunk_ms=100):
            chunks.append(pcm)

    async with serve(handler, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, audio=speech_like(1.05, 8000), seconds=1.05)
        report = await peer.wait_closed()
    assert report.frames_sent == 52 and report.close_code == 1000
    assert all(len(c) >= 1600 for c in chunks[:-1]) and len(chunks[-1]) > 0
    assert 9 <= len(chunks) <= 11  # 1.04 s in 100 ms chunks, not 52 frames
    assert b"".join(chunks) == b"".join(
        ulaw_to_pcm16(pcm16_to_ulaw(peer.caller_pcm[i : i + 320]))
        for i in range(0, len(peer.caller_pcm), 320)
    )


@pytest.mark.parametrize("chunk_ms", [10, 501, True, "100"])
async def test_audio_chunk_ms_out_of_range_is_a_validation_error(chunk_ms: object) -> None:
    """chunk_ms below 20 ms, above inbound_queue_ms / 2, or not a number is refused."""
    errors: list[ValidationError] = []

    async def handler(session: StreamSession) -> None:
        try:
            async for _ in session.audio(chunk_ms=chunk_ms):  # type: ignore[arg-type]
                pass
        except ValidationError as exc:
            errors.append(exc)

    async with serve(handler, "127.0.0.1", 0) as server:
        await MediaPeer(server.url, audio=tone(440, 0.1, 8000), seconds=0.1).wait_closed()
    assert [e.field for e in errors] == ["chunk_ms"]


@pytest.mark.parametrize(
    ("content_type", "shape", "order"),
    [
        ("audio/x-mulaw;rate=8000", "nested", "little"),
        ("audio/x-l16;rate=8000", "flat", "little"),
        ("audio/x-l16;rate=16000", "nested", "big"),
    ],
)
async def test_start_shapes_formats_and_byte_orders(
    content_type: str, shape: str, order: str
) -> None:
    """Both start shapes, every inbound format, and big-endian L16 by configuration."""
    sessions: list[StreamSession] = []
    events: list[Event] = []

    async def handler(session: StreamSession) -> None:
        sessions.append(session)
        await collect(session, events)

    audio = tone(300, 0.3, 16000)
    async with serve(handler, "127.0.0.1", 0, l16_byte_order=order) as server:  # type: ignore[arg-type]
        peer = MediaPeer(
            server.url,
            audio=audio,
            audio_rate=16000,
            content_type=content_type,
            shape=shape,  # type: ignore[arg-type]
            l16_byte_order=order,  # type: ignore[arg-type]
            seconds=0.3,
        )
        await peer.wait_closed()
        await asyncio.sleep(0.05)
    [session] = sessions
    assert session.started.shape == shape and session.stream_id == peer.stream_id
    assert session.inbound_format.content_type == content_type
    received = b"".join(e.pcm for e in events if isinstance(e, AudioReceived))
    expected = peer.caller_pcm
    if "mulaw" in content_type:
        expected = ulaw_to_pcm16(pcm16_to_ulaw(expected))
    assert received == expected


async def test_dtmf_unknown_and_inbound_stop_reach_the_application() -> None:
    """Rare events arrive as typed events; an inbound stop is delivered, then the close."""
    events: list[Event] = []

    async def handler(session: StreamSession) -> None:
        await collect(session, events)

    async with serve(handler, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, seconds=2.0, hangup_when_done=False)
        peer.start()
        await peer.started.wait()
        await peer.send_dtmf("7")
        await peer.send_raw('{"event":"mediaError","detail":"x"}')
        await peer.send_raw(json.dumps({"event": "stop", "streamId": peer.stream_id}))
        await peer.hangup()
        await peer.wait_closed()
        await asyncio.sleep(0.05)
    kinds = [type(e) for e in events]
    assert DtmfReceived in kinds and UnknownEvent in kinds and StreamStopped in kinds
    assert next(e for e in events if isinstance(e, DtmfReceived)).digit == "7"


async def test_checkpoint_played_and_pacing_never_bursts() -> None:
    """A 1.5 s utterance is paced (queue at Vobiz stays near the lead); the checkpoint plays."""
    outcomes: list[CheckpointOutcome] = []

    async def handler(session: StreamSession) -> None:
        await session.play(speech_like(1.5, 8000))
        outcomes.append(await session.checkpoint("turn-1"))
        await session.stop()

    async with serve(handler, "127.0.0.1", 0, pacing=Pacing(lead_ms=200)) as server:
        peer = MediaPeer(server.url, seconds=5.0, hangup_when_done=False)
        report = await peer.wait_closed()
    assert outcomes == [CheckpointOutcome.PLAYED]
    assert report.played_checkpoints == ["turn-1"] and report.stopped
    assert report.play_frames == 75
    assert report.max_queued_ms < 700  # a burst would have queued all 1500 ms


async def test_a_pending_checkpoint_name_is_refused_and_the_first_still_plays() -> None:
    """checkpoint() with a name still pending raises LocalProtocolError; the pending one
    keeps its own outcome (played)."""
    outcomes: list[CheckpointOutcome] = []
    errors: list[str] = []

    async def handler(session: StreamSession) -> None:
        await session.play(tone(500, 0.4, 8000))
        first = asyncio.create_task(session.checkpoint("turn"))
        await asyncio.sleep(0)  # the first is queued and pending
        try:
            await session.checkpoint("turn")
        except LocalProtocolError as exc:
            errors.append(str(exc))
        outcomes.append(await first)
        await session.stop()

    async with serve(handler, "127.0.0.1", 0) as server:
        report = await MediaPeer(server.url, seconds=5.0, hangup_when_done=False).wait_closed()
    assert outcomes == [CheckpointOutcome.PLAYED] and len(errors) == 1
    assert report.played_checkpoints == ["turn"]


async def test_clear_during_playback_stops_audio_and_voids_checkpoints() -> None:
    """A barge-in: play() ends early, the pending checkpoint is CLEARED, nothing more plays."""
    results: dict[str, object] = {}

    async def handler(session: StreamSession) -> None:
        first = asyncio.create_task(session.play(speech_like(0.4, 8000)))
        cp = asyncio.create_task(session.checkpoint("greeting"))
        long_play = asyncio.create_task(session.play(speech_like(3.0, 8000)))
        await asyncio.sleep(0.5)
        summary = await session.clear()
        results["summary"] = summary
        results["played_ms"] = await long_play
        results["first"] = await first
        results["cp"] = await cp
        results["after"] = await session.play(tone(500, 0.2, 8000))
        await session.stop()

    async with serve(handler, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, seconds=10.0, hangup_when_done=False)
        report = await peer.wait_closed()
    assert results["cp"] in (CheckpointOutcome.PLAYED, CheckpointOutcome.CLEARED)
    played_ms = results["played_ms"]
    assert isinstance(played_ms, float) and played_ms < 3000
    assert report.clears == 1 and report.stopped
    assert results["after"] == 200.0
    assert report.heard_ms < 400 + 3000


async def test_checkpoint_closed_when_the_caller_hangs_up_mid_play() -> None:
    """An abrupt close mid-play resolves the checkpoint as CLOSED and ends the handler."""
    outcomes: list[CheckpointOutcome] = []
    done = asyncio.Event()

    async def handler(session: StreamSession) -> None:
        play = asyncio.create_task(session.play(speech_like(3.0, 8000)))
        await asyncio.sleep(0)  # let play() take the send lock first
        outcomes.append(await session.checkpoint("bye", timeout=10))
        await play
        done.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, seconds=10.0, hangup_when_done=False)
        peer.start()
        await asyncio.sleep(0.4)
        peer.abort()
        await peer.wait_closed()
        async with asyncio.timeout(5):
            await done.wait()
    assert outcomes == [CheckpointOutcome.CLOSED]


async def test_checkpoint_times_out_when_never_acknowledged() -> None:
    """A one-way stream never acknowledges: the checkpoint ends TIMED_OUT, not hanging."""
    outcomes: list[CheckpointOutcome] = []

    async def handler(session: StreamSession) -> None:
        await session.play(tone(400, 0.1, 8000))
        outcomes.append(await session.checkpoint("x", timeout=0.3))
        await session.stop()

    async with serve(handler, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, seconds=3.0, bidirectional=False, hangup_when_done=False)
        await peer.wait_closed()
    assert outcomes == [CheckpointOutcome.TIMED_OUT]


async def test_clear_without_cleared_ack_falls_back() -> None:
    """If clearedAudio never comes, clear(wait=True) returns after its fallback timeout."""

    returned = asyncio.Event()

    async def handler(session: StreamSession) -> None:
        await session.clear(wait=True)
        returned.set()
        await session.stop()

    pacing = Pacing(clear_ack_timeout=0.2)
    async with (
        serve(handler, "127.0.0.1", 0, pacing=pacing) as server,
        connect(server.url) as ws,  # a raw client that never answers clearAudio
    ):
        if True:
            await ws.send(
                json.dumps(
                    {
                        "event": "start",
                        "start": {
                            "callId": "c",
                            "streamId": "s",
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                        },
                    }
                )
            )
            frames = [await ws.recv(), await ws.recv()]
    assert returned.is_set()
    assert [json.loads(f)["event"] for f in frames] == ["clearAudio", "stop"]


async def test_hostile_clients_do_not_affect_a_healthy_neighbour() -> None:
    """Garbage, binary, huge and start-less clients are refused or closed; the call goes on."""
    healthy: list[int] = []

    async def handler(session: StreamSession) -> None:
        count = 0
        async for _ in session.audio():
            count += 1
        healthy.append(count)

    limits = Limits(max_message_bytes=64 * 1024, start_timeout=0.3)
    async with serve(handler, "127.0.0.1", 0, limits=limits) as server:
        peer = MediaPeer(server.url, audio=speech_like(1.0), seconds=1.0)
        peer.start()

        async def garbage() -> None:
            async with connect(server.url) as ws:
                for frame in ["{oops", "[]", '{"event":"media"}', "\x00" * 10]:
                    await ws.send(frame)
                await ws.send(b"\x01\x02")
                await ws.send(json.dumps({"event": "start", "start": {"streamId": "x"}}))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 2)  # closed for not sending a valid start

        async def huge() -> None:
            async with connect(server.url, max_size=None) as ws:
                await ws.send("x" * (200 * 1024))
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 2)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009

        async def raw_tcp() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            assert await reader.read(100) == b""  # not HTTP: closed without a response
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(garbage(), huge(), raw_tcp())
        report = await peer.wait_closed()
        await asyncio.sleep(0.05)
        stats = server.stats
    assert healthy == [50] and report.malformed == 0
    assert stats.start_timeouts == 1 and stats.oversized_messages == 1
    assert stats.malformed_frames >= 6 and stats.handshake_failures >= 1


async def test_handler_exception_closes_only_its_own_session() -> None:
    """A handler that raises is logged and its stream closed with 1011; the other is fine."""
    finished: list[str] = []

    async def handler(session: StreamSession) -> None:
        if session.call_id == "bad-call":
            raise RuntimeError("boom")
        async for _ in session.audio():
            pass
        finished.append(session.call_id)

    async with serve(handler, "127.0.0.1", 0) as server:
        bad = MediaPeer(server.url, call_id="bad-call", seconds=2.0)
        good = MediaPeer(server.url, call_id="good-call", seconds=0.5)
        bad_report, good_report = await asyncio.gather(bad.wait_closed(), good.wait_closed())
        await asyncio.sleep(0.05)
    assert bad_report.close_code == 1011 and good_report.close_code == 1000
    assert finished == ["good-call"] and server.stats.handler_errors == 1


@pytest.mark.parametrize(
    ("suffix", "status"),
    [("", 401), ("?token=wrong", 403), ("/wrong", 403), ("?token=s3cret", 101), ("/s3cret", 101)],
)
async def test_token_is_required_at_the_handshake(suffix: str, status: int) -> None:
    """Without the secret in the query or last path segment, 401/403 before any frame."""

    async def handler(session: StreamSession) -> None:
        await session.stop()

    async with serve(handler, "127.0.0.1", 0, path="/media", token="s3cret") as server:
        peer = MediaPeer(server.url + suffix, seconds=0.2)
        report = await peer.wait_closed()
    if status == 101:
        assert report.rejected_status is None and report.stopped
    else:
        assert report.rejected_status == status and report.frames_sent == 0
        assert server.stats.rejected_auth == 1


async def test_signed_per_call_urls() -> None:
    """A signed URL admits its own call only, and only until it expires."""
    seen: list[str] = []

    async def handler(session: StreamSession) -> None:
        seen.append(session.call_id)
        await session.stop()

    async with serve(handler, "127.0.0.1", 0, token="k") as server:
        good = sign_stream_url(server.url + "?tenant=1", "k", "call-1")
        assert "tenant=1" in good
        ok = await MediaPeer(good, call_id="call-1", seconds=0.2).wait_closed()
        other = await MediaPeer(good, call_id="call-2", seconds=0.2).wait_closed()
        expired = sign_stream_url(server.url, "k", "call-3", ttl=-10)
        old = await MediaPeer(expired, call_id="call-3", seconds=0.2).wait_closed()
    assert seen == ["call-1"] and ok.stopped
    assert other.close_code == 1008 and old.rejected_status == 403


async def test_max_sessions_refuses_with_503() -> None:
    """Connections beyond max_sessions are refused before the WebSocket opens."""
    gate = asyncio.Event()

    async def handler(session: StreamSession) -> None:
        await gate.wait()

    async with serve(handler, "127.0.0.1", 0, limits=Limits(max_sessions=1)) as server:
        first = MediaPeer(server.url, seconds=3.0)
        first.start()
        await server.wait_for_call(first.call_id, timeout=5)
        second = await MediaPeer(server.url, seconds=0.2).wait_closed()
        gate.set()
    assert second.rejected_status == 503 and server.stats.rejected_limit == 1


async def test_slow_application_drops_oldest_audio_and_counts_it() -> None:
    """An application that stops reading loses the oldest audio, counted; memory is bounded."""
    stats: list[int] = []

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()
        events = [e async for e in session]
        stats.append(session.stats.dropped_frames)
        stats.append(sum(1 for e in events if isinstance(e, AudioReceived)))

    limits = Limits(inbound_queue_ms=200)
    async with serve(handler, "127.0.0.1", 0, limits=limits) as server:
        await MediaPeer(server.url, seconds=1.0, speed=4.0).wait_closed()
        await asyncio.sleep(0.1)
    dropped, kept = stats
    assert kept == 10 and dropped == 40 and server.stats.dropped_frames == 40


async def test_wait_for_session_before_and_after_start() -> None:
    """wait_for_session finds a stream whether start came before or after the call."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        early = MediaPeer(server.url, seconds=1.0)
        waiter = asyncio.create_task(server.wait_for_session(early.stream_id, timeout=5))
        early.start()
        assert (await waiter).stream_id == early.stream_id
        assert (await server.wait_for_session(early.stream_id)).call_id == early.call_id
        assert (await server.wait_for_call(early.call_id)).stream_id == early.stream_id
        with pytest.raises(TimeoutError):
            await server.wait_for_session("never", timeout=0.05)
        await early.wait_closed()


async def test_graceful_shutdown_closes_sessions_with_1001() -> None:
    """Shutdown with calls in flight closes each with 1001 within the grace period."""
    started = asyncio.Event()

    async def handler(session: StreamSession) -> None:
        started.set()
        await session.wait_closed()

    server: MediaServer = await serve(handler, "127.0.0.1", 0)
    peers = [MediaPeer(server.url, seconds=30.0) for _ in range(3)]
    for peer in peers:
        peer.start()
    await started.wait()
    for peer in peers:
        await server.wait_for_call(peer.call_id)
    await server.close(grace=0.1)
    reports = await asyncio.gather(*(p.wait_closed() for p in peers))
    assert [r.close_code for r in reports] == [1001, 1001, 1001]
    assert server.stats.active_connections == 0 and not server.sessions
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_path_mismatch_is_404() -> None:
    """Only the configured path is served."""

    async def handler(session: StreamSession) -> None:
        await session.stop()

    async with serve(handler, "127.0.0.1", 0, path="/media") as server:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{server.port}/other"):
                pass
    assert info.value.response.status_code == 404


async def test_cleared_audio_event_is_delivered() -> None:
    """clearedAudio reaches the application as AudioCleared after a clear()."""
    events: list[Event] = []

    async def handler(session: StreamSession) -> None:
        await session.play(tone(300, 0.3, 8000))
        await session.clear()
        await session.stop()
        events.extend([e async for e in session])
        with pytest.raises(StreamClosedError):
            await session.next_event()  # closed and drained

    async with serve(handler, "127.0.0.1", 0) as server:
        await MediaPeer(server.url, seconds=5.0, hangup_when_done=False).wait_closed()
        await asyncio.sleep(0.05)
    assert any(isinstance(e, AudioCleared) for e in events)


async def test_recording_puts_both_sides_on_one_timeline() -> None:
    """The recorder keeps the caller and the agent as heard, cut at a barge-in."""
    recorders = []

    async def handler(session: StreamSession) -> None:
        recorders.append(session.record())
        await session.play(tone(600, 1.0, 8000))
        await session.clear()
        await session.stop()

    async with serve(handler, "127.0.0.1", 0, pacing=Pacing(lead_ms=100)) as server:
        await MediaPeer(
            server.url, audio=tone(300, 3.0), seconds=3.0, hangup_when_done=False
        ).wait_closed()
    [recorder] = recorders
    assert recorder.sample_rate == 8000 and len(recorder.caller_pcm) > 0
    # All of the 1 s utterance was handed over before the clear, but the clear came
    # right after the last frame, so the agent track ends where the clear cut it.
    assert 0 < len(recorder.agent_pcm) < 2 * 8000 * 1.0
    assert len(recorder.stereo()) >= 2 * len(recorder.agent_pcm)


async def test_started_stream_binds_to_its_media_session() -> None:
    """A REST-started stream's session is found by stream id through StartedStream.session."""
    from vobiz_async.models import StartedStream, StartStreamRequest

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, seconds=0.5)
        started = StartedStream(
            stream_id=peer.stream_id,
            call_uuid=peer.call_id,
            request=StartStreamRequest.create(service_url=server.url),
        )
        lookup = asyncio.create_task(started.session(server, timeout=5))
        peer.start()
        session = await lookup
        assert session.call_id == peer.call_id
        await peer.wait_closed()


START = json.dumps(
    {
        "event": "start",
        "start": {
            "callId": "c1",
            "streamId": "s1",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
    }
)
MEDIA = json.dumps({"event": "media", "media": {"payload": "//////////8="}})


async def _collect_audio_server(into: list[Event]) -> MediaServer:
    async def handler(session: StreamSession) -> None:
        await collect(session, into)

    return await serve(handler, "127.0.0.1", 0)


async def test_fragmented_messages_and_pings_are_handled() -> None:
    """A message sent in fragments is reassembled; a ping gets its pong."""
    events: list[Event] = []
    server = await _collect_audio_server(events)
    async with connect(server.url) as ws:
        await ws.send(START)
        await ws.send(iter([MEDIA[:10], MEDIA[10:30], MEDIA[30:]]))  # three fragments
        pong = await ws.ping(b"hi")
        async with asyncio.timeout(5):
            await pong
        await ws.send(MEDIA)
    await server.close(grace=1)
    audio = [e for e in events if isinstance(e, AudioReceived)]
    assert len(audio) == 2 and audio[0].pcm == audio[1].pcm == bytes(16)


async def test_frames_split_across_tcp_reads_are_reassembled() -> None:
    """Frames trickling in one byte at a time parse exactly as whole ones do."""

    events: list[Event] = []
    server = await _collect_audio_server(events)
    _, writer = await raw_websocket(server.port)
    wire = b"".join(text_frame(text) for text in (START, MEDIA, MEDIA + " " * 200, MEDIA))
    for i in range(len(wire)):
        writer.write(wire[i : i + 1])
        if i % 97 == 0:
            await writer.drain()
            await asyncio.sleep(0)
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await writer.wait_closed()
    await server.close(grace=1)
    assert sum(isinstance(e, AudioReceived) for e in events) == 3


async def test_unmasked_client_frames_fail_the_connection() -> None:
    """RFC 6455: a client frame without a mask closes the connection with 1002."""

    server = await _collect_audio_server([])
    reader, writer = await raw_websocket(server.port)
    writer.write(text_frame(START, mask=False))
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(64), 5)
    assert reply[0] == 0x88 and int.from_bytes(reply[2:4], "big") == 1002  # close, 1002
    writer.close()
    await writer.wait_closed()
    await server.close(grace=0)


async def test_source_address_allowlist() -> None:
    """allow_from admits listed networks and drops everyone else before the handshake."""
    from vobiz_async.server import VOBIZ_MEDIA_NETWORKS

    async def handler(session: StreamSession) -> None:
        await session.stop()

    async with serve(handler, "127.0.0.1", 0, allow_from=["127.0.0.0/8"]) as open_server:
        assert (await MediaPeer(open_server.url, seconds=0.2).wait_closed()).stopped
    async with serve(handler, "127.0.0.1", 0, allow_from=VOBIZ_MEDIA_NETWORKS) as closed_server:
        report = await MediaPeer(closed_server.url, seconds=0.2).wait_closed()
        await asyncio.sleep(0.05)
    assert not report.stopped and report.frames_sent == 0
    assert closed_server.stats.rejected_ip == 1 and closed_server.stats.sessions == 0


async def test_immediate_shutdown_with_open_sessions() -> None:
    """close(grace=0) with calls in flight closes them at once, cleanly (no warnings)."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    server = await serve(handler, "127.0.0.1", 0)
    peer = MediaPeer(server.url, seconds=30)
    peer.start()
    await server.wait_for_call(peer.call_id)
    await server.close(grace=0)
    report = await asyncio.wait_for(peer.wait_closed(), 10)
    assert report.close_code == 1001 and not server.sessions
