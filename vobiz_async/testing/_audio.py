"""Built-in test audio: a deterministic speech-like signal, no files needed."""

from __future__ import annotations

import math
import random
import struct

__all__ = ["speech_like", "tone"]


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0) -> bytes:
    """A sine tone as PCM16 LE."""
    n = int(seconds * rate)
    step = 2 * math.pi * freq / rate
    return struct.pack(f"<{n}h", *(round(amplitude * math.sin(step * i)) for i in range(n)))


def speech_like(seconds: float, rate: int = 8000, *, seed: int = 7, level: float = 6000.0) -> bytes:
    """Syllables of voiced sound with pauses: a glottal pulse train through two formants.

    It has what voice pipelines react to: a pitch that drifts (100-220 Hz), vowel-like
    formants, syllable envelopes of 120-300 ms and silences between words. Deterministic
    for a given ``seed``.
    """
    rng = random.Random(seed)
    total = int(seconds * rate)
    out = [0] * total
    pos = 0
    while pos < total:
        syllables = rng.randint(1, 4)
        for _ in range(syllables):
            length = int(rate * rng.uniform(0.12, 0.30))
            pitch = rng.uniform(100.0, 220.0)
            f1, f2 = rng.choice([(730, 1090), (270, 2290), (530, 1840), (300, 870), (660, 1720)])
            _syllable(out, pos, min(length, total - pos), rate, pitch, f1, f2, level)
            pos += length
            if pos >= total:
                break
        pos += int(rate * rng.uniform(0.15, 0.6))  # a pause between words
    return struct.pack(f"<{total}h", *out)


def _syllable(
    out: list[int],
    start: int,
    length: int,
    rate: int,
    pitch: float,
    f1: float,
    f2: float,
    level: float,
) -> None:
    if length <= 0:
        return
    # Two-pole resonators (formants) excited by a pulse train at the pitch.
    coeffs = []
    for freq, bandwidth in ((f1, 90.0), (f2, 110.0)):
        r = math.exp(-math.pi * bandwidth / rate)
        coeffs.append((2 * r * math.cos(2 * math.pi * freq / rate), -r * r))
    period = rate / pitch
    next_pulse = 0.0
    y1 = [0.0, 0.0]
    y2 = [0.0, 0.0]
    gain = level / 40.0
    for i in range(length):
        x = 0.0
        if i >= next_pulse:
            x = 1.0
            next_pulse += period * (1.0 + 0.002 * math.sin(i / 50))
        (a1, b1), (a2, b2) = coeffs
        v1 = x + a1 * y1[0] + b1 * y1[1]
        y1[1], y1[0] = y1[0], v1
        v2 = v1 + a2 * y2[0] + b2 * y2[1]
        y2[1], y2[0] = y2[0], v2
        envelope = math.sin(math.pi * i / length) ** 0.6
        sample = int(gain * v2 * envelope)
        out[start + i] = max(-32768, min(32767, sample))
