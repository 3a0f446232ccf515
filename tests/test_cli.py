"""The vobiz-async CLI: JSON on stdout, exit 0/1/2, against the emulator on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from vobiz_async.cli import main
from vobiz_async.client import VobizClient
from vobiz_async.errors import NotFoundError
from vobiz_async.testing import FakeVobiz

WS = "wss://agent.example.net/media"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz() as fake:
        yield fake


async def run(fake: FakeVobiz, *argv: str) -> int:
    """Run the CLI in a worker thread (its own event loop) against the fake."""
    base = ["--auth-id", fake.auth_id, "--auth-token", fake.auth_token, "--base-url", fake.base_url]
    return await asyncio.to_thread(main, [*base, *argv])


async def test_streams_start_get_list_stop(
    fake: FakeVobiz, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each streams command prints the documented JSON and exits 0."""
    call = fake.call()
    assert (
        await run(
            fake,
            "streams",
            "start",
            call.call_uuid,
            WS,
            "--bidirectional",
            "--content-type",
            "audio/x-mulaw;rate=8000",
            "--extra-headers",
            "a=1,b=2",
        )
        == 0
    )
    started = json.loads(capsys.readouterr().out)
    sid = started["stream_id"]
    assert started["call_uuid"] == call.call_uuid and started["bidirectional"] is True
    assert fake.requests[-1].body["extra_headers"] == "a:1,b:2"
    assert await run(fake, "streams", "get", call.call_uuid, sid) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "in-progress"
    assert await run(fake, "streams", "list", call.call_uuid, "--all") == 0
    listed = json.loads(capsys.readouterr().out)
    assert isinstance(listed, list) and [s["stream_id"] for s in listed] == [sid]
    assert await run(fake, "streams", "stop", call.call_uuid, sid) == 0
    assert json.loads(capsys.readouterr().out) == {"stream_id": sid, "stopped": True}
    assert await run(fake, "streams", "stop", call.call_uuid, sid) == 0
    assert json.loads(capsys.readouterr().out) == {"stream_id": sid, "stopped": False}
    assert await run(fake, "streams", "stop-all", call.call_uuid) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] is True


async def test_api_error_exits_1_with_one_line(
    fake: FakeVobiz, capsys: pytest.CaptureFixture[str]
) -> None:
    """An API error is exit 1 with a single line on stderr and nothing on stdout."""
    call = fake.call()
    assert await run(fake, "streams", "get", call.call_uuid, "missing") == 1
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and "NotFoundError" in out.err


async def test_usage_errors_exit_2(fake: FakeVobiz, capsys: pytest.CaptureFixture[str]) -> None:
    """A parameter Vobiz would refuse, or a bad command line, is exit 2."""
    call = fake.call()
    code = await run(
        fake, "streams", "start", call.call_uuid, WS, "--bidirectional", "--audio-track", "both"
    )
    assert code == 2 and "audio_track" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["streams", "frobnicate"])
    assert info.value.code == 2
    assert fake.requests == []


def test_python_m_entry_point_runs() -> None:
    """`python -m vobiz_async --help` works and lists the streams command."""
    done = subprocess.run(
        [sys.executable, "-m", "vobiz_async", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "streams" in done.stdout


async def test_emulate_an_unreachable_url_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`emulate` against a closed port is exit 1 with one stderr line, not a zero report."""
    code = await asyncio.to_thread(main, ["emulate", "ws://127.0.0.1:9/agent", "--seconds", "0.2"])
    out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and "could not connect" in out.err


async def test_emulate_rest_only_serves_the_fake_api_until_sigint() -> None:
    """`emulate --rest-only` prints base URL and credentials as JSON; the API answers them."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "emulate",
        "--rest-only",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            info = json.loads(await proc.stdout.readline())
            client = VobizClient(info["auth_id"], info["auth_token"], base_url=info["base_url"])
            async with client:
                with pytest.raises(NotFoundError):
                    await client.streams.start("no-such-call", WS)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)
    assert info["base_url"].startswith("http://127.0.0.1:") and info["auth_id"] == "MA_FAKE0001"
    assert proc.returncode == 0
