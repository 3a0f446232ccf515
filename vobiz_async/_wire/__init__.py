"""Provider dialects of the media WebSocket: JSON text <-> typed events and commands.

One module per provider. Each is pure (no state, no counters, no I/O) and uses one
parsing library (msgspec). The protocol state machine (``vobiz_async.protocol``) owns
everything that depends on the stream so far: formats, byte order, checkpoints,
counters. A :class:`Dialect` bundles what the protocol needs of one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..codec import AudioFormat
from ..events import Checkpoint, ClearAudio, Stop
from . import compat, vobiz

__all__ = ["COMPAT", "VOBIZ", "Dialect"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one provider writes the media protocol (the protocol's seam per provider).

    Attributes:
        name: ``"vobiz"`` or ``"compat"`` (SignalWire and Twilio).
        decode_media: the typed one-pass decoder of an inbound ``media`` frame.
        parse_inbound: everything else the provider sends.
        play_prefix, play_suffix: the outbound audio frame is prefix + base64 + suffix.
        checkpoint_frame: ``(stream_id, wire_name)`` -> a checkpoint (Vobiz) or mark.
        clear_frame: ``stream_id`` -> ``clearAudio`` / ``clear``.
        stop_frame: ``stream_id`` -> ``stop``, or None where there is none (compat:
            the application closes the socket instead).
        clear_acknowledged: the provider acknowledges a clear (Vobiz ``clearedAudio``).
        echoes_cleared_marks: a flushed checkpoint still comes back (compat marks).
        fixed_outbound: our audio must be in the stream's own format (compat).
    """

    name: str
    decode_media: Callable[[str | bytes], vobiz.Media | None]
    parse_inbound: Callable[..., tuple[Any, int | None]]
    play_prefix: Callable[[str, AudioFormat], str]
    play_suffix: str
    checkpoint_frame: Callable[[str, str], str]
    clear_frame: Callable[[str], str]
    stop_frame: Callable[[str], str] | None
    clear_acknowledged: bool
    echoes_cleared_marks: bool
    fixed_outbound: bool


VOBIZ = Dialect(
    name="vobiz",
    decode_media=vobiz.decode_media,
    parse_inbound=vobiz.parse_inbound,
    play_prefix=vobiz.play_audio_prefix,
    play_suffix=vobiz.PLAY_AUDIO_SUFFIX,
    checkpoint_frame=lambda sid, name: vobiz.serialize(Checkpoint(sid, name)),
    clear_frame=lambda sid: vobiz.serialize(ClearAudio(sid)),
    stop_frame=lambda sid: vobiz.serialize(Stop(sid)),
    clear_acknowledged=True,
    echoes_cleared_marks=False,
    fixed_outbound=False,
)
"""Vobiz Audio Streams (spec 4)."""

COMPAT = Dialect(
    name="compat",
    decode_media=compat.decode_media,
    parse_inbound=compat.parse_inbound,
    play_prefix=lambda sid, fmt: compat.media_prefix(sid),
    play_suffix=compat.MEDIA_SUFFIX,
    checkpoint_frame=compat.mark_frame,
    clear_frame=compat.clear_frame,
    stop_frame=None,
    clear_acknowledged=False,
    echoes_cleared_marks=True,
    fixed_outbound=True,
)
"""SignalWire's compatibility API and Twilio Media Streams (compat spec 4)."""
