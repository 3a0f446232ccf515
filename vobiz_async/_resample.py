"""Streaming resampler for 8/16/24 kHz PCM16, standard library only (private module).

A polyphase FIR filter evaluated by big-integer multiplication: each input sample
becomes a 40-bit "digit" of one Python ``int`` and each phase's taps another, so one
C-level multiply computes a whole block of multiply-accumulates exactly (integers, no
rounding drift). That exactness is why feeding a signal in chunks gives bit-identical
output to feeding it whole. Long inputs are processed in bounded internal blocks, so
the cost per sample is flat whatever the chunk size.

The public name is ``vobiz_async.codec.Resampler`` (re-exported there and at the top
level); nothing else in this module is public.
"""

from __future__ import annotations

import math
import struct

from .errors import CodecError

_RATES = (8000, 16000, 24000)
_BLOCK_OUTPUTS = 4096  # output samples per internal block: bounds every big int


def _check_even(data: bytes) -> None:
    if len(data) % 2:
        raise CodecError(f"16-bit PCM needs an even number of bytes, got {len(data)}")


_DIGIT_BYTES = 5  # one sample or accumulator per 40-bit digit
_DIGIT_BITS = 8 * _DIGIT_BYTES
_TAP_BITS = 16  # taps are integers scaled by 2**16
_XOR80 = bytes(b ^ 0x80 for b in range(256))
# Added to every accumulator digit so all digits are non-negative (no borrows between
# digits: partial sums at block edges reach about -2**32.5) and the rounded output sample
# lands in bytes 2-3 of its digit as offset binary, with byte 4 == 3 exactly when it
# fits in int16. No borrows means results never depend on how the input was chunked.
_DIGIT_BIAS = (0x38000 << _TAP_BITS) + (1 << (_TAP_BITS - 1))
_IN_RANGE = 3
# Filter design: flat (Kaiser ripple ~1e-4) to the top of the phone band (3.4 kHz) when
# 8 kHz is one side, to 7 kHz between 16 and 24 kHz; everything that would alias or
# image into that band is attenuated by _ATTEN_DB (Kaiser's estimate; the integer taps
# and 16-bit output keep the measured figures a little below it).
_PASS_EDGE = {8000: 3400, 16000: 7000}
_ATTEN_DB = 80.0


def _bessel_i0(x: float) -> float:
    total, term, k = 1.0, 1.0, 1
    while term > 1e-12 * total:
        term *= (x / (2 * k)) ** 2
        total += term
        k += 1
    return total


def _design_lowpass(
    num_taps: int, cutoff: float, rate: float, gain: float, beta: float
) -> list[int]:
    """Kaiser-windowed sinc taps, scaled by ``gain * 2**16`` and rounded to integers."""
    centre = (num_taps - 1) / 2
    norm = _bessel_i0(beta)
    taps = []
    for i in range(num_taps):
        t = i - centre
        x = 2 * cutoff / rate
        sinc = x if t == 0 else math.sin(math.pi * x * t) / (math.pi * t)
        window = _bessel_i0(beta * math.sqrt(max(0.0, 1 - (t / centre) ** 2))) / norm
        taps.append(round(sinc * window * gain * (1 << _TAP_BITS)))
    return taps


def _unit_dc_gain(taps: list[int], up: int) -> None:
    """Make every phase's taps sum to exactly ``2**16`` (rounding left them off by a few).

    Unequal phase gains would modulate a steady signal at the output's phase period,
    a spur at the passband's SNR floor; the correction goes to each phase's largest tap.
    """
    for phase in range(up):
        indices = range(phase, len(taps), up)
        error = (1 << _TAP_BITS) - sum(taps[i] for i in indices)
        taps[max(indices, key=lambda i: taps[i])] += error


