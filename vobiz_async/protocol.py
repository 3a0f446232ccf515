"""The sans-I/O state machine of one Vobiz media stream.

How a stream works
==================

Vobiz dials *our* WebSocket server and sends one JSON text frame per message (spec
section 4). :class:`StreamProtocol` is a plain object that turns those frames into
events and our intentions into frames. It owns no socket, no task and no clock:
anything that depends on time takes ``now`` (seconds, any monotonic origin). The
server, the emulator and the tests drive it with real or fake I/O around it.

States (the same in both roles)::

    AWAITING_START --start--> STREAMING --stop() / peer closed--> CLOSED
                                  |  ^
                                  +--+  a second ``start`` (a reconnect with a new
                                        stream id) is taken, not rejected

* ``AWAITING_START``: nothing but ``start`` is useful yet. Media that arrives early is
  reported as a :class:`MalformedFrame` (reason ``before-start``) and counted; our own
  commands raise :class:`LocalProtocolError` because they need the stream id.
* ``STREAMING``: ``media`` frames are decoded on a fast path (no pydantic, one JSON
  parse, C-level base64 and mu-law); ``playAudio`` frames are built from templates.
* ``CLOSED``: reached when we send ``stop`` or the I/O layer reports the close (the
  newest docs say Vobiz never sends an inbound ``stop``: the close *is* the end, so
  :meth:`StreamProtocol.connection_closed` must be called by whoever owns the socket).
  Commands raise; pending checkpoints are resolved as ``closed``.

Nothing the peer sends can raise out of :meth:`StreamProtocol.receive` or end the
stream: invalid JSON, binary frames, missing fields, bad base64, odd-length L16 each
become a :class:`MalformedFrame` with a reason, and ``stats.malformed`` goes up.

Checkpoints end in exactly one outcome: ``played`` (``playedStream`` with their name),
``cleared`` (we sent ``clearAudio`` first: Vobiz never acknowledges those, spec 4.3.4),
or ``closed``. Outcomes the protocol decides on its own (cleared, closed) are queued and
returned by :meth:`StreamProtocol.take_events` (and at the start of the next
:meth:`~StreamProtocol.receive` result, if not taken before).

Roles: ``Role.APP`` is our side (receives ``start``/``media``, sends ``playAudio``...).
``Role.VOBIZ`` is the telephony side, used by the emulator: it parses our commands
into :class:`PlayAudio`/:class:`Checkpoint`/... and produces ``start``, ``media``,
``playedStream``, ``clearedAudio``, ``dtmf`` frames.

L16 byte order (spec 4.6): little-endian by default in both directions, configurable
per direction; inbound may be ``"auto"``, which decodes provisionally as little-endian
and decides from the first ~0.5 s of non-silent audio by comparing how smooth each
reading is, then reports a :class:`ByteOrderDetected` event.
"""

from __future__ import annotations

import binascii
import enum
import json
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from .codec import (
    FRAME_MS,
    SUPPORTED_RATES,
    AudioEncoding,
    AudioFormat,
    ByteOrder,
    Framer,
    Resampler,
    pcm16_to_l16,
    pcm16_to_ulaw,
    swap_bytes16,
    ulaw_to_pcm16,
)
from .errors import CodecError, LocalProtocolError, ValidationError
from .events import (
    AudioCleared,
    AudioReceived,
    ByteOrderDetected,
    Checkpoint,
    CheckpointOutcome,
    CheckpointVoided,
    ClearAudio,
    DtmfReceived,
    Event,
    MalformedFrame,
    PlayAudio,
    PlaybackCheckpointReached,
    Stop,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    json_string,
)

_loads: Callable[[str], Any] = msgspec.json.Decoder().decode  # generic: dicts and lists


class _MediaBodyWire(msgspec.Struct):
    payload: bytes  # base64 decoded in the same C pass as the JSON
    track: str = "inbound"
    timestamp: str | int | None = None
    chunk: int | None = None
    contentType: str | None = None
    sampleRate: int | str | None = None


class _MediaWire(msgspec.Struct):
    """The hot ``media`` frame. Anything that does not fit takes the tolerant path."""

    event: str
    media: _MediaBodyWire
    sequenceNumber: int | None = None
    streamId: str | None = None


_decode_media = msgspec.json.Decoder(_MediaWire).decode

__all__ = [
    "ClearSummary",
    "InboundByteOrder",
    "PlayoutStats",
    "ProtocolStats",
    "Role",
    "State",
    "StreamProtocol",
]

InboundByteOrder = Literal["little", "big", "auto"]
_RAW_LIMIT = 512
_DEFAULT_FORMAT = AudioFormat(AudioEncoding.L16, 8000)  # Vobiz's default content type


class Role(enum.StrEnum):
    """Which side of the stream this protocol object plays."""

    APP = "app"
    VOBIZ = "vobiz"


