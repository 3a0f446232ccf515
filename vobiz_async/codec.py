"""Audio for Vobiz streams, standard library only: G.711 mu-law, L16, resampling, framing, WAV.

Every function takes and returns ``bytes``. "PCM" below always means signed 16-bit
little-endian mono, the form the rest of the library hands to applications. There is
no numpy and no ``audioop`` (removed in Python 3.13); the hot paths avoid per-sample
Python loops:

* mu-law decode is two ``bytes.translate`` calls and two slice assignments;
* mu-law encode is a few lane-wise operations on all samples packed into one ``int``
  (16 bits a lane) plus three ``bytes.translate`` calls, bit-exact with CPython's
  ``audioop.lin2ulaw``;
* L16 byte order swaps are slice assignments;
* resampling (``Resampler``, in the private ``_resample`` module) is a polyphase FIR
  filter evaluated by big-integer multiplication: each sample becomes a 40-bit "digit"
  of one Python ``int``, so one C-level multiply computes a whole block of
  multiply-accumulates, exactly (integers, no rounding drift), which is also why
  feeding a signal in chunks gives bit-identical output.

Wire facts come from ``docs/spec.md`` section 4.5: inbound is
mu-law 8 kHz or L16 8/16 kHz, outbound adds L16 24 kHz, 20 ms frames, silence byte 0xFF
for mu-law and 0x0000 for L16.
"""

from __future__ import annotations

import array
import enum
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._resample import Resampler, Resamplers
from .errors import CodecError

