"""The provider's side of a Vobiz stream, sans-I/O: what the emulator's media peer speaks.

:class:`PeerProtocol` is the mirror of :class:`~vobiz_async.protocol.StreamProtocol`:
it builds the frames Vobiz sends (``start``, ``media``, ``playedStream``,
``clearedAudio``, ``dtmf``) with Vobiz's counters, and parses what an application sends
back into commands (:class:`~vobiz_async.events.PlayAudio`, ``Checkpoint``...), using
the same pure dialect (:mod:`vobiz_async._wire.vobiz`). No socket, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

from .._wire import vobiz as wire
from ..codec import AudioEncoding, AudioFormat, ByteOrder, pcm16_to_l16, pcm16_to_ulaw
from ..errors import LocalProtocolError
from ..events import Command, MalformedFrame, UnknownEvent

__all__ = ["PeerProtocol", "PeerStats"]


@dataclass(slots=True)
class PeerStats:
    """What the provider's side counted: frames both ways and every oddity of the app's.

    Attributes:
        missing_stream_id: commands without a ``streamId`` (older docs omitted it; the
            newest require it, spec 4.4); they are given the stream's id.
    """

    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    malformed_reasons: Counter[str] = field(default_factory=Counter)
    unknown_events: int = 0
    missing_stream_id: int = 0


class PeerProtocol:
    """One stream as Vobiz plays it (the emulator's side). See the module docstring."""

    def __init__(self) -> None:
        self.stats = PeerStats()
        self.stream_id: str | None = None
        self.format: AudioFormat = wire.DEFAULT_FORMAT
        self._seq = 0

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _emit(self, frame: str) -> str:
        self.stats.frames_out += 1
        return frame

    def _require_started(self) -> str:
        if self.stream_id is None:
            raise LocalProtocolError("no 'start' sent yet")
        return self.stream_id

    # ------------------------------------------------------------------ parsing
    def receive(self, frame: str | bytes) -> list[Command | MalformedFrame | UnknownEvent]:
        """Parse one frame the application sent. Never raises for its input."""
        self.stats.frames_in += 1
        parsed, _ = wire.parse_command(frame, binary=not isinstance(frame, str))
        if isinstance(parsed, MalformedFrame):
            self.stats.malformed += 1
            self.stats.malformed_reasons[parsed.reason] += 1
            return [parsed]
        if isinstance(parsed, UnknownEvent):
            self.stats.unknown_events += 1
            return [parsed]
        command: Command = parsed
        if not command.stream_id:
            self.stats.missing_stream_id += 1
            command = replace(command, stream_id=self.stream_id or "")
        return [command]

    # ------------------------------------------------------------------ frames out
    def send_start(
        self,
        *,
        call_id: str,
        stream_id: str,
        media_format: AudioFormat,
        account_id: str = "731002",
        tracks: tuple[str, ...] = ("inbound",),
        shape: Literal["nested", "flat"] = "nested",
        extra_headers: str = "{}",
        from_number: str = "+919800000001",
        to_number: str = "+918000000002",
    ) -> str:
        """Begin the stream with a ``start`` frame in the given shape (spec 4.3.1/4.3.2)."""
        self.stream_id = stream_id
        self.format = media_format
        return self._emit(
            wire.start_frame(
                sequence_number=self._next_seq(),
                call_id=call_id,
                stream_id=stream_id,
                media_format=media_format,
                account_id=account_id,
                tracks=tracks,
                shape=shape,
                extra_headers=extra_headers,
                from_number=from_number,
                to_number=to_number,
            )
        )

    def send_media(
        self,
        pcm: bytes,
        *,
        timestamp: int,
        track: str = "inbound",
        byte_order: ByteOrder = "little",
    ) -> str:
        """One ``media`` frame in the newest shape (spec 4.3.3): ``chunk`` equal to
        ``sequenceNumber``, as in live samples.

        Args:
            pcm: PCM16 LE at the stream's rate, encoded here per ``start``.
            timestamp: the media clock in epoch milliseconds (sent as a string).
            track: ``inbound`` or ``outbound``.
            byte_order: how L16 goes on the wire (to emulate either evidence, spec 4.6).
        """
        stream_id = self._require_started()
        fmt = self.format
        payload = (
            pcm16_to_ulaw(pcm)
            if fmt.encoding is AudioEncoding.MULAW
            else pcm16_to_l16(pcm, byte_order)
        )
        seq = self._next_seq()
        return self._emit(
            wire.media_frame(
                sequence_number=seq,
                stream_id=stream_id,
                track=track,
                timestamp=timestamp,
                chunk=seq,
                payload=payload,
            )
        )

    def send_played(self, name: str) -> str:
        """``playedStream`` for checkpoint ``name`` (newest shape: event and name only)."""
        self._require_started()
        return self._emit(wire.played_frame(name))

    def send_cleared(self) -> str:
        """``clearedAudio`` (spec 4.3.5)."""
        stream_id = self._require_started()
        return self._emit(wire.cleared_frame(sequence_number=self._next_seq(), stream_id=stream_id))

    def send_dtmf(self, digit: str, *, timestamp: int) -> str:
        """A ``dtmf`` event in the presumed Plivo-identical body (spec 4.3.6)."""
        stream_id = self._require_started()
        return self._emit(
            wire.dtmf_frame(
                sequence_number=self._next_seq(),
                stream_id=stream_id,
                digit=digit,
                timestamp=timestamp,
            )
        )