class State(enum.StrEnum):
    """Lifecycle of one stream; see the module docstring."""

    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    CLOSED = "closed"


@dataclass(slots=True)
class ProtocolStats:
    """Counters for one stream. Everything rejected or dropped is counted here."""

    frames_in: int = 0
    frames_out: int = 0
    media_in: int = 0
    audio_ms_in: float = 0.0
    malformed: int = 0
    malformed_reasons: Counter[str] = field(default_factory=Counter)
    unknown_events: int = 0
    sequence_gaps: int = 0
    restarts: int = 0
    missing_stream_id: int = 0


@dataclass(slots=True)
class PlayoutStats:
    """What happened to the audio we sent (app role).

    Attributes:
        sent_ms: audio handed out as ``playAudio`` frames.
        played_ms: audio confirmed played by ``playedStream`` acknowledgements.
        cleared_ms: unconfirmed audio outstanding when we sent ``clearAudio``: an upper
            bound on what Vobiz discarded (some of it may have played before the clear).
        utterance_ms: audio sent since the last checkpoint or clear.
    """

    sent_ms: float = 0.0
    played_ms: float = 0.0
    cleared_ms: float = 0.0
    utterance_ms: float = 0.0

    @property
    def pending_ms(self) -> float:
        """Audio sent but neither confirmed played nor cleared."""
        return max(0.0, self.sent_ms - self.played_ms - self.cleared_ms)


@dataclass(frozen=True, slots=True)
class ClearSummary:
    """What a ``clearAudio`` interrupted, so an agent can tell what the caller heard.

    Attributes:
        utterance_sent_ms: audio of the interrupted utterance sent before the clear.
        unconfirmed_ms: audio not confirmed played when the clear was sent.
        estimated_heard_ms: of the interrupted utterance, how much had most likely
            played: the time since its first frame was sent, capped at what was sent
            (None when ``now`` was not passed to ``play``/``clear``).
        voided: names of the checkpoints this clear voided.
    """

    utterance_sent_ms: float
    unconfirmed_ms: float
    estimated_heard_ms: float | None
    voided: tuple[str, ...]


# ------------------------------------------------------------------------------- wire models
class _MediaFormatWire(BaseModel):
    model_config = ConfigDict(extra="allow")
    encoding: str
    sampleRate: int = 8000


class _StartNestedWire(BaseModel):
    model_config = ConfigDict(extra="allow")
    callId: str
    streamId: str
    accountId: str | int | None = None
    tracks: list[str] = ["inbound"]
    mediaFormat: _MediaFormatWire | None = None


class _StartFlatWire(BaseModel):
    model_config = ConfigDict(extra="allow")
    callId: str
    streamId: str
    accountId: str | int | None = None
    contentType: str = _DEFAULT_FORMAT.content_type
    audioTrack: str = "inbound"
    sampleRate: int | None = None
    to: str | None = None
    direction: str | None = None


def _as_int(value: object) -> int | None:
    """An int from an int or a decimal string (the wire uses both); None otherwise."""
    if type(value) is int:
        return value
    if type(value) is str and len(value) < 20 and value.isdigit():
        return int(value)
    return None


def _parse_extra_headers(raw: object) -> tuple[str | None, dict[str, str]]:
    """Keep the raw string; parse JSON or ``k=v`` pairs split on ``;`` or ``,`` (4.3.1)."""
    if raw is None:
        return None, {}
    if isinstance(raw, dict):
        return json.dumps(raw), {str(k): str(v) for k, v in raw.items()}
    text = str(raw)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        return text, {str(k): str(v) for k, v in parsed.items()}
    pairs: dict[str, str] = {}
    for part in text.replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if not sep:
            key, sep, value = part.partition(":")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return text, pairs


def _score_smoothness(raw: bytes) -> tuple[float, float]:
    """Mean absolute difference of consecutive samples, read little- and big-endian."""
    little = array("h", raw)
    big = array("h", swap_bytes16(raw))
    if len(little) < 2:
        return 0.0, 0.0
    n = len(little) - 1
    lit = sum(abs(b - a) for a, b in pairwise(little)) / n
    bg = sum(abs(b - a) for a, b in pairwise(big)) / n
    return lit, bg


class _Pending:
    __slots__ = ("name", "sent_ms")

    def __init__(self, name: str, sent_ms: float) -> None:
        self.name = name
        self.sent_ms = sent_ms


