"""Sessions registered in a real redis-server and controlled from another Cluster or process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests._redis import redis_server
from vobiz_async.cluster import Cluster, ClusterConfig, RemoteSession
from vobiz_async.errors import SessionGoneError, ValidationError, VobizError
from vobiz_async.events import (
    AudioCleared,
    AudioReceived,
    CheckpointOutcome,
    CheckpointVoided,
    DtmfReceived,
    Event,
    PlaybackCheckpointReached,
)
from vobiz_async.server import StreamSession, serve
from vobiz_async.testing import FakeVobiz, MediaPeer, tone

ROOT = Path(__file__).parent.parent
SHORT = ClusterConfig(lease=1.0)

WORKER = """
import asyncio, sys
from vobiz_async.cluster import Cluster, ClusterConfig
from vobiz_async.server import StreamSession, serve

async def idle(session: StreamSession) -> None:
    async for _ in session:
        pass

async def main() -> None:
    config = ClusterConfig(lease=float(sys.argv[2]))
    async with Cluster(sys.argv[1], config=config) as cluster:
        async with serve(idle, "127.0.0.1", 0, cluster=cluster) as server:
            print("listening on", server.url, cluster.worker_id, flush=True)
            await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A fresh redis-server for the test (skipped when none is installed)."""
    with redis_server(tmp_path) as url:
        yield url


async def idle(session: StreamSession) -> None:
    """A handler that only reads: the remote side drives the call."""
    async for _ in session:
        pass


async def collect(remote: RemoteSession, into: list[Event]) -> None:
    async for event in remote:
        into.append(event)


async def wait_sent(remote: RemoteSession, before: float) -> None:
    """Until the worker reports more than ``before`` ms of audio on the wire (bounded)."""
    for _ in range(200):
        if (await remote.stats()).sent_ms > before:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no audio was sent")


async def test_second_cluster_controls_a_call_end_to_end(redis_url: str) -> None:
    """Another Cluster finds the call, plays, checkpoints, clears, reads events and stops."""
    async with (
        Cluster(redis_url) as worker,
        Cluster(redis_url) as control,
        serve(idle, "127.0.0.1", 0, cluster=worker) as server,
    ):
        peer = MediaPeer(server.url, seconds=60)
        peer.start()
        remote = await control.session(peer.stream_id, timeout=10)
        assert (remote.call_id, remote.worker) == (peer.call_id, worker.worker_id)
        by_call = await control.session_for_call(peer.call_id, timeout=10)
        assert by_call.stream_id == peer.stream_id
        [info] = await control.sessions()
        assert (info.stream_id, info.provider) == (peer.stream_id, "vobiz")
        events: list[Event] = []
        reader = asyncio.create_task(collect(remote, events))

        assert await remote.play(tone(440, 0.3, 8000), 8000) == pytest.approx(300)
        assert await remote.checkpoint("prompt", timeout=10) is CheckpointOutcome.PLAYED
        await peer.send_dtmf("7")

        before = (await remote.stats()).sent_ms
        long_play = asyncio.create_task(remote.play(tone(330, 3.0, 8000), 8000))
        await wait_sent(remote, before)
        summary = await remote.clear()
        assert summary.utterance_sent_ms > 0 and summary.voided == ()
        assert await long_play < 3000
        assert await remote.checkpoint("after-clear") is CheckpointOutcome.CLEARED
        stats = await remote.stats()
        assert stats.frames_out >= 15 and stats.checkpoint_latency_ms

        await remote.stop()
        report = await peer.wait_closed()
        await asyncio.wait_for(reader, 10)
        assert remote.closed and remote.close_code == report.close_code
        with pytest.raises(SessionGoneError) as gone:
            await remote.play(tone(440, 0.1, 8000), 8000)
        assert gone.value.reason == "ended" and gone.value.stream_id == peer.stream_id
        assert await remote.checkpoint("late") is CheckpointOutcome.CLOSED
        assert await control.sessions() == []
        counted = worker.stats
        assert counted.registered == 1 and counted.commands >= 8
        assert counted.command_errors == 0  # commands after the end never reached it
        assert counted.dropped_events == 0 and counted.events_published >= 4
    kinds = [type(event) for event in events]
    assert PlaybackCheckpointReached(name="prompt") in events
    assert any(isinstance(e, DtmfReceived) and e.digit == "7" for e in events)
    assert AudioCleared in kinds and AudioReceived not in kinds
    assert CheckpointVoided("after-clear", CheckpointOutcome.CLEARED) in events
    assert remote.missed_events == 0


async def test_started_stream_session_binds_through_a_cluster(redis_url: str) -> None:
    """StartedStream.session(cluster) returns the remote session of a REST-started stream."""
    async with (
        Cluster(redis_url) as worker,
        Cluster(redis_url) as control,
        FakeVobiz() as fake,
        serve(idle, "127.0.0.1", 0, cluster=worker) as server,
    ):
        call = fake.call(seconds=30.0)
        async with fake.client() as client:
            started = await client.streams.start(
                call.call_uuid,
                server.url,
                bidirectional=True,
                content_type="audio/x-mulaw;rate=8000",
            )
            remote = await started.session(control, timeout=10)
            assert isinstance(remote, RemoteSession)
            assert remote.stream_id == started.stream_id
            await remote.stop()
            assert not server.sessions


async def test_forwarded_audio_is_opt_in_bounded_and_gaps_are_counted(redis_url: str) -> None:
    """With forward_audio, inbound frames reach remote readers; the stream stays trimmed
    and a reader that comes late counts what the trim took instead of missing it silently."""
    config = ClusterConfig(forward_audio=True, max_stream_events=20)
    async with (
        Cluster(redis_url, config=config) as worker,
        Cluster(redis_url) as control,
        serve(idle, "127.0.0.1", 0, cluster=worker) as server,
    ):
        peer = MediaPeer(server.url, audio=tone(500, 2.0, 8000), seconds=2.0)
        peer.start()
        remote = await control.session(peer.stream_id, timeout=10)
        live = [e async for e in remote]
        live_missed = remote.missed_events
        report = await peer.wait_closed()
        late = [e async for e in remote.events(from_start=True)]
        length = await control.redis.xlen(control._key("events", peer.stream_id))
    frames = [e for e in live if isinstance(e, AudioReceived)]
    assert frames and all(f.sample_rate == 8000 and len(f.pcm) == 320 for f in frames)
    assert len(frames) + live_missed == report.frames_sent - (remote._next_seq)
    assert length <= 2 * config.max_stream_events + 1  # MAXLEN ~ trims in whole nodes
    assert len(late) < report.frames_sent and remote.missed_events > live_missed
    assert len(late) + remote.missed_events - live_missed == report.frames_sent


async def test_unknown_session_times_out_and_oversized_audio_is_refused(redis_url: str) -> None:
    """Waiting for a stream nobody registers ends in TimeoutError; big audio is refused."""
    async with Cluster(redis_url, config=ClusterConfig(max_audio_bytes=1000)) as control:
        with pytest.raises(TimeoutError):
            await control.session("no-such-stream", timeout=0.3)
        assert await control.stop_session("no-such-stream") is False
        async with serve(idle, "127.0.0.1", 0, cluster=control) as server:
            peer = MediaPeer(server.url, seconds=60)
            peer.start()
            remote = await control.session(peer.stream_id, timeout=10)
            with pytest.raises(ValidationError) as refused:
                await remote.play(b"\0" * 1002, 8000)
            assert refused.value.field == "audio"
            assert await control.stop_session(peer.stream_id) is True
            await peer.wait_closed()
    with pytest.raises(ValidationError):
        ClusterConfig(lease=0)
    with pytest.raises(ValidationError):
        Cluster("http://not-redis")


async def test_a_session_registered_late_is_awaited(redis_url: str) -> None:
    """session() called before the stream connects returns once it registers."""
    async with (
        Cluster(redis_url) as worker,
        Cluster(redis_url) as control,
        serve(idle, "127.0.0.1", 0, cluster=worker) as server,
    ):
        peer = MediaPeer(server.url, seconds=60)
        waiting = asyncio.create_task(control.session(peer.stream_id, timeout=10))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        peer.start()
        remote = await waiting
        assert remote.call_id == peer.call_id
        await remote.stop()


async def test_a_second_start_on_one_socket_keeps_its_registration(redis_url: str) -> None:
    """A repeated start on one socket is ignored (reconnects are new sockets, spec 3.1):
    the session keeps its stream id in the cluster and stays controllable."""
    async with (
        Cluster(redis_url) as worker,
        Cluster(redis_url) as control,
        serve(idle, "127.0.0.1", 0, cluster=worker) as server,
    ):
        peer = MediaPeer(server.url, seconds=60)
        peer.start()
        old = await control.session(peer.stream_id, timeout=10)
        start = peer.proto.send_start(
            call_id=peer.call_id, stream_id="rebound-1", media_format=peer.format
        )
        await peer.send_raw(start)
        await asyncio.sleep(0.3)
        assert server.stats.repeated_starts == 1
        assert [s.stream_id for s in await control.sessions()] == [peer.stream_id]
        assert (await control.session_for_call(peer.call_id)).stream_id == peer.stream_id
        await old.stop()
        await peer.wait_closed()


async def test_a_worker_without_redis_fails_to_start() -> None:
    """serve(cluster=...) with Redis unreachable raises VobizError before binding."""
    async with Cluster("redis://127.0.0.1:1/0") as cluster:
        server = serve(idle, "127.0.0.1", 0, cluster=cluster)
        with pytest.raises(VobizError, match="cannot reach Redis"):
            await server.start()
        assert server._listener is None


# --------------------------------------------------------------- real processes
async def _spawn(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Start a worker process; returns it and the words of its ``listening on`` line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    words = line.decode().split()
    assert words[:2] == ["listening", "on"], line
    return proc, words[2:]


async def _cli(*args: str) -> list[str]:
    """Run ``vobiz-async ARGS`` and return its stdout lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vobiz_async", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    return out.decode().splitlines()


