"""Codec speed per 20 ms frame and resampler quality, next to the peers installed here.

Run: ``.venv/bin/python benchmarks/bench_codec.py`` (``make bench`` installs the peers
first). Prints two tables and writes ``benchmarks/results/bench_codec.json``. Not a
test: it asserts nothing.

* Speed: median ns per 20 ms frame for mu-law decode/encode, L16 byte swaps and every
  resampling pair, ours and, in the same run, whichever peers are importable: the C
  ``audioop`` module (Python <= 3.12; what pipecat uses), ``soxr`` (the streaming
  resampler pipecat wraps, via numpy) and pipecat's own async ``pcm_to_ulaw`` /
  ``ulaw_to_pcm`` / stream resampler (``pipecat-vobiz``). The ``calibration`` row
  (stdlib json.loads of a media frame, ~1.9 us on the machine the targets were set on)
  lets figures from different machines be compared as ratios (``ns_scaled``).
* Quality: gain at the top of the passband (3.4 kHz, or 7 kHz between 16 and 24 kHz),
  alias/image rejection and passband SNR, measured in pure Python on synthetic tones by
  ``tests/_resampler_quality.py`` (the same code the tests pin our figures with), for
  our resampler and for ``soxr.resample`` (quality "HQ", its default) when installed.

soxr, numpy and pipecat are benchmark-only; the library never imports them.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import struct
import sys
import warnings
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import calibration_ns, median_ns, print_table, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests._resampler_quality import Quality, measure

from vobiz_async.codec import (
    Resampler,
    pcm16_to_ulaw,
    swap_bytes16,
    ulaw_to_pcm16,
)

REFERENCE_CALIBRATION_NS = 1900.0
PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]
RESAMPLE_TARGET_NS = 40_000
QUALITY_TARGETS = {"gain_db": "|x| <= 0.2", "alias_db": ">= 70", "snr_db": ">= 80"}


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


def optional(name: str) -> ModuleType | None:
    """Import a benchmark-only peer, or None when it is not installed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module(name)
        except ImportError:
            return None


