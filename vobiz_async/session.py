"""What an application holds for one stream: :class:`StreamSession`, on any transport.

A session is written against a tiny :class:`Transport` interface (send a text frame,
close, tell whether the write buffer is full, wait until it drains), so the built-in
server, a Starlette or aiohttp WebSocket and a remote control can all carry it. It
owns what is asynchronous about a stream: the bounded event queue the application
reads, awaitable checkpoints, the clear gate, recording. The protocol
(:class:`~vobiz_async.protocol.StreamProtocol`) owns the wire state and every frame
until it is sent.

Pacing: one :class:`Pacer` per server (one timer for every session that has audio
due, not a sleeping task per session) asks each session's protocol what is due
(``frames_due(now)``) and writes it. ``play()`` queues at most about 100 ms of audio
ahead of what was sent, so a long clip never blocks the event loop and a ``clear()``
stops the work as well as the sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._config import Limits, Pacing
from .codec import AudioFormat
from .errors import StreamClosedError, ValidationError
from .events import (
    AudioCleared,
    AudioReceived,
    CheckpointOutcome,
    CheckpointVoided,
    DtmfReceived,
    InboundEvent,
    MalformedFrame,
    PlaybackCheckpointReached,
    StatusCallbackReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)
from .protocol import ClearSummary, StreamProtocol
from .recording import CallRecorder
from .trace import CallTrace

__all__ = ["Pacer", "SessionStats", "StreamSession", "Transport"]

_SLICE_MS = 100
_BATCH_FRAMES = 16  # frames one write may carry (the lead burst; a coalesced top-up)


class Transport(Protocol):
    """What a session needs from the connection that carries it."""

    @property
    def write_paused(self) -> bool:
        """True while the write buffer is over its limit (stop sending audio)."""

    def send_text(self, text: str) -> None:
        """Write one text frame now (buffered; never blocks). A closed transport
        silently ignores it: the session learns of the close separately."""

    def send_texts(self, texts: list[str]) -> None:
        """Write several text frames, in order, as one write where the transport can
        (the pacer's batches); otherwise as :meth:`send_text` does."""

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a close handshake."""

    def expect_peer_close(self) -> None:
        """We sent ``stop``: the peer should close; close ourselves if it does not."""


@dataclass(slots=True)
class SessionStats:
    """Counters for one session.

    Attributes:
        frames_in, frames_out, malformed, sequence_gaps: frames read and written,
            frames refused, and gaps in Vobiz's ``sequenceNumber``; frames waiting to be
            paced out are not counted as out yet.
        malformed_reasons: refused frames by reason (``invalid-json``, ``bad-base64``...).
        unknown_events: well-formed frames with an ``event`` we do not know.
        media_in: audio frames decoded (after the per-frame bound,
            ``Limits.max_audio_frame_bytes``).
        marks_after_clear, unknown_marks: compat streams: mark echoes of checkpoints a
            clear had flushed (taken as cleared, compat spec 4.6), and marks for names we
            never sent (counted, not fatal).
        dropped_frames: inbound audio frames dropped because the application fell behind.
        dropped_events: non-audio events dropped for the same reason.
        dropped_outbound_frames: our frames discarded unsent by a clear or a close.
        sent_ms, played_ms: audio handed to the wire, and confirmed played.
        queued_ms: audio we estimate is still queued at Vobiz right now.
        checkpoint_latency_ms: per played checkpoint, how long after our estimate of
            its playout end the acknowledgement arrived.
        clear_round_trip_ms: per ``clearAudio``, the time until ``clearedAudio``
            arrived (measured on the read path, not when the application reads it).
        paced_writes: writes of our audio and checkpoints (by the pacer, or at once
            inside ``play`` when due); frames coalesced into one write
            (``Pacing.coalesce_ms``) count once. On the framework adapters one such
            write is handed to the framework frame by frame.
    """

    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    sequence_gaps: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)
    unknown_events: int = 0
    media_in: int = 0
    marks_after_clear: int = 0
    unknown_marks: int = 0
    dropped_frames: int = 0
    dropped_events: int = 0
    dropped_outbound_frames: int = 0
    sent_ms: float = 0.0
    played_ms: float = 0.0
    queued_ms: float = 0.0
    paced_writes: int = 0
    checkpoint_latency_ms: list[float] = field(default_factory=list)
    clear_round_trip_ms: list[float] = field(default_factory=list)


class Pacer:
    """One timer for every session with audio due: a heap of (due time, session).

    A session is (re)scheduled with :meth:`wake` whenever it queues frames or its
    transport drains; each run writes what is due for the sessions whose time has
    come and schedules their next turn. Entries superseded by a later :meth:`wake`
    are skipped lazily.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, StreamSession]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    def wake(self, session: StreamSession) -> None:
        """Schedule ``session`` for when its protocol next has frames due. A session
        whose transport is paused (its write buffer is full) is not scheduled: its
        transport's drain wakes it (:meth:`StreamSession.writable`)."""
        if session._transport.write_paused:
            return
        due = session._proto.next_due(self._loop.time())
        if due is None or due >= session._pacer_due:
            return
        session._pacer_due = due
        heapq.heappush(self._heap, (due, next(self._order), session))
        if due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = self._loop.call_at(due, self._run)

    def _run(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        heap = self._heap
        now = self._loop.time()
        horizon = now + 0.001  # frames due within a millisecond go in this run
        ready: list[StreamSession] = []
        while heap and heap[0][0] <= horizon:
            due, _, session = heapq.heappop(heap)
            if due == session._pacer_due:
                session._pacer_due = float("inf")
                ready.append(session)
        for session in ready:
            session._pump(now)
        for session in ready:
            self.wake(session)
        if heap and self._timer is None:
            self._timer_at = heap[0][0]
            self._timer = self._loop.call_at(self._timer_at, self._run)

    def close(self) -> None:
        """Cancel the timer (the server is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()


class StreamSession:
    """One media stream, as the application sees it.

    Read with ``async for event in session`` (audio, DTMF, checkpoint acks...) or
    ``async for pcm in session.audio()``; speak with :meth:`play`, mark turns with
    :meth:`checkpoint`, barge in with :meth:`clear`, end with :meth:`stop`.

    Sessions are made by a server or an adapter, never by applications.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: StreamProtocol,
        started: StreamStarted,
        *,
        pacer: Pacer,
        limits: Limits,
        pacing: Pacing,
        request_path: str = "",
        request_headers: Mapping[str, str] | None = None,
        on_dropped_frame: Callable[[], None] | None = None,
        on_dropped_event: Callable[[bool], None] | None = None,
    ) -> None:
        self._transport = transport
        self._proto = protocol
        self._pacer = pacer
        self._limits = limits
        self._pacing = pacing
        self._loop = asyncio.get_running_loop()
        self._on_dropped_frame = on_dropped_frame
        self._on_dropped_event = on_dropped_event
        self._started_at = self._loop.time()
        self.started = started
        self.request_path = request_path
        self.request_headers: Mapping[str, str] = request_headers or {}
        self._queue: deque[InboundEvent] = deque()
        self._queued_audio_ms = 0.0
        self._queued_other = 0
        self._other_sizes: deque[int] = deque()  # wire bytes of queued non-audio, in order
        self._queued_other_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._wake_ms = 0.0  # audio a bulk reader waits for before it is woken
        self._closed = False
        self._closed_event = asyncio.Event()
        self._dropped_frames = 0
        self._dropped_events = 0
        self._play_lock = asyncio.Lock()
        self._turns = 0  # play/play_encoded/checkpoint calls holding or awaiting the lock
        self._stopping = False
        self._generation = 0
        self._pacer_due = float("inf")
        self._paced_writes = 0
        # Frames per write: at most _BATCH_FRAMES and an eighth of the write buffer
        # bound, so a batch never carries the buffer far past Limits.write_buffer_bytes
        # (sized by the longest frame seen; the format is fixed for the stream).
        self._batch_frames = 1
        self._frame_chars = 0
        # play_encoded() of at most one slice in the outbound format takes a short path
        fmt = protocol.outbound_format or started.media_format
        self._short_play_bytes = round(fmt.bytes_per_ms * _SLICE_MS)
        self._drained: asyncio.Future[None] | None = None
        self._clear_gate: asyncio.Future[None] | None = None
        self._checkpoints: dict[str, asyncio.Future[CheckpointOutcome]] = {}
        self._names = itertools.count(1)
        self.checkpoint_outcomes: Counter[str] = Counter()
        """How this session's :meth:`checkpoint` calls ended, by outcome (for metrics)."""
        self._utterance_cleared = False
        self.close_code: int | None = None
        self.status_callbacks: list[Any] = []  # parsed StreamStatusCallback objects
        self.recorder: CallRecorder | None = None
        self.trace: CallTrace | None = None
        self._observer: Callable[[InboundEvent], None] | None = None
        self._released = False

    def observe(self, callback: Callable[[InboundEvent], None] | None) -> None:
        """Call ``callback`` with every event as it is queued for the application, on the
        read path (it must not block); None removes it. Used by ``vobiz_async.cluster``
        to publish a session's events; one observer at a time."""
        self._observer = callback

    # ------------------------------------------------------------------ identity
    @property
    def stream_id(self) -> str:
        """The stream id from ``start`` (changes if Vobiz reconnects on this socket)."""
        return self.started.stream_id

    @property
    def call_id(self) -> str:
        """The call id from ``start``."""
        return self.started.call_id

    @property
    def inbound_format(self) -> AudioFormat:
        """The format of the caller's audio."""
        return self.started.media_format

    @property
    def outbound_format(self) -> AudioFormat:
        """The format of the ``playAudio`` frames we send."""
        return self._proto.outbound_format or self.inbound_format

    @property
    def provider(self) -> str:
        """``vobiz``, ``signalwire`` or ``twilio``: whose stream this is."""
        return self.started.provider

    @property
    def released(self) -> bool:
        """Whether the server let go of the finished session's queue and recording
        (closed, and its handler returned)."""
        return self._released

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (closed by either side)."""
        return self._closed

    @property
    def speaking(self) -> bool:
        """Whether our audio may still be heard: a ``play`` is in progress, frames wait
        to be sent, or what was sent has not finished playing by our estimate of the
        peer's playout (the pacing clock). A barge-in only needs :meth:`clear` while
        this is True; after it, ``clearAudio`` flushes nothing and would turn a
        checkpoint whose acknowledgement is in flight into ``cleared``."""
        if self._closed:
            return False
        proto = self._proto
        return (
            self._turns > 0
            or proto.has_queued
            or proto.held_back_bytes > 0
            or proto.playout_end > self._loop.time()
        )

    @property
    def stats(self) -> SessionStats:
        """A snapshot of this session's counters."""
        proto = self._proto.stats
        playout = self._proto.playout
        return SessionStats(
            frames_in=proto.frames_in,
            frames_out=proto.frames_out,
            malformed=proto.malformed,
            sequence_gaps=proto.sequence_gaps,
            malformed_reasons=dict(proto.malformed_reasons),
            unknown_events=proto.unknown_events,
            media_in=proto.media_in,
            marks_after_clear=proto.marks_after_clear,
            unknown_marks=proto.unknown_marks,
            dropped_frames=self._dropped_frames,
            dropped_events=self._dropped_events,
            dropped_outbound_frames=proto.dropped_outbound,
            sent_ms=playout.sent_ms,
            played_ms=playout.played_ms,
            queued_ms=max(0.0, (self._proto.playout_end - self._loop.time()) * 1000),
            checkpoint_latency_ms=list(playout.checkpoint_latency_ms),
            clear_round_trip_ms=list(playout.clear_round_trip_ms),
            paced_writes=self._paced_writes,
        )

    def __repr__(self) -> str:
        return f"<StreamSession stream_id={self.stream_id!r} call_id={self.call_id!r}>"

    def deliver_status_callback(self, event: StatusCallbackReceived) -> None:
        """Make a status callback for this stream visible on the session: kept in
        :attr:`status_callbacks` and, while the handler may still read the session,
        queued as a :class:`StatusCallbackReceived` event (also after the stream closed:
        ``DroppedStream`` comes then). Once the session is :attr:`released` only
        :attr:`status_callbacks` keeps it."""
        self.status_callbacks.append(event.callback)
        if not self._released:
            self._deliver(event)

    def record(self, sample_rate: int | None = None) -> CallRecorder:
        """Start recording both sides (caller left, agent as heard right).

        The recording starts at ``start``: caller audio still queued (not yet read by
        the application) is taken in, so audio that arrived with ``start`` is kept. To
        record every frame regardless, create the server with ``record=True``. Its size
        is bounded by ``Limits.max_recording_bytes`` (the rest is counted in the
        recorder's ``truncated_ms``). The session drops its references to both once the
        stream has closed and the handler has returned: keep the returned recorder (and
        :attr:`trace`) to write them after the call.

        Also starts :attr:`trace`, a :class:`~vobiz_async.trace.CallTrace` of the call
        on the recording's time axis (utterances, checkpoints, clears, DTMF, the close,
        per-second frame counts): ``trace.write(wav_path)`` saves it next to the WAV
        as ``.jsonl`` for ``vobiz-async report``.

        Args:
            sample_rate: the recording's rate (default: the inbound rate).

        Returns:
            The recorder; its ``write(path)`` (blocking: use ``asyncio.to_thread``)
            saves a stereo WAV at any time.
        """
        if self.recorder is None:
            now = self._started_at
            rate = sample_rate or self.inbound_format.sample_rate
            recorder = CallRecorder(rate, now, max_bytes=self._limits.max_recording_bytes)
            for event in self._queue:
                if type(event) is AudioReceived and event.track == "inbound":
                    recorder.add_caller(event.pcm, event.sample_rate)
            self.recorder = recorder
            self.trace = CallTrace(now)
            self.trace.start(
                now=now,
                stream_id=self.stream_id,
                call_id=self.call_id,
                format_in=self.inbound_format.content_type,
                format_out=self.outbound_format.content_type,
                provider=self.started.provider,
            )
        return self.recorder

    # -------------------------------------------------- the carrying connection's side
    def events_received(self, events: list[InboundEvent], size: int = 0) -> None:
        """Take the events the protocol parsed from one frame of ``size`` bytes (called
        on the read path; never blocks). Malformed frames are only counted (in the
        trace, when recording): the protocol's stats have them. Non-audio events are
        bounded by count and by wire bytes (``Limits.max_queued_events``,
        ``max_queued_event_bytes``); an unknown event over
        ``Limits.max_unknown_event_bytes`` is not kept at all (counted)."""
        trace = self.trace
        for event in events:
            kind = type(event)
            if kind is AudioReceived:  # the common case: 50 a second
                if trace is not None:
                    trace.count("in", now=self._loop.time())
                self._deliver(event)
                continue
            if kind is MalformedFrame:
                if trace is not None:
                    trace.count("malformed", now=self._loop.time())
                continue
            if kind is UnknownEvent and size > self._limits.max_unknown_event_bytes:
                self._count_dropped_event(unknown=True)
                continue
            if trace is not None:
                self._trace_event(trace, event)
            if kind is PlaybackCheckpointReached:
                assert isinstance(event, PlaybackCheckpointReached)
                future = self._checkpoints.pop(event.name, None)
                if future is not None and not future.done():
                    future.set_result(CheckpointOutcome.PLAYED)
            elif kind is CheckpointVoided:
                assert isinstance(event, CheckpointVoided)
                self._resolve_voided([event])
            elif kind is AudioCleared:
                gate = self._clear_gate
                if gate is not None and not gate.done():
                    gate.set_result(None)
            elif kind is StreamStopped:
                self._transport.expect_peer_close()
            elif kind is StreamStarted:
                assert isinstance(event, StreamStarted)
                self.started = event  # a reconnect on this socket: the new stream id
            self._deliver(event, size)

    def _trace_event(self, trace: CallTrace, event: InboundEvent) -> None:
        now = self._loop.time()
        if type(event) is AudioCleared:
            trace.cleared(now=now)
        elif type(event) is StreamStopped:
            assert isinstance(event, StreamStopped)
            trace.stop(now=now, by="peer", reason=event.reason)
        elif type(event) is DtmfReceived:
            assert isinstance(event, DtmfReceived)
            trace.dtmf(event.digit, now=now)

    def writable(self) -> None:
        """The transport's write buffer drained: resume pacing."""
        self._pacer.wake(self)

    def connection_closed(self, code: int | None = None) -> None:
        """The transport closed: resolve everything pending, wake every waiter."""
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        self._generation += 1
        proto = self._proto
        self._resolve_voided(proto.connection_closed())
        proto.release()
        if self.trace is not None:
            self.trace.close(code, now=self._loop.time())
        for future in self._checkpoints.values():
            if not future.done():
                future.set_result(CheckpointOutcome.CLOSED)
        self._checkpoints.clear()
        for pending in (self._clear_gate, self._waiter, self._drained):
            if pending is not None and not pending.done():
                pending.set_result(None)
        self._closed_event.set()

    def _pump(self, now: float) -> None:
        """Write what the protocol says is due (called by the pacer)."""
        transport, proto = self._transport, self._proto
        if self._closed:
            return
        late = proto.stats.late_outbound
        sent = 0
        # A batch at a time (what is due, topped up by Pacing.coalesce_ms, in one
        # write) while the write buffer has room: backpressure stops the pacing at the
        # batch that filled it (resume_writing wakes us again).
        while not transport.write_paused:
            frames = proto.frames_due(now, self._batch_frames)
            if not frames:
                break
            if len(frames[0]) > self._frame_chars:
                self._frame_chars = size = len(frames[0])
                room = self._limits.write_buffer_bytes // 8
                self._batch_frames = max(1, min(_BATCH_FRAMES, room // size))
            if len(frames) == 1:
                transport.send_text(frames[0])
            else:
                transport.send_texts(frames)
            self._paced_writes += 1
            sent += len(frames)
            if not proto.has_queued:
                break
        trace = self.trace
        if trace is not None and sent:
            trace.count("out", sent, now=now)
            if proto.stats.late_outbound > late:
                trace.count("late", proto.stats.late_outbound - late, now=now)
        drained = self._drained
        if drained is not None and not self._proto.has_queued and not drained.done():
            drained.set_result(None)

    # --------------------------------------------------------------------- inbound
    def _count_dropped_event(self, *, unknown: bool = False) -> None:
        self._dropped_events += 1
        if self._on_dropped_event is not None:
            self._on_dropped_event(unknown)

    def _deliver(self, event: InboundEvent, size: int = 0) -> None:
        """Queue an event for the application (called on the read path; never blocks).

        Args:
            event: what to queue.
            size: the wire bytes it came from (bounds non-audio events by bytes).
        """
        if self._observer is not None:
            self._observer(event)
        queue = self._queue
        if type(event) is AudioReceived:
            assert isinstance(event, AudioReceived)
            if self.recorder is not None and event.track == "inbound":
                self.recorder.add_caller(event.pcm, event.sample_rate)
            queue.append(event)
            self._queued_audio_ms += event.duration_ms
            limit = self._limits.inbound_queue_ms
            while self._queued_audio_ms > limit:
                self._drop_oldest_audio()
            if self._queued_audio_ms < self._wake_ms:
                return  # a bulk reader (audio(chunk_ms=...)) sleeps until it has a chunk
        else:
            limits = self._limits
            queue.append(event)
            self._queued_other += 1
            self._other_sizes.append(size)
            self._queued_other_bytes += size
            while self._queued_other > limits.max_queued_events or (
                self._queued_other_bytes > limits.max_queued_event_bytes
            ):
                self._drop_oldest_other()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _drop_oldest_audio(self) -> None:
        for index, item in enumerate(self._queue):
            if type(item) is AudioReceived:
                del self._queue[index]
                self._queued_audio_ms -= item.duration_ms
                self._dropped_frames += 1
                if self._on_dropped_frame is not None:
                    self._on_dropped_frame()
                if self.trace is not None:
                    self.trace.count("dropped", now=self._loop.time())
                return
        self._queued_audio_ms = 0.0

    def _drop_oldest_other(self) -> None:
        for index, item in enumerate(self._queue):
            if type(item) is not AudioReceived:
                del self._queue[index]
                self._queued_other -= 1
                self._queued_other_bytes -= self._other_sizes.popleft()
                self._count_dropped_event()
                return
        self._queued_other = 0
        self._queued_other_bytes = 0
        self._other_sizes.clear()

    def _take(self) -> InboundEvent | None:
        queue = self._queue
        if not queue:
            return None
        event = queue.popleft()
        if type(event) is AudioReceived:
            self._queued_audio_ms -= event.duration_ms
        else:
            self._queued_other -= 1
            self._queued_other_bytes -= self._other_sizes.popleft()
        return event

    def release(self) -> None:
        """Drop what a finished session no longer needs: only identity and stats stay
        (a closed session is kept a while to route late status callbacks). Called by
        the server once the stream has closed and its handler has returned."""
        self._released = True
        self._queue.clear()
        self._other_sizes.clear()
        self._queued_audio_ms = 0.0
        self._queued_other = 0
        self._queued_other_bytes = 0
        self.recorder = None
        self.trace = None

    async def next_event(self) -> InboundEvent:
        """The next event; raises ``StreamClosedError`` once closed and drained."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise StreamClosedError(f"stream {self.stream_id} is closed") from None

    def __aiter__(self) -> StreamSession:
        return self

    async def __anext__(self) -> InboundEvent:
        """``async for event in session``: one coroutine per event, ends at close."""
        while True:
            event = self._take()
            if event is not None:
                return event
            if self._closed:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def audio(
        self, track: str = "inbound", *, chunk_ms: float | None = None
    ) -> AsyncIterator[bytes]:
        """PCM16 LE of one track until the stream ends: frame by frame, or in chunks.

        It reads the same queue as ``async for event in session``: use one or the
        other. Events other than that track's audio are skipped.

        Args:
            track: ``inbound`` (the caller) or ``outbound``.
            chunk_ms: yield at least this much audio at a time (the last chunk, at
                the end of the stream, may be shorter). The reading task is woken once
                per chunk instead of once per 20 ms frame: for a speech recogniser or a
                VAD that works on 100 ms or more anyway, a fifth of the task switches at
                100 ms. Between 20 ms and half of ``Limits.inbound_queue_ms``.

        Raises:
            ValidationError: ``chunk_ms`` out of range.
        """
        if chunk_ms is None:
            async for event in self:
                if type(event) is AudioReceived and event.track == track:
                    yield event.pcm
            return
        ceiling = self._limits.inbound_queue_ms / 2
        if (
            not isinstance(chunk_ms, (int, float))
            or isinstance(chunk_ms, bool)
            or not 20 <= chunk_ms <= ceiling
        ):
            raise ValidationError(
                "chunk_ms", f"must be between 20 and {ceiling:g} (inbound_queue_ms / 2)"
            )
        parts: list[bytes] = []
        have = 0.0
        rate = 0
        try:
            while True:
                item = self._take()
                if item is None:
                    if self._closed:
                        if parts:
                            chunk, parts = b"".join(parts), []
                            yield chunk
                        return
                    self._wake_ms = chunk_ms - have
                    self._waiter = self._loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                        self._wake_ms = 0.0
                    continue
                if type(item) is AudioReceived and item.track == track:
                    parts.append(item.pcm)
                    rate = item.sample_rate
                    have += item.duration_ms
                    if have >= chunk_ms:
                        chunk, parts, have = b"".join(parts), [], 0.0
                        yield chunk
        finally:
            if parts and not self._released:
                # Taken from the queue, never handed over (the reader was cancelled or
                # closed mid-chunk): back to the front, for the next reader.
                rest = AudioReceived(b"".join(parts), rate, track)
                self._queue.appendleft(rest)
                self._queued_audio_ms += rest.duration_ms

    async def wait_closed(self) -> None:
        """Wait until the stream has ended."""
        await self._closed_event.wait()

    # -------------------------------------------------------------------- outbound
    def _check_open(self) -> None:
        if self._closed or self._stopping:
            raise StreamClosedError(f"stream {self.stream_id} is closed")

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Hold the floor for one play/checkpoint, in call order (the play lock). Counted
        while waiting too, so a short ``play_encoded`` never slips in ahead of a call
        already waiting for its turn."""
        self._turns += 1
        try:
            async with self._play_lock:
                yield
        finally:
            self._turns -= 1

    async def _await_clear_gate(self) -> None:
        gate = self._clear_gate
        if gate is not None and not gate.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._pacing.clear_ack_timeout):
                    await asyncio.shield(gate)
        self._clear_gate = None

    async def _until_sent(self, generation: int) -> None:
        """Wait until the protocol's queue is empty (or a clear or the close came).

        What is due already goes out here and now: an echo or a short reply costs no
        timer, no future and no task switch (the pacer takes over for the rest)."""
        if self._proto.has_queued and not self._closed:
            self._pump(self._loop.time())
        while self._proto.has_queued and generation == self._generation and not self._closed:
            self._drained = self._loop.create_future()
            self._pacer.wake(self)
            try:
                await self._drained
            finally:
                self._drained = None

    async def _play_sliced(self, data: bytes, step: int, queue: Callable[[bytes], int]) -> float:
        """Queue ``data`` about 100 ms at a time and wait until each slice is sent, so a
        long clip never blocks the event loop (resampling 3 s of audio at once would
        stall every call for ~100 ms) and a clear stops the work as well as the sending."""
        generation = self._generation
        playout = self._proto.playout
        before = playout.sent_ms
        step = max(2, step - step % 2)
        for offset in range(0, len(data), step):
            if generation != self._generation or self._closed:
                break
            queue(data[offset : offset + step])
            self._utterance_cleared = False
            await self._until_sent(generation)
        return playout.sent_ms - before

    def _playout_start(self) -> float:
        """When audio queued now would start playing at the peer."""
        proto = self._proto
        return max(self._loop.time(), proto.playout_end) + proto.queued_ms / 1000

    async def play(self, pcm: bytes, sample_rate: int | None = None) -> float:
        """Speak: send PCM16 LE audio, paced in real time.

        Resampled to the outbound format when needed, cut into 20 ms ``playAudio``
        frames; returns when the audio has been handed to the wire (not when heard).
        A :meth:`clear` during the call stops it early.

        Args:
            pcm: signed 16-bit little-endian mono.
            sample_rate: its rate (8000/16000/24000); default the outbound rate.

        Returns:
            Milliseconds of audio sent (less than the input when a clear or the end of
            the stream cut it short).

        Raises:
            StreamClosedError: the stream had already ended (or :meth:`stop` was
                called) when ``play`` was called.
        """
        self._check_open()
        async with self._turn():
            if self._clear_gate is not None:
                await self._await_clear_gate()
            if self._closed or self._stopping:
                return 0.0
            rate = sample_rate or self.outbound_format.sample_rate
            self._record_agent(pcm, rate)
            proto, loop = self._proto, self._loop
            playing = self._play_sliced(
                pcm,
                2 * rate * _SLICE_MS // 1000,
                lambda chunk: proto.play(chunk, sample_rate, now=loop.time()),
            )
            if self.trace is None:
                return await playing
            return await self._traced_play(len(pcm) * 500 / rate, playing)

    async def play_encoded(self, payload: bytes) -> float:
        """Like :meth:`play`, for audio already in :attr:`outbound_format` (encoding,
        rate, byte order): no decode/encode round trip. ``AudioReceived.payload`` can be
        echoed this way when the inbound and outbound formats match.

        Returns:
            Milliseconds of audio sent.
        """
        self._check_open()
        proto = self._proto
        if (
            self._clear_gate is None
            and self.trace is None
            and self.recorder is None
            and self._turns == 0
            and len(payload) <= self._short_play_bytes
        ):
            # The echo/short-reply path: nothing else is playing and nothing gates us,
            # so queue and write what is due right here (no lock round trip, no inner
            # coroutines); only audio the pacing holds back is waited for, under the lock.
            playout = proto.playout
            before = playout.sent_ms
            generation = self._generation
            now = self._loop.time()
            proto.play_encoded(payload, now=now)
            self._utterance_cleared = False
            self._pump(now)
            if proto.has_queued:
                async with self._turn():
                    await self._until_sent(generation)
            return playout.sent_ms - before
        async with self._turn():
            if self._clear_gate is not None:
                await self._await_clear_gate()
            if self._closed or self._stopping:
                return 0.0
            loop = self._loop
            fmt = self.outbound_format
            if self.recorder is not None:  # what was played is heard: record it too
                self._record_agent(proto.decode_outbound(payload), fmt.sample_rate)
            playing = self._play_sliced(
                payload,
                round(fmt.bytes_per_ms * _SLICE_MS),
                lambda chunk: proto.play_encoded(chunk, now=loop.time()),
            )
            if self.trace is None:
                return await playing
            return await self._traced_play(len(payload) / fmt.bytes_per_ms, playing)

    def _record_agent(self, pcm: bytes, rate: int) -> None:
        if self.recorder is not None:
            self.recorder.add_agent(pcm, rate, self._playout_start())

    async def _traced_play(self, duration_ms: float, playing: Awaitable[float]) -> float:
        trace = self.trace
        if trace is None:
            return await playing
        trace.play_started(duration_ms, now=self._loop.time(), at=self._playout_start())
        sent = 0.0
        try:
            sent = await playing
        finally:
            trace.play_ended(sent, now=self._loop.time())
        return sent

    async def checkpoint(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> CheckpointOutcome:
        """Mark the end of an utterance and wait until it has played.

        Flushes audio held back by :meth:`play`, queues ``checkpoint`` after it, and
        waits for Vobiz's ``playedStream``.

        Args:
            name: unique among pending checkpoints; default ``cp-1``, ``cp-2``...
            timeout: seconds to wait; default the estimated playout left plus 5 s.

        A checkpoint ends the current utterance: the audio played since the previous
        checkpoint. If a :meth:`clear` interrupted that utterance and no audio was
        played since, the checkpoint is ``CLEARED`` at once and nothing is sent, so the
        natural ``await play(...); await checkpoint(...)`` reports a barge-in.

        Returns:
            ``PLAYED``, ``CLEARED`` (a clear came first), ``CLOSED`` (the stream ended,
            also when it had ended before the call) or ``TIMED_OUT``. It never raises
            for the stream's end: every checkpoint ends in exactly one outcome.
        """
        name = name or f"cp-{next(self._names)}"
        outcome = await self._checkpoint(name, timeout)
        self.checkpoint_outcomes[outcome.value] += 1
        if self.trace is not None:
            self.trace.checkpoint_outcome(name, outcome.value, now=self._loop.time())
        return outcome

    async def _checkpoint(self, name: str, timeout: float | None) -> CheckpointOutcome:
        async with self._turn():
            if self._closed or self._stopping:
                return CheckpointOutcome.CLOSED
            if self._utterance_cleared:
                self._utterance_cleared = False
                return CheckpointOutcome.CLEARED
            await self._await_clear_gate()
            if self._closed:
                return CheckpointOutcome.CLOSED
            # The protocol first: it refuses a name still pending (LocalProtocolError)
            # before the pending checkpoint's future could be replaced.
            self._proto.checkpoint(name, now=self._loop.time())
            future: asyncio.Future[CheckpointOutcome] = self._loop.create_future()
            self._checkpoints[name] = future
            self._pacer.wake(self)
            if self.trace is not None:
                now = self._loop.time()
                self.trace.checkpoint_sent(name, now=now, due=self._playout_start())
        if timeout is None:
            timeout = max(0.0, self._playout_start() - self._loop.time()) + 5.0
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._checkpoints.pop(name, None)
            return CheckpointOutcome.TIMED_OUT

    async def clear(self, *, wait: bool | None = None) -> ClearSummary:
        """Barge-in: stop our audio now.

        Sends ``clearAudio`` at once, drops audio not yet sent, resolves pending
        checkpoints as ``CLEARED``, and (with ``wait``, default ``Pacing.wait_for_cleared``)
        waits briefly for ``clearedAudio``; new audio waits for it either way. On a
        SignalWire/Twilio stream (``clear``, which nothing acknowledges) there is no
        wait: audio sent after it plays normally (compat spec 4.6).

        Returns:
            What was interrupted (see :class:`~vobiz_async.protocol.ClearSummary`).

        Raises:
            StreamClosedError: the stream had ended, or :meth:`stop` was called.
        """
        self._check_open()
        self._generation += 1
        self._utterance_cleared = True
        proto = self._proto
        now = self._loop.time()
        self._transport.send_text(proto.clear(now=now))
        self._resolve_voided(proto.take_events())
        if self.recorder is not None:
            self.recorder.cut_agent(now)
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)
        if proto.clear_acknowledged:
            self._clear_gate = self._loop.create_future()
        summary = proto.last_clear
        assert summary is not None
        if self.trace is not None:
            self.trace.clear(summary, now=now)
        if wait if wait is not None else self._pacing.wait_for_cleared:
            await self._await_clear_gate()
        return summary

    async def stop(self) -> None:
        """End the stream: send ``stop``; Vobiz closes the socket (we close it if not).
        On a SignalWire/Twilio stream, which has no ``stop`` message, close the socket
        with 1000 (the platform then runs the next cXML/TwiML verb, compat spec 4.7)."""
        if self._closed:
            return
        if self._stopping:  # a second stop(): the first one's frame is out already
            await self.wait_closed()
            return
        self._stopping = True
        self._generation += 1
        if self.trace is not None:
            self.trace.stop(now=self._loop.time(), by="us")
        frame = self._proto.stop()
        self._resolve_voided(self._proto.take_events())
        if frame is None:  # compat: no outbound stop; closing the socket ends the stream
            self._transport.close(1000, "stopped")
        else:
            self._transport.send_text(frame)
            self._transport.expect_peer_close()
        await self.wait_closed()

    def _resolve_voided(self, events: list[InboundEvent]) -> None:
        for event in events:
            if isinstance(event, CheckpointVoided):
                future = self._checkpoints.pop(event.name, None)
                if future is not None and not future.done():
                    future.set_result(event.outcome)
