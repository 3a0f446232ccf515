"""The pure frame splitter of the media hot path (vobiz_async._wsframes)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from vobiz_async._wsframes import FrameSplitter, Piece, text_frame


def frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=mask, extensions=[])


def test_whole_text_frames_are_unmasked_in_one_pass() -> None:
    """Several masked text frames in one read come out as unmasked text, in order."""
    splitter = FrameSplitter(1024)
    data = frame(Opcode.TEXT, b'{"a":1}') + frame(Opcode.TEXT, b'{"b":2}')
    assert splitter.feed(data) == [(Piece.TEXT, b'{"a":1}'), (Piece.TEXT, b'{"b":2}')]
    assert splitter.pending == 0


def test_a_frame_in_tiny_pieces_is_held_until_whole() -> None:
    """A frame fed byte by byte waits (pending grows), then comes out whole."""
    payload = bytes(range(256)) * 300  # a 64-bit length header
    data = frame(Opcode.TEXT, payload)
    splitter = FrameSplitter(1 << 20)
    pieces = []
    for offset in range(0, len(data), 16):
        pieces += splitter.feed(data[offset : offset + 16])
        if offset + 16 < len(data):
            assert splitter.pending == offset + 16 and not pieces
    assert pieces == [(Piece.TEXT, payload)] and splitter.pending == 0


def test_16_bit_lengths_and_control_frames() -> None:
    """A 16-bit length parses; a ping goes to websockets raw and whole."""
    splitter = FrameSplitter(1024)
    ping = frame(Opcode.PING, b"hi")
    text = frame(Opcode.TEXT, b"x" * 300)
    assert splitter.feed(ping + text) == [(Piece.RAW, ping), (Piece.TEXT, b"x" * 300)]


def test_fragmented_messages_are_tracked_without_websockets_internals() -> None:
    """Fragments go raw; a FIN text frame in the middle of a message is not taken."""
    splitter = FrameSplitter(1024)
    first = frame(Opcode.TEXT, b"ab", fin=False)
    middle = frame(Opcode.PING, b"")
    last = frame(Opcode.CONT, b"cd")
    assert splitter.feed(first) == [(Piece.RAW, first)] and splitter.mid_message
    assert splitter.feed(middle) == [(Piece.RAW, middle)] and splitter.mid_message
    assert splitter.feed(last) == [(Piece.RAW, last)] and not splitter.mid_message
    assert splitter.feed(frame(Opcode.TEXT, b"e")) == [(Piece.TEXT, b"e")]


def test_binary_frames_go_raw() -> None:
    """A binary frame is websockets' business (the protocol reports it malformed)."""
    data = frame(Opcode.BINARY, b"\x00\x01")
    assert FrameSplitter(1024).feed(data) == [(Piece.RAW, data)]


def test_an_unmasked_frame_hands_everything_over() -> None:
    """A client frame without a mask cannot be split here: the rest goes raw for good."""
    splitter = FrameSplitter(1024)
    good = frame(Opcode.TEXT, b"ok")
    bad = frame(Opcode.TEXT, b"no", mask=False)
    assert splitter.feed(good + bad) == [(Piece.TEXT, b"ok"), (Piece.REST, bad)]
    assert splitter.feed(b"more") == [(Piece.REST, b"more")]


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    """The length in the header is enough to refuse it: nothing of it is kept."""
    splitter = FrameSplitter(100)
    header_only = frame(Opcode.TEXT, b"y" * 101)[:8]
    assert splitter.feed(header_only) == [(Piece.TOO_BIG, b"")]
    assert splitter.pending == 0


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 300, 65535, 65536, 70000])
def test_text_frame_is_byte_for_byte_what_websockets_writes(size: int) -> None:
    """text_frame() equals websockets' own unmasked serialisation at every length class."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected
