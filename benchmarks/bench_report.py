"""Report speed and size: render a 10-minute 16 kHz stereo call with a busy trace.

Run: ``.venv/bin/python benchmarks/bench_report.py``. Prints a table and writes
``benchmarks/results/bench_report.json``. Not a test: it asserts nothing. The target
is well under a second per render and a page well under 1 MB (the WAV is linked).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import print_table, write_json

from vobiz_async.codec import interleave_stereo, write_wav
from vobiz_async.protocol import ClearSummary
from vobiz_async.report import render
from vobiz_async.testing import speech_like
from vobiz_async.trace import CallTrace

RATE = 16000
MINUTES = 10


def make_call(directory: Path, minutes: int, level: float) -> tuple[Path, Path]:
    """A call of ``minutes``: speech on both sides, a turn every 6 s, a barge-in a minute."""
    seconds = 60 * minutes
    caller = speech_like(10.0, RATE, seed=1, level=level) * (seconds // 10)
    agent = bytes(len(caller) // 2) + speech_like(5.0, RATE, seed=2, level=level) * (seconds // 10)
    wav = directory / "call.wav"
    write_wav(wav, interleave_stereo(caller, agent), RATE, channels=2)
    trace = CallTrace(0.0)
    trace.start(now=0.0, stream_id="s", call_id="c", format_in="x", format_out="x")
    turn = 0
    for second in range(seconds):
        for frame in range(50):
            trace.count("in", now=second + frame * 0.02)
        trace.count("out", 25, now=second + 0.5)
        if second % 6 == 3:
            turn += 1
            trace.play_started(2000.0, now=second)
            if turn % 10 == 0:
                summary = ClearSummary(900.0, 300.0, 600.0, (f"turn-{turn}",))
                trace.clear(summary, now=second + 0.6)
                trace.play_ended(900.0, now=second + 0.6)
                trace.checkpoint_outcome(f"turn-{turn}", "cleared", now=second + 0.6)
            else:
                trace.play_ended(2000.0, now=second + 1.8)
                trace.checkpoint_sent(f"turn-{turn}", now=second + 1.8, due=second + 2.0)
                trace.checkpoint_outcome(f"turn-{turn}", "played", now=second + 2.05)
    trace.close(1000, now=seconds)
    return wav, trace.write(wav)


def measure(level: float, label: str) -> dict[str, Any]:
    """Render the call five times; the median and worst time, the sizes."""
    with tempfile.TemporaryDirectory() as tmp:
        wav, trace = make_call(Path(tmp), MINUTES, level)
        render(wav, trace)  # warm the page cache
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            page = render(wav, trace)
            runs.append(time.perf_counter() - start)
        return {
            "call": f"{MINUTES} min {RATE} Hz stereo, {label}",
            "wav_mb": round(wav.stat().st_size / 1e6, 1),
            "trace_kb": round(trace.stat().st_size / 1e3, 1),
            "render_ms_median": round(statistics.median(runs) * 1000, 1),
            "render_ms_max": round(max(runs) * 1000, 1),
            "page_kb": round(len(page.encode()) / 1e3, 1),
        }


def main() -> None:
    rows = [
        measure(7000, "peak under EXACT_BELOW (exact extremes)"),
        measure(60000, "loud (high bytes after the first column)"),
    ]
    print_table("report.render", rows, list(rows[0]))
    write_json("bench_report", {"rows": rows})


if __name__ == "__main__":
    main()
