"""Every example runs to completion against the emulator, and so does the demo."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._redis import redis_server
from vobiz_async._demo import caller_script, run_demo
from vobiz_async.codec import read_wav

# The pipecat examples need the `pipecat` extra: they run in `make test-pipecat` (below).
PIPECAT_EXAMPLE = Path(__file__).parent.parent / "examples" / "pipecat_agent.py"
PIPECAT_SESSION_EXAMPLE = PIPECAT_EXAMPLE.with_name("pipecat_session_agent.py")
EXAMPLES = sorted(
    p
    for p in (Path(__file__).parent.parent / "examples").glob("*.py")
    if p not in (PIPECAT_EXAMPLE, PIPECAT_SESSION_EXAMPLE)
)


def test_there_are_examples_and_each_is_short() -> None:
    """At least the five promised examples exist, each under ~60 lines with a docstring."""
    names = {p.stem for p in EXAMPLES}
    assert {
        "echo_agent",
        "record_call",
        "rest_start_and_bind",
        "barge_in",
        "one_agent_two_providers",
    } <= names
    for path in EXAMPLES:
        text = path.read_text()
        assert text.startswith('"""') and len(text.splitlines()) <= 62, path.name
        assert text.rstrip().endswith("asyncio.run(main())"), path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    """The example exits 0 and prints its result."""
    args = [sys.executable, str(path)]
    if path.stem == "record_call":
        args.append(str(tmp_path / "call.wav"))
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if path.stem == "cluster_control":  # skipped when redis-server is not installed
            env["REDIS_URL"] = stack.enter_context(redis_server(tmp_path))
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    if path.stem == "record_call":
        assert read_wav(tmp_path / "call.wav").channels == 2
    if path.stem == "barge_in":
        assert done.stdout.count("barge-in after") == 1
        assert "answer checkpoint: cleared" in done.stdout
    if path.stem == "cluster_control":
        assert "checkpoint greeting: played" in done.stdout and "close code 1000" in done.stdout
    if path.stem == "fastapi_agent":  # FakeVobiz fetched the answer URL and streamed
        assert "checkpoint greeting: played" in done.stdout
        streamed = re.search(r"streamed: (\d+) frames sent, (\d+) ms heard", done.stdout)
        assert streamed is not None and int(streamed[1]) > 0 and int(streamed[2]) >= 500
    if path.stem == "one_agent_two_providers":  # both served at once by one server
        assert "vobiz: checkpoint greeting: played" in done.stdout
        assert "signalwire: checkpoint greeting: played" in done.stdout
        assert "signalwire: call ended (hangup-verb)" in done.stdout


def run_pipecat_echo_example(path: Path, *, max_lines: int) -> str:
    """Run one of the pipecat echo examples (a short script ending in asyncio.run) and
    check what both show: the first echo played, the interrupted one cleared, and the
    caller heard its own speech about as loud over the same timeline. Returns stdout."""
    pytest.importorskip("pipecat")
    text = path.read_text()
    assert text.startswith('"""') and len(text.splitlines()) <= max_lines
    assert text.rstrip().endswith("asyncio.run(main())")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "checkpoint utterance-1: played" in out, out
    assert "checkpoint utterance-3: cleared" in out, out
    heard = re.search(r"caller said RMS (\d+), heard (\d+) ms, RMS (\d+)", out)
    assert heard is not None, out
    said_rms, heard_ms, heard_rms = map(int, heard.groups())
    assert heard_ms >= 2000 and heard_rms > said_rms / 2 > 0, out
    return out


@pytest.mark.pipecat
def test_pipecat_example_echoes_and_an_interruption_clears() -> None:
    """The pipecat bot (FastAPI transport, VobizSerializer) answers a FakeVobiz call: the
    caller hears its echo, a key press sends clearAudio, and checkpoint outcomes reach
    the pipeline (played, then cleared for the interrupted echo)."""
    out = run_pipecat_echo_example(PIPECAT_EXAMPLE, max_lines=90)
    assert "clearAudio received: 1" in out, out


@pytest.mark.pipecat
def test_pipecat_session_example_runs_the_bot_as_a_handler() -> None:
    """The pipecat bot on serve() (SessionTransport, signed URL) answers a FakeVobiz call:
    the caller hears its echo, a key press sends clearAudio and clearedAudio comes back,
    and checkpoint outcomes reach the pipeline (played, cleared, closed at the hang-up)."""
    out = run_pipecat_echo_example(PIPECAT_SESSION_EXAMPLE, max_lines=70)
    assert "clearAudio: 1, clearedAudio: 1" in out, out


async def test_demo_runs_and_reports(tmp_path: Path) -> None:
    """The demo's call produces a report, a stereo recording, and a barge-in."""
    report = await run_demo(tmp_path, progress=None)  # real time: pacing is real time
    assert report.frames_caller_to_agent == 850 and report.frames_agent_to_caller > 100
    assert report.checkpoints["turn-1"] == "played" and report.checkpoints["turn-2"] == "cleared"
    assert len(report.clear_round_trip_ms) == 1 and report.cleared_unheard_ms > 0
    assert report.caller_heard_ms < report.agent_sent_ms
    assert report.malformed_frames == 0 and report.dropped_frames == 0
    assert any(r.startswith("POST /api/v1/Account/") for r in report.rest_requests)
    wav = read_wav(tmp_path / "call.wav")
    assert wav.channels == 2 and wav.sample_rate == 16000
    assert wav.mono()[: len(caller_script()) // 4] == caller_script()[: len(caller_script()) // 4]
    assert json.loads((tmp_path / "report.json").read_text())["checkpoints"] == report.checkpoints


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    """The README's first Python block is a complete program that runs as printed."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "greeting: played" in done.stdout and "heard 150 frames, 0 dropped" in done.stdout
