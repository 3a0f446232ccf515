"""Tests for vobiz_async.codec: G.711, L16, resampling, framing and WAV."""

from __future__ import annotations

import array
import importlib
import math
import random
import struct
import warnings
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vobiz_async.codec import (
    AudioEncoding,
    AudioFormat,
    Framer,
    Resampler,
    _ulaw_encode_one,
    frame_size,
    interleave_stereo,
    l16_to_pcm16,
    pcm16_to_l16,
    pcm16_to_ulaw,
    read_wav,
    silence,
    swap_bytes16,
    ulaw_to_pcm16,
    write_wav,
)
from vobiz_async.errors import CodecError

PAIRS = [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000), (16000, 24000), (24000, 16000)]


# ---- an independent G.711 mu-law reference, written from the definition -----------------


def ref_decode(code: int) -> int:
    """G.711: complement, then sign | 3-bit exponent | 4-bit mantissa, bias 132."""
    code = ~code & 0xFF
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


def ref_encode(sample: int) -> int:
    """Classic 14-bit encoder: biased magnitude, exponent from its highest set bit."""
    value = sample >> 2
    negative = value < 0
    magnitude = (-value if negative else value) + 33
    if magnitude > 0x1FFF:
        code = 0x7F
    else:
        exponent = magnitude.bit_length() - 6
        code = (exponent << 4) | ((magnitude >> (exponent + 1)) & 0x0F)
    return code ^ (0x7F if negative else 0xFF)


