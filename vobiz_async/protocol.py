"""The sans-I/O state machine of one media stream (our side).

How a stream works
==================

The provider (Vobiz, or SignalWire/Twilio's compat API) dials *our* WebSocket server
and sends one JSON text frame per message (spec 4, compat spec 4).
:class:`StreamProtocol` is a plain object that turns those frames into events and our
intentions into frames. It owns no socket, no task and no clock: anything that depends
on time takes ``now`` (seconds, any monotonic origin). How a provider writes each
message is its dialect's business (:mod:`vobiz_async._wire`); this module holds the
state. The emulator's mirror image, the provider's side, is
``vobiz_async.testing._peer.PeerProtocol``.

States::

    AWAITING_START --start--> STREAMING --stop() / peer closed--> CLOSED

* ``AWAITING_START``: nothing but ``start`` is useful yet (a compat ``connected``
  frame is noted). Media that arrives early is reported as a :class:`MalformedFrame`
  (reason ``before-start``) and counted; our own commands raise
  :class:`LocalProtocolError` because they need the stream id. With
  ``provider="auto"`` the first frame that says so picks the dialect.
* ``STREAMING``: ``media`` frames are decoded on a fast path (one msgspec pass for
  JSON and base64, C-level mu-law). What we play is queued here, frame by frame, and
  handed out by :meth:`StreamProtocol.frames_due` as the pacing clock allows; a frame
  counts as sent only then, so there is one owner of every count. A second ``start``
  is taken as a reconnect by default; the server refuses it (``accept_restart=False``):
  Vobiz reconnects on a new socket.
* ``CLOSED``: reached when we send ``stop`` or the I/O layer reports the close (the
  newest Vobiz docs say no inbound ``stop`` exists: the close *is* the end, so
  :meth:`StreamProtocol.connection_closed` must be called by whoever owns the socket).
  Commands raise; pending checkpoints are resolved as ``closed``; queued frames are
  dropped and counted.

Nothing the peer sends can raise out of :meth:`StreamProtocol.receive` or end the
stream: invalid JSON, binary frames, missing fields, bad base64, odd-length L16 each
become a :class:`MalformedFrame` with a reason, and ``stats.malformed`` goes up.

Checkpoints end in exactly one outcome: ``played`` (``playedStream`` with their name, or
the compat ``mark`` echo), ``cleared`` (we sent a clear first: Vobiz never acknowledges
those, spec 4.3.4; a compat platform echoes the mark anyway, and that echo is taken as
"flushed", compat spec 4.6), or ``closed``. Outcomes the protocol decides on its own
(cleared, closed) are queued and returned by :meth:`StreamProtocol.take_events` (and at
the start of the next :meth:`~StreamProtocol.receive` result, if not taken before).

L16 byte order (spec 4.6): little-endian by default in both directions, configurable
per direction; inbound may be ``"auto"``, which decodes provisionally as little-endian
and decides from the first ~0.5 s of non-silent audio by comparing how smooth each
reading is, then reports a :class:`ByteOrderDetected` event.
"""

from __future__ import annotations

import binascii
import enum
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Literal

from ._wire import COMPAT, VOBIZ, Dialect, compat
from ._wire import vobiz as wire
from .codec import (
    FRAME_MS,
    SUPPORTED_RATES,
    AudioEncoding,
    AudioFormat,
    ByteOrder,
    Framer,
    Resamplers,
    l16_to_pcm16,
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
    CheckpointOutcome,
    CheckpointVoided,
    InboundEvent,
    MalformedFrame,
    PlaybackCheckpointReached,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    json_string,
)

__all__ = [
    "ClearSummary",
    "InboundByteOrder",
    "PlayoutStats",
    "ProtocolStats",
    "State",
    "StreamProtocol",
]

InboundByteOrder = Literal["little", "big", "auto"]
_DEFAULT_FORMAT = wire.DEFAULT_FORMAT
_FRAME_S = FRAME_MS / 1000
_MAX_CLEARED_MARKS = 256
Provider = Literal["auto", "vobiz", "signalwire", "twilio"]