def _ours_resample(src: int, dst: int) -> Callable[[], bytes]:
    resampler = Resampler(src, dst)
    frame = speech_like(src, src // 50)
    return lambda: resampler.process(frame)


def _ours_convert(pcm: bytes, src: int, dst: int) -> bytes:
    resampler = Resampler(src, dst)
    return resampler.process(pcm) + resampler.flush()


def _async_per_call(make: Callable[[], Coroutine[Any, Any, object]]) -> float:
    """Median ns of one awaited call, timed inside one event loop run per batch."""
    loop = asyncio.new_event_loop()
    number = 500

    async def batch() -> None:
        for _ in range(number):
            await make()

    try:
        return median_ns(lambda: loop.run_until_complete(batch()), number=1, repeat=7) / number
    finally:
        loop.close()


def speed_rows(peers: dict[str, ModuleType | None]) -> list[dict[str, Any]]:
    """Our per-frame costs and, beside each, the peers' for the same work."""
    pcm8 = speech_like(8000, 160)
    ulaw = pcm16_to_ulaw(pcm8)
    pcm16 = speech_like(16000, 320)
    audioop, np, soxr = peers["audioop"], peers["numpy"], peers["soxr"]
    pipecat = peers["pipecat.audio.utils"]
    # pipecat's codec calls take a resampler even at equal rates (it then passes through).
    pipe_resampler = pipecat.create_stream_resampler() if pipecat else None
    rows: list[dict[str, Any]] = []

    def row(op: str, target: float | None, ours: float, **peer_ns: float | None) -> None:
        rows.append({"op": op, "target_ns": target, "ns": ours, **peer_ns})

    row(
        "mu-law decode 8k",
        2000,
        median_ns(lambda: ulaw_to_pcm16(ulaw)),
        audioop_ns=median_ns(lambda: audioop.ulaw2lin(ulaw, 2)) if audioop else None,
        pipecat_ns=_async_per_call(lambda: pipecat.ulaw_to_pcm(ulaw, 8000, 8000, pipe_resampler))
        if pipecat
        else None,
    )
    row(
        "mu-law encode 8k",
        3500,
        median_ns(lambda: pcm16_to_ulaw(pcm8)),
        audioop_ns=median_ns(lambda: audioop.lin2ulaw(pcm8, 2)) if audioop else None,
        pipecat_ns=_async_per_call(lambda: pipecat.pcm_to_ulaw(pcm8, 8000, 8000, pipe_resampler))
        if pipecat
        else None,
    )
    for label, data in (("L16 swap 8k", pcm8), ("L16 swap 16k", pcm16)):
        row(
            label,
            1000,
            median_ns(partial(swap_bytes16, data)),
            audioop_ns=median_ns(partial(audioop.byteswap, data, 2)) if audioop else None,
        )
    for src, dst in PAIRS:
        frame = speech_like(src, src // 50)
        peer: dict[str, float | None] = {"audioop_ns": None, "soxr_ns": None, "pipecat_ns": None}
        if audioop:
            state: list[Any] = [None]

            def ratecv(
                src: int = src, dst: int = dst, frame: bytes = frame, state: list[Any] = state
            ) -> bytes:
                out, state[0] = audioop.ratecv(frame, 2, 1, src, dst, state[0])
                return bytes(out)

            peer["audioop_ns"] = median_ns(ratecv, number=300)
        if soxr and np:
            stream = soxr.ResampleStream(src, dst, 1, dtype="int16", quality="HQ")
            samples = np.frombuffer(frame, dtype="<i2")

            def soxr_chunk(stream: Any = stream, samples: Any = samples) -> bytes:
                return bytes(stream.resample_chunk(samples).tobytes())

            peer["soxr_ns"] = median_ns(soxr_chunk, number=300)
        if pipecat:
            peer["pipecat_ns"] = _async_per_call(
                partial(pipecat.create_stream_resampler().resample, frame, src, dst)
            )
        row(
            f"resample {src // 1000}k->{dst // 1000}k",
            RESAMPLE_TARGET_NS,
            median_ns(_ours_resample(src, dst), number=300),
            **peer,
        )
    return rows


def quality_rows(peers: dict[str, ModuleType | None]) -> list[dict[str, Any]]:
    """Our resampler's quality figures, and soxr's measured the same way."""
    np, soxr = peers["numpy"], peers["soxr"]

    def soxr_convert(pcm: bytes, src: int, dst: int) -> bytes:
        assert np is not None
        assert soxr is not None
        samples = np.frombuffer(pcm, dtype="<i2")
        return bytes(soxr.resample(samples, src, dst, quality="HQ").astype("<i2").tobytes())

    rows = []
    for src, dst in PAIRS:
        ours: Quality = measure(_ours_convert, src, dst)
        theirs = measure(soxr_convert, src, dst) if np and soxr else None
        edge = 3.4 if min(src, dst) == 8000 else 7.0
        rows.append(
            {
                "pair": f"{src // 1000}k->{dst // 1000}k",
                "edge_khz": edge,
                "gain_db": ours.gain_db,
                "soxr_gain_db": theirs.gain_db if theirs else None,
                "alias_db": ours.alias_db,
                "soxr_alias_db": theirs.alias_db if theirs else None,
                "snr_db": ours.snr_db,
                "soxr_snr_db": theirs.snr_db if theirs else None,
                "meets_targets": "yes"
                if abs(ours.gain_db) <= 0.2 and ours.alias_db >= 70 and ours.snr_db >= 80
                else "no",
            }
        )
    return rows


def main() -> None:
    calib = calibration_ns()
    scale = calib / REFERENCE_CALIBRATION_NS
    names = ("audioop", "numpy", "soxr", "pipecat.audio.utils")
    peers = {name: optional(name) for name in names}
    rows = speed_rows(peers)
    for row in rows:
        row["ns_scaled"] = row["ns"] / scale
        row["meets_target"] = "yes" if row["ns_scaled"] <= row["target_ns"] else "no"
    print(
        f"calibration: json.loads(media frame) = {calib:,.0f} ns here, "
        f"{REFERENCE_CALIBRATION_NS:,.0f} ns on the reference machine (scale {scale:.2f})"
    )
    print("peers: " + ", ".join(f"{n} {'yes' if m else 'not installed'}" for n, m in peers.items()))
    print_table(
        "codec, ns per 20 ms frame (median; peers timed in the same run)",
        rows,
        [
            "op",
            "ns",
            "ns_scaled",
            "target_ns",
            "meets_target",
            "audioop_ns",
            "soxr_ns",
            "pipecat_ns",
        ],
    )
    quality = quality_rows(peers)
    print_table(
        "resampler quality (dB; targets: gain |x| <= 0.2 at the edge, alias >= 70, SNR >= 80)",
        quality,
        [
            "pair",
            "edge_khz",
            "gain_db",
            "soxr_gain_db",
            "alias_db",
            "soxr_alias_db",
            "snr_db",
            "soxr_snr_db",
            "meets_targets",
        ],
    )
    write_json(
        "bench_codec",
        {
            "calibration_ns": calib,
            "scale": scale,
            "peers": {name: module is not None for name, module in peers.items()},
            "rows": rows,
            "quality_targets": QUALITY_TARGETS,
            "quality": quality,
        },
    )


if __name__ == "__main__":
    main()