@pytest.fixture
async def two_workers(
    redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, list[str], list[str], asyncio.subprocess.Process]]:
    """A short-lease worker script and a ``vobiz-async serve --cluster`` worker."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    short, short_words = await _spawn(sys.executable, str(script), redis_url, str(SHORT.lease))
    cli, cli_words = await _spawn(
        sys.executable, "-m", "vobiz_async", "serve", "--port", "0", "--cluster", redis_url
    )
    try:
        yield redis_url, short_words, cli_words, short
    finally:
        for proc in (short, cli):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def test_another_process_controls_a_call_and_a_killed_worker_is_reported(
    two_workers: tuple[str, list[str], list[str], asyncio.subprocess.Process],
) -> None:
    """Two worker processes; this process drives a call on one, lists and stops one on the
    other with the CLI, and SIGKILL of the first ends its remote session with a typed error."""
    redis_url, (short_url, short_worker), (cli_url,), short_proc = two_workers
    on_short = MediaPeer(short_url, seconds=60)
    on_cli = MediaPeer(cli_url, seconds=60)
    on_short.start()
    on_cli.start()
    async with Cluster(redis_url, config=SHORT) as control:
        remote = await control.session(on_short.stream_id, timeout=10)
        assert remote.worker == short_worker
        assert await remote.play(tone(440, 0.2, 8000), 8000) == pytest.approx(200)
        assert await remote.checkpoint("hello", timeout=10) is CheckpointOutcome.PLAYED
        await control.session(on_cli.stream_id, timeout=10)

        listed = [
            json.loads(line) for line in await _cli("sessions", "list", "--cluster", redis_url)
        ]
        assert {row["stream_id"] for row in listed} == {on_short.stream_id, on_cli.stream_id}
        assert {row["call_id"] for row in listed} == {on_short.call_id, on_cli.call_id}
        assert len({row["worker"] for row in listed}) == 2
        assert all(row["provider"] == "vobiz" and row["started_at"] for row in listed)
        stop = ["sessions", "stop", on_cli.stream_id, "--cluster", redis_url]
        assert json.loads((await _cli(*stop))[0]) == {
            "stream_id": on_cli.stream_id,
            "stopped": True,
        }
        assert (await on_cli.wait_closed()).close_code == 1000
        assert json.loads((await _cli(*stop))[0])["stopped"] is False

        events = asyncio.create_task(collect(remote, []))
        before = (await remote.stats()).sent_ms
        playing = asyncio.create_task(remote.play(tone(300, 30.0, 8000), 8000))
        await wait_sent(remote, before)
        short_proc.kill()
        await short_proc.wait()
        async with asyncio.timeout(30):  # a hang guard; the lease is 1 s
            for task in (playing, events):
                with pytest.raises(SessionGoneError) as gone:
                    await task
                assert gone.value.reason == "lease-expired"
            with pytest.raises(SessionGoneError):
                await remote.stop()
        assert [s.stream_id for s in await control.sessions()] == []
    await on_short.wait_closed()