__all__ = [
    "FRAME_MS",
    "AudioEncoding",
    "AudioFormat",
    "ByteOrder",
    "Framer",
    "Resampler",
    "Resamplers",
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
_from_bytes = int.from_bytes

# The encoder, without a per-sample Python loop (SWAR: SIMD within a register).
#
# For a sample s, let a = s if s >= 0 else ~s (0..32767) and u = a + 132 (+4 when s < 0):
# u is 4 * (biased 14-bit magnitude + 33) plus two low bits that never matter, so the
# code before its final complement is the 3-bit segment and 4-bit mantissa of w = u >> 3
# (segment = bit length of w minus 5, mantissa = 4 bits below the top one; 0x7F once
# w >= 4096). All PCM samples become 16-bit lanes of one int, and a handful of lane-wise
# big-int operations (no lane ever carries into the next: u <= 32903) turn each lane
# into u with its three don't-care low bits replaced by three copies of the sign:
#
#     lane = ((x + 132 - 268 * negative) & 0xFFF8) ^ (0xFFFF * negative)
#
# (x is the raw 16-bit lane, s + 65536 for a negative s, whose 16-bit complement of
# x - 136 is ~s + 136 = u; the XOR also sets bits 0-2.) Split each lane into its high
# byte uh and low byte ul = d7 d6 d5 d4 d3 s s s (s = the sign). The segment and the mantissa
# bits at or above bit 8 of u depend on uh alone; the mantissa bits below bit 8 are the
# top 4, 4, 3, 2, 1 or 0 bits of d7..d3, by the class of uh (_enc_class: its bit length,
# capped at 5). Three byte tables indexed by uh and one by a key finish the job:
#
#     key  = (ul | _ENC_FORCE[uh]) ^ _ENC_FIX[uh]
#     code = _ENC_CODE[key]
#
# _ENC_FORCE sets the d bits a class does not use to 1 (so the key ignores them);
# _ENC_FIX then writes the segment and uh's mantissa bits into the bits the class leaves
# free, in a per-segment layout (_ENC_LAYOUT) where the mantissa bits that come from ul
# stay where they are and the eight segments land in disjoint key ranges (a negative
# sample's key has bits 0-2 flipped, as ul had). _ENC_CODE maps each of the 256 keys
# back to its code (a permutation). Three bytes.translate calls, one OR and one XOR.


def _ulaw_magnitude_code(u: int) -> int:
    """Segment and mantissa (before complement) of ``u = 4 * (magnitude + 33)``."""
    w = u >> 3
    if w >= 4096:
        return 0x7F
    if w < 32:
        return w & 0x0F
    seg = w.bit_length() - 5
    return (seg << 4) | ((w >> seg) & 0x0F)


def _enc_class(uh: int) -> int:
    """The bit length of uh, capped at 5: how many of d3..d7 (from the bottom) go unused."""
    return 0 if uh == 0 else min(5, uh.bit_length())


# Per segment: (fixed key bits, key bit of mantissa bits 3, 2, 1, 0), for a positive
# sample (key bit 0 is 0). Segments 0-4 keep the mantissa bits that come from ul (d6..d3
# for segment 0, the top ones of d7..d3 for 1-4) in place. Key bits 2-1 (and bit 7, 3
# or 4) tell segments apart.
_ENC_LAYOUT = (
    (0x80, (6, 5, 4, 3)),  # 1 m m m m 0 0 0
    (0x0A, (7, 6, 5, 4)),  # m m m m 1 0 1 0
    (0x14, (3, 7, 6, 5)),  # m m m 1 m 1 0 0
    (0x06, (5, 4, 7, 6)),  # m m m m 0 1 1 0
    (0x0E, (6, 5, 4, 7)),  # m m m m 1 1 1 0
    (0x00, (6, 5, 4, 3)),  # 0 m m m m 0 0 0
    (0x02, (7, 6, 5, 4)),  # m m m m 0 0 1 0
    (0x04, (7, 6, 5, 3)),  # m m m 0 m 1 0 0
)


def _enc_key(magnitude_code: int) -> int:
    """The key of a positive sample's code before complement (segment << 4 | mantissa)."""
    fixed, positions = _ENC_LAYOUT[magnitude_code >> 4]
    key = fixed
    for bit, position in enumerate(reversed(positions)):
        key |= ((magnitude_code >> bit) & 1) << position
    return key


def _enc_force(uh: int) -> int:
    """The d bits of ul (3..7) that the class of ``uh`` does not use, set to 1."""
    return 0xF8 & ~(0xF8 << _enc_class(uh))


def _enc_fix(uh: int) -> int:
    # Any ul with d bits 0 (d7 = 1 when uh = 0, as u >= 132) gives uh's fixed bits.
    ul = 0x80 if uh == 0 else 0
    return _enc_key(_ulaw_magnitude_code(uh << 8 | ul)) ^ (ul | _enc_force(uh))


# uh never exceeds 128 (u <= 32903).
_ENC_FORCE = bytes(_enc_force(uh) if uh <= 128 else 0 for uh in range(256))
_ENC_FIX = bytes(_enc_fix(uh) if uh <= 128 else 0 for uh in range(256))


def _enc_code_table() -> bytes:
    table = bytearray(256)
    for code in range(128):
        table[_enc_key(code)] = code ^ 0xFF  # positive: complement all 8 bits
        table[_enc_key(code) ^ 0x07] = code ^ 0x7F  # negative: sign bit 0
    return bytes(table)


_ENC_CODE = _enc_code_table()
_ENC_LANES: dict[int, tuple[int, int, int, int]] = {}


def _enc_lanes(n: int) -> tuple[int, int, int, int]:
    """(1, 132, 268 and 0xFFF8 in every 16-bit lane) for ``n`` samples, cached."""
    lanes = _ENC_LANES.get(n)
    if lanes is None:
        ones = ((1 << (16 * n)) - 1) // 0xFFFF
        lanes = (ones, 132 * ones, 268 * ones, 0xFFF8 * ones)
        if len(_ENC_LANES) < 16:
            _ENC_LANES[n] = lanes
    return lanes


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
    size = len(data)
    if size & 1:
        raise CodecError(f"16-bit PCM needs an even number of bytes, got {size}")
    n = size >> 1
    ones, bias, offset, clear_low = _ENC_LANES.get(n) or _enc_lanes(n)
    lanes = _from_bytes(data, "little")
    negative = ((lanes >> 15) & ones) * 0xFFFF
    # u with its low three bits replaced by the sign (see the comment above the tables).
    ub = (((lanes + bias - (negative & offset)) & clear_low) ^ negative).to_bytes(size, "little")
    uh = ub[1::2]
    key = (_from_bytes(uh.translate(_ENC_FORCE), "little") | _from_bytes(ub[0::2], "little")) ^ (
        _from_bytes(uh.translate(_ENC_FIX), "little")
    )
    return key.to_bytes(n, "little").translate(_ENC_CODE)


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
        size = self.frame_bytes
        if isinstance(data, memoryview):  # lengths in bytes, whatever the item size
            data = data.cast("B")  # type: ignore[unreachable, unused-ignore]
        if not self._pending:  # the common case: cut ``data`` itself, no copy through
            n = len(data)
            whole = n - n % size
            if whole != n:
                self._pending += data[whole:]
            if whole == n == size:
                return [bytes(data)]
            return [bytes(data[i : i + size]) for i in range(0, whole, size)]
        self._pending += data
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
