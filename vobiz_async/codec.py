"""Audio for Vobiz streams, standard library only: G.711 mu-law, L16, resampling, framing, WAV.

Every function takes and returns ``bytes``. "PCM" below always means signed 16-bit
little-endian mono, the form the rest of the library hands to applications. There is
no numpy and no ``audioop`` (removed in Python 3.13); the hot paths avoid per-sample
Python loops:

* mu-law decode is two ``bytes.translate`` calls and two slice assignments;
* L16 byte order swaps are slice assignments;
* resampling is a polyphase FIR filter evaluated by big-integer multiplication: each
  sample becomes a 48-bit "digit" of one Python ``int``, so one C-level multiply
  computes a whole block of multiply-accumulates, exactly (integers, no rounding drift),
  which is also why feeding a signal in chunks gives bit-identical output.

Wire facts come from ``shared/spec/vobiz-audio-streams.md`` section 4.5: inbound is
mu-law 8 kHz or L16 8/16 kHz, outbound adds L16 24 kHz, 20 ms frames, silence byte 0xFF
for mu-law and 0x0000 for L16.
"""

from __future__ import annotations

import array
import enum
import math
import struct
import sys
import wave
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Literal

from .errors import CodecError

__all__ = [
    "FRAME_MS",
    "AudioEncoding",
    "AudioFormat",
    "ByteOrder",
    "Framer",
    "Resampler",
    "WavAudio",
    "frame_size",
    "interleave_stereo",
    "l16_to_pcm16",
    "pcm16_to_l16",
    "pcm16_to_ulaw",
    "read_wav",
    "silence",
    "swap_bytes16",
    "ulaw_to_pcm16",
    "write_wav",
]

FRAME_MS = 20
"""Duration of one Vobiz media frame in milliseconds (spec 4.3.3)."""

ByteOrder = Literal["little", "big"]
SUPPORTED_RATES = (8000, 16000, 24000)


