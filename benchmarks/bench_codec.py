"""Codec speed per 20 ms frame: median ns for mu-law, L16 byte swaps and every resampling pair.

Run: ``.venv/bin/python benchmarks/bench_codec.py``. Prints a table and writes
``benchmarks/results/bench_codec.json``. Not a test: it asserts nothing. The
``calibration`` row (stdlib json.loads of a media frame, ~1.9 us on the machine the
targets were set on) lets figures from different machines be compared as ratios.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from _common import calibration_ns, median_ns, print_table, write_json

from vobiz_async.codec import Resampler, pcm16_to_ulaw, swap_bytes16, ulaw_to_pcm16

REFERENCE_CALIBRATION_NS = 1900.0


def speech_like(rate: int, n: int) -> bytes:
    """Two tones with an envelope: a realistic level, not full-scale noise."""
    return struct.pack(
        f"<{n}h",
        *(
            round(
                (6000 + 3000 * math.sin(2 * math.pi * 3 * i / rate))
                * (
                    math.sin(2 * math.pi * 220 * i / rate)
                    + 0.3 * math.sin(2 * math.pi * 1330 * i / rate)
                )
            )
            for i in range(n)
        ),
    )


def _resample_call(src: int, dst: int) -> Callable[[], bytes]:
    resampler = Resampler(src, dst)
    frame = speech_like(src, src // 50)
    return lambda: resampler.process(frame)


def main() -> None:
    calib = calibration_ns()
    scale = calib / REFERENCE_CALIBRATION_NS
    pcm8 = speech_like(8000, 160)
    ulaw = pcm16_to_ulaw(pcm8)
    pcm16 = speech_like(16000, 320)
    rows: list[dict[str, Any]] = [
        {"op": "mu-law decode 8k", "target_ns": 2000, "ns": median_ns(lambda: ulaw_to_pcm16(ulaw))},
        {"op": "mu-law encode 8k", "target_ns": 4000, "ns": median_ns(lambda: pcm16_to_ulaw(pcm8))},
        {"op": "L16 swap 8k", "target_ns": 1000, "ns": median_ns(lambda: swap_bytes16(pcm8))},
        {"op": "L16 swap 16k", "target_ns": 1000, "ns": median_ns(lambda: swap_bytes16(pcm16))},
    ]
    for src, dst in [
        (8000, 16000),
        (16000, 8000),
        (8000, 24000),
        (24000, 8000),
        (16000, 24000),
        (24000, 16000),
    ]:
        rows.append(
            {
                "op": f"resample {src // 1000}k->{dst // 1000}k",
                "target_ns": 40000,
                "ns": median_ns(_resample_call(src, dst), number=300),
            }
        )
    for row in rows:
        row["ns_scaled"] = row["ns"] / scale
        row["meets_target"] = "yes" if row["ns_scaled"] <= row["target_ns"] else "no"
        row["of_20ms_budget_%"] = row["ns"] / 20_000_000 * 100
    print(
        f"calibration: json.loads(media frame) = {calib:,.0f} ns here, "
        f"{REFERENCE_CALIBRATION_NS:,.0f} ns on the reference machine (scale {scale:.2f})"
    )
    print_table(
        "codec, per 20 ms frame (median)",
        rows,
        ["op", "ns", "ns_scaled", "target_ns", "meets_target", "of_20ms_budget_%"],
    )
    write_json("bench_codec", {"calibration_ns": calib, "scale": scale, "rows": rows})


if __name__ == "__main__":
    main()
