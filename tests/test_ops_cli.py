"""`vobiz-async serve` in production shape: workers on one port, TLS flags, JSON logs."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.test_ops import http_get
from vobiz_async.cli import main
from vobiz_async.testing._audio import tone
from vobiz_async.testing._media import MediaPeer


async def start_serve(*flags: str, loop: str = "auto") -> tuple[asyncio.subprocess.Process, str]:
    """Run `python -m vobiz_async --loop LOOP serve --port 0 FLAGS`; returns it and its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "--loop",
        loop,
        "serve",
        "--port",
        "0",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        line = (await proc.stdout.readline()).decode().strip()
    assert line.startswith("listening on "), line
    return proc, line.removeprefix("listening on ")


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


async def test_two_workers_share_a_port_and_sigterm_drains_both() -> None:
    """--workers 2: both pids answer on one port, calls land on both, SIGTERM drains
    (a live call is closed with 1001 after the grace) and the parent exits 0."""
    proc, url = await start_serve("--workers", "2", "--token", "t0k", "--grace", "1")
    assert proc.stdout is not None and proc.stderr is not None
    summaries: list[dict[str, Any]] = []
    try:
        port = port_of(url)
        health_workers: set[str] = set()
        for _ in range(200):  # the kernel spreads connections; both show up quickly
            status, _, body = await http_get(port, "/healthz")
            assert status == 200
            health_workers.add(json.loads(body)["worker"])
            if len(health_workers) == 2:
                break
        call_workers: set[str] = set()
        for _ in range(10):  # batches of 4 calls until both workers have served one
            reports = await asyncio.gather(
                *(
                    MediaPeer(url + "?token=t0k", audio=tone(440, 0.2), seconds=0.2).wait_closed()
                    for _ in range(4)
                )
            )
            assert all(r.close_code == 1000 for r in reports)
            for _ in reports:
                async with asyncio.timeout(30):
                    summaries.append(json.loads(await proc.stdout.readline()))
            call_workers = {s["worker"] for s in summaries}
            if len(call_workers) == 2:
                break
        live = MediaPeer(url + "?token=t0k", seconds=60.0, hangup_when_done=False)
        live.start()
        for _ in range(200):  # until the live call is a session on its worker
            stats = [json.loads((await http_get(port, "/healthz"))[2]) for _ in range(4)]
            if any(h["sessions"] == 1 for h in stats):
                break
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await proc.wait()
    report = await live.wait_closed()
    assert len(health_workers) == 2 and call_workers == health_workers
    assert proc.returncode == 0
    assert report.close_code == 1001 and report.sent_ms >= 900  # ran through the 1 s grace


async def test_serve_over_tls_with_json_logs(tmp_path: Path) -> None:
    """--certfile/--keyfile serve wss://; --log-format json writes one JSON object per
    record, the call's first and last lines carrying its ids and the worker."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    proc, url = await start_serve(
        "--certfile",
        str(tmp_path / "cert.pem"),
        "--keyfile",
        str(tmp_path / "key.pem"),
        "--log-format",
        "json",
        "--echo",
    )
    try:
        assert url.startswith("wss://127.0.0.1:")
        report = await MediaPeer(url, audio=tone(440, 0.4), seconds=0.4, ssl=client).wait_closed()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    assert proc.returncode == 0 and report.close_code == 1000 and report.play_frames > 5
    records = [json.loads(line) for line in err.decode().splitlines()]
    assert all(
        set(r) >= {"time", "level", "logger", "message", "stream_id", "call_id", "worker"}
        for r in records
    )
    call = [r for r in records if r["stream_id"] == report.stream_id]
    assert call[0]["message"].startswith("call started") and "provider vobiz" in call[0]["message"]
    assert call[-1]["message"].startswith("call ended") and "close code 1000" in call[-1]["message"]
    assert {r["call_id"] for r in call} == {report.call_id}
    assert {r["worker"] for r in records} == {str(proc.pid)}


def test_serve_refuses_a_certificate_it_cannot_load(tmp_path: Path) -> None:
    """A missing key file or a lone --certfile is a usage error (exit 2), nothing bound."""
    missing = str(tmp_path / "none.pem")
    assert main(["serve", "--port", "0", "--certfile", missing, "--keyfile", missing]) == 2
    assert main(["serve", "--port", "0", "--certfile", missing]) == 2


@pytest.mark.parametrize(("loop", "workers"), [("asyncio", 1), ("uvloop", 1), ("uvloop", 2)])
async def test_loop_flag_picks_the_event_loop_and_echo_calls_work(loop: str, workers: int) -> None:
    """--loop asyncio|uvloop runs serve (and each of its workers) on that loop, as each
    says on stderr, and an echo call completes on it."""
    pytest.importorskip("uvloop")
    proc, url = await start_serve("--echo", "--workers", str(workers), loop=loop)
    assert proc.stderr is not None
    try:
        report = await MediaPeer(url, audio=tone(440, 0.3), seconds=0.3).wait_closed()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await proc.wait()
    stderr = (await proc.stderr.read()).decode()
    assert stderr.count("event loop") == workers, stderr
    assert stderr.count(f"on the {loop} event loop") == workers, stderr
    assert stderr.count("startup objects frozen out of the GC") == workers, stderr
    assert report.close_code == 1000 and report.play_frames >= 10
    assert proc.returncode == 0


def test_loop_uvloop_without_uvloop_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--loop uvloop where uvloop cannot be imported exits 2 and says what to install."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert main(["--loop", "uvloop", "serve", "--port", "0"]) == 2
    assert "vobiz-async[speed]" in capsys.readouterr().err