class State(enum.StrEnum):
    """Lifecycle of one stream; see the module docstring."""

    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    CLOSED = "closed"


# Enum members as module constants for the per-frame paths: on Python 3.11 a lookup such
# as ``State.STREAMING`` goes through the enum metaclass and costs about 80 ns.
_STREAMING = State.STREAMING
_MULAW = AudioEncoding.MULAW


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
    dropped_outbound: int = 0
    late_outbound: int = 0
    marks_after_clear: int = 0
    unknown_marks: int = 0


@dataclass(slots=True)
class PlayoutStats:
    """What happened to the audio we sent.

    Attributes:
        sent_ms: audio handed out as ``playAudio`` frames.
        played_ms: audio confirmed played by ``playedStream`` acknowledgements.
        cleared_ms: unconfirmed audio outstanding when we sent ``clearAudio``: an upper
            bound on what Vobiz discarded (some of it may have played before the clear).
        utterance_ms: audio sent since the last checkpoint or clear.
        checkpoint_latency_ms: per played checkpoint, how long after our estimate of
            its playout end the acknowledgement arrived (the last 1,000).
        clear_round_trip_ms: per ``clearAudio``, the time until ``clearedAudio``
            arrived (the last 1,000).
    """

    sent_ms: float = 0.0
    played_ms: float = 0.0
    cleared_ms: float = 0.0
    utterance_ms: float = 0.0
    checkpoint_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    clear_round_trip_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

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
    """A checkpoint we queued; ``due`` is when its audio should have played (set when
    it goes out), to measure how late the acknowledgement comes."""

    __slots__ = ("due", "name", "sent_ms")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent_ms = 0.0
        self.due: float | None = None


class _QueuedCheckpoint:
    __slots__ = ("frame", "name")

    def __init__(self, name: str, frame: str) -> None:
        self.name = name
        self.frame = frame


