"""Issue 11's media-plane findings, each replayed on the wire against a real server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import resource
import signal
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
from websockets.frames import Frame, Opcode

from tests._wire import UPGRADE, raw_websocket, text_frame
from vobiz_async import SessionTimeoutError, VobizError
from vobiz_async.codec import pcm16_to_ulaw, read_wav
from vobiz_async.events import UnknownEvent
from vobiz_async.recording import CallRecorder
from vobiz_async.server import Limits, StreamSession, default_max_sessions, serve
from vobiz_async.testing import MediaPeer, tone
from vobiz_async.tokens import (
    DEFAULT_STREAM_TOKEN_TTL,
    sign_stream_url,
    sign_token,
    verify_stream_token,
)

ULAW_FRAME = pcm16_to_ulaw(tone(440, 0.02, 8000))  # 160 bytes, 20 ms


def start(stream_id: str = "s", call_id: str = "c", rate: int = 8000, enc: str = "") -> str:
    """A nested ``start`` frame (mu-law 8 kHz unless told)."""
    encoding = enc or ("audio/x-mulaw" if rate == 8000 else "audio/x-l16")
    fmt = {"encoding": encoding, "sampleRate": rate}
    return json.dumps(
        {"event": "start", "start": {"callId": call_id, "streamId": stream_id, "mediaFormat": fmt}}
    )


def media(payload: bytes, seq: int, stream_id: str = "s", rate: int | None = None) -> str:
    """A ``media`` frame carrying ``payload`` (optionally with a per-frame sample rate)."""
    body: dict[str, object] = {
        "track": "inbound",
        "timestamp": str(seq * 20),
        "chunk": seq,
        "payload": base64.b64encode(payload).decode(),
    }
    if rate is not None:
        body["sampleRate"] = rate
    return json.dumps(
        {"event": "media", "sequenceNumber": seq, "streamId": stream_id, "media": body}
    )


async def until(predicate: object, tries: int = 200) -> bool:
    """Poll ``predicate()`` up to ``tries`` times, 20 ms apart (a bounded loop)."""
    assert callable(predicate)
    for _ in range(tries):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


# ---------------------------------------------------------------- 11.1 recordings
async def test_serve_record_names_files_itself_inside_dir(tmp_path: Path) -> None:
    """`serve --record DIR`: hostile stream ids never escape DIR, never overwrite, never
    crash the handler; every call still prints its summary line with the peer's ids."""
    record_dir = tmp_path / "rec"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--port",
        "0",
        "--record",
        str(record_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    ids = ["../escaped", "../../outside/x", str(tmp_path / "abs"), "a\x00b", "x" * 300]
    ids += ["dup", "dup"]
    summaries = []
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode().strip()
            port = int(line.rsplit(":", 1)[1].split("/")[0])
            for stream_id in ids:
                _reader, writer = await raw_websocket(port)
                frames = [start(stream_id, "call-1")] + [
                    media(ULAW_FRAME, n, stream_id) for n in range(1, 11)
                ]
                writer.write(b"".join(text_frame(f) for f in frames))
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.close()
                summaries.append(json.loads(await proc.stdout.readline()))
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert [s["stream_id"] for s in summaries] == ids
    assert "Traceback" not in err.decode()
    _check_recordings(tmp_path, summaries, len(ids))


def _check_recordings(tmp_path: Path, summaries: list[dict[str, str]], count: int) -> None:
    """One file per call, all directly in tmp_path/rec, each with the ids in its metadata."""
    record_dir = tmp_path / "rec"
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == count and all(p.parent == record_dir for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]
    for summary in summaries:
        path = Path(summary["recording"])
        assert path.parent == record_dir and len(path.name) < 100
        meta = path.read_bytes()
        assert b"LIST" in meta and json.dumps(summary["stream_id"])[1:20].encode() in meta
        assert read_wav(path).duration > 0.1


# ------------------------------------------------------- 11.2 bounded per-frame work
async def test_oversized_media_frame_is_malformed_and_skipped() -> None:
    """A media frame carrying more audio than Limits.max_audio_frame_bytes is counted as
    malformed and never reaches the queue or the recorder (no unbounded work)."""
    seen: list[StreamSession] = []

    async def handler(session: StreamSession) -> None:
        seen.append(session)
        session.record()
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, limits=Limits(max_audio_frame_bytes=4096)) as server:
        _reader, writer = await raw_websocket(server.port)
        big = bytes(150_000)  # one frame claiming 8 kHz on a 16 kHz stream
        frames = [start(rate=16000), media(bytes(640), 1), media(big, 2, rate=8000)]
        frames.append(media(bytes(4096), 3))
        writer.write(b"".join(text_frame(f) for f in frames))
        await writer.drain()
        assert await until(lambda: seen and seen[0].stats.frames_in >= 4)
        session = seen[0]
        stats = session.stats
        assert stats.malformed_reasons["oversized-audio"] == 1 and stats.media_in == 2
        recorder = session.recorder
        assert recorder is not None and len(recorder.caller_pcm) == 640 + 4096
        writer.close()