def pack(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def unpack(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> bytes:
    n = int(rate * seconds)
    return pack([round(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)])


def rms(pcm: bytes) -> float:
    values = unpack(pcm)
    return math.sqrt(sum(v * v for v in values) / len(values))


def middle(pcm: bytes) -> bytes:
    n = len(pcm) // 2
    return pcm[2 * (n // 4) : 2 * (3 * n // 4)]


def load_audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


# ---- mu-law -------------------------------------------------------------------------------


def test_ulaw_decode_all_256_codes_match_reference() -> None:
    """Every one of the 256 mu-law codes decodes exactly as G.711 defines."""
    decoded = unpack(ulaw_to_pcm16(bytes(range(256))))
    assert decoded == [ref_decode(c) for c in range(256)]
    assert decoded[0xFF] == 0 and decoded[0x80] == 32124 and decoded[0x00] == -32124


def test_ulaw_encode_all_65536_samples_match_reference() -> None:
    """Every 16-bit sample value encodes exactly as the classic reference encoder does."""
    samples = list(range(-32768, 32768))
    assert pcm16_to_ulaw(pack(samples)) == bytes(ref_encode(s) for s in samples)


def test_ulaw_encode_matches_the_scalar_encoder_at_every_length() -> None:
    """The lane-wise encoder equals _ulaw_encode_one on all inputs, whatever the length."""
    samples = list(range(-32768, 32768))
    scalar = bytes(_ulaw_encode_one(s) for s in samples)
    assert pcm16_to_ulaw(pack(samples)) == scalar
    rng = random.Random(5)
    for n in (1, 2, 3, 159, 160, 161, 480, 4001):
        chunk = [rng.randint(-32768, 32767) for _ in range(n)]
        assert pcm16_to_ulaw(pack(chunk)) == bytes(_ulaw_encode_one(s) for s in chunk)
    extremes = [-32768, -32767, -32636, -32635, -1, 0, 1, 32635, 32636, 32767] * 3
    assert pcm16_to_ulaw(pack(extremes)) == bytes(_ulaw_encode_one(s) for s in extremes)


def test_ulaw_encode_in_20ms_frames_matches_the_scalar_encoder() -> None:
    """All 65,536 sample values, fed 160 samples (one 20 ms frame) at a time as the
    protocol does, encode exactly as _ulaw_encode_one."""
    samples = list(range(-32768, 32768))
    for i in range(0, len(samples), 160):
        chunk = samples[i : i + 160]
        assert pcm16_to_ulaw(pack(chunk)) == bytes(_ulaw_encode_one(s) for s in chunk)


def test_ulaw_bit_exact_with_audioop_when_available() -> None:
    """Where the interpreter still has audioop, both directions match it byte for byte."""
    audioop = load_audioop()
    if audioop is None:
        pytest.skip("audioop is not available on this Python")
    every = pack(list(range(-32768, 32768)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert pcm16_to_ulaw(every) == audioop.lin2ulaw(every, 2)
        assert ulaw_to_pcm16(bytes(range(256))) == audioop.ulaw2lin(bytes(range(256)), 2)


def test_ulaw_encode_rejects_odd_length_and_accepts_empty() -> None:
    """An odd PCM byte count is a CodecError; empty input gives empty output."""
    with pytest.raises(CodecError):
        pcm16_to_ulaw(b"\x00\x01\x02")
    assert pcm16_to_ulaw(b"") == b""
    assert pcm16_to_ulaw(b"\x00\x00") == b"\xff"


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400))
def test_ulaw_round_trip_within_one_quantisation_step(samples: list[int]) -> None:
    """decode(encode(x)) is within one quantisation step of x for any sample."""
    codes = pcm16_to_ulaw(pack(samples))
    for x, y, code in zip(samples, unpack(ulaw_to_pcm16(codes)), codes, strict=True):
        exponent = ((~code) >> 4) & 0x07
        assert abs(x - y) <= 1 << (exponent + 3)


@given(st.binary(max_size=2000))
def test_codec_functions_raise_only_codec_error(data: bytes) -> None:
    """Arbitrary bytes never raise anything but CodecError from the codec functions."""
    assert len(ulaw_to_pcm16(data)) == 2 * len(data)
    for fn in (
        pcm16_to_ulaw,
        swap_bytes16,
        lambda d: l16_to_pcm16(d, "big"),
        lambda d: Resampler(8000, 16000).process(d),
    ):
        try:
            fn(data)
        except CodecError:
            assert len(data) % 2 == 1


# ---- L16 -----------------------------------------------------------------------------------


def test_l16_byte_order_is_explicit() -> None:
    """Little is a copy, big swaps each sample, and the round trip is lossless."""
    pcm = pack([1, -2, 256, -32768])
    assert l16_to_pcm16(pcm, "little") == pcm
    big = pcm16_to_l16(pcm, "big")
    assert big == struct.pack(">4h", 1, -2, 256, -32768)
    assert l16_to_pcm16(big, "big") == pcm


def test_l16_odd_length_and_bad_order_are_codec_errors() -> None:
    """An odd byte count and an unknown byte order are refused, not truncated."""
    with pytest.raises(CodecError):
        l16_to_pcm16(b"\x01\x02\x03", "little")
    with pytest.raises(CodecError):
        l16_to_pcm16(b"\x01\x02", "middle")  # type: ignore[arg-type]


# ---- resampling ----------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_resampler_chunked_equals_whole(src: int, dst: int) -> None:
    """20 ms chunks (and ragged chunks) give exactly the bytes of one big call."""
    signal = tone(440, src, 0.5) + tone(1900, src, 0.3, amp=20000)
    whole = Resampler(src, dst)
    expected = whole.process(signal) + whole.flush()
    step = src * 2 // 50
    chunked = Resampler(src, dst)
    got = b"".join(chunked.process(signal[i : i + step]) for i in range(0, len(signal), step))
    assert got + chunked.flush() == expected
    ragged = Resampler(src, dst)
    sizes = [2, 14, 318, 6, 1000, 44]
    out, pos, k = bytearray(), 0, 0
    while pos < len(signal):
        out += ragged.process(signal[pos : pos + sizes[k % len(sizes)]])
        pos += sizes[k % len(sizes)]
        k += 1
    assert bytes(out) + ragged.flush() == expected
    assert len(expected) // 2 == len(signal) // 2 * dst // src


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_resampler_passes_1khz_within_half_a_db(src: int, dst: int) -> None:
    """A 1 kHz tone keeps its level within 0.5 dB through every conversion."""
    signal = tone(1000, src, 0.5)
    r = Resampler(src, dst)
    out = r.process(signal) + r.flush()
    gain_db = 20 * math.log10(rms(middle(out)) / rms(middle(signal)))
    assert abs(gain_db) < 0.5


@pytest.mark.parametrize(
    ("src", "dst", "freq"), [(16000, 8000, 5000), (24000, 8000, 5000), (24000, 16000, 10000)]
)
def test_resampler_rejects_aliases_by_50_db(src: int, dst: int, freq: int) -> None:
    """A tone above the new Nyquist frequency comes out at least 50 dB down."""
    signal = tone(freq, src, 0.5)
    r = Resampler(src, dst)
    out = r.process(signal) + r.flush()
    assert 20 * math.log10(max(rms(middle(out)), 1e-9) / rms(middle(signal))) <= -50


def test_resampler_preserves_timing_alignment() -> None:
    """Group delay is compensated: a tone's phase is unchanged after 8k -> 16k -> 8k."""
    signal = tone(500, 8000, 0.2)
    up = Resampler(8000, 16000)
    down = Resampler(16000, 8000)
    mid = up.process(signal) + up.flush()
    back = down.process(mid) + down.flush()
    diff = [a - b for a, b in zip(unpack(middle(signal)), unpack(middle(back)), strict=True)]
    assert max(abs(d) for d in diff) < 100


def test_resampler_saturates_instead_of_wrapping() -> None:
    """A full-scale square wave rings above int16 but is clipped, never wrapped around."""
    square = pack(([32767] * 10 + [-32768] * 10) * 80)
    r = Resampler(8000, 24000)
    out = unpack(r.process(square) + r.flush())
    assert max(out) == 32767 and min(out) == -32768
    # Wrapping would put large values of the wrong sign right next to the edges.
    assert all(v > 0 for v in out[66:84])


def test_resampler_same_rate_is_identity_and_flush_resets() -> None:
    """Equal rates pass bytes through; flush() leaves a resampler ready for reuse."""
    ident = Resampler(16000, 16000)
    assert ident.process(b"\x01\x02") == b"\x01\x02" and ident.flush() == b""
    r = Resampler(8000, 16000)
    first = r.process(tone(300, 8000, 0.1)) + r.flush()
    second = r.process(tone(300, 8000, 0.1)) + r.flush()
    assert first == second


def test_resampler_rejects_unsupported_rates() -> None:
    """Only 8, 16 and 24 kHz are supported."""
    with pytest.raises(CodecError):
        Resampler(44100, 8000)


# ---- framing -------------------------------------------------------------------------------


def test_framer_cuts_exact_frames_and_carries_the_remainder() -> None:
    """Frames are exactly 20 ms; leftovers wait for the next push."""
    framer = Framer(AudioEncoding.L16, 16000)
    assert framer.frame_bytes == 640
    assert framer.push(b"\x01" * 1000) == [b"\x01" * 640]
    assert framer.pending == 360
    frames = framer.push(b"\x02" * 300)
    assert frames == [b"\x01" * 360 + b"\x02" * 280]
    assert framer.flush() == b"\x02" * 20 + b"\x00" * 620
    assert framer.flush() is None


def test_framer_pads_mulaw_with_its_silence_byte() -> None:
    """The final mu-law frame is padded with 0xFF, mu-law's silence."""
    framer = Framer("audio/x-mulaw", 8000)
    assert framer.push(b"\x10" * 100) == []
    assert framer.flush() == b"\x10" * 100 + b"\xff" * 60


def test_frame_sizes_and_silence() -> None:
    """20 ms is 160 B of mu-law, 320/640/960 B of L16 at 8/16/24 kHz."""
    assert frame_size(AudioEncoding.MULAW, 8000) == 160
    assert [frame_size(AudioEncoding.L16, r) for r in (8000, 16000, 24000)] == [320, 640, 960]
    assert silence(AudioEncoding.MULAW, 8000) == b"\xff" * 160


def test_audio_format_parses_both_content_type_forms() -> None:
    """`;rate=` in the content type and a separate rate are both understood."""
    assert AudioFormat.parse("audio/x-l16;rate=16000") == AudioFormat(AudioEncoding.L16, 16000)
    assert AudioFormat.parse("audio/x-l16", 16000).sample_rate == 16000
    assert AudioFormat.parse("AUDIO/X-MULAW").content_type == "audio/x-mulaw;rate=8000"
    with pytest.raises(CodecError):
        AudioFormat.parse("audio/x-alaw;rate=8000")
    with pytest.raises(CodecError):
        AudioFormat.parse("audio/x-mulaw;rate=16000")


# ---- WAV -----------------------------------------------------------------------------------


def test_wav_round_trip_mono_and_stereo(tmp_path: Path) -> None:
    """WAV files written by write_wav read back identically, mono and stereo."""
    left, right = tone(300, 8000, 0.1), tone(600, 8000, 0.05)
    write_wav(tmp_path / "m.wav", left, 8000)
    mono = read_wav(tmp_path / "m.wav")
    assert (mono.pcm, mono.sample_rate, mono.channels) == (left, 8000, 1)
    stereo_pcm = interleave_stereo(left, right)
    write_wav(tmp_path / "s.wav", stereo_pcm, 8000, channels=2)
    stereo = read_wav(tmp_path / "s.wav")
    assert stereo.channels == 2 and stereo.mono() == left
    assert stereo.duration == pytest.approx(0.1)


def test_read_wav_rejects_garbage(tmp_path: Path) -> None:
    """A file that is not a WAV is a CodecError, not a wave.Error."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(CodecError):
        read_wav(bad)


# ---- resampler: linear cost, chunking invariance ---------------------------------------


def noise_tone(rate: int, seconds: float, seed: int) -> bytes:
    """A tone plus deterministic pseudo-random noise, cheap to build for long signals."""
    rng = random.Random(seed)
    period = [
        max(
            -32768,
            min(32767, round(12000 * math.sin(2 * math.pi * i / 37)) + rng.randint(-9000, 9000)),
        )
        for i in range(4999)
    ]
    n = int(rate * seconds)
    samples = array.array("h", period * (n // len(period) + 1))[:n]
    return samples.tobytes()


def test_resampler_60_s_in_one_call_equals_20_ms_chunks() -> None:
    """A 60 s chunk in one call (the old quadratic path) gives the bytes of 20 ms chunks."""
    src, dst = 24000, 16000
    signal = noise_tone(src, 60.0, seed=11)
    whole = Resampler(src, dst)
    expected = whole.process(signal) + whole.flush()
    assert len(expected) == len(signal) * dst // src
    chunked = Resampler(src, dst)
    step = src * 2 // 50
    got = b"".join(chunked.process(signal[i : i + step]) for i in range(0, len(signal), step))
    assert got + chunked.flush() == expected


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=12), seed=st.integers(0, 9))
def test_resampler_random_chunk_sizes_equal_whole(
    src: int, dst: int, sizes: list[int], seed: int
) -> None:
    """Any sequence of chunk sizes (in samples) gives exactly the whole-signal output."""
    signal = noise_tone(src, 0.6, seed)
    whole = Resampler(src, dst)
    expected = whole.process(signal) + whole.flush()
    r = Resampler(src, dst)
    out, pos, k = bytearray(), 0, 0
    while pos < len(signal):
        size = 2 * sizes[k % len(sizes)]
        out += r.process(signal[pos : pos + size])
        pos += size
        k += 1
    assert bytes(out) + r.flush() == expected
