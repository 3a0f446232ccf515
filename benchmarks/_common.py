"""Shared helpers for the benchmark scripts: timing, calibration, table and JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

CALIBRATION_FRAME = (
    '{"sequenceNumber":57,"streamId":"4f23e5e8-6fdb-45ad-bfaf-b694111cf476","event":"media",'
    '"media":{"track":"inbound","timestamp":"1777888931440","chunk":57,"payload":"'
    + "AAD4//j/CAAQAAgA+P/w/wAA" * 9
    + '"},"extra_headers":"{}"}'
)


def median_ns(fn: Callable[[], object], *, number: int = 2000, repeat: int = 7) -> float:
    """Median over ``repeat`` runs of the mean time of one call, in nanoseconds."""
    fn()
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e9


def calibration_ns() -> float:
    """json.loads of a realistic media frame: a yardstick to compare machines by."""
    return median_ns(lambda: json.loads(CALIBRATION_FRAME), number=20000)


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as a fixed-width table."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write results with machine facts to benchmarks/results/NAME.json."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