class _Phase:
    """Precomputed big-integer filters for one output phase of a polyphase resampler."""

    __slots__ = ("_biases", "copy", "digits", "filters", "gain_offset")

    def __init__(self, taps: list[int], phase: int, up: int, down: int) -> None:
        sub = taps[phase::up]  # taps used by this phase, newest input first
        self.digits = max(1, -(-len(sub) // down))
        # (residue, zero digits skipped, packed taps) for every residue with a non-zero
        # tap. The lowpass cuts at the lower rate's Nyquist frequency, so every
        # max(up, down)-th tap from the centre is zero: one residue stream of one phase
        # holds only the centre tap (a one-digit multiply) and others none at all.
        self.filters: list[tuple[int, int, int]] = []
        for r in range(down):
            coeffs = sub[r::down]
            if not any(coeffs):
                continue
            skip = next(i for i, c in enumerate(coeffs) if c)
            packed = sum(c << (_DIGIT_BITS * i) for i, c in enumerate(coeffs[skip:]))
            self.filters.append((r, skip, packed))
        # A phase whose only tap is 1.0 (the centre, upsampling) copies input sample
        # ``newest - copy``: no arithmetic at all.
        nonzero = [i for i, c in enumerate(sub) if c]
        unit = len(nonzero) == 1 and sub[nonzero[0]] == 1 << _TAP_BITS
        self.copy = nonzero[0] if unit else None
        # Inputs are packed as offset binary (x + 32768): undo that constant here.
        self.gain_offset = _DIGIT_BIAS - 32768 * sum(sub)
        self._biases: dict[int, int] = {}

    def bias(self, digits: int) -> int:
        """``gain_offset`` in each of ``digits`` digits (cached: frames repeat sizes)."""
        value = self._biases.get(digits)
        if value is None:
            # gain_offset * (1 + B + B**2 + ... + B**(digits-1)), in linear time.
            repunit = ((1 << (_DIGIT_BITS * digits)) - 1) // ((1 << _DIGIT_BITS) - 1)
            value = self.gain_offset * repunit
            if len(self._biases) < 16:
                self._biases[digits] = value
        return value


class Resampler:
    """Streaming sample-rate converter for 8, 16 and 24 kHz 16-bit PCM, any direction.

    A polyphase FIR (Kaiser-windowed sinc designed for 80 dB) upsamples by ``L``,
    filters and keeps every ``M``-th sample, computing only the samples it keeps. It is
    flat (ripple about 1e-4) to 3.4 kHz when 8 kHz is one side and to 7 kHz between 16
    and 24 kHz, and attenuates everything that would alias or image into that band
    (from ``lower_rate - edge``, e.g. 4.6 kHz) by at least 70 dB as measured; passband
    SNR is above 80 dB (``tests/test_resample_quality.py`` pins these figures). Its group
    delay is compensated: output sample ``m`` is aligned with input time ``m * M / L``.

    ``process()`` keeps the filter history between calls, so feeding a signal in 20 ms
    chunks gives exactly the same bytes as feeding it all at once. ``flush()`` drains
    the filter (padding with silence) so the total output is
    ``ceil(input_samples * to_rate / from_rate)`` samples, then resets the resampler
    for reuse. Cost is linear in the input length whatever the chunk size: long inputs
    are worked through in bounded internal blocks.

    Args:
        from_rate: input rate in Hz (8000, 16000 or 24000).
        to_rate: output rate in Hz (8000, 16000 or 24000).

    Raises:
        CodecError: unsupported rate.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        for rate in (from_rate, to_rate):
            if rate not in _RATES:
                raise CodecError(f"unsupported sample rate {rate!r}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        g = math.gcd(from_rate, to_rate)
        self._up = up = to_rate // g
        self._down = down = from_rate // g
        if up == down:
            self._phases: list[_Phase] = []
            self._num_taps = self._delay = 0
            self._taps: tuple[int, ...] = ()
        else:
            low = min(from_rate, to_rate)
            rate = from_rate * up
            pass_edge = _PASS_EDGE[low]
            # The lowest frequency whose alias (down) or image (up) lands in the passband.
            stop_edge = low - pass_edge
            beta = 0.1102 * (_ATTEN_DB - 8.7)
            width = 2 * math.pi * (stop_edge - pass_edge) / rate
            num_taps = math.ceil((_ATTEN_DB - 8) / (2.285 * width)) + 1
            num_taps += 1 - num_taps % 2  # odd: integer group delay
            taps = _design_lowpass(num_taps, (pass_edge + stop_edge) / 2, rate, up, beta)
            _unit_dc_gain(taps, up)
            self._taps = tuple(taps)
            self._num_taps = num_taps
            self._delay = (num_taps - 1) // 2
            self._phases = [_Phase(taps, p, up, down) for p in range(up)]
        self._reset()

    def _reset(self) -> None:
        history = (self._num_taps // self._up + 2) * self._down + 2 if self._phases else 0
        self._buf = bytearray(2 * history)  # int16 LE samples x[_base:]
        self._base = -history  # absolute index of _buf[0:2]; x[n < 0] == 0
        self._consumed = 0  # real input samples seen
        self._next = 0  # next output index

    @property
    def delay_samples(self) -> int:
        """Input samples the filter must see beyond an output's time before emitting it."""
        return -(-self._delay // self._up) if self._phases else 0

    def process(self, pcm: bytes) -> bytes:
        """Resample a chunk; returns every output sample that is fully determined so far.

        Raises:
            CodecError: odd byte count.
        """
        _check_even(pcm)
        if not self._phases:
            return bytes(pcm)
        self._buf += pcm
        self._consumed += len(pcm) // 2
        return self._emit_blocks(self._computable_end())

    def flush(self) -> bytes:
        """Drain the filter, return the remaining output, and reset for reuse."""
        if not self._phases:
            return b""
        total = -(-self._consumed * self._up // self._down)
        end_needed = ((total - 1) * self._down + self._delay) // self._up + 1
        have = self._base + len(self._buf) // 2
        if end_needed > have:
            self._buf += bytes(2 * (end_needed - have))
        out = self._emit_blocks(total)
        self._reset()
        return out

    def _computable_end(self) -> int:
        n_end = self._base + len(self._buf) // 2
        return (self._up * n_end - 1 - self._delay) // self._down + 1

    def _emit_blocks(self, end: int) -> bytes:
        """Emit outputs up to ``end`` in blocks of at most ``_BLOCK_OUTPUTS``, then trim.

        Every output sample depends only on the input, never on the block it was
        computed in, so blocking changes the cost (bounded big ints: linear in the
        input length) and not one byte of the result.
        """
        if end - self._next <= _BLOCK_OUTPUTS:
            out = self._emit(end)
        else:
            parts = []
            while self._next < end:
                parts.append(self._emit(min(end, self._next + _BLOCK_OUTPUTS)))
            out = b"".join(parts)
        # Keep only the history the next output still needs.
        t_next = self._next * self._down + self._delay - (self._num_taps - 1)
        keep_from = t_next // self._up - self._down - 1
        drop = keep_from - self._base
        if drop > 0:
            del self._buf[: 2 * drop]
            self._base = keep_from
        return out

    def _emit(self, end: int) -> bytes:
        start = self._next
        count = end - start
        if count <= 0:
            return b""
        up, down = self._up, self._down
        jobs = []
        for c in range(min(up, count)):
            n_out = -(-(count - c) // up)
            t = (start + c) * down + self._delay
            newest = t // up
            jobs.append((c, n_out, newest, self._phases[t - newest * up]))
        out = bytearray(2 * count)
        buf, step = self._buf, 2 * down
        filtered = []
        for job in jobs:
            c, n_out, newest, phase = job
            if phase.copy is None:
                filtered.append(job)
                continue
            offset = 2 * (newest - phase.copy - self._base)
            stop = offset + step * (n_out - 1) + 1
            out[2 * c :: 2 * up] = buf[offset:stop:step]
            out[2 * c + 1 :: 2 * up] = buf[offset + 1 : stop + 1 : step]
        if filtered:
            # Every stream below is a window of one of `down` streams packed once per call.
            first = min(t - (down - 1) - (ph.digits - 1) * down for _, _, t, ph in filtered)
            last = max(t + (n - 1) * down for _, n, t, _ in filtered)
            streams = self._pack(first, last)
            for c, n_out, newest, phase in filtered:
                lo, hi = self._convolve(phase, newest - first, n_out, streams)
                out[2 * c :: 2 * up] = lo
                out[2 * c + 1 :: 2 * up] = hi
        self._next = end
        return bytes(out)

    def _pack(self, first: int, last: int) -> list[int]:
        """Pack input samples ``first..last`` as ``down`` ints, one per residue mod ``down``.

        Stream ``k`` holds samples ``first + k``, ``first + k + down``, ... as 40-bit
        digits in offset binary (``x + 32768``), oldest in the lowest digit.
        """
        down, width = self._down, _DIGIT_BYTES
        streams = []
        for k in range(down):
            n = (last - first - k) // down + 1
            offset = 2 * (first + k - self._base)
            stop = offset + 2 * down * (n - 1) + 2
            packed = bytearray(width * n)
            packed[0::width] = self._buf[offset : stop : 2 * down]
            packed[1::width] = self._buf[offset + 1 : stop : 2 * down].translate(_XOR80)
            streams.append(int.from_bytes(packed, "little"))
        return streams

    def _convolve(
        self, phase: _Phase, newest: int, n_out: int, streams: list[int]
    ) -> tuple[bytes, bytes]:
        """Compute ``n_out`` outputs of one phase; returns their low and high bytes.

        ``newest`` is the newest input of the first output, relative to the packed
        ``streams``.
        """
        down, width = self._down, _DIGIT_BYTES
        digits = phase.digits
        count = digits + n_out - 1  # input samples per residue stream
        mask = (1 << (_DIGIT_BITS * count)) - 1
        acc = 0
        for r, skip, filt in phase.filters:
            oldest = newest - r - (digits - 1) * down
            window = streams[oldest % down] >> (_DIGIT_BITS * (oldest // down))
            acc += ((window & mask) * filt) << (_DIGIT_BITS * skip)
        total_digits = count + digits
        acc += phase.bias(total_digits)
        raw = acc.to_bytes(width * total_digits + 1, "little")
        begin, end = width * (digits - 1), width * (digits - 1 + n_out)
        lo = raw[begin + 2 : end : width]
        hi = raw[begin + 3 : end : width]
        overflow = raw[begin + 4 : end : width]
        if overflow.count(_IN_RANGE) == n_out:
            return lo, hi.translate(_XOR80)
        # Rare: the filter overshot int16 (a clipped input ringing); saturate.
        values = [
            max(-32768, min(32767, (o << 16 | h << 8 | lb) - 0x38000))
            for lb, h, o in zip(lo, hi, overflow, strict=True)
        ]
        pcm = struct.pack(f"<{n_out}h", *values)
        return pcm[0::2], pcm[1::2]


class Resamplers:
    """Streaming resamplers to one rate, one per source rate, made on first use.

    What a stream needs when audio of several rates (8/16/24 kHz TTS, a peer's frames)
    goes to one format: each source rate keeps its own filter state, so every rate's
    audio stays continuous across calls.

    Args:
        to_rate: the rate everything is converted to.
    """

    __slots__ = ("_by_rate", "to_rate")

    def __init__(self, to_rate: int) -> None:
        self.to_rate = to_rate
        self._by_rate: dict[int, Resampler] = {}

    def process(self, pcm: bytes, from_rate: int) -> bytes:
        """``pcm`` at ``from_rate`` converted to :attr:`to_rate` (as is when equal).

        Raises:
            CodecError: an unsupported rate or an odd byte count.
        """
        if from_rate == self.to_rate:
            return pcm
        resampler = self._by_rate.get(from_rate)
        if resampler is None:
            resampler = self._by_rate[from_rate] = Resampler(from_rate, self.to_rate)
        return resampler.process(pcm)

    def flush(self) -> bytes:
        """Every filter's held-back tail (in the order the rates were first seen); the
        resamplers are reset for reuse."""
        return b"".join(r.flush() for r in self._by_rate.values())

    def clear(self) -> None:
        """Forget every filter's state (a barge-in: what was held back is not heard)."""
        self._by_rate.clear()