class AudioEncoding(enum.StrEnum):
    """The two encodings Vobiz carries, as written on the wire (no ``;rate=`` suffix)."""

    MULAW = "audio/x-mulaw"
    L16 = "audio/x-l16"


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An encoding and a sample rate: what one direction of a stream carries.

    Attributes:
        encoding: mu-law or L16.
        sample_rate: 8000, 16000 or 24000 (mu-law is 8000 only).
    """

    encoding: AudioEncoding
    sample_rate: int

    def __post_init__(self) -> None:
        if self.sample_rate not in SUPPORTED_RATES:
            raise CodecError(f"unsupported sample rate {self.sample_rate!r}")
        if self.encoding is AudioEncoding.MULAW and self.sample_rate != 8000:
            raise CodecError("mu-law is 8000 Hz only")

    @classmethod
    def parse(cls, content_type: str, sample_rate: int | str | None = None) -> AudioFormat:
        """Parse ``audio/x-l16;rate=16000`` (or a bare type plus ``sample_rate``).

        Args:
            content_type: a content type, with or without a ``;rate=`` parameter.
            sample_rate: the rate when the content type does not carry one; mu-law
                defaults to 8000, L16 to 8000 (Vobiz's default content type).

        Raises:
            CodecError: unknown encoding or unsupported rate.
        """
        base, _, params = content_type.strip().partition(";")
        try:
            encoding = AudioEncoding(base.strip().lower())
        except ValueError:
            raise CodecError(f"unsupported content type {content_type!r}") from None
        rate: int | str | None = sample_rate
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "rate" and value.strip():
                rate = value.strip()
        try:
            rate_int = int(rate) if rate is not None else 8000
        except (TypeError, ValueError):
            raise CodecError(f"bad sample rate {rate!r}") from None
        return cls(encoding, rate_int)

    @property
    def content_type(self) -> str:
        """The REST/XML form, e.g. ``audio/x-l16;rate=16000``."""
        return f"{self.encoding.value};rate={self.sample_rate}"

    @property
    def frame_bytes(self) -> int:
        """Bytes in one 20 ms frame of this format."""
        return frame_size(self.encoding, self.sample_rate)

    @property
    def bytes_per_ms(self) -> float:
        """Encoded bytes per millisecond of audio."""
        width = 1 if self.encoding is AudioEncoding.MULAW else 2
        return self.sample_rate * width / 1000


def frame_size(encoding: AudioEncoding | str, sample_rate: int, ms: int = FRAME_MS) -> int:
    """Bytes in ``ms`` milliseconds of audio (160 for 20 ms of mu-law 8 kHz)."""
    width = 1 if AudioEncoding(encoding) is AudioEncoding.MULAW else 2
    return sample_rate * ms // 1000 * width


def silence(encoding: AudioEncoding | str, sample_rate: int, ms: int = FRAME_MS) -> bytes:
    """``ms`` milliseconds of silence in ``encoding`` (0xFF bytes for mu-law, zeros for L16)."""
    fill = b"\xff" if AudioEncoding(encoding) is AudioEncoding.MULAW else b"\x00"
    return fill * frame_size(encoding, sample_rate, ms)


def _check_even(data: bytes, what: str = "16-bit PCM") -> None:
    if len(data) % 2:
        raise CodecError(f"{what} needs an even number of bytes, got {len(data)}")


# --------------------------------------------------------------------------------------
# G.711 mu-law, bit-exact with the classic Sun reference (the one CPython's audioop used)
# --------------------------------------------------------------------------------------

_BIAS = 0x84
_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _ulaw_decode_one(code: int) -> int:
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t <<= (u & 0x70) >> 4
    return _BIAS - t if u & 0x80 else t - _BIAS


def _ulaw_encode_one(sample: int) -> int:
    """Encode one signed 16-bit sample the way ``st_14linear2ulaw(sample >> 2)`` does."""
    pcm = sample >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 32635) + (_BIAS >> 2)
    for seg, end in enumerate(_SEG_END):
        if pcm <= end:
            return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


_ULAW_VALUES = [_ulaw_decode_one(c) for c in range(256)]
_ULAW_LO = bytes(v & 0xFF for v in _ULAW_VALUES)
_ULAW_HI = bytes((v >> 8) & 0xFF for v in _ULAW_VALUES)
# Indexed by the sample read as an unsigned 16-bit integer in *native* byte order.
_ULAW_ENCODE = bytes(_ulaw_encode_one(i - 65536 if i >= 32768 else i) for i in range(65536))
_NATIVE_LITTLE = sys.byteorder == "little"


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode G.711 mu-law bytes to 16-bit little-endian PCM (twice as long)."""
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(_ULAW_LO)
    out[1::2] = data.translate(_ULAW_HI)
    return bytes(out)


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 mu-law (half as long).

    Raises:
        CodecError: odd byte count.
    """
    _check_even(data)
    if not data:
        return b""
    if not _NATIVE_LITTLE:
        data = swap_bytes16(data)
    indices = memoryview(data).cast("H")
    if len(indices) == 1:
        return bytes((_ULAW_ENCODE[indices[0]],))
    return bytes(itemgetter(*indices)(_ULAW_ENCODE))


# --------------------------------------------------------------------------------------
# L16
# --------------------------------------------------------------------------------------


def swap_bytes16(data: bytes) -> bytes:
    """Swap the two bytes of every 16-bit sample (little <-> big endian).

    Raises:
        CodecError: odd byte count.
    """
    _check_even(data)
    samples = array.array("h", data)
    samples.byteswap()
    return samples.tobytes()


def _check_order(byte_order: str) -> None:
    if byte_order not in ("little", "big"):
        raise CodecError(f"byte order must be 'little' or 'big', not {byte_order!r}")


def l16_to_pcm16(data: bytes, byte_order: ByteOrder) -> bytes:
    """Convert L16 in ``byte_order`` to little-endian PCM.

    Raises:
        CodecError: odd byte count or unknown byte order.
    """
    _check_order(byte_order)
    _check_even(data, "L16")
    return bytes(data) if byte_order == "little" else swap_bytes16(data)


def pcm16_to_l16(data: bytes, byte_order: ByteOrder) -> bytes:
    """Convert little-endian PCM to L16 in ``byte_order``.

    Raises:
        CodecError: odd byte count or unknown byte order.
    """
    return l16_to_pcm16(data, byte_order)


# --------------------------------------------------------------------------------------
# Resampling: polyphase windowed-sinc FIR, evaluated with big-integer multiplication
# --------------------------------------------------------------------------------------

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


class _Phase:
    """Precomputed big-integer filters for one output phase of a polyphase resampler."""

    __slots__ = ("digits", "filters", "gain_offset")

    def __init__(self, taps: list[int], phase: int, up: int, down: int) -> None:
        sub = taps[phase::up]  # taps used by this phase, newest input first
        self.digits = max(1, -(-len(sub) // down))
        self.filters: list[int] = []
        for r in range(down):
            coeffs = sub[r::down]
            coeffs += [0] * (self.digits - len(coeffs))
            self.filters.append(sum(c << (_DIGIT_BITS * i) for i, c in enumerate(coeffs)))
        # Inputs are packed as offset binary (x + 32768): undo that constant here.
        self.gain_offset = _DIGIT_BIAS - 32768 * sum(sub)


class Resampler:
    """Streaming sample-rate converter for 8, 16 and 24 kHz 16-bit PCM, any direction.

    A polyphase FIR (Kaiser-windowed sinc, about 60 dB stopband, passband to 40 % of
    the lower rate, i.e. 3.2 kHz when 8 kHz is involved) upsamples by ``L``, filters
    and keeps every ``M``-th sample, computing only the samples it keeps. Its group
    delay is compensated: output sample ``m`` is aligned with input time ``m * M / L``.

    ``process()`` keeps the filter history between calls, so feeding a signal in 20 ms
    chunks gives exactly the same bytes as feeding it all at once. ``flush()`` drains
    the filter (padding with silence) so the total output is
    ``ceil(input_samples * to_rate / from_rate)`` samples, then resets the resampler
    for reuse.

    Args:
        from_rate: input rate in Hz (8000, 16000 or 24000).
        to_rate: output rate in Hz (8000, 16000 or 24000).

    Raises:
        CodecError: unsupported rate.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        for rate in (from_rate, to_rate):
            if rate not in SUPPORTED_RATES:
                raise CodecError(f"unsupported sample rate {rate!r}")
        self.from_rate = from_rate
        self.to_rate = to_rate
        g = math.gcd(from_rate, to_rate)
        self._up = up = to_rate // g
        self._down = down = from_rate // g
        if up == down:
            self._phases: list[_Phase] = []
            self._num_taps = self._delay = 0
        else:
            low = min(from_rate, to_rate)
            rate = from_rate * up
            stop_edge, pass_edge = 0.5 * low, 0.4 * low
            atten = 60.0
            beta = 0.1102 * (atten - 8.7)
            width = 2 * math.pi * (stop_edge - pass_edge) / rate
            num_taps = math.ceil((atten - 8) / (2.285 * width)) + 1
            num_taps += 1 - num_taps % 2  # odd: integer group delay
            taps = _design_lowpass(num_taps, (pass_edge + stop_edge) / 2, rate, up, beta)
            self._num_taps = num_taps
            self._delay = (num_taps - 1) // 2
            self._phases = [_Phase(taps, p, up, down) for p in range(up)]
        self._repunits: dict[int, int] = {}
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
        return self._emit(self._computable_end())

    def flush(self) -> bytes:
        """Drain the filter, return the remaining output, and reset for reuse."""
        if not self._phases:
            return b""
        total = -(-self._consumed * self._up // self._down)
        end_needed = ((total - 1) * self._down + self._delay) // self._up + 1
        have = self._base + len(self._buf) // 2
        if end_needed > have:
            self._buf += bytes(2 * (end_needed - have))
        out = self._emit(total)
        self._reset()
        return out

    def _computable_end(self) -> int:
        n_end = self._base + len(self._buf) // 2
        return (self._up * n_end - 1 - self._delay) // self._down + 1

    def _repunit(self, digits: int) -> int:
        value = self._repunits.get(digits)
        if value is None:
            value = sum(1 << (_DIGIT_BITS * e) for e in range(digits))
            if len(self._repunits) < 64:
                self._repunits[digits] = value
        return value

    def _emit(self, end: int) -> bytes:
        start = self._next
        count = end - start
        if count <= 0:
            return b""
        up, down = self._up, self._down
        out = bytearray(2 * count)
        for c in range(min(up, count)):
            n_out = -(-(count - c) // up)
            t = (start + c) * down + self._delay
            newest = t // up
            phase = self._phases[t - newest * up]
            lo, hi = self._convolve(phase, newest, n_out)
            out[2 * c :: 2 * up] = lo
            out[2 * c + 1 :: 2 * up] = hi
        self._next = end
        # Keep only the history the next output still needs.
        t_next = end * down + self._delay - (self._num_taps - 1)
        keep_from = t_next // up - down - 1
        drop = keep_from - self._base
        if drop > 0:
            del self._buf[: 2 * drop]
            self._base = keep_from
        return bytes(out)

    def _convolve(self, phase: _Phase, newest: int, n_out: int) -> tuple[bytes, bytes]:
        """Compute ``n_out`` outputs of one phase; returns their low and high bytes."""
        down, width = self._down, _DIGIT_BYTES
        digits = phase.digits
        count = digits + n_out - 1  # input samples per residue stream
        acc = 0
        for r, filt in enumerate(phase.filters):
            first = newest - r - (digits - 1) * down  # oldest sample of this stream
            offset = 2 * (first - self._base)
            stop = offset + 2 * down * (count - 1) + 2
            packed = bytearray(width * count)
            packed[0::width] = self._buf[offset : stop : 2 * down]
            packed[1::width] = self._buf[offset + 1 : stop : 2 * down].translate(_XOR80)
            acc += int.from_bytes(packed, "little") * filt
        total_digits = count + digits
        acc += phase.gain_offset * self._repunit(total_digits)
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


# --------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------


class Framer:
    """Cut an encoded byte stream into exact 20 ms frames, carrying the remainder.

    Args:
        encoding: the encoding of the bytes pushed in (decides frame size and silence).
        sample_rate: their sample rate.
        frame_ms: frame duration, 20 ms by default (the Vobiz cadence).
    """

    def __init__(
        self, encoding: AudioEncoding | str, sample_rate: int, frame_ms: int = FRAME_MS
    ) -> None:
        self.encoding = AudioEncoding(encoding)
        self.sample_rate = sample_rate
        self.frame_bytes = frame_size(self.encoding, sample_rate, frame_ms)
        if self.frame_bytes <= 0:
            raise CodecError("frame size must be positive")
        self._fill = b"\xff" if self.encoding is AudioEncoding.MULAW else b"\x00"
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes carried over, waiting for the rest of their frame."""
        return len(self._pending)

    def push(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every complete frame now available."""
        self._pending += data
        size = self.frame_bytes
        whole = len(self._pending) - len(self._pending) % size
        if not whole:
            return []
        chunk = bytes(self._pending[:whole])
        del self._pending[:whole]
        return [chunk[i : i + size] for i in range(0, whole, size)]

    def flush(self) -> bytes | None:
        """Return the carried remainder padded with silence to a full frame, or None."""
        if not self._pending:
            return None
        frame = bytes(self._pending) + self._fill * (self.frame_bytes - len(self._pending))
        self._pending.clear()
        return frame

    def clear(self) -> int:
        """Drop the carried remainder; returns how many bytes were dropped."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped


# --------------------------------------------------------------------------------------
# WAV
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WavAudio:
    """16-bit PCM read from a WAV file.

    Attributes:
        pcm: interleaved little-endian 16-bit samples.
        sample_rate: frames per second.
        channels: 1 (mono) or 2 (stereo).
    """

    pcm: bytes
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / (2 * self.channels * self.sample_rate)

    def mono(self) -> bytes:
        """The first channel as mono PCM (the audio itself when already mono)."""
        if self.channels == 1:
            return self.pcm
        width = 2 * self.channels
        out = bytearray(len(self.pcm) // self.channels)
        out[0::2] = self.pcm[0::width]
        out[1::2] = self.pcm[1::width]
        return bytes(out)


def read_wav(path: str | Path) -> WavAudio:
    """Read a 16-bit mono or stereo WAV file.

    Raises:
        CodecError: not a WAV file, or not 16-bit, or more than two channels.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise CodecError(f"{path}: only 16-bit WAV is supported")
            if wav.getnchannels() not in (1, 2):
                raise CodecError(f"{path}: only mono or stereo WAV is supported")
            return WavAudio(
                wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels()
            )
    except (wave.Error, EOFError) as exc:
        raise CodecError(f"{path}: not a readable WAV file ({exc})") from exc


def write_wav(path: str | Path, pcm: bytes, sample_rate: int, channels: int = 1) -> None:
    """Write interleaved little-endian 16-bit PCM as a WAV file.

    Raises:
        CodecError: a byte count that is not a whole number of frames.
    """
    if channels not in (1, 2):
        raise CodecError("channels must be 1 or 2")
    if len(pcm) % (2 * channels):
        raise CodecError("PCM length is not a whole number of frames")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def interleave_stereo(left: bytes, right: bytes) -> bytes:
    """Interleave two mono PCM signals into stereo, padding the shorter with silence."""
    _check_even(left)
    _check_even(right)
    size = max(len(left), len(right))
    left = left + bytes(size - len(left))
    right = right + bytes(size - len(right))
    out = bytearray(2 * size)
    out[0::4] = left[0::2]
    out[1::4] = left[1::2]
    out[2::4] = right[0::2]
    out[3::4] = right[1::2]
    return bytes(out)