class StreamProtocol:
    """One media stream's protocol state, with no I/O.

    Args:
        l16_byte_order: how inbound L16 is read: ``"little"`` (default, the newest
            evidence, spec 4.6), ``"big"``, or ``"auto"``.
        outbound_byte_order: how L16 we send is written (default ``"little"``).
        outbound_format: the format of ``playAudio`` we send. Default: the inbound
            format from ``start`` (always accepted; the newest docs allow others,
            e.g. L16 24 kHz, spec 4.4.1).
        auto_detect_ms: audio to look at before deciding the byte order in ``"auto"``.
        lead_ms: audio kept queued at Vobiz ahead of the playout point by
            :meth:`frames_due` (the pacing lead, see ``Pacing.lead_ms``).
        coalesce_ms: once a frame is due, :meth:`frames_due` also hands out the
            frames due within this much more time, so a shell writes them together
            (``Pacing.coalesce_ms``). 0: one frame per 20 ms.
        provider: the wire dialect: ``"vobiz"``, ``"signalwire"`` or
            ``"twilio"`` (the Twilio-compatible dialect), or ``"auto"`` (default): the
            first frame tells (``connected``, or a ``start`` with ``streamSid``, is
            compat; compat spec 4.3).
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
        *,
        l16_byte_order: InboundByteOrder = "little",
        outbound_byte_order: ByteOrder = "little",
        outbound_format: AudioFormat | None = None,
        auto_detect_ms: int = 500,
        lead_ms: float = 200.0,
        coalesce_ms: float = 0.0,
        provider: Provider = "auto",
        max_audio_bytes: int | None = None,
        accept_restart: bool = True,
    ) -> None:
        if l16_byte_order not in ("little", "big", "auto"):
            raise ValidationError("l16_byte_order", "must be 'little', 'big' or 'auto'")
        if outbound_byte_order not in ("little", "big"):
            raise ValidationError("outbound_byte_order", "must be 'little' or 'big'")
        if provider not in ("auto", "vobiz", "signalwire", "twilio"):
            raise ValidationError("provider", "must be auto, vobiz, signalwire or twilio")
        self._configured_provider: Provider = provider
        # The typed one-pass media decoder of the stream's dialect, once it started.
        self._fast_media: Callable[[str | bytes], wire.Media | None] | None = None
        self._dialect: Dialect | None = (
            None if provider == "auto" else VOBIZ if provider == "vobiz" else COMPAT
        )
        self.connected: compat.Connected | None = None
        self._mark_names: dict[str, str] = {}  # compat: wire mark name -> checkpoint name
        self._cleared_marks: dict[str, None] = {}  # compat: flushed marks still to echo
        self._marks = 0
        self._clears = 0
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
        self._outbox: list[InboundEvent] = []
        self._pending: dict[str, _Pending] = {}
        self._framer: Framer | None = None
        self._resamplers: Resamplers | None = None
        self._utterance_started: float | None = None
        self._play_prefix = ""
        self._play_suffix = ""
        self._lead = lead_ms / 1000
        self._coalesce = max(0.0, coalesce_ms) / 1000
        self._queue: deque[str | _QueuedCheckpoint] = deque()
        self._queued_audio = 0
        self._playout_end = 0.0
        self._clear_sent_at: float | None = None
        self._stream_id_json = ""

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

    def take_events(self) -> list[InboundEvent]:
        """Events the protocol raised on its own (checkpoint outcomes), oldest first."""
        events, self._outbox = self._outbox, []
        return events

    def receive(self, frame: str | bytes, *, now: float | None = None) -> list[InboundEvent]:
        """Parse one WebSocket message into events. Never raises for peer input.

        Args:
            frame: a text frame (``str``). A binary frame (``bytes``) is reported as
                malformed: Vobiz sends text frames only.
            now: the current time, to measure acknowledgement latencies (optional).

        Returns:
            Queued protocol events first, then the events of this frame.
        """
        if type(frame) is str and self._fast_media is not None:
            media = self._fast_media(frame)  # the hot path: one C pass, no other call
            if media is not None and not self._outbox:
                self.stats.frames_in += 1
                self._track_sequence(media.sequenceNumber)
                return self._on_media(media, frame)
        return self._receive(frame, not isinstance(frame, str), now)

    def receive_text(
        self, data: bytes | bytearray | memoryview, *, now: float | None = None
    ) -> list[InboundEvent]:
        """Like :meth:`receive` for a text frame still in UTF-8 (no decode/encode round
        trip in the I/O layer; invalid UTF-8 is reported as ``invalid-json``)."""
        frame = bytes(data)
        if self._fast_media is not None:
            media = self._fast_media(frame)
            if media is not None and not self._outbox:
                self.stats.frames_in += 1
                self._track_sequence(media.sequenceNumber)
                return self._on_media(media, frame)
        return self._receive(frame, False, now)

    def _receive(self, frame: str | bytes, binary: bool, now: float | None) -> list[InboundEvent]:
        self.stats.frames_in += 1
        events: list[InboundEvent] = self.take_events() if self._outbox else []
        dialect = self._dialect or self._detect(frame, binary)
        if self._fast_media is not None and not binary:
            media = dialect.decode_media(frame)
            if media is not None:
                self._track_sequence(media.sequenceNumber)
                events.extend(self._on_media(media, frame))
                return events
        parsed, seq = dialect.parse_inbound(frame, binary=binary)
        self._track_sequence(seq)
        self._apply(parsed, frame, events, now)
        return events

    def _detect(self, frame: str | bytes, binary: bool) -> Dialect:
        """``provider="auto"`` before the stream started: compat frames say so at once
        (and fix the choice); anything else is read as Vobiz until a Vobiz ``start``
        fixes it."""
        if not binary and compat.looks_like_compat(frame):
            self._dialect = COMPAT
            return COMPAT
        return VOBIZ

    @property
    def provider(self) -> str:
        """Who is on the other end: ``vobiz``, ``signalwire`` or ``twilio`` (known from
        ``start``; before it, the configured provider or ``auto``)."""
        if self.started is not None:
            return self.started.provider
        return self._configured_provider

    @property
    def clear_acknowledged(self) -> bool:
        """Whether a clear is acknowledged (Vobiz ``clearedAudio``); compat platforms
        send nothing back, so there is nothing to wait for after a clear."""
        return (self._dialect or VOBIZ).clear_acknowledged

    def _apply(
        self,
        parsed: wire.Inbound | compat.Inbound,
        frame: str | bytes,
        events: list[InboundEvent],
        now: float | None,
    ) -> None:
        """Fold one parsed inbound message into the stream's state."""
        kind = type(parsed)
        if kind is MalformedFrame:
            assert isinstance(parsed, MalformedFrame)
            self.stats.malformed += 1
            self.stats.malformed_reasons[parsed.reason] += 1
            events.append(parsed)
        elif kind is UnknownEvent:
            self.stats.unknown_events += 1
            events.append(parsed)  # type: ignore[arg-type]
        elif kind is wire.Media:
            assert isinstance(parsed, wire.Media)
            events.extend(self._on_media(parsed, frame))
        elif kind is StreamStarted:
            assert isinstance(parsed, StreamStarted)
            events.extend(self._on_start(parsed, frame))
        elif kind is PlaybackCheckpointReached:
            assert isinstance(parsed, PlaybackCheckpointReached)
            played = self._on_played(parsed, now)
            if played is not None:
                events.append(played)
        elif kind is compat.Connected:
            assert isinstance(parsed, compat.Connected)
            self.connected = parsed  # compat: the socket is up, start follows
        else:  # AudioCleared, DtmfReceived, StreamStopped
            if isinstance(parsed, StreamStopped) and parsed.stream_id is None and self.started:
                # SignalWire's stop names no stream (compat spec 4.3.6): it is ours.
                parsed = replace(parsed, stream_id=self.started.stream_id)
            if kind is AudioCleared and self._clear_sent_at is not None and now is not None:
                self.playout.clear_round_trip_ms.append((now - self._clear_sent_at) * 1000)
                self._clear_sent_at = None
            events.append(parsed)  # type: ignore[arg-type]

    def _track_sequence(self, seq: int | None) -> None:
        if seq is None:
            return
        last = self._last_seq
        if last is not None and seq > last + 1:
            self.stats.sequence_gaps += seq - last - 1
        self._last_seq = seq

    def connection_closed(self) -> list[InboundEvent]:
        """Record that the socket closed; resolves pending checkpoints as ``closed``."""
        self._drop_queued()
        self._mark_names.clear()
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
        return wire.malformed(reason, raw, detail)

    def _void_pending(self, outcome: CheckpointOutcome) -> tuple[str, ...]:
        names = tuple(self._pending)
        self._outbox.extend(CheckpointVoided(name, outcome) for name in names)
        self._pending.clear()
        return names

    def _require_streaming(self) -> str:
        started = self.started
        if self.state is _STREAMING and started is not None:
            return started.stream_id
        if self.state is State.AWAITING_START or started is None:
            raise LocalProtocolError("no 'start' yet: the stream id is not known")
        raise LocalProtocolError("the stream is closed")

    def _emit(self, text: str) -> str:
        self.stats.frames_out += 1
        return text

    # --------------------------------------------------------------------- app: inbound
    def _on_start(self, started: StreamStarted, frame: str | bytes) -> list[InboundEvent]:
        events: list[InboundEvent] = []
        if self.started is not None and not self._accept_restart:
            reason = (
                "repeated-start" if started.call_id == self.started.call_id else "foreign-start"
            )
            return [self._malformed(reason, frame, f"call {started.call_id[:64]!r}")]
        if self.started is not None:
            # A reconnect (maxRetries) on the same object: new stream id, fresh state.
            self.stats.restarts += 1
            self._drop_queued()
            self._mark_names.clear()
            self._void_pending(CheckpointOutcome.CLOSED)
            events.extend(self.take_events())
            self._reset_outbound()
        if self._dialect is None:
            self._dialect = VOBIZ
        self._fast_media = self._dialect.decode_media
        self.started = started
        self.inbound_format = started.media_format
        if self._configured_outbound is None or self._dialect.fixed_outbound:
            # Compat streams play back in their own format only (compat spec 5.1).
            self.outbound_format = started.media_format
        self._stream_id_json = json_string(started.stream_id)
        self.state = State.STREAMING
        events.append(started)
        return events

    def _on_media(self, media: wire.Media, frame: str | bytes) -> list[InboundEvent]:
        """Decode one frame's audio per ``start.mediaFormat`` (or the frame's own format,
        in the oldest shape) into an :class:`AudioReceived` (the hot path: one call)."""
        fmt = self.inbound_format
        if fmt is None:
            return [self._malformed("before-start", frame, "media before start")]
        body = media.media
        raw = body.payload
        limit = self._max_audio_bytes
        if limit is not None and len(raw) > limit:
            return [self._malformed("oversized-audio", frame, f"{len(raw)} bytes > {limit}")]
        if body.contentType is not None or body.sampleRate is not None:  # oldest shape
            try:
                fmt = AudioFormat.parse(
                    body.contentType if body.contentType is not None else fmt.encoding.value,
                    body.sampleRate if body.sampleRate is not None else fmt.sample_rate,
                )
            except CodecError as exc:
                return [self._malformed("bad-field", frame, str(exc))]
        detected: ByteOrderDetected | None = None
        pcm: bytes | None
        if fmt.encoding is _MULAW:
            pcm = None  # decoded when the application first reads event.pcm
        else:
            if len(raw) & 1:
                return [self._malformed("odd-length", frame, f"{len(raw)} bytes of L16")]
            order = self._in_order
            if order == "auto":
                detected = self._detect_order(raw, fmt)
                order = self._in_order
            pcm = raw if order != "big" else swap_bytes16(raw)
        timestamp = body.timestamp
        audio = AudioReceived(
            pcm,
            fmt.sample_rate,
            body.track,
            media.sequenceNumber,
            body.chunk,
            timestamp if type(timestamp) is int else wire.as_int(timestamp),
            media.streamId,
            raw,
        )
        stats = self.stats
        stats.media_in += 1
        stats.audio_ms_in += audio.duration_ms
        return [audio] if detected is None else [detected, audio]

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

    def _on_played(
        self, played: PlaybackCheckpointReached, now: float | None
    ) -> PlaybackCheckpointReached | None:
        if self._dialect is COMPAT:
            # A mark echo means "no longer queued": played, or flushed by our clear
            # (compat spec 4.6). Flushed ones were resolved as cleared at the clear.
            name = self._mark_names.pop(played.name, None)
            if name is None:
                if self._cleared_marks.pop(played.name, 0) is None:
                    self.stats.marks_after_clear += 1
                    return None
                self.stats.unknown_marks += 1
                return replace(played, matched=False)
            played = replace(played, name=name)
        pending = self._pending.pop(played.name, None)
        if pending is None:
            return replace(played, matched=False)
        # Checkpoints play in order: everything sent up to this one has played.
        self.playout.played_ms = max(self.playout.played_ms, pending.sent_ms)
        if now is not None and pending.due is not None:
            self.playout.checkpoint_latency_ms.append(max(0.0, (now - pending.due) * 1000))
        return played

    # -------------------------------------------------------------------- app: outbound
    #
    # The protocol owns every frame we send until it is on the wire. play() and
    # checkpoint() queue frames; the shell asks frames_due(now) for what may go out now,
    # which keeps about ``lead_ms`` of audio queued at Vobiz ahead of the playout point
    # (deadline-based, no drift). A frame counts as sent when frames_due() hands it out;
    # clear() and stop() drop what is still queued (counted in stats.dropped_outbound).

    def _reset_outbound(self) -> None:
        self._framer = None
        self._resamplers = None
        self._utterance_started = None
        self._play_prefix = ""

    def _outbound(self) -> tuple[AudioFormat, Framer]:
        fmt = self.outbound_format or self.inbound_format or _DEFAULT_FORMAT
        if self._framer is None:
            self._framer = Framer(fmt.encoding, fmt.sample_rate)
            assert self.started is not None
            dialect = self._dialect or VOBIZ
            self._play_prefix = dialect.play_prefix(self.started.stream_id, fmt)
            self._play_suffix = dialect.play_suffix
        return fmt, self._framer

    def decode_outbound(self, payload: bytes) -> bytes:
        """Audio in the outbound format (as ``play_encoded`` takes it) as PCM16 LE."""
        fmt = self.outbound_format or self.inbound_format or _DEFAULT_FORMAT
        if fmt.encoding is AudioEncoding.MULAW:
            return ulaw_to_pcm16(payload)
        return l16_to_pcm16(payload[: len(payload) & ~1], self._out_order)

    def _encode(self, pcm: bytes, fmt: AudioFormat) -> bytes:
        if fmt.encoding is _MULAW:
            return pcm16_to_ulaw(pcm)
        return pcm16_to_l16(pcm, self._out_order)

    def _enqueue(self, encoded_frames: list[bytes]) -> int:
        prefix, suffix = self._play_prefix, self._play_suffix
        b64 = binascii.b2a_base64
        append = self._queue.append
        for frame in encoded_frames:
            # One f-string: a single allocation for the whole JSON text.
            append(f"{prefix}{b64(frame, newline=False).decode('ascii')}{suffix}")
        self._queued_audio += len(encoded_frames)
        return len(encoded_frames)

    @property
    def queued_ms(self) -> float:
        """Audio queued here, not yet handed to the wire."""
        return FRAME_MS * self._queued_audio

    @property
    def held_back_bytes(self) -> int:
        """Encoded audio ``play`` holds back for the next call (less than one frame;
        :meth:`flush_audio` or a checkpoint sends it)."""
        return 0 if self._framer is None else self._framer.pending

    @property
    def has_queued(self) -> bool:
        """Whether any frame (audio or checkpoint) waits in the outbound queue."""
        return bool(self._queue)

    @property
    def playout_end(self) -> float:
        """Our estimate of when the audio already sent finishes playing at Vobiz
        (the same clock as ``now``)."""
        return self._playout_end

    def play(self, pcm: bytes, sample_rate: int | None = None, *, now: float = 0.0) -> int:
        """Queue PCM as exact 20 ms ``playAudio`` frames.

        PCM at 8, 16 or 24 kHz is resampled to the outbound format when needed (the
        resampler keeps its state across calls of one utterance), encoded, and cut into
        20 ms frames; a partial frame waits for the next call, :meth:`flush_audio` or
        :meth:`checkpoint`. Nothing is sent here: see :meth:`frames_due`.

        Args:
            pcm: signed 16-bit little-endian mono.
            sample_rate: the PCM's rate; default the outbound rate.
            now: the current time in seconds.

        Returns:
            How many frames were queued.

        Raises:
            LocalProtocolError: before ``start`` or after close.
            CodecError: odd byte count or unsupported rate.
        """
        framer = self._framer
        if framer is not None and self.state is _STREAMING:
            # Fast path, the common case: PCM at the outbound rate needs no resampler
            # (this is _encode inlined); the encoded audio is then what play_encoded
            # takes, whose own fast path queues exactly one frame without the Framer's
            # copy. The frames queued are the same as on the general path.
            fmt = self.outbound_format or self.inbound_format or _DEFAULT_FORMAT
            if (sample_rate is None or sample_rate == fmt.sample_rate) and not len(pcm) & 1:
                if fmt.encoding is _MULAW:
                    return self.play_encoded(pcm16_to_ulaw(pcm), now=now)
                return self.play_encoded(pcm16_to_l16(pcm, self._out_order), now=now)
        self._require_streaming()
        fmt, framer = self._outbound()
        rate = fmt.sample_rate if sample_rate is None else sample_rate
        if rate not in SUPPORTED_RATES:
            raise CodecError(f"unsupported sample rate {rate!r}")
        if len(pcm) & 1:
            raise CodecError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
        if rate != fmt.sample_rate:
            if self._resamplers is None:
                self._resamplers = Resamplers(fmt.sample_rate)
            pcm = self._resamplers.process(pcm, rate)
        return self._enqueue(framer.push(self._encode(pcm, fmt)))

    def play_encoded(self, payload: bytes, *, now: float = 0.0) -> int:
        """Like :meth:`play` for audio already in the outbound format (its encoding,
        rate and L16 byte order): framed as is, with no decode/encode round trip.
        Useful for a TTS that outputs mu-law 8 kHz, or to echo ``AudioReceived.payload``
        back on a stream whose formats match.

        Raises:
            LocalProtocolError: not streaming.
            CodecError: an odd byte count for L16.
        """
        framer = self._framer
        if (
            framer is not None
            and self.state is _STREAMING
            and type(payload) is bytes  # len() counts bytes (not a wide memoryview's items)
            and len(payload) == framer.frame_bytes
            and not framer.pending
        ):
            # Fast path (an echo, a TTS's 20 ms chunks): exactly one frame and nothing
            # held back goes straight to the queue, as _enqueue would write it.
            text = binascii.b2a_base64(payload, newline=False).decode("ascii")
            self._queue.append(f"{self._play_prefix}{text}{self._play_suffix}")
            self._queued_audio += 1
            return 1
        self._require_streaming()
        fmt, framer = self._outbound()
        if fmt.encoding is not _MULAW and len(payload) & 1:  # L16
            raise CodecError(f"L16 needs an even number of bytes, got {len(payload)}")
        return self._enqueue(framer.push(payload))

    def flush_audio(self, *, now: float = 0.0) -> int:
        """Queue what ``play`` is holding back: resampler tail and the last partial frame
        padded with silence. Returns how many frames were queued (possibly none)."""
        self._require_streaming()
        fmt, framer = self._outbound()
        frames: list[bytes] = []
        if self._resamplers is not None:
            frames += framer.push(self._encode(self._resamplers.flush(), fmt))
        last = framer.flush()
        if last is not None:
            frames.append(last)
        return self._enqueue(frames)

    def checkpoint(self, name: str, *, now: float = 0.0) -> None:
        """End an utterance: flush held-back audio, then queue a ``checkpoint``.

        Args:
            name: unique among pending checkpoints (a name is how Vobiz acknowledges).

        Raises:
            LocalProtocolError: not streaming, or a checkpoint of that name is pending.
            ValidationError: an empty name.
        """
        stream_id = self._require_streaming()
        if not isinstance(name, str) or not name:
            raise ValidationError("name", "a checkpoint needs a non-empty name")
        if name in self._pending:
            raise LocalProtocolError(f"checkpoint {name!r} is already pending")
        self.flush_audio(now=now)
        self._pending[name] = _Pending(name)
        dialect = self._dialect or VOBIZ
        wire_name = name
        if dialect.echoes_cleared_marks:
            # Unique on the wire even when a name comes back after a clear (compat 4.6).
            self._marks += 1
            wire_name = f"{name}:g{self._clears}:m{self._marks}"
            self._mark_names[wire_name] = name
        self._queue.append(_QueuedCheckpoint(name, dialect.checkpoint_frame(stream_id, wire_name)))

    def frames_due(self, now: float, max_frames: int | None = None) -> list[str]:
        """The queued frames that may go out at ``now``, in order; they count as sent.

        Audio goes out while less than ``lead_ms`` of it is queued at Vobiz ahead of
        the playout point (the first ``lead_ms`` of an utterance at once, then one
        frame per 20 ms); a checkpoint goes out as soon as the audio before it has.
        With ``coalesce_ms``, a call that hands out one due frame also hands out those
        due within ``coalesce_ms`` after it (Vobiz then holds up to ``lead_ms +
        coalesce_ms``), so the shell can write them in one go.

        Args:
            now: the current time (seconds, the clock ``play``/``clear`` are given).
            max_frames: hand out at most this many (a shell sizes its batches with it
                and stops asking when its write buffer is full).
        """
        queue = self._queue
        if not queue or self.state is not _STREAMING:
            return []
        out: list[str] = []
        playout = self.playout
        lead = self._lead
        end = self._playout_end
        budget = len(queue) if max_frames is None else max_frames
        while queue and len(out) < budget:
            item = queue[0]
            if type(item) is str:
                if end - now > lead:
                    break
                lead = self._lead + self._coalesce  # top up in the same write
                queue.popleft()
                out.append(item)
                if self._utterance_started is None:
                    self._utterance_started = now
                elif end < now:
                    # Mid-utterance and Vobiz ran dry before this frame: the caller
                    # heard a gap (a paced sender that fell behind, or backpressure).
                    self.stats.late_outbound += 1
                end = (end if end > now else now) + _FRAME_S  # max() without the call
                self._queued_audio -= 1
                playout.sent_ms += FRAME_MS
                playout.utterance_ms += FRAME_MS
            else:
                assert isinstance(item, _QueuedCheckpoint)
                queue.popleft()
                out.append(item.frame)
                pending = self._pending.get(item.name)
                if pending is not None:
                    pending.sent_ms = playout.sent_ms
                    pending.due = end
                playout.utterance_ms = 0.0
                self._utterance_started = None
        self._playout_end = end
        self.stats.frames_out += len(out)
        return out

    def next_due(self, now: float) -> float | None:
        """When :meth:`frames_due` will next have something (None: nothing queued)."""
        queue = self._queue
        if not queue or self.state is not _STREAMING:
            return None
        if type(queue[0]) is not str:
            return now
        return max(now, self._playout_end - self._lead)

    def _drop_queued(self) -> int:
        """Drop every queued frame; their checkpoints were never sent (they are voided by
        the caller). Returns how many audio frames were dropped."""
        dropped = self._queued_audio
        self._queue.clear()
        self._queued_audio = 0
        self.stats.dropped_outbound += dropped
        return dropped

    def clear(self, *, now: float = 0.0) -> str:
        """Barge-in: drop queued and held-back audio, void pending checkpoints, and
        return the ``clearAudio`` frame, to be sent at once (ahead of nothing queued).

        The summary of what was interrupted is stored in :attr:`last_clear`; the voided
        checkpoints come out of :meth:`take_events` as ``CheckpointVoided(cleared)``.
        """
        stream_id = self._require_streaming()
        self._drop_queued()
        playout = self.playout
        heard: float | None = None
        if self._utterance_started is not None:
            heard = min(playout.utterance_ms, max(0.0, (now - self._utterance_started) * 1000))
        unconfirmed = playout.pending_ms
        voided = self._void_pending(CheckpointOutcome.CLEARED)
        self.last_clear = ClearSummary(playout.utterance_ms, unconfirmed, heard, voided)
        playout.cleared_ms += unconfirmed
        playout.utterance_ms = 0.0
        self._utterance_started = None
        self._playout_end = now
        self._clear_sent_at = now
        if self._framer is not None:
            self._framer.clear()
        self._resamplers = None
        self._clears += 1
        for wire_name in self._mark_names:  # their echoes mean "flushed", not "played"
            self._cleared_marks[wire_name] = None
        self._mark_names.clear()
        while len(self._cleared_marks) > _MAX_CLEARED_MARKS:
            del self._cleared_marks[next(iter(self._cleared_marks))]
        return self._emit((self._dialect or VOBIZ).clear_frame(stream_id))

    def stop(self) -> str | None:
        """End the stream: drop what is queued and return the ``stop`` frame; the
        protocol is closed from now on.

        Returns:
            The frame, or None on compat streams, which have no outbound stop: the
            application closes the socket instead (compat spec 4.7).
        """
        stream_id = self._require_streaming()
        self._drop_queued()
        self.state = State.CLOSED
        self._void_pending(CheckpointOutcome.CLOSED)
        make = (self._dialect or VOBIZ).stop_frame
        return self._emit(make(stream_id)) if make is not None else None
