"""A short soak (the benchmark script itself, small): counts, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "soak.py"


def test_short_soak_loses_nothing_and_leaves_nothing_behind() -> None:
    """12 bidirectional calls with a barge-in each: no frame lost, no fd/task/session left."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--calls", "12", "--seconds", "7", "--ramp", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["frames_sent"] == 12 * 350 and report["frames_lost"] == 0
    assert report["dropped_frames"] == 0 and report["malformed"] == 0
    assert (
        report["fds_after"] == report["fds_idle"] and report["tasks_after"] == report["tasks_idle"]
    )
    assert report["open_sessions_after"] == 0 and report["connections_after"] == 0
    assert report["peers_closed_normally"] == 12
    assert report["checkpoints"].get("played", 0) >= 12
    assert report["checkpoints"].get("cleared", 0) >= 12 and report["clears_seen_by_callers"] >= 12
