"""Operating the media server: TLS, health probes, Prometheus metrics, logs with call context."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests._wire import raw_websocket, text_frame
from vobiz_async import _metrics
from vobiz_async.codec import AudioFormat
from vobiz_async.events import CheckpointOutcome
from vobiz_async.server import StreamSession, serve
from vobiz_async.testing._audio import speech_like
from vobiz_async.testing._media import MediaPeer
from vobiz_async.testing._peer import PeerProtocol


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET (no Upgrade) on 127.0.0.1:``port``, read to the server's close."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def speak_and_checkpoint(session: StreamSession) -> None:
    """Play 0.4 s, await its checkpoint, then let the caller hang up."""
    await session.play(speech_like(0.4, 8000))
    outcome = await session.checkpoint("turn-1")
    logging.getLogger("tests.agent").info("checkpoint %s", outcome.value)
    async for _ in session:
        pass


async def test_wss_call_with_a_certificate_made_at_test_time() -> None:
    """With ssl=, the listener speaks TLS: a wss:// call connects and its checkpoint plays."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with serve(speak_and_checkpoint, "127.0.0.1", 0, ssl=server_ctx) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        report = await MediaPeer(server.url, seconds=1.5, ssl=client_ctx).wait_closed()
        plain = await MediaPeer(server.url.replace("wss:", "ws:"), seconds=0.2).wait_closed()
    assert report.connect_error is None and report.played_checkpoints == ["turn-1"]
    assert report.play_frames == 20
    assert plain.connect_error is not None and server.stats.sessions == 1
    assert server.stats.handshake_failures >= 1  # the plain-text client failed TLS


async def test_healthz_answers_plain_http_and_other_paths_404_or_426() -> None:
    """GET /healthz is 200 JSON, an unknown path 404, the stream path 426; all counted."""
    async with serve(speak_and_checkpoint, "127.0.0.1", 0, path="/media", worker="w-7") as server:
        status, headers, body = await http_get(server.port, "/healthz")
        other, _, _ = await http_get(server.port, "/favicon.ico")
        stream_path, _, _ = await http_get(server.port, "/media")
        assert server.health()["status"] == "ok"
        probes = server.stats.probes
    health = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert health == {
        "status": "ok",
        "sessions": 0,
        "max_sessions": server.limits.max_sessions,
        "pending_handshakes": 0,
        "worker": "w-7",
    }
    assert other == 404 and stream_path == 426
    assert probes == 2  # the 426 is websockets' refused upgrade, not a probe
    assert server.health()["status"] == "draining"


async def test_metrics_scraped_over_a_socket_after_a_call() -> None:
    """/metrics after a call: frames, checkpoint outcomes, clear latency, rejections, worker."""

    async def agent(session: StreamSession) -> None:
        await session.play(speech_like(0.3, 8000))
        assert await session.checkpoint("a") is CheckpointOutcome.PLAYED
        play = asyncio.create_task(session.play(speech_like(2.0, 8000)))
        await asyncio.sleep(0.3)
        await session.clear()
        await play
        await session.stop()

    async with serve(agent, "127.0.0.1", 0, token="s3cret", worker="w-1") as server:
        report = await MediaPeer(
            server.url_for("call-1"), call_id="call-1", seconds=6.0, hangup_when_done=False
        ).wait_closed()
        refused = await MediaPeer(server.url, seconds=0.2).wait_closed()  # no token: 401
        status, headers, body = await http_get(server.port, "/metrics")
    assert report.clears == 1 and refused.rejected_status == 401
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    worker = (("worker", "w-1"),)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted({"worker": "w-1", **labels}.items())))]

    assert value("vobiz_sessions") == 0 and value("vobiz_sessions_started_total") == 1
    assert value("vobiz_frames_in_total") > report.frames_sent  # media + start + acks
    assert value("vobiz_frames_out_total") >= report.play_frames
    assert value("vobiz_checkpoints_total", outcome="played") == 1
    assert value("vobiz_checkpoints_total", outcome="timed_out") == 0
    assert value("vobiz_clear_round_trip_seconds_count") == 1
    assert value("vobiz_clear_round_trip_seconds_bucket", le="+Inf") == 1
    assert value("vobiz_handshake_rejections_total", reason="auth") == 1
    assert ("vobiz_late_outbound_frames_total", worker) in samples
    assert ("vobiz_dropped_frames_total", worker) in samples


async def test_metrics_404_without_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without prometheus-client, /metrics is 404 and one log line says why."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    monkeypatch.setattr(_metrics, "_missing_logged", False)
    caplog.set_level(logging.WARNING, "vobiz_async.server")
    async with serve(speak_and_checkpoint, "127.0.0.1", 0, token="t") as server:
        first, _, body = await http_get(server.port, "/metrics")
        second, _, _ = await http_get(server.port, "/metrics")
    assert first == second == 404 and b"prometheus-client" in body
    assert server.metrics() is None
    why = [r for r in caplog.records if "prometheus-client is not installed" in r.message]
    assert len(why) == 1