class StreamProtocol:
    """One media stream's protocol state, with no I/O.

    Args:
        role: ``Role.APP`` (default) for our side, ``Role.VOBIZ`` for the emulator.
        l16_byte_order: how inbound L16 is read: ``"little"`` (default, the newest
            evidence, spec 4.6), ``"big"``, or ``"auto"``.
        outbound_byte_order: how L16 we send is written (default ``"little"``).
        outbound_format: the format of ``playAudio`` we send. Default: the inbound
            format from ``start`` (always accepted; the newest docs allow others,
            e.g. L16 24 kHz, spec 4.4.1).
        auto_detect_ms: audio to look at before deciding the byte order in ``"auto"``.
        max_audio_bytes: largest audio payload one media frame may carry (decoded from
            base64); larger is a :class:`MalformedFrame` (``oversized-audio``), so no
            single frame costs unbounded work downstream. ``None``: no bound.
        accept_restart: whether a second ``start`` on this object is taken as a new
            stream. Reconnects are new sockets (spec 3.1 ``maxRetries``, 4.1), so the
            server passes ``False``: a repeated ``start`` for the same call is a
            :class:`MalformedFrame` (``repeated-start``), for another call
            ``foreign-start``, and the stream keeps its state.

    Raises:
        ValidationError: an unknown byte order.
    """

    def __init__(
        self,
        role: Role = Role.APP,
        *,
        l16_byte_order: InboundByteOrder = "little",
        outbound_byte_order: ByteOrder = "little",
        outbound_format: AudioFormat | None = None,
        auto_detect_ms: int = 500,
        max_audio_bytes: int | None = None,
        accept_restart: bool = True,
    ) -> None:
        if l16_byte_order not in ("little", "big", "auto"):
            raise ValidationError("l16_byte_order", "must be 'little', 'big' or 'auto'")
        if outbound_byte_order not in ("little", "big"):
            raise ValidationError("outbound_byte_order", "must be 'little' or 'big'")
        self.role = Role(role)
        self.state = State.AWAITING_START
        self.stats = ProtocolStats()
        self.playout = PlayoutStats()
        self.started: StreamStarted | None = None
        self.inbound_format: AudioFormat | None = None
        self.last_clear: ClearSummary | None = None
        self._configured_outbound = outbound_format
        self.outbound_format: AudioFormat | None = outbound_format
        self._in_order: InboundByteOrder = l16_byte_order
        self._out_order: ByteOrder = outbound_byte_order
        self._auto_detect_ms = auto_detect_ms
        self._max_audio_bytes = max_audio_bytes
        self._accept_restart = accept_restart
        self._auto_raw = bytearray()
        self._auto_seen_ms = 0.0
        self._last_seq: int | None = None
        self._outbox: list[Event] = []
        self._pending: dict[str, _Pending] = {}
        self._framer: Framer | None = None
        self._resamplers: dict[int, Resampler] = {}
        self._utterance_started: float | None = None
        self._play_prefix = ""
        self._stream_id_json = ""
        # Vobiz role counters
        self._seq_out = 0
        self._chunks: Counter[str] = Counter()
        self._handlers: dict[object, Callable[[dict[str, Any], str], list[Event]]]
        if self.role is Role.APP:
            self._handlers = {
                "start": self._on_start,
                "playedStream": self._on_played,
                "clearedAudio": self._on_cleared,
                "dtmf": self._on_dtmf,
                "stop": self._on_stop,
            }
        else:
            self._handlers = {
                "playAudio": self._on_play_audio,
                "checkpoint": self._on_checkpoint,
                "clearAudio": self._on_clear_audio,
                "stop": self._on_stop_command,
            }

    # ------------------------------------------------------------------ common plumbing
    @property
    def stream_id(self) -> str | None:
        """The current stream id (None before ``start``)."""
        return self.started.stream_id if self.started else None

    @property
    def call_id(self) -> str | None:
        """The call id from ``start`` (None before it)."""
        return self.started.call_id if self.started else None

    @property
    def pending_checkpoints(self) -> tuple[str, ...]:
        """Names of checkpoints sent and not yet resolved, oldest first."""
        return tuple(self._pending)

    def take_events(self) -> list[Event]:
        """Events the protocol raised on its own (checkpoint outcomes), oldest first."""
        events, self._outbox = self._outbox, []
        return events

    def receive(self, frame: str | bytes) -> list[Event]:
        """Parse one WebSocket message into events. Never raises for peer input.

        Args:
            frame: a text frame (``str``). A binary frame is reported as malformed.

        Returns:
            Queued protocol events first, then the events of this frame.
        """
        self.stats.frames_in += 1
        events = self.take_events() if self._outbox else []
        if type(frame) is not str:
            if isinstance(frame, str):
                frame = str(frame)
            else:
                events.append(
                    self._malformed("binary-frame", frame, "Vobiz sends text frames only")
                )
                return events
        if self._fast_media:
            try:
                wire = _decode_media(frame)
            except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
                wire = None  # not a media frame, or an unusual one: take the tolerant path
            if wire is not None and wire.event == "media":
                self._track_sequence(wire.sequenceNumber)
                events.extend(self._on_media_fast(wire, frame))
                return events
        try:
            msg = _loads(frame)
        except (ValueError, RecursionError, UnicodeEncodeError, msgspec.DecodeError) as exc:
            events.append(self._malformed("invalid-json", frame, str(exc)[:200]))
            return events
        if type(msg) is not dict:
            events.append(self._malformed("not-an-object", frame, "expected a JSON object"))
            return events
        seq = msg.get("sequenceNumber")
        if type(seq) is int:
            self._track_sequence(seq)
        event = msg.get("event")
        if event == "media" and self.role is Role.APP:
            events.extend(self._on_media(msg, frame))
            return events
        handler = self._handlers.get(event) if isinstance(event, str) else None
        if handler is None:
            self.stats.unknown_events += 1
            events.append(UnknownEvent(event if isinstance(event, str) else None, msg))
            return events
        events.extend(handler(msg, frame))
        return events

    def _track_sequence(self, seq: int | None) -> None:
        if seq is None:
            return
        last = self._last_seq
        if last is not None and seq > last + 1:
            self.stats.sequence_gaps += seq - last - 1
        self._last_seq = seq

    @property
    def _fast_media(self) -> bool:
        return self.role is Role.APP and self.inbound_format is not None

    def connection_closed(self) -> list[Event]:
        """Record that the socket closed; resolves pending checkpoints as ``closed``."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._void_pending(CheckpointOutcome.CLOSED)
        return self.take_events()

    def release(self) -> None:
        """Drop buffers a closed stream no longer needs (resampler and framer state)."""
        self._reset_outbound()
        self._auto_raw = bytearray()

    def _malformed(self, reason: str, raw: str | bytes, detail: str = "") -> MalformedFrame:
        self.stats.malformed += 1
        self.stats.malformed_reasons[reason] += 1
        return MalformedFrame(reason, raw[:_RAW_LIMIT], detail)

    def _void_pending(self, outcome: CheckpointOutcome) -> tuple[str, ...]:
        names = tuple(self._pending)
        self._outbox.extend(CheckpointVoided(name, outcome) for name in names)
        self._pending.clear()
        return names

    def _require_streaming(self, role: Role) -> str:
        if self.role is not role:
            raise LocalProtocolError(f"only the {role.value} side can do this")
        if self.state is State.AWAITING_START or self.started is None:
            raise LocalProtocolError("no 'start' yet: the stream id is not known")
        if self.state is State.CLOSED:
            raise LocalProtocolError("the stream is closed")
        return self.started.stream_id

    def _emit(self, text: str) -> str:
        self.stats.frames_out += 1
        return text

    # --------------------------------------------------------------------- app: inbound
    def _on_start(self, msg: dict[str, Any], frame: str) -> list[Event]:
        try:
            started = self._parse_start(msg)
        except (PydanticValidationError, CodecError) as exc:
            return [self._malformed("bad-start", frame, str(exc).splitlines()[0])]
        events: list[Event] = []
        if self.started is not None and not self._accept_restart:
            reason = (
                "repeated-start" if started.call_id == self.started.call_id else "foreign-start"
            )
            return [self._malformed(reason, frame, f"call {started.call_id[:64]!r}")]
        if self.started is not None:
            # A reconnect (maxRetries) on the same object: new stream id, fresh state.
            self.stats.restarts += 1
            self._void_pending(CheckpointOutcome.CLOSED)
            events.extend(self.take_events())
            self._reset_outbound()
        self.started = started
        self.inbound_format = started.media_format
        if self._configured_outbound is None:
            self.outbound_format = started.media_format
        self._stream_id_json = json_string(started.stream_id)
        self.state = State.STREAMING
        events.append(started)
        return events

    @staticmethod
    def _parse_start(msg: dict[str, Any]) -> StreamStarted:
        raw_headers, headers = _parse_extra_headers(msg.get("extra_headers"))
        seq = _as_int(msg.get("sequenceNumber"))
        inner = msg.get("start")
        if isinstance(inner, dict):
            nested = _StartNestedWire.model_validate(inner)
            fmt = (
                AudioFormat.parse(nested.mediaFormat.encoding, nested.mediaFormat.sampleRate)
                if nested.mediaFormat is not None
                else AudioFormat.parse(str(msg.get("contentType", _DEFAULT_FORMAT.content_type)))
            )
            if not nested.streamId or not nested.callId:
                raise CodecError("empty streamId or callId")
            return StreamStarted(
                stream_id=nested.streamId,
                call_id=nested.callId,
                media_format=fmt,
                account_id=None if nested.accountId is None else str(nested.accountId),
                tracks=tuple(nested.tracks),
                extra_headers=headers,
                extra_headers_raw=raw_headers,
                shape="nested",
                sequence_number=seq,
            )
        flat = _StartFlatWire.model_validate(msg)
        if not flat.streamId or not flat.callId:
            raise CodecError("empty streamId or callId")
        return StreamStarted(
            stream_id=flat.streamId,
            call_id=flat.callId,
            media_format=AudioFormat.parse(flat.contentType, flat.sampleRate),
            account_id=None if flat.accountId is None else str(flat.accountId),
            tracks=(flat.audioTrack,),
            extra_headers=headers,
            extra_headers_raw=raw_headers,
            shape="flat",
            from_number=_opt_str(msg.get("from")),
            to_number=flat.to,
            direction=flat.direction,
            sequence_number=seq,
        )

    def _on_media(self, msg: dict[str, Any], frame: str) -> list[Event]:
        """The tolerant path for media frames the fast decoder did not take."""
        media = msg.get("media")
        if type(media) is not dict:
            return [self._malformed("missing-field", frame, "media")]
        payload = media.get("payload")
        if type(payload) is not str:
            return [self._malformed("missing-field", frame, "media.payload")]
        if self.inbound_format is None:
            return [self._malformed("before-start", frame, "media before start")]
        try:
            raw = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            return [self._malformed("bad-base64", frame, str(exc))]
        seq = msg.get("sequenceNumber")
        stream_id = msg.get("streamId")
        return self._audio(
            raw,
            media.get("contentType"),
            media.get("sampleRate"),
            media.get("track"),
            _as_int(seq),
            _as_int(media.get("chunk")),
            media.get("timestamp"),
            stream_id if type(stream_id) is str else None,
            frame,
        )

    def _on_media_fast(self, wire: _MediaWire, frame: str) -> list[Event]:
        media = wire.media
        return self._audio(
            media.payload,
            media.contentType,
            media.sampleRate,
            media.track,
            wire.sequenceNumber,
            media.chunk,
            media.timestamp,
            wire.streamId,
            frame,
        )

    def _audio(
        self,
        raw: bytes,
        content_type: object,
        sample_rate: object,
        track: object,
        seq: int | None,
        chunk: int | None,
        timestamp: object,
        stream_id: str | None,
        frame: str,
    ) -> list[Event]:
        """Decode one frame's audio per ``start.mediaFormat`` (or the frame's own format)."""
        fmt = self.inbound_format
        assert fmt is not None
        limit = self._max_audio_bytes
        if limit is not None and len(raw) > limit:
            return [self._malformed("oversized-audio", frame, f"{len(raw)} bytes > {limit}")]
        if content_type is not None or sample_rate is not None:  # oldest shape: per frame
            try:
                fmt = AudioFormat.parse(
                    content_type if type(content_type) is str else fmt.encoding.value,
                    sample_rate if sample_rate is not None else fmt.sample_rate,  # type: ignore[arg-type]
                )
            except CodecError as exc:
                return [self._malformed("bad-field", frame, str(exc))]
        events: list[Event] = []
        if fmt.encoding is AudioEncoding.MULAW:
            pcm = ulaw_to_pcm16(raw)
        else:
            if len(raw) & 1:
                return [self._malformed("odd-length", frame, f"{len(raw)} bytes of L16")]
            if self._in_order == "auto":
                detected = self._detect_order(raw, fmt)
                if detected is not None:
                    events.append(detected)
            pcm = raw if self._in_order != "big" else swap_bytes16(raw)
        stats = self.stats
        stats.media_in += 1
        stats.audio_ms_in += len(pcm) * 500 / fmt.sample_rate
        if type(timestamp) is not int:
            timestamp = _as_int(timestamp)
        events.append(
            AudioReceived(
                pcm,
                fmt.sample_rate,
                track if type(track) is str else "inbound",
                seq,
                chunk,
                timestamp,
                stream_id,
                raw,
            )
        )
        return events

    def _detect_order(self, raw: bytes, fmt: AudioFormat) -> ByteOrderDetected | None:
        self._auto_raw += raw
        self._auto_seen_ms += len(raw) * 500 / fmt.sample_rate
        if self._auto_seen_ms < self._auto_detect_ms:
            return None
        little, big = _score_smoothness(bytes(self._auto_raw))
        if max(little, big) < 4.0 and self._auto_seen_ms < 20 * self._auto_detect_ms:
            # Digital silence says nothing about byte order: keep listening (bounded).
            self._auto_raw.clear()
            return None
        order: ByteOrder = "big" if big < little else "little"
        self._in_order = order
        self._auto_raw = bytearray()
        return ByteOrderDetected(order, little, big)

    def _on_played(self, msg: dict[str, Any], frame: str) -> list[Event]:
        name = msg.get("name")
        if type(name) is not str:
            return [self._malformed("missing-field", frame, "name")]
        pending = self._pending.pop(name, None)
        if pending is not None:
            # Checkpoints play in order: everything sent up to this one has played.
            self.playout.played_ms = max(self.playout.played_ms, pending.sent_ms)
        return [
            PlaybackCheckpointReached(
                name,
                pending is not None,
                _opt_str(msg.get("streamId")),
                _as_int(msg.get("sequenceNumber")),
            )
        ]

    def _on_cleared(self, msg: dict[str, Any], frame: str) -> list[Event]:
        return [AudioCleared(_opt_str(msg.get("streamId")), _as_int(msg.get("sequenceNumber")))]

    def _on_dtmf(self, msg: dict[str, Any], frame: str) -> list[Event]:
        body = msg.get("dtmf")
        body = body if isinstance(body, dict) else {}
        digit = body.get("digit", msg.get("digit"))
        if isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
            digit = str(digit)
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            return [self._malformed("bad-field", frame, "dtmf.digit")]
        return [
            DtmfReceived(
                digit.upper(),
                _opt_str(body.get("track")),
                _as_int(body.get("timestamp", msg.get("timestamp"))),
                _opt_str(msg.get("streamId")),
            )
        ]

    def _on_stop(self, msg: dict[str, Any], frame: str) -> list[Event]:
        inner = msg.get("stop")
        reason = msg.get("reason")
        if reason is None and isinstance(inner, dict):
            reason = inner.get("reason")
        return [StreamStopped(_opt_str(msg.get("streamId")), _opt_str(reason))]

    # -------------------------------------------------------------------- app: outbound
    def _reset_outbound(self) -> None:
        self._framer = None
        self._resamplers.clear()
        self._utterance_started = None
        self._play_prefix = ""

    def _outbound(self) -> tuple[AudioFormat, Framer]:
        fmt = self.outbound_format or self.inbound_format or _DEFAULT_FORMAT
        if self._framer is None:
            self._framer = Framer(fmt.encoding, fmt.sample_rate)
            self._play_prefix = (
                '{"event":"playAudio","streamId":'
                + self._stream_id_json
                + ',"media":{"contentType":"'
                + fmt.encoding.value
                + '","sampleRate":'
                + str(fmt.sample_rate)
                + ',"payload":"'
            )
        return fmt, self._framer

    def _encode(self, pcm: bytes, fmt: AudioFormat) -> bytes:
        if fmt.encoding is AudioEncoding.MULAW:
            return pcm16_to_ulaw(pcm)
        return pcm16_to_l16(pcm, self._out_order)

    def _frames(self, encoded_frames: list[bytes], now: float | None) -> list[str]:
        if not encoded_frames:
            return []
        if self._utterance_started is None:
            self._utterance_started = now
        prefix = self._play_prefix
        out = [
            prefix + binascii.b2a_base64(f, newline=False).decode("ascii") + '"}}'
            for f in encoded_frames
        ]
        sent = FRAME_MS * len(out)
        self.playout.sent_ms += sent
        self.playout.utterance_ms += sent
        self.stats.frames_out += len(out)
        return out

    def play(
        self, pcm: bytes, sample_rate: int | None = None, *, now: float | None = None
    ) -> list[str]:
        """Turn PCM into paced-size ``playAudio`` frames (exact 20 ms each).

        PCM at 8, 16 or 24 kHz is resampled to the outbound format when needed (the
        resampler keeps its state across calls of one utterance), encoded, and cut into
        20 ms frames; a partial frame waits for the next call, :meth:`flush_audio` or
        :meth:`checkpoint`.

        Args:
            pcm: signed 16-bit little-endian mono.
            sample_rate: the PCM's rate; default the outbound rate.
            now: the current time in seconds, for the heard-audio estimate of a clear.

        Returns:
            JSON text frames to send, in order.

        Raises:
            LocalProtocolError: before ``start``, after close, or in the Vobiz role.
            CodecError: odd byte count or unsupported rate.
        """
        self._require_streaming(Role.APP)
        fmt, framer = self._outbound()
        rate = fmt.sample_rate if sample_rate is None else sample_rate
        if rate not in SUPPORTED_RATES:
            raise CodecError(f"unsupported sample rate {rate!r}")
        if len(pcm) & 1:
            raise CodecError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
        if rate != fmt.sample_rate:
            resampler = self._resamplers.get(rate)
            if resampler is None:
                resampler = self._resamplers[rate] = Resampler(rate, fmt.sample_rate)
            pcm = resampler.process(pcm)
        return self._frames(framer.push(self._encode(pcm, fmt)), now)

    def play_encoded(self, payload: bytes, *, now: float | None = None) -> list[str]:
        """Like :meth:`play` for audio already in the outbound format (its encoding,
        rate and L16 byte order): framed as is, with no decode/encode round trip.
        Useful for a TTS that outputs mu-law 8 kHz, or to echo ``AudioReceived.payload``
        back on a stream whose formats match.

        Raises:
            LocalProtocolError: not streaming.
            CodecError: an odd byte count for L16.
        """
        self._require_streaming(Role.APP)
        fmt, framer = self._outbound()
        if fmt.encoding is AudioEncoding.L16 and len(payload) & 1:
            raise CodecError(f"L16 needs an even number of bytes, got {len(payload)}")
        return self._frames(framer.push(payload), now)

    def flush_audio(self, *, now: float | None = None) -> list[str]:
        """Send what ``play`` is holding back: resampler tail and the last partial frame
        padded with silence. Returns the frames (possibly none)."""
        self._require_streaming(Role.APP)
        fmt, framer = self._outbound()
        frames: list[bytes] = []
        for resampler in self._resamplers.values():
            frames += framer.push(self._encode(resampler.flush(), fmt))
        last = framer.flush()
        if last is not None:
            frames.append(last)
        return self._frames(frames, now)

    def discard_unsent(self, frames: int) -> None:
        """Tell the protocol that the I/O layer dropped ``frames`` ``playAudio`` frames it
        got from :meth:`play` without sending them (a clear or a close came first), so
        the playout accounting only counts audio that reached the wire. Call it before
        :meth:`clear`."""
        if frames <= 0:
            return
        ms = FRAME_MS * frames
        self.playout.sent_ms = max(0.0, self.playout.sent_ms - ms)
        self.playout.utterance_ms = max(0.0, self.playout.utterance_ms - ms)
        self.stats.frames_out -= frames

    def checkpoint(self, name: str, *, now: float | None = None) -> list[str]:
        """End an utterance: flush held-back audio, then send a ``checkpoint``.

        Args:
            name: unique among pending checkpoints (a name is how Vobiz acknowledges).

        Returns:
            The frames to send: any flushed ``playAudio`` frames, then the checkpoint.

        Raises:
            LocalProtocolError: not streaming, or a checkpoint of that name is pending.
            ValidationError: an empty name.
        """
        stream_id = self._require_streaming(Role.APP)
        if not isinstance(name, str) or not name:
            raise ValidationError("name", "a checkpoint needs a non-empty name")
        if name in self._pending:
            raise LocalProtocolError(f"checkpoint {name!r} is already pending")
        frames = self.flush_audio(now=now)
        self._pending[name] = _Pending(name, self.playout.sent_ms)
        self.playout.utterance_ms = 0.0
        self._utterance_started = None
        frames.append(self._emit(Checkpoint(stream_id, name).to_json()))
        return frames

    def clear(self, *, now: float | None = None) -> list[str]:
        """Barge-in: drop our held-back audio, void pending checkpoints, send ``clearAudio``.

        The summary of what was interrupted is stored in :attr:`last_clear`; the voided
        checkpoints come out of :meth:`take_events` as ``CheckpointVoided(cleared)``.
        """
        stream_id = self._require_streaming(Role.APP)
        playout = self.playout
        heard: float | None = None
        if now is not None and self._utterance_started is not None:
            heard = min(playout.utterance_ms, max(0.0, (now - self._utterance_started) * 1000))
        unconfirmed = playout.pending_ms
        voided = self._void_pending(CheckpointOutcome.CLEARED)
        self.last_clear = ClearSummary(playout.utterance_ms, unconfirmed, heard, voided)
        playout.cleared_ms += unconfirmed
        playout.utterance_ms = 0.0
        self._utterance_started = None
        if self._framer is not None:
            self._framer.clear()
        self._resamplers.clear()
        return [self._emit(ClearAudio(stream_id).to_json())]

    def stop(self) -> list[str]:
        """End the stream: send ``stop``; the protocol is closed from now on."""
        stream_id = self._require_streaming(Role.APP)
        self.state = State.CLOSED
        self._void_pending(CheckpointOutcome.CLOSED)
        return [self._emit(Stop(stream_id).to_json())]

    # ------------------------------------------------------------------- Vobiz role: in
    def _command_stream_id(self, msg: dict[str, Any]) -> str:
        stream_id = msg.get("streamId")
        if type(stream_id) is not str:
            # Older docs omitted it; the newest require it (spec 4.4). Count, don't drop.
            self.stats.missing_stream_id += 1
            return self.stream_id or ""
        return stream_id

    def _on_play_audio(self, msg: dict[str, Any], frame: str) -> list[Event]:
        media = msg.get("media")
        if type(media) is not dict or type(media.get("payload")) is not str:
            return [self._malformed("missing-field", frame, "media.payload")]
        rate = _as_int(media.get("sampleRate"))
        try:
            fmt = AudioFormat.parse(str(media.get("contentType", "")), rate)
        except CodecError as exc:
            return [self._malformed("bad-field", frame, str(exc))]
        try:
            payload = binascii.a2b_base64(media["payload"], strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            return [self._malformed("bad-base64", frame, str(exc))]
        if fmt.encoding is AudioEncoding.L16 and len(payload) & 1:
            return [self._malformed("odd-length", frame, f"{len(payload)} bytes of L16")]
        return [PlayAudio(self._command_stream_id(msg), fmt.encoding, fmt.sample_rate, payload)]

    def _on_checkpoint(self, msg: dict[str, Any], frame: str) -> list[Event]:
        name = msg.get("name")
        if type(name) is not str or not name:
            return [self._malformed("missing-field", frame, "name")]
        return [Checkpoint(self._command_stream_id(msg), name)]

    def _on_clear_audio(self, msg: dict[str, Any], frame: str) -> list[Event]:
        return [ClearAudio(self._command_stream_id(msg))]

    def _on_stop_command(self, msg: dict[str, Any], frame: str) -> list[Event]:
        return [Stop(self._command_stream_id(msg))]

    # ------------------------------------------------------------------ Vobiz role: out
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
        """(Vobiz role) Begin the stream with a ``start`` frame in the given shape."""
        if self.role is not Role.VOBIZ:
            raise LocalProtocolError("only the vobiz side sends 'start'")
        if self.state is State.CLOSED:
            raise LocalProtocolError("the stream is closed")
        self.started = StreamStarted(
            stream_id, call_id, media_format, account_id, tracks, shape=shape
        )
        self.inbound_format = media_format
        self.state = State.STREAMING
        self._stream_id_json = json_string(stream_id)
        if shape == "nested":
            body: dict[str, Any] = {
                "sequenceNumber": self._next_seq(),
                "event": "start",
                "start": {
                    "callId": call_id,
                    "streamId": stream_id,
                    "accountId": account_id,
                    "tracks": list(tracks),
                    "mediaFormat": {
                        "encoding": media_format.encoding.value,
                        "sampleRate": media_format.sample_rate,
                    },
                },
                "extra_headers": extra_headers,
            }
        else:
            body = {
                "event": "start",
                "streamId": stream_id,
                "accountId": account_id,
                "callId": call_id,
                "from": from_number,
                "to": to_number,
                "direction": "inbound",
                "contentType": media_format.content_type,
                "audioTrack": tracks[0] if tracks else "inbound",
            }
        return self._emit(json.dumps(body, separators=(",", ":")))

    def _next_seq(self) -> int:
        seq = self._seq_out
        self._seq_out += 1
        return seq

    def send_media(
        self,
        pcm: bytes,
        *,
        timestamp: int,
        track: str = "inbound",
        byte_order: ByteOrder = "little",
    ) -> str:
        """(Vobiz role) One ``media`` frame in the newest shape, encoding ``pcm`` per ``start``.

        Args:
            pcm: PCM16 LE at the inbound format's rate.
            timestamp: the media clock in epoch milliseconds (sent as a string).
            track: ``inbound`` or ``outbound``.
            byte_order: how L16 goes on the wire (to emulate either evidence, spec 4.6).
        """
        stream_id = self._require_streaming(Role.VOBIZ)
        fmt = self.inbound_format or _DEFAULT_FORMAT
        payload = (
            pcm16_to_ulaw(pcm)
            if fmt.encoding is AudioEncoding.MULAW
            else pcm16_to_l16(pcm, byte_order)
        )
        seq = self._next_seq()
        chunk = self._chunks[track]
        self._chunks[track] += 1
        return self._emit(
            '{"sequenceNumber":'
            + str(seq)
            + ',"streamId":'
            + json_string(stream_id)
            + ',"event":"media","media":{"track":'
            + json_string(track)
            + ',"timestamp":"'
            + str(int(timestamp))
            + '","chunk":'
            + str(chunk)
            + ',"payload":"'
            + binascii.b2a_base64(payload, newline=False).decode("ascii")
            + '"},"extra_headers":"{}"}'
        )

    def send_played(self, name: str) -> str:
        """(Vobiz role) ``playedStream`` for checkpoint ``name`` (newest shape: event + name)."""
        self._require_streaming(Role.VOBIZ)
        return self._emit(
            json.dumps({"event": "playedStream", "name": name}, separators=(",", ":"))
        )

    def send_cleared(self) -> str:
        """(Vobiz role) ``clearedAudio``."""
        stream_id = self._require_streaming(Role.VOBIZ)
        body = {"sequenceNumber": self._next_seq(), "event": "clearedAudio", "streamId": stream_id}
        return self._emit(json.dumps(body, separators=(",", ":")))

    def send_dtmf(self, digit: str, *, timestamp: int) -> str:
        """(Vobiz role) A ``dtmf`` event in the presumed Plivo-identical body (spec 4.3.6)."""
        stream_id = self._require_streaming(Role.VOBIZ)
        body = {
            "sequenceNumber": self._next_seq(),
            "event": "dtmf",
            "streamId": stream_id,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(int(timestamp))},
        }
        return self._emit(json.dumps(body, separators=(",", ":")))


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