# ---------------------------------------------------------- 11.3 peers that never read
async def test_peer_that_never_reads_is_paused_then_dropped() -> None:
    """Pings from a peer that never reads our pongs stop being read once the write buffer
    is full, and the connection is dropped after write_stall_timeout (memory bounded)."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    limits = Limits(write_buffer_bytes=8192, write_stall_timeout=0.3, idle_timeout=None)
    async with serve(handler, "127.0.0.1", 0, limits=limits) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        _reader, writer = await raw_websocket(server.port, sock=sock)
        writer.write(text_frame(start()))
        ping = Frame(Opcode.PING, bytes(125)).serialize(mask=True, extensions=[])
        with contextlib.suppress(ConnectionError):
            for _ in range(400):  # ~8 MB of pings, 64 KB at a time; we never read
                if server.stats.write_stalls:
                    break
                writer.write(ping * 500)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await writer.drain()
        assert await until(lambda: server.stats.write_stalls == 1)
        assert await until(lambda: server.stats.active_connections == 0)
        writer.close()


async def test_pings_do_not_reset_the_idle_timer() -> None:
    """A connection that sends only pings after start is closed as idle (1001)."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, limits=Limits(idle_timeout=0.3)) as server:
        _reader, writer = await raw_websocket(server.port)
        writer.write(text_frame(start()))
        ping = Frame(Opcode.PING, b"hi").serialize(mask=True, extensions=[])
        for _ in range(100):  # pings 20 ms apart for up to 2 s, past the 0.3 s idle limit
            if server.stats.idle_timeouts:
                break
            with contextlib.suppress(ConnectionError):
                writer.write(ping)
            await asyncio.sleep(0.02)
        assert server.stats.idle_timeouts == 1  # closed while the pings were still coming
        writer.close()


# --------------------------------------------------------------- 11.4 junk by bytes
async def test_junk_events_are_bounded_by_bytes_and_released_after_close() -> None:
    """Unknown events over max_unknown_event_bytes are not kept; queued non-audio events
    stay under max_queued_event_bytes; after the stream and handler end nothing is kept."""
    seen: list[StreamSession] = []
    gate = asyncio.Event()

    async def handler(session: StreamSession) -> None:
        seen.append(session)
        await gate.wait()

    limits = Limits(max_unknown_event_bytes=8192, max_queued_event_bytes=50_000)
    async with serve(handler, "127.0.0.1", 0, limits=limits) as server:
        _reader, writer = await raw_websocket(server.port)
        huge = json.dumps({"event": "junk", "blob": "x" * 200_000})
        small = json.dumps({"event": "junk", "blob": "y" * 5000})
        frames = [start()] + [huge] * 20 + [small] * 40
        writer.write(b"".join(text_frame(f) for f in frames))
        await writer.drain()
        assert await until(lambda: seen and seen[0].stats.frames_in == 61)
        session = seen[0]
        assert server.stats.dropped_unknown_events == 20
        assert session._queued_other_bytes <= 50_000 and session.stats.dropped_events >= 30
        writer.close()
        await session.wait_closed()
        gate.set()
        assert await until(lambda: not server._tasks)
        kept = server.get_session("s")
        assert kept is session and [e async for e in kept] == []


