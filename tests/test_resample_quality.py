"""Resampler quality pinned on synthetic tones: flat passband, alias rejection, SNR, exactness."""

from __future__ import annotations

import random
import struct

import pytest

from tests._resampler_quality import measure
from vobiz_async.codec import Resampler

PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]


def convert(pcm: bytes, src: int, dst: int) -> bytes:
    resampler = Resampler(src, dst)
    return resampler.process(pcm) + resampler.flush()


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_resampler_meets_the_quality_targets(src: int, dst: int) -> None:
    """|gain| <= 0.2 dB at 3.4 kHz (7 kHz), alias rejection >= 70 dB, passband SNR >= 80 dB."""
    quality = measure(convert, src, dst)
    assert abs(quality.gain_db) <= 0.2
    assert quality.alias_db >= 70
    assert quality.snr_db >= 80


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_resampler_output_is_the_direct_fir_formula(src: int, dst: int) -> None:
    """Every output is round(sum(h[k] * x[(m*M + delay - k) / L]) / 2**16), saturated."""
    rng = random.Random(src + dst)
    samples = [rng.randint(-32768, 32767) for _ in range(700)]
    resampler = Resampler(src, dst)
    got = resampler.process(struct.pack(f"<{len(samples)}h", *samples))
    up, down = resampler._up, resampler._down
    taps, delay = resampler._taps, resampler._delay
    expected = []
    for m in range(len(got) // 2):
        t = m * down + delay
        total = sum(
            h * samples[(t - k) // up]
            for k, h in enumerate(taps)
            if (t - k) % up == 0 and 0 <= (t - k) // up < len(samples)
        )
        expected.append(max(-32768, min(32767, (total + (1 << 15)) >> 16)))
    assert list(struct.unpack(f"<{len(got) // 2}h", got)) == expected
    assert len(expected) >= 600 * dst // src  # most of the input came out
