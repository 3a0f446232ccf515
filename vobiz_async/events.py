"""One small typed class per media-stream message (spec section 4).

Inbound events are named for what happened (:class:`StreamStarted`,
:class:`AudioReceived`, :class:`PlaybackCheckpointReached`...); outbound commands are
imperatives (:class:`PlayAudio`, :class:`Checkpoint`, :class:`ClearAudio`,
:class:`Stop`). The same command classes are what the Vobiz side of the protocol (the
emulator) gets when it parses our frames.

Two exported unions keep the directions apart: :data:`InboundEvent` is what a stream
tells the application (``async for event in session``), :data:`Command` what the
application asks of it. Frames the protocol cannot use become :class:`MalformedFrame`;
well-formed frames with an ``event`` we do not know become :class:`UnknownEvent`.
Neither ever raises.

These classes are the same for every provider; how they look on the wire is a
dialect's business (``vobiz_async._wire``). ``Command.to_json()`` gives the Vobiz form.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .codec import AudioEncoding, AudioFormat, ByteOrder, l16_to_pcm16, ulaw_to_pcm16
from .errors import RemoteProtocolError

__all__ = [
    "AudioCleared",
    "AudioReceived",
    "ByteOrderDetected",
    "Checkpoint",
    "CheckpointOutcome",
    "CheckpointVoided",
    "ClearAudio",
    "Command",
    "DtmfReceived",
    "Event",
    "InboundEvent",
    "MalformedFrame",
    "PlayAudio",
    "PlaybackCheckpointReached",
    "StatusCallbackReceived",
    "Stop",
    "StreamStarted",
    "StreamStopped",
    "Track",
    "UnknownEvent",
    "json_string",
]


class Track(enum.StrEnum):
    """Which party's audio a stream carries (spec 2.3 ``audio_track``, 4.3.3 ``track``)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    BOTH = "both"


class CheckpointOutcome(enum.StrEnum):
    """How a checkpoint ended. Every checkpoint ends in exactly one of these."""

    PLAYED = "played"
    CLEARED = "cleared"
    CLOSED = "closed"
    TIMED_OUT = "timed_out"


def json_string(value: str) -> str:
    """``value`` as a JSON string literal (quotes included), for hand-built frames."""
    return json.dumps(value, ensure_ascii=False)