# --------------------------------------------------------- 11.5 a second start
async def test_second_start_for_another_call_closes_1008_and_leaks_nothing() -> None:
    """A start for another call on a socket signed for call A closes with 1008 (the
    signed-URL check cannot be dodged); repeated starts for the same call are counted
    and ignored, and no per-call entry leaks."""
    seen: list[StreamSession] = []

    async def handler(session: StreamSession) -> None:
        seen.append(session)
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, token="k") as server:
        target = sign_stream_url(server.url, "k", "A").removeprefix(server.url)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(UPGRADE.replace(b"GET / ", b"GET /" + target.encode() + b" "))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        frames = [start("s1", "A")] + [start(f"s{n}", "A") for n in range(2, 52)]
        frames.append(start("sB", "B"))
        writer.write(b"".join(text_frame(f) for f in frames))
        await writer.drain()
        assert await until(lambda: server.stats.foreign_starts == 1)
        with pytest.raises(SessionTimeoutError):
            await server.wait_for_call("B", timeout=0.2)
        assert server.stats.repeated_starts == 50 and seen[0].stream_id == "s1"
        async with asyncio.timeout(10):
            answer = await reader.read()
        assert b"\x88\x18\x03\xf0start for another call" in answer  # close frame, 1008
        assert await until(lambda: seen[0].closed)
        assert server._by_call == {} and server._by_stream == {}
        writer.close()


# ------------------------------------------------------ 11.10 handshakes vs sessions
async def test_idle_handshakes_never_keep_a_real_call_out() -> None:
    """Sockets that never finish a handshake do not count as sessions; past the pending
    limit the oldest idle one is dropped, so a real call always gets through."""
    calls: list[str] = []

    async def handler(session: StreamSession) -> None:
        calls.append(session.call_id)
        await session.wait_closed()

    limits = Limits(max_sessions=2, max_pending_handshakes=4, handshake_timeout=30.0)
    async with serve(handler, "127.0.0.1", 0, limits=limits) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
        assert await until(lambda: server.stats.connections == 10)
        report = await MediaPeer(server.url, call_id="real", seconds=0.2).wait_closed()
        assert report.rejected_status is None and calls == ["real"]
        assert server.stats.evicted_handshakes >= 7 and server.stats.rejected_limit == 0
        for _, writer in idle:
            writer.close()


async def test_handshake_deadline_comes_from_limits() -> None:
    """A socket that says nothing is closed after Limits.handshake_timeout."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, limits=Limits(handshake_timeout=0.2)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        assert server.stats.handshake_failures == 1
        writer.close()


def test_default_max_sessions_fits_the_fd_limit() -> None:
    """The default session limit leaves room for pending handshakes and other fds."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = Limits()
    assert limits.max_sessions == default_max_sessions(limits.max_pending_handshakes)
    if soft != resource.RLIM_INFINITY:
        assert limits.max_sessions + limits.max_pending_handshakes < soft


_EMFILE_SERVER = """
import asyncio, logging, resource, sys
from vobiz_async.server import Limits, serve
logging.basicConfig(level=logging.INFO)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
async def handler(session):
    await session.wait_closed()
async def main():
    limits = Limits(max_sessions=500, max_pending_handshakes=500, handshake_timeout=30)
    async with serve(handler, "127.0.0.1", 0, limits=limits) as server:
        print(server.port, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        print(server.stats.accept_errors, flush=True)
        await server.close(grace=0)
asyncio.run(main())
"""