async def test_log_records_about_a_call_carry_its_ids(caplog: pytest.LogCaptureFixture) -> None:
    """Handler logs, read-path logs and the first/last call lines carry stream_id/call_id."""
    caplog.set_level(logging.DEBUG)
    async with serve(speak_and_checkpoint, "127.0.0.1", 0) as server:
        logging.getLogger("tests.agent").info("outside any call")
        report = await MediaPeer(
            server.url, seconds=1.5, call_id="call-A", stream_id="stream-A"
        ).wait_closed()
        # A second start on one socket for another call: logged on the read path.
        reader, writer = await raw_websocket(server.port)
        peer = PeerProtocol()
        fmt = AudioFormat.parse("audio/x-mulaw;rate=8000")
        for call in ("call-B", "call-C"):
            start = peer.send_start(call_id=call, stream_id=f"stream-{call}", media_format=fmt)
            writer.write(text_frame(start))
        async with asyncio.timeout(10):
            await reader.read()  # until the server closes it (1008)
        writer.close()
    assert report.played_checkpoints == ["turn-1"]
    records = caplog.records
    agent = [r for r in records if r.name == "tests.agent"]
    assert [(r.getMessage(), r.stream_id, r.call_id) for r in agent] == [  # type: ignore[attr-defined]
        ("outside any call", None, None),
        ("checkpoint played", "stream-A", "call-A"),
        ("checkpoint closed", "stream-call-B", "call-B"),
    ]
    started = [r for r in records if r.getMessage().startswith("call started")]
    ended = [r for r in records if r.getMessage().startswith("call ended")]
    assert [(r.stream_id, r.call_id) for r in started] == [  # type: ignore[attr-defined]
        ("stream-A", "call-A"),
        ("stream-call-B", "call-B"),
    ]
    assert {(r.stream_id, r.call_id) for r in ended} == {  # type: ignore[attr-defined]
        ("stream-A", "call-A"),
        ("stream-call-B", "call-B"),
    }
    a_start, a_end = started[0].getMessage(), next(r for r in ended if r.call_id == "call-A")  # type: ignore[attr-defined]
    assert "provider vobiz" in a_start and "in audio/x-mulaw;rate=8000" in a_start
    assert "close code 1000" in a_end.getMessage() and "frames in" in a_end.getMessage()
    b_lines = [r.getMessage() for r in records if getattr(r, "call_id", None) == "call-B"]
    assert b_lines[0].startswith("call started") and b_lines[-1].startswith("call ended")
    foreign = next(r for r in records if "second start on one socket" in r.getMessage())
    assert (foreign.stream_id, foreign.call_id) == ("stream-call-B", "call-B")  # type: ignore[attr-defined]


async def test_metrics_count_a_checkpoint_that_ends_after_the_hangup() -> None:
    """A checkpoint resolved CLOSED by the caller hanging up is counted once the call is
    finished (totals are folded after the handler returns, so counters never fall)."""
    outcomes: list[CheckpointOutcome] = []

    async def agent(session: StreamSession) -> None:
        await session.play(speech_like(3.0, 8000))
        outcomes.append(await session.checkpoint("late"))

    async with serve(agent, "127.0.0.1", 0, token="t", worker="w-2") as server:
        await MediaPeer(server.url_for("c"), call_id="c", seconds=0.5).wait_closed()
        for _ in range(100):  # until the handler has returned and the call is finished
            if not server._tasks:
                break
            await asyncio.sleep(0.02)
        status, _, body = await http_get(server.port, "/metrics")
    samples = {
        (s.name, s.labels.get("outcome")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert status == 200 and outcomes == [CheckpointOutcome.CLOSED]
    assert samples[("vobiz_checkpoints_total", "closed")] == 1
    assert samples[("vobiz_sessions", None)] == 0


async def test_reuse_port_lets_two_servers_listen_on_one_port() -> None:
    """serve(reuse_port=True) binds SO_REUSEPORT: a second server takes the same port;
    without it the bind fails."""
    async with serve(speak_and_checkpoint, "127.0.0.1", 0, reuse_port=True, token="t") as first:
        async with serve(
            speak_and_checkpoint, "127.0.0.1", first.port, reuse_port=True, token="t"
        ) as second:
            assert second.port == first.port
            status, _, _ = await http_get(first.port, "/healthz")
        with pytest.raises(OSError, match="in use"):
            await serve(speak_and_checkpoint, "127.0.0.1", first.port, token="t").start()
    assert status == 200