# ------------------------------------------------------------------------ inbound events


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The ``start`` frame: the first message on every socket (spec 4.3.1, 4.3.2).

    Attributes:
        stream_id: required on every command we send back.
        call_id: the call's UUID (= REST ``call_uuid`` = callback ``CallUUID``).
        account_id: opaque; an internal numeric id in the newest shape.
        tracks: e.g. ``("inbound",)``.
        media_format: the inbound audio format, authoritative for ``media`` frames.
        extra_headers: ``extra_headers`` parsed as JSON or ``k=v`` pairs (often empty).
        extra_headers_raw: the raw string exactly as received, or None if absent.
        shape: ``"nested"`` (newest Vobiz docs), ``"flat"`` (oldest Vobiz docs) or
            ``"compat"`` (SignalWire/Twilio, compat spec 4.3.2).
        from_number, to_number, direction: present only in the flat shape.
        sequence_number: the frame's ``sequenceNumber`` when given.
        custom_parameters: compat ``start.customParameters`` (``<Parameter>`` /
            ``ParameterN``), empty on Vobiz.
        provider: ``"vobiz"``, ``"signalwire"`` or ``"twilio"``.
    """

    stream_id: str
    call_id: str
    media_format: AudioFormat
    account_id: str | None = None
    tracks: tuple[str, ...] = ("inbound",)
    extra_headers: dict[str, str] = field(default_factory=dict)
    extra_headers_raw: str | None = None
    shape: Literal["nested", "flat", "compat"] = "nested"
    from_number: str | None = None
    to_number: str | None = None
    direction: str | None = None
    sequence_number: int | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    provider: str = "vobiz"


class AudioReceived:
    """One ``media`` frame, decoded to 16-bit little-endian PCM (spec 4.3.3).

    Treat it as read-only. It is a plain slotted class (not a dataclass) because it is
    built 50 times a second per call: mu-law audio is decoded to :attr:`pcm` the first
    time ``pcm`` is read, so an application that passes the audio on as it came (an
    echo, a speech-to-text service that takes mu-law) never pays for the decode.

    Attributes:
        pcm: the audio as PCM16 LE mono (give None with mu-law ``payload`` to have it
            decoded on first read).
        sample_rate: the PCM's rate.
        track: ``inbound`` (the caller) or ``outbound`` (what Vobiz plays to them).
        sequence_number, chunk: counters from the frame, when present.
        timestamp: the media clock in ms (an int; the wire sends a string).
        stream_id: from the frame, when present.
        payload: the audio exactly as it came on the wire (mu-law or L16 bytes), for
            passing it on without re-encoding (see ``StreamSession.play_encoded``).
        duration_ms: the audio's length in milliseconds.
    """

    __slots__ = (
        "_pcm",
        "chunk",
        "duration_ms",
        "payload",
        "sample_rate",
        "sequence_number",
        "stream_id",
        "timestamp",
        "track",
    )
    __match_args__ = (
        "pcm",
        "sample_rate",
        "track",
        "sequence_number",
        "chunk",
        "timestamp",
        "stream_id",
        "payload",
    )

    def __init__(
        self,
        pcm: bytes | None,
        sample_rate: int,
        track: str = "inbound",
        sequence_number: int | None = None,
        chunk: int | None = None,
        timestamp: int | None = None,
        stream_id: str | None = None,
        payload: bytes = b"",
    ) -> None:
        self._pcm = pcm
        self.sample_rate = sample_rate
        self.track = track
        self.sequence_number = sequence_number
        self.chunk = chunk
        self.timestamp = timestamp
        self.stream_id = stream_id
        self.payload = payload
        # PCM16 is two bytes a sample; mu-law one.
        self.duration_ms: float = (
            len(pcm) * 500 / sample_rate if pcm is not None else len(payload) * 1000 / sample_rate
        )

    @property
    def pcm(self) -> bytes:
        """The audio as PCM16 LE mono (mu-law is decoded on the first read)."""
        pcm = self._pcm
        if pcm is None:
            self._pcm = pcm = ulaw_to_pcm16(self.payload)
        return pcm

    def _fields(self) -> tuple[object, ...]:
        return (
            self.pcm,
            self.sample_rate,
            self.track,
            self.sequence_number,
            self.chunk,
            self.timestamp,
            self.stream_id,
            self.payload,
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not AudioReceived:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        pairs = zip(self.__match_args__, self._fields(), strict=True)
        inner = ", ".join(f"{name}={value!r}" for name, value in pairs)
        return f"AudioReceived({inner})"


@dataclass(frozen=True, slots=True)
class PlaybackCheckpointReached:
    """``playedStream``: everything queued before the checkpoint has played (spec 4.3.4).

    Attributes:
        name: the checkpoint's name (matched by name, not by stream id).
        matched: True when a checkpoint of that name was pending.
        stream_id: present only in older shapes.
    """

    name: str
    matched: bool = True
    stream_id: str | None = None
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """``clearedAudio``: Vobiz flushed its playback queue (spec 4.3.5)."""

    stream_id: str | None = None
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """``dtmf``: a key press (spec 4.3.6, compat spec 4.3.4; body read defensively).

    Attributes:
        digit: ``0-9``, ``*``, ``#`` or ``A-D``.
        track: ``inbound`` (Twilio's ``inbound_track`` is normalised), when given.
        timestamp: Vobiz's media clock in ms, when given.
        stream_id: when the frame carries it.
        duration: how long the key was held, in ms (SignalWire), when given.
    """

    digit: str
    track: str | None = None
    timestamp: int | None = None
    stream_id: str | None = None
    duration: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """An inbound ``stop`` (older docs only, spec 4.3.7). The close is the real end signal."""

    stream_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A well-formed frame whose ``event`` we do not know; the payload is kept whole."""

    event: str | None
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A frame that could not be used. Counted and skipped; never ends the stream.

    Attributes:
        reason: ``binary-frame``, ``invalid-json``, ``not-an-object``, ``missing-field``,
            ``bad-field``, ``bad-base64``, ``odd-length``, ``before-start``...
        raw: the frame, truncated to 512 characters.
        detail: a human-readable detail.
    """

    reason: str
    raw: str | bytes = ""
    detail: str = ""

    def to_error(self) -> RemoteProtocolError:
        """The same information as an exception, for code that prefers to raise."""
        return RemoteProtocolError(self.reason, self.raw)


@dataclass(frozen=True, slots=True)
class ByteOrderDetected:
    """``l16_byte_order="auto"`` decided the inbound L16 byte order (spec 4.6).

    Attributes:
        order: the chosen order, used for every frame from now on.
        little_score, big_score: mean absolute difference between consecutive samples
            under each reading; the smaller one is the smoother, correct reading.
    """

    order: ByteOrder
    little_score: float
    big_score: float


@dataclass(frozen=True, slots=True)
class StatusCallbackReceived:
    """A verified status callback for this stream arrived over HTTP (spec 5), routed to
    the session by ``StreamID`` (e.g. ``DroppedStream``).

    Attributes:
        event: the callback's ``Event`` (``StartStream``, ``DroppedStream``...).
        stream_id: its ``StreamID``.
        callback: the parsed ``vobiz_async.callbacks.StreamStatusCallback``.
    """

    event: str
    stream_id: str
    callback: Any


@dataclass(frozen=True, slots=True)
class CheckpointVoided:
    """A pending checkpoint that will never be played: cleared, or the stream closed."""

    name: str
    outcome: CheckpointOutcome


# ----------------------------------------------------------------------- outbound commands


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """``playAudio``: queue raw audio for playback to the caller (spec 4.4.1).

    Attributes:
        stream_id: from ``start``.
        encoding: mu-law or L16.
        sample_rate: an integer rate matching the payload.
        payload: the raw encoded audio (base64 is applied on the wire).
    """

    stream_id: str
    encoding: AudioEncoding
    sample_rate: int
    payload: bytes

    def to_json(self) -> str:
        """The Vobiz wire frame (spec 4.4.1)."""
        return _vobiz_frame(self)

    def pcm(self, byte_order: ByteOrder = "little") -> bytes:
        """The payload decoded to PCM16 LE (L16 read in ``byte_order``)."""
        if self.encoding is AudioEncoding.MULAW:
            return ulaw_to_pcm16(self.payload)
        return l16_to_pcm16(self.payload, byte_order)

    @property
    def duration_ms(self) -> float:
        """Milliseconds of audio in the payload."""
        return len(self.payload) / AudioFormat(self.encoding, self.sample_rate).bytes_per_ms


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``checkpoint``: ask to be told when everything queued so far has played (4.4.2)."""

    stream_id: str
    name: str

    def to_json(self) -> str:
        """The Vobiz wire frame (spec 4.4.2)."""
        return _vobiz_frame(self)


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """``clearAudio``: drop everything queued but not yet played (barge-in, 4.4.3)."""

    stream_id: str

    def to_json(self) -> str:
        """The Vobiz wire frame (spec 4.4.3)."""
        return _vobiz_frame(self)


@dataclass(frozen=True, slots=True)
class Stop:
    """``stop``: end the stream; Vobiz closes the socket (spec 4.4.4)."""

    stream_id: str

    def to_json(self) -> str:
        """The Vobiz wire frame (spec 4.4.4)."""
        return _vobiz_frame(self)


Command = PlayAudio | Checkpoint | ClearAudio | Stop
"""What the application sends (and what the provider's side of the protocol receives)."""

InboundEvent = (
    StreamStarted
    | AudioReceived
    | PlaybackCheckpointReached
    | AudioCleared
    | DtmfReceived
    | StreamStopped
    | UnknownEvent
    | MalformedFrame
    | ByteOrderDetected
    | CheckpointVoided
    | StatusCallbackReceived
)
"""What a stream tells the application: ``async for event in session`` yields these."""

Event = InboundEvent | Command
"""Everything ``StreamProtocol.receive()`` can return, in either role."""


def _vobiz_frame(command: Command) -> str:
    from ._wire.vobiz import serialize  # the dialect imports this module: no cycle at import

    return serialize(command)
