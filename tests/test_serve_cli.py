"""`vobiz-async serve` as a real process: echo, recording, graceful Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from vobiz_async.codec import read_wav
from vobiz_async.testing._audio import tone
from vobiz_async.testing._media import MediaPeer


async def test_serve_echo_and_record_then_ctrl_c(tmp_path: Path) -> None:
    """It prints its URL, echoes a call, writes a 2-channel WAV, and exits 0 on SIGINT."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--port",
        "0",
        "--echo",
        "--record",
        str(tmp_path),
        "--token",
        "t0k",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode().strip()
            assert line.startswith("listening on ws://127.0.0.1:")
            url = line.removeprefix("listening on ")
            report = await MediaPeer(
                url + "?token=t0k", audio=tone(440, 0.5), seconds=0.6
            ).wait_closed()
            summary = json.loads(await proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.wait()
    assert proc.returncode == 0
    assert report.play_frames > 10 and report.close_code == 1000
    assert summary["stream_id"] == report.stream_id and summary["stats"]["frames_out"] > 10
    wav = read_wav(Path(summary["recording"]))
    assert wav.channels == 2 and wav.sample_rate == 8000 and wav.duration > 0.4


async def test_emulate_dials_a_server_and_prints_a_json_report(tmp_path: Path) -> None:
    """`vobiz-async emulate WS_URL` streams the caller as Vobiz would and reports JSON."""
    from vobiz_async.codec import write_wav
    from vobiz_async.server import StreamSession, serve

    formats: list[str] = []

    async def agent(session: StreamSession) -> None:
        formats.append(session.inbound_format.content_type)
        await session.play(tone(300, 0.3, 16000), 16000)
        await session.checkpoint("hi")
        await session.wait_closed()

    caller = tmp_path / "caller.wav"
    write_wav(caller, tone(200, 1.0, 16000), 16000)
    async with serve(agent, "127.0.0.1", 0) as server:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vobiz_async",
            "emulate",
            server.url,
            "--audio",
            str(caller),
            "--content-type",
            "audio/x-l16;rate=16000",
            "--shape",
            "flat",
            "--seconds",
            "1",
            "--record",
            str(tmp_path / "out.wav"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["frames_sent"] == 50 and report["played_checkpoints"] == ["hi"]
    assert formats == ["audio/x-l16;rate=16000"]
    recording = read_wav(tmp_path / "out.wav")
    assert recording.channels == 2 and recording.sample_rate == 16000


async def test_serve_provider_flag_echoes_a_signalwire_call() -> None:
    """`serve --provider signalwire --echo`: a SignalWire caller hears itself; the
    summary line names the provider."""
    from vobiz_async.testing import CompatMediaPeer

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--port",
        "0",
        "--echo",
        "--provider",
        "signalwire",
        "--token",
        "t0k",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode().strip()
            url = line.removeprefix("listening on ")
            peer = CompatMediaPeer(
                url + "t0k", audio=tone(440, 0.5, 16000), audio_rate=16000, codec="L16@16000h"
            )
            report = await peer.wait_closed()
            summary = json.loads(await proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.wait()
    assert proc.returncode == 0
    assert report.play_frames > 10 and summary["provider"] == "signalwire"
    assert summary["format"] == "audio/x-l16;rate=16000"