async def test_fd_exhaustion_is_counted_and_logged_once_not_per_connection() -> None:
    """At the process's fd limit accepts fail: counted, one log line, no tracebacks."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _EMFILE_SERVER,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    conns = []
    try:
        async with asyncio.timeout(60):
            port = int(await proc.stdout.readline())
            for _ in range(80):
                with contextlib.suppress(OSError):
                    conns.append(await asyncio.open_connection("127.0.0.1", port))
            await asyncio.sleep(1.5)  # asyncio retries a refused accept after 1 s
            proc.stdin.write(b"\n")
            await proc.stdin.drain()
            out, err = await proc.communicate()
    finally:
        for _, writer in conns:
            writer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = err.decode()
    assert int(out.split()[-1]) >= 1
    assert "Traceback" not in text and text.count("cannot accept connections") == 1


# ------------------------------------------------------------------- 11.11 recordings
async def test_audio_in_the_same_read_as_start_is_recorded() -> None:
    """serve(record=True) records from the first frame, and session.record() takes the
    audio still queued, even when all of it came in the same read as start."""
    recorders: list[CallRecorder] = []

    async def handler(session: StreamSession) -> None:
        assert session.recorder is not None
        recorders.append(session.recorder)
        await session.wait_closed()

    async def late(session: StreamSession) -> None:
        recorders.append(session.record())
        await session.wait_closed()

    for agent, record in ((handler, True), (late, False)):
        async with serve(agent, "127.0.0.1", 0, record=record) as server:
            _reader, writer = await raw_websocket(server.port)
            frames = [start()] + [media(ULAW_FRAME, n) for n in range(1, 51)]
            writer.write(b"".join(text_frame(f) for f in frames))
            await writer.drain()
            assert await until(lambda: server.stats.sessions == 1 and bool(server.sessions))
            await asyncio.sleep(0.1)
            writer.close()
    assert [len(r.caller_pcm) for r in recorders] == [50 * 320, 50 * 320]


def test_recorder_size_is_bounded_and_truncation_counted() -> None:
    """A recorder bounded to max_bytes keeps that much and counts the rest."""
    recorder = CallRecorder(8000, 0.0, max_bytes=4 * 8000)  # 1 s of stereo
    for _ in range(100):
        recorder.add_caller(bytes(320), 8000)  # 2 s in 20 ms frames
    recorder.add_agent(bytes(32000), 8000, 0.5)
    assert len(recorder.caller_pcm) == 16000 and len(recorder.agent_pcm) == 16000
    assert recorder.truncated_ms == pytest.approx(1000 + 1500)
    assert len(recorder.stereo()) == 4 * 8000


async def test_play_encoded_audio_is_recorded() -> None:
    """Audio echoed with play_encoded lands on the agent channel of the recording."""
    recorders: list[CallRecorder] = []

    async def handler(session: StreamSession) -> None:
        recorders.append(session.record())
        async for event in session:
            if type(event).__name__ == "AudioReceived":
                await session.play_encoded(ULAW_FRAME * 5)
                break
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        await MediaPeer(server.url, audio=tone(300, 0.4), seconds=0.5).wait_closed()
    agent = recorders[0].agent_pcm
    assert len(agent) >= 5 * 320 and max(agent) > 0


# ------------------------------------------------------------------ 11.12 small ones
@pytest.mark.parametrize(
    "target", [b"//[x", b"/?token=1%C2%B2.c.sig", b"/?token=" + b"9" * 5000 + b".c.sig"]
)
async def test_hostile_request_targets_get_an_answer_not_an_exception(
    target: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Odd request paths and tokens are refused with an HTTP status, nothing raised."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, token="k") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(UPGRADE.replace(b"GET / ", b"GET " + target + b" "))
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.split()[1] in (b"400", b"401", b"403")
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_tokens_with_unicode_or_huge_expiry_are_malformed() -> None:
    """'1².c.sig' and a 5000-digit expiry are malformed, not a ValueError."""
    assert verify_stream_token("1².c.sig", "k").reason == "malformed"
    assert verify_stream_token("9" * 5000 + ".c.sig", "k").reason == "malformed"


async def test_plain_http_get_gets_an_http_answer() -> None:
    """A GET without Upgrade (a load balancer's probe) gets a 4xx answer with a body."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        assert answer.split()[1] in (b"400", b"426") and answer.endswith(b"\n")
        assert len(answer.split(b"\r\n\r\n", 1)[1]) > 0
        writer.close()


async def test_stop_flood_keeps_one_close_timer() -> None:
    """10,000 inbound stop frames leave one pending close timer, not 10,000."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, limits=Limits(close_timeout=30)) as server:
        _reader, writer = await raw_websocket(server.port)
        stop = text_frame(json.dumps({"event": "stop", "streamId": "s"}))
        writer.write(text_frame(start()) + stop * 10_000)
        await writer.drain()
        [conn] = server._listener.connections  # type: ignore[union-attr]
        assert await until(
            lambda: conn.link is not None and conn.link.proto.stats.frames_in == 10_001
        )
        assert len(conn._timers) <= 4
        writer.close()


async def test_a_frame_in_16_byte_pieces_is_buffered_in_place() -> None:
    """A large frame fed 16 bytes at a time grows one buffer (linear, not quadratic)
    and still arrives whole."""
    events: list[object] = []

    async def handler(session: StreamSession) -> None:
        async for event in session:
            events.append(event)

    async with serve(handler, "127.0.0.1", 0) as server:
        _reader, writer = await raw_websocket(server.port)
        writer.write(text_frame(start()))
        await writer.drain()
        assert await until(lambda: bool(server.sessions))
        [conn] = server._listener.connections  # type: ignore[union-attr]
        frame = text_frame(json.dumps({"event": "junk", "blob": "z" * 8000}))
        buffers = set()
        for offset in range(0, len(frame), 16):
            writer.write(frame[offset : offset + 16])
            await writer.drain()
            await asyncio.sleep(0)
            if 64 < offset < len(frame) - 64 and conn.splitter.pending:
                buffers.add(id(conn.splitter._buf))
        assert await until(lambda: any(isinstance(e, UnknownEvent) for e in events))
        assert len(buffers) == 1
        writer.close()


async def test_cli_echo_does_not_report_a_hangup_as_a_handler_failure() -> None:
    """`serve --echo`: a peer hanging up with audio still queued is not an error."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--port",
        "0",
        "--echo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode().strip()
            port = int(line.rsplit(":", 1)[1].split("/")[0])
            _reader, writer = await raw_websocket(port)
            frames = [start()] + [media(ULAW_FRAME, n) for n in range(1, 201)]
            writer.write(b"".join(text_frame(f) for f in frames))
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.close()
            summary = json.loads(await proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert summary["stream_id"] == "s"
    assert "handler failed" not in err.decode() and "Traceback" not in err.decode()


# ------------------------------------------------------------------------ defaults
async def test_open_server_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """serve() with no token and no allow_from says at start-up that anyone can stream."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    with caplog.at_level(logging.WARNING, logger="vobiz_async.server"):
        async with serve(handler, "127.0.0.1", 0):
            pass
        async with serve(handler, "127.0.0.1", 0, token="k"):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no token and no allow_from" in warnings[0]


def test_signed_urls_outlive_the_longest_call() -> None:
    """A signed token's default lifetime covers Vobiz's 86400 s streamTimeout."""
    now = time.time()
    token = sign_token("k", "c", now=now)
    assert DEFAULT_STREAM_TOKEN_TTL >= 86400
    assert int(token.split(".")[0]) >= int(now) + 86400
    assert verify_stream_token(token, "k", now=now + 86000).ok


# ------------------------------------------------------------------- issue 12: 7, 8
async def test_wait_for_session_raises_a_typed_timeout_naming_the_stream() -> None:
    """An absent stream raises SessionTimeoutError (a TimeoutError) with its id."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        with pytest.raises(SessionTimeoutError) as caught:
            await server.wait_for_session("nope", timeout=0.05)
        with pytest.raises(TimeoutError):
            await server.wait_for_call("nocall", timeout=0.05)
    assert caught.value.stream_id == "nope" and "nope" in str(caught.value)
    assert isinstance(caught.value, VobizError) and isinstance(caught.value, TimeoutError)


async def test_wait_for_an_ended_stream_answers_at_once() -> None:
    """Asking for a stream that already ended returns its closed session, no waiting."""

    async def handler(session: StreamSession) -> None:
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        report = await MediaPeer(server.url, seconds=0.1).wait_closed()
        assert await until(lambda: not server.sessions)
        assert report.stream_id is not None
        async with asyncio.timeout(5):  # would wait 30 s before the fix
            session = await server.wait_for_session(report.stream_id, timeout=30)
    assert session.closed and session.stream_id == report.stream_id


async def test_url_for_gives_each_call_its_signed_url() -> None:
    """server.url_for(call) is the URL that call is admitted with (and only that call)."""
    calls: list[str] = []

    async def handler(session: StreamSession) -> None:
        calls.append(session.call_id)
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0, token="k") as server:
        url = server.url_for("call-9")
        ok = await MediaPeer(url, call_id="call-9", seconds=0.1).wait_closed()
        other = await MediaPeer(url, call_id="call-10", seconds=0.1).wait_closed()
        bare = await MediaPeer(server.url, call_id="call-9", seconds=0.1).wait_closed()
    assert calls == ["call-9"] and ok.rejected_status is None
    assert other.close_code == 1008 and bare.rejected_status == 401
    async with serve(handler, "127.0.0.1", 0, allow_from=["127.0.0.1/32"]) as open_server:
        assert open_server.url_for("call-9") == open_server.url


# ------------------------------------------------------------ 11.13 mid-message state
async def test_fragmented_messages_are_tracked_without_websockets_internals() -> None:
    """A fragmented start is assembled, and a whole text frame inside a fragmented
    message fails the connection (1002): our own mid-message flag, not current_size."""
    calls: list[str] = []

    async def handler(session: StreamSession) -> None:
        calls.append(session.call_id)
        await session.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        reader, writer = await raw_websocket(server.port)
        text = start(call_id="frag").encode()
        first = Frame(Opcode.TEXT, text[:10], fin=False).serialize(mask=True, extensions=[])
        rest = Frame(Opcode.CONT, text[10:]).serialize(mask=True, extensions=[])
        writer.write(first + rest)
        await writer.drain()
        assert await until(lambda: calls == ["frag"])
        part = Frame(Opcode.TEXT, b'{"event":', fin=False).serialize(mask=True, extensions=[])
        writer.write(part + text_frame(media(ULAW_FRAME, 1)))
        async with asyncio.timeout(10):
            answer = await reader.read()
        assert answer.startswith(b"\x88") and answer[2:4] == (1002).to_bytes(2, "big")
        writer.close()


def test_agent_audio_played_in_chunks_records_as_one_signal() -> None:
    """A 24 kHz tone played in 40 ms pieces (clock times rounded as play() computes
    them) records exactly as the whole tone resampled at once: no gaps, no clicks."""
    pcm = tone(440, 0.6, 24000)
    piece = 2 * 24000 * 40 // 1000
    chunked = CallRecorder(8000, 0.0)
    for n, offset in enumerate(range(0, len(pcm), piece)):
        jitter = (0.0003 if n % 2 else -0.0002) if n else 0.0  # clock not sample exact
        chunked.add_agent(pcm[offset : offset + piece], 24000, 1.0 + n * 0.04 + jitter)
    whole = CallRecorder(8000, 0.0)
    whole.add_agent(pcm, 24000, 1.0)
    assert chunked.agent_pcm == whole.agent_pcm
    # the tone fills its 0.6 s: no 1 ms stretch of silence inside it
    heard = struct.unpack("<4800h", chunked.agent_pcm[16000 : 16000 + 9600])
    assert max(heard) > 4000
    assert all(any(heard[i : i + 8]) for i in range(40, 4760, 8))


def test_agent_pieces_apart_in_time_keep_their_silence() -> None:
    """Pieces separated by a real pause (100 ms) are placed at their own times."""
    recorder = CallRecorder(8000, 0.0)
    recorder.add_agent(b"\x00\x10" * 800, 8000, 0.0)  # 100 ms
    recorder.add_agent(b"\x00\x10" * 800, 8000, 0.2)  # after 100 ms of silence
    agent = recorder.agent_pcm
    assert len(agent) == 2 * 8000 * 3 // 10
    assert agent[1600:3200] == bytes(1600) and agent[3200:] == b"\x00\x10" * 800


def test_agent_pieces_overlapping_by_a_held_back_frame_join_without_loss() -> None:
    """play() holds back a partial frame, so a piece's clock start can fall up to 20 ms
    before the previous piece's end: the pieces are joined, not overwritten."""
    recorder = CallRecorder(8000, 0.0)
    a, b = b"\x00\x10" * 240, b"\x00\x20" * 240  # 30 ms each
    recorder.add_agent(a, 8000, 1.0)
    recorder.add_agent(b, 8000, 1.02)  # the clock said +20 ms (10 ms held back)
    assert recorder.agent_pcm[16000:] == a + b
