"""Split a WebSocket client's byte stream into frames, and build the server's text
frames, for the media hot path (pure).

A media stream is almost only whole, masked, unfragmented text frames (one JSON message
each, 50 a second). :class:`FrameSplitter` unmasks those itself, with the C routine
websockets uses, and hands every other frame (control frames, fragments, binary) over
raw, whole, for websockets' own parser, so that parser keeps all protocol state and is
always at a frame boundary when it gets one. It depends on no private attribute of
websockets: whether a fragmented message is in progress is tracked here, from the
frames' own headers (RFC 6455 section 5.4).

A partial frame waits in a ``bytearray``, so a frame that arrives in many small reads
costs linear time, not quadratic.
"""

from __future__ import annotations

import enum

try:  # the C unmasking routine websockets itself uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback, same result
    from websockets.utils import apply_mask

__all__ = ["FrameSplitter", "Piece", "text_frame"]

_OP_CONT, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
_SHORT_TEXT = tuple(bytes((0x80 | _OP_TEXT, n)) for n in range(126))


def text_frame(payload: bytes) -> bytes:
    """One whole, unmasked text frame (a server's, RFC 6455 section 5.2) carrying
    ``payload`` (UTF-8): byte for byte what websockets' ``Frame.serialize`` writes for
    a connection without extensions, in one allocation."""
    n = len(payload)
    if n < 126:
        return _SHORT_TEXT[n] + payload
    if n < 1 << 16:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class Piece(enum.IntEnum):
    """What :meth:`FrameSplitter.feed` hands out."""

    TEXT = 1
    """A whole text message, unmasked: its UTF-8 payload."""
    RAW = 2
    """One whole frame as received (control, fragment, binary): for websockets' parser."""
    REST = 3
    """Everything from here on, raw: the stream cannot be split safely (an unmasked or
    RSV-flagged frame, which the parser must fail with the right code). Last piece; the
    splitter hands everything after it over raw too."""
    TOO_BIG = 4
    """A frame over ``max_size`` was announced: fail the connection (1009). Last piece."""


class FrameSplitter:
    """Cut a client's bytes into frames; see the module docstring.

    Args:
        max_size: the largest frame payload accepted, in bytes.
    """

    __slots__ = ("_buf", "_max", "_passthrough", "mid_message")

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._passthrough = False
        self.mid_message = False
        """True between the first and the last frame of a fragmented message."""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[Piece, bytes]]:
        """Take ``data``; return the pieces it completes, in order."""
        if self._passthrough:
            return [(Piece.REST, data)] if data else []
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        size = len(view)
        pos = 0
        out: list[tuple[Piece, bytes]] = []
        while size - pos >= 2:
            b0 = view[pos]
            b1 = view[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(view[head : head + 2], "big")
                head += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(view[head : head + 8], "big")
                head += 8
            if not b1 & 0x80 or b0 & 0x70:  # unmasked, or RSV bits we negotiated none of
                self._passthrough = True
                out.append((Piece.REST, bytes(view[pos:])))
                self._buf = bytearray()
                return out
            if length > self._max:
                out.append((Piece.TOO_BIG, b""))
                self._passthrough = True
                self._buf = bytearray()
                return out
            end = head + 4 + length
            if end > size:
                break
            if b0 == 0x81 and not self.mid_message:  # FIN + TEXT: a whole message
                out.append((Piece.TEXT, apply_mask(view[head + 4 : end], view[head : head + 4])))
            else:
                opcode = b0 & 0x0F
                if opcode in (_OP_TEXT, _OP_BINARY) and not b0 & 0x80:
                    self.mid_message = True
                elif opcode == _OP_CONT and b0 & 0x80:
                    self.mid_message = False
                out.append((Piece.RAW, bytes(view[pos:end])))
            pos = end
        if view is buf:
            del buf[:pos]
        elif pos < size:
            self._buf = bytearray(view[pos:])
        return out
