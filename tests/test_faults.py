"""Faults through real sockets: nothing hangs, nothing leaks, everything pending resolves."""

from __future__ import annotations

import asyncio
import json
import socket

from tests._wire import raw_websocket, text_frame
from vobiz_async.events import AudioReceived, CheckpointOutcome
from vobiz_async.server import Limits, Pacing, StreamSession, serve
from vobiz_async.testing import MediaPeer, speech_like, tone

START = json.dumps(
    {
        "event": "start",
        "start": {
            "callId": "c",
            "streamId": "s",
            "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000},
        },
    }
)


def other_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def test_a_peer_that_stops_reading_cannot_grow_our_memory() -> None:
    """With the peer not reading, sends stop at the write-buffer limit and the pacer
    goes quiet (no busy loop while paused); when the peer goes, play() returns and the
    checkpoint resolves CLOSED."""
    sessions: list[StreamSession] = []
    outcomes: list[CheckpointOutcome] = []
    played: list[float] = []
    finished = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        [conn] = server._listener.connections  # type: ignore[union-attr]
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        played.append(await session.play(tone(300, 30.0, 16000), 16000))
        outcomes.append(await session.checkpoint("never"))
        finished.set()

    limits = Limits(write_buffer_bytes=8 * 1024, idle_timeout=None)
    pacing = Pacing(lead_ms=3_600_000)  # no pacing: push as fast as the socket takes it
    async with serve(agent, "127.0.0.1", 0, limits=limits, pacing=pacing) as server:
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _, writer = await raw_websocket(server.port, sock=raw)
        writer.write(text_frame(START))
        await writer.drain()
        await asyncio.sleep(1.0)  # the agent pushes; the peer reads nothing
        [session] = sessions
        [conn] = server._listener.connections  # type: ignore[union-attr]
        assert conn.write_paused
        pacer = server._pacer
        runs = 0
        run = pacer._run

        def counted() -> None:
            nonlocal runs
            runs += 1
            run()

        pacer._run = counted  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        assert runs <= 2  # it spun thousands of times before: one run per loop turn
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() < 8 * 1024 + 2048
        assert session.stats.sent_ms < 30_000 / 3 and not played  # play() is held back
        writer.transport.abort()
        async with asyncio.timeout(5):
            await session.wait_closed()
            await finished.wait()
    assert played[0] < 30_000 and outcomes == [CheckpointOutcome.CLOSED]


async def test_a_stalled_peer_is_closed_by_the_idle_timeout() -> None:
    """When the media stops arriving, the idle timeout ends the session (1001)."""
    ended: list[int | None] = []

    async def agent(session: StreamSession) -> None:
        await session.wait_closed()
        ended.append(session.close_code)

    async with serve(agent, "127.0.0.1", 0, limits=Limits(idle_timeout=0.4)) as server:
        peer = MediaPeer(server.url, seconds=30, hangup_when_done=False)
        peer.start()
        await peer.started.wait()
        peer.stall(60)
        report = await asyncio.wait_for(peer.wait_closed(), 10)
        await asyncio.sleep(0.05)
        assert server.stats.idle_timeouts == 1
    assert report.close_code == 1001 and ended


async def test_a_peer_faster_than_real_time_loses_nothing_when_the_app_keeps_up() -> None:
    """At 4x real time every frame is delivered, in order, with no sequence gaps."""
    sequence: list[int] = []

    async def agent(session: StreamSession) -> None:
        async for event in session:
            if isinstance(event, AudioReceived) and event.sequence_number is not None:
                sequence.append(event.sequence_number)

    async with serve(agent, "127.0.0.1", 0) as server:
        report = await MediaPeer(
            server.url, audio=speech_like(2.0), seconds=2.0, speed=4.0
        ).wait_closed()
        await asyncio.sleep(0.05)
    assert len(sequence) == report.frames_sent == 100
    assert sequence == list(range(1, 101))


async def test_shutdown_with_calls_in_flight_leaves_nothing_behind() -> None:
    """Graceful shutdown mid-call: every session 1001, every task and socket gone."""
    baseline = len(other_tasks())
    playing = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        playing.set()
        await session.play(speech_like(20.0, 8000), 8000)
        await session.checkpoint("end")

    server = await serve(agent, "127.0.0.1", 0)
    peers = [MediaPeer(server.url, seconds=30, hangup_when_done=False) for _ in range(5)]
    for peer in peers:
        peer.start()
    await playing.wait()
    for peer in peers:
        await server.wait_for_call(peer.call_id)
    await server.close(grace=0.2)
    reports = await asyncio.gather(*(p.wait_closed() for p in peers))
    assert {r.close_code for r in reports} == {1001}
    assert server._listener is not None and not server._listener.connections
    assert not server._tasks and not server.sessions
    await asyncio.sleep(0.05)
    assert len(other_tasks()) <= baseline
