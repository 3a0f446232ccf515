"""Resampler quality figures in pure Python, shared by the tests and benchmarks/bench_codec.py.

Every figure comes from synthetic tones (deterministic, no timing), measured the same way
for any converter given as ``convert(pcm, from_rate, to_rate) -> pcm`` (whole signal in,
whole signal out, 16-bit little-endian mono):

* ``gain_db``: level of a tone at the top of the passband (3.4 kHz when 8 kHz is one
  side, 7 kHz between 16 and 24 kHz), from a least-squares sine fit of the output;
* ``snr_db``: passband SNR (signal to noise + distortion), a tone at 1 kHz and at 60 % of
  the passband edge, the power of the fitted sine over that of the residual, worst of the two;
* ``alias_db``: rejection of everything that would land in the passband: for a downsampler,
  tones from ``low_rate - edge`` up to the input Nyquist (all of their output is alias);
  for an upsampler, the images (``k * from_rate +- f``) of passband tones, worst case.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

Convert = Callable[[bytes, int, int], bytes]
AMPLITUDE = 16000.0
SECONDS = 0.25


@dataclass(frozen=True)
class Quality:
    """Measured figures of one conversion (decibels)."""

    gain_db: float
    alias_db: float
    snr_db: float


def passband_edge(from_rate: int, to_rate: int) -> int:
    """3400 Hz when 8 kHz is one side, else 7000 Hz."""
    return 3400 if min(from_rate, to_rate) == 8000 else 7000


def tone(freq: float, rate: int, n: int, amp: float = AMPLITUDE) -> bytes:
    """``n`` samples of a sine at ``freq``, rounded to int16."""
    return struct.pack(
        f"<{n}h", *(round(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


def sine_fit(values: list[int], freq: float, rate: int) -> tuple[float, float]:
    """Least-squares ``a sin + b cos + c`` at ``freq``; returns (amplitude, residual power)."""
    w = 2 * math.pi * freq / rate
    basis = [[math.sin(w * i) for i in range(len(values))]]
    basis.append([math.cos(w * i) for i in range(len(values))])
    basis.append([1.0] * len(values))
    gram = [[math.fsum(p * q for p, q in zip(u, v, strict=True)) for v in basis] for u in basis]
    rhs = [math.fsum(p * y for p, y in zip(u, values, strict=True)) for u in basis]
    for i in range(3):  # Gaussian elimination; the Gram matrix is well conditioned
        for j in range(i + 1, 3):
            f = gram[j][i] / gram[i][i]
            gram[j] = [x - f * y for x, y in zip(gram[j], gram[i], strict=True)]
            rhs[j] -= f * rhs[i]
    coef = [0.0, 0.0, 0.0]
    for i in (2, 1, 0):
        coef[i] = (rhs[i] - sum(gram[i][k] * coef[k] for k in range(i + 1, 3))) / gram[i][i]
    residual = math.fsum(
        (y - coef[0] * s - coef[1] * c - coef[2]) ** 2
        for y, s, c in zip(values, basis[0], basis[1], strict=True)
    )
    return math.hypot(coef[0], coef[1]), residual / len(values)


def _middle(convert: Convert, src: int, dst: int, freq: float) -> list[int]:
    out = convert(tone(freq, src, int(src * SECONDS)), src, dst)
    values = list(struct.unpack(f"<{len(out) // 2}h", out))
    return values[len(values) // 5 : 4 * len(values) // 5]  # away from both edges


def _db(ratio: float) -> float:
    return 20 * math.log10(max(ratio, 1e-9))


def measure(convert: Convert, src: int, dst: int) -> Quality:
    """Gain at the passband edge, alias/image rejection and passband SNR of ``convert``."""
    edge = passband_edge(src, dst)
    low = min(src, dst)
    amplitude, _ = sine_fit(_middle(convert, src, dst, edge), edge, dst)
    gain = _db(amplitude / AMPLITUDE)
    snr = math.inf
    for freq in (1000.0, 0.6 * edge):
        values = _middle(convert, src, dst, freq)
        amplitude, residual = sine_fit(values, freq, dst)
        snr = min(snr, 10 * math.log10(amplitude**2 / 2 / max(residual, 1e-12)))
    worst = -math.inf
    if dst < src:
        for freq in range(low - edge, src // 2, 400):
            values = _middle(convert, src, dst, freq)
            rms = math.sqrt(math.fsum(v * v for v in values) / len(values))
            worst = max(worst, _db(rms * math.sqrt(2) / AMPLITUDE))
    else:
        for freq in range(200, edge + 1, 400):
            values = _middle(convert, src, dst, freq)
            for k in range(1, dst // src + 1):
                for image in (k * src - freq, k * src + freq):
                    if image < dst / 2:
                        amplitude, _ = sine_fit(values, image, dst)
                        worst = max(worst, _db(amplitude / AMPLITUDE))
    return Quality(gain_db=gain, alias_db=-worst, snr_db=snr)
