"""The media server Vobiz dials: a thin I/O shell around :class:`StreamProtocol`.

Design (see the issue's measurements): websockets' Sans-I/O ``ServerProtocol`` is
driven straight from an ``asyncio.Protocol``. Frames are parsed and decoded inside
``data_received`` with no task, future or ``recv()`` per frame; events go into each
session's bounded queue and user code runs in its own task, never on the read path.

Every write goes through :meth:`_Connection.send_text`, synchronously, so ``playAudio``
and ``clearAudio`` keep their order. Outgoing audio is paced: a session keeps about
``Pacing.lead_ms`` of audio queued at Vobiz and sends the rest as the clock advances
(deadline-based, no drift), so a barge-in has little to flush.

One connection's trouble stays in that connection: malformed frames are counted and
skipped, a handler that raises closes only its own session, and the peer vanishing at
any moment (the normal end of a Vobiz stream) resolves everything pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import itertools
import logging
import resource
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from .codec import FRAME_MS, AudioEncoding, AudioFormat, ByteOrder, l16_to_pcm16, ulaw_to_pcm16
from .errors import SessionTimeoutError, StreamClosedError, ValidationError
from .events import (
    AudioCleared,
    AudioReceived,
    CheckpointOutcome,
    CheckpointVoided,
    Event,
    MalformedFrame,
    PlaybackCheckpointReached,
    StatusCallbackReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)
from .protocol import ClearSummary, InboundByteOrder, ProtocolStats, StreamProtocol
from .recording import DEFAULT_MAX_RECORDING_BYTES, CallRecorder
from .tokens import (
    DEFAULT_STREAM_TOKEN_TTL,
    TokenCheck,
    extract_token,
    sign_stream_url,
    verify_stream_token,
)

try:  # the C unmasking routine websockets itself uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - pure-Python fallback, same result
    from websockets.utils import apply_mask

__all__ = [
    "VOBIZ_MEDIA_NETWORKS",
    "Limits",
    "MediaServer",
    "Pacing",
    "ServerStats",
    "SessionStats",
    "StreamSession",
    "serve",
]

log = logging.getLogger("vobiz_async.server")
Handler = Callable[["StreamSession"], Awaitable[None]]
_FRAME_S = FRAME_MS / 1000
RECENT_SECONDS = 120.0
RECENT_MAX = 1024
_RESOURCE_LOG_INTERVAL = 10.0  # at most one "out of file descriptors" log line per interval
_ACCEPT_RETRY_DELAY = 0.5  # pause accepting this long after the fd limit was hit
_BACKLOG = 128
_FD_RESERVE = 64  # descriptors kept for everything else: logs, recordings, REST clients
_MAX_SESSIONS_CAP = 2000
_ACCEPT_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def default_max_sessions(max_pending_handshakes: int = 64) -> int:
    """The default ``Limits.max_sessions``: what the process's fd limit can hold.

    Each session and each pending handshake is one socket. The soft ``RLIMIT_NOFILE``
    (``resource.getrlimit``) minus the pending-handshake allowance minus a reserve of 64
    descriptors for everything else, capped at 2000 (unlimited: 2000). With the common
    soft limit of 1024 this is 896; raise it with ``ulimit -n`` to serve more.

    Args:
        max_pending_handshakes: the allowance for connections not yet sessions.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return _MAX_SESSIONS_CAP
    return max(1, min(_MAX_SESSIONS_CAP, soft - max_pending_handshakes - _FD_RESERVE))


VOBIZ_MEDIA_NETWORKS = (
    "3.110.99.6/32",
    "65.1.145.87/32",
    "13.234.214.51/32",
    "13.200.197.87/32",
    "13.202.13.57/32",
    "18.96.230.96/28",
    "18.96.230.112/28",
    "18.96.230.208/29",
    "18.96.232.168/29",
)
"""Where Vobiz's media fleet connects from (India; spec 4.1, "subject to change")."""


@dataclass(frozen=True, slots=True)
class Pacing:
    """How audio we play is paced out to Vobiz.

    Attributes:
        lead_ms: audio kept queued at Vobiz ahead of the playout point. More absorbs
            network jitter; less makes a barge-in flush less. The first ``lead_ms`` of
            an utterance go out at once (the head start), the rest every 20 ms.
        wait_for_cleared: after ``clear()``, hold new audio until ``clearedAudio``
            arrives (Vobiz's own sample does this: audio sent during a flush can be
            partly dropped, spec 4.4.3), with ``clear_ack_timeout`` as the fallback.
        clear_ack_timeout: seconds to wait for ``clearedAudio``.
    """

    lead_ms: float = 200.0
    wait_for_cleared: bool = True
    clear_ack_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Safety limits for the media server. ``None`` disables a timeout.

    Attributes:
        max_message_bytes: largest WebSocket message accepted (a Vobiz media frame is
            about 1 KB); larger closes that connection with 1009.
        max_sessions: concurrent sessions (streams past ``start``); a handshake beyond
            it is refused with HTTP 503, a ``start`` beyond it closed with 1013. Sockets
            still handshaking do not count. Default: :func:`default_max_sessions`, what
            the process's fd limit can hold (at most 2000).
        max_pending_handshakes: connections not yet a session (handshaking or waiting
            for ``start``). When a new connection would exceed it, the one idle the
            longest is dropped (``stats.evicted_handshakes``), so a real call gets in.
        handshake_timeout: seconds from TCP accept to a completed WebSocket handshake.
        start_timeout: seconds from the handshake to the ``start`` frame (then 1008).
        idle_timeout: seconds without a data frame (pings do not count) before the
            connection is closed (1001).
        inbound_queue_ms: audio buffered per session for a slow application; past it
            the oldest audio is dropped and counted (``stats.dropped_frames``).
        max_queued_events: non-audio events buffered per session (oldest dropped).
        max_queued_event_bytes: wire bytes of the non-audio events buffered per session
            (oldest dropped, counted in ``dropped_events``).
        max_unknown_event_bytes: an unknown event whose frame is larger is not kept at
            all (counted in ``dropped_events`` and ``stats.dropped_unknown_events``).
        max_audio_frame_bytes: audio bytes one media frame may carry (a 20 ms frame is
            160-640 bytes); larger is malformed (``oversized-audio``), counted, skipped.
        close_timeout: seconds to wait for the peer to finish a close handshake.
        write_buffer_bytes: transport buffer above which sends wait (backpressure) and
            reading pauses, so a peer that never reads cannot grow our memory.
        write_stall_timeout: seconds the write buffer may stay over
            ``write_buffer_bytes`` before the connection is dropped
            (``stats.write_stalls``). ``None``: never.
        max_recording_bytes: bound of a session recording's stereo PCM (see
            :meth:`StreamSession.record`); the rest is counted in ``truncated_ms``.
    """

    max_message_bytes: int = 256 * 1024
    max_sessions: int = field(default_factory=default_max_sessions)
    max_pending_handshakes: int = 64
    handshake_timeout: float = 10.0
    start_timeout: float | None = 10.0
    idle_timeout: float | None = 60.0
    inbound_queue_ms: float = 1000.0
    max_queued_events: int = 256
    max_queued_event_bytes: int = 1024 * 1024
    max_unknown_event_bytes: int = 64 * 1024
    max_audio_frame_bytes: int = 32 * 1024
    close_timeout: float = 2.0
    write_buffer_bytes: int = 64 * 1024
    write_stall_timeout: float | None = 30.0
    max_recording_bytes: int = DEFAULT_MAX_RECORDING_BYTES


@dataclass(slots=True)
class SessionStats:
    """Counters for one session, beyond the protocol's own (``session.protocol.stats``).

    Attributes:
        frames_in, frames_out, malformed, sequence_gaps: from the protocol; frames
            waiting to be paced out are not counted as out yet.
        dropped_frames: inbound audio frames dropped because the application fell behind.
        dropped_events: non-audio events dropped for the same reason.
        dropped_outbound_frames: our frames discarded unsent by a clear or a close.
        sent_ms, played_ms: audio handed to the wire, and confirmed played.
        queued_ms: audio we estimate is still queued at Vobiz right now.
        checkpoint_latency_ms: per played checkpoint, how long after our estimate of
            its playout end the acknowledgement arrived.
        clear_round_trip_ms: per ``clearAudio``, the time until ``clearedAudio``
            arrived (measured on the read path, not when the application reads it).
    """

    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    sequence_gaps: int = 0
    dropped_frames: int = 0
    dropped_events: int = 0
    dropped_outbound_frames: int = 0
    sent_ms: float = 0.0
    played_ms: float = 0.0
    queued_ms: float = 0.0
    checkpoint_latency_ms: list[float] = field(default_factory=list)
    clear_round_trip_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class ServerStats:
    """Server-wide counters (everything refused or dropped is counted).

    Beyond the obvious ones: ``evicted_handshakes`` (pending connections dropped to
    admit a newer one), ``accept_errors`` (accepts failed for lack of file descriptors),
    ``write_stalls`` (peers that stopped reading past ``write_stall_timeout``),
    ``repeated_starts``/``foreign_starts`` (a second ``start`` on one socket, for the
    same call: ignored; for another: closed with 1008), ``dropped_events`` and
    ``dropped_unknown_events`` (non-audio events over a session's budget).
    """

    connections: int = 0
    active_connections: int = 0
    rejected_ip: int = 0
    sessions: int = 0
    rejected_auth: int = 0
    rejected_path: int = 0
    rejected_limit: int = 0
    handshake_failures: int = 0
    start_timeouts: int = 0
    idle_timeouts: int = 0
    oversized_messages: int = 0
    events_before_start: int = 0
    handler_errors: int = 0
    malformed_frames: int = 0
    dropped_frames: int = 0
    dropped_events: int = 0
    dropped_unknown_events: int = 0
    evicted_handshakes: int = 0
    accept_errors: int = 0
    write_stalls: int = 0
    repeated_starts: int = 0
    foreign_starts: int = 0


class StreamSession:
    """One Vobiz media stream, as the application sees it.

    Read with ``async for event in session`` (audio, DTMF, checkpoint acks...) or
    ``async for pcm in session.audio()``; speak with :meth:`play`, mark turns with
    :meth:`checkpoint`, barge in with :meth:`clear`, end with :meth:`stop`.
    """

    def __init__(self, conn: _Connection, started: StreamStarted) -> None:
        self._conn = conn
        self._loop = conn.loop
        self.started = started
        self.request_path = conn.request_path
        self.request_headers = conn.request_headers
        self._queue: deque[Event] = deque()
        self._queued_audio_ms = 0.0
        self._queued_other = 0
        self._other_sizes: deque[int] = deque()  # wire bytes of queued non-audio, in order
        self._queued_other_bytes = 0
        self._started_at = conn.loop.time()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._closed_event = asyncio.Event()
        self._dropped_frames = 0
        self._dropped_events = 0
        self._dropped_outbound = 0
        self._play_lock = asyncio.Lock()
        self._unsent: deque[str] = deque()
        self._generation = 0
        self._playout_end = 0.0
        self._clear_gate: asyncio.Future[None] | None = None
        self._checkpoints: dict[str, asyncio.Future[CheckpointOutcome]] = {}
        self._checkpoint_due: dict[str, float] = {}
        self._latencies: list[float] = []
        self._names = itertools.count(1)
        self._utterance_cleared = False
        self._clear_sent_at: float | None = None
        self._clear_trips: list[float] = []
        self.close_code: int | None = None
        self.status_callbacks: list[Any] = []  # parsed StreamStatusCallback objects
        self.recorder: CallRecorder | None = None

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
        return self._conn.proto.outbound_format or self.inbound_format

    @property
    def protocol(self) -> StreamProtocol:
        """The underlying sans-I/O protocol (its ``stats`` and ``playout``)."""
        return self._conn.proto

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (closed by either side)."""
        return self._closed

    @property
    def stats(self) -> SessionStats:
        """A snapshot of this session's counters."""
        proto: ProtocolStats = self._conn.proto.stats
        playout = self._conn.proto.playout
        return SessionStats(
            frames_in=proto.frames_in,
            frames_out=proto.frames_out - len(self._unsent),
            malformed=proto.malformed,
            sequence_gaps=proto.sequence_gaps,
            dropped_frames=self._dropped_frames,
            dropped_events=self._dropped_events,
            dropped_outbound_frames=self._dropped_outbound,
            sent_ms=playout.sent_ms - FRAME_MS * len(self._unsent),
            played_ms=playout.played_ms,
            queued_ms=max(0.0, (self._playout_end - self._loop.time()) * 1000),
            checkpoint_latency_ms=list(self._latencies),
            clear_round_trip_ms=list(self._clear_trips),
        )

    def __repr__(self) -> str:
        return f"<StreamSession stream_id={self.stream_id!r} call_id={self.call_id!r}>"

    def deliver_status_callback(self, event: StatusCallbackReceived) -> None:
        """Make a status callback for this stream visible on the session: kept in
        :attr:`status_callbacks` and queued as an event (even after the stream closed)."""
        self.status_callbacks.append(event.callback)
        self._deliver(event)

    def record(self, sample_rate: int | None = None) -> CallRecorder:
        """Start recording both sides (caller left, agent as heard right).

        The recording starts at ``start``: caller audio still queued (not yet read by
        the application) is taken in, so audio that arrived with ``start`` is kept. To
        record every frame regardless, create the server with ``serve(record=True)``.
        Its size is bounded by ``Limits.max_recording_bytes``. The session drops its
        reference once the stream has closed and the handler has returned: keep the
        returned recorder to write it later.

        Args:
            sample_rate: the recording's rate (default: the inbound rate).

        Returns:
            The recorder; its ``write(path)`` (blocking: use ``asyncio.to_thread``)
            saves a stereo WAV at any time.
        """
        if self.recorder is None:
            rate = sample_rate or self.inbound_format.sample_rate
            recorder = CallRecorder(
                rate, self._started_at, max_bytes=self._conn.limits.max_recording_bytes
            )
            for event in self._queue:
                if type(event) is AudioReceived and event.track == "inbound":
                    recorder.add_caller(event.pcm, event.sample_rate)
            self.recorder = recorder
        return self.recorder

    # --------------------------------------------------------------------- inbound
    def _deliver(self, event: Event, size: int = 0) -> None:
        """Queue an event for the application (called on the read path; never blocks).

        Args:
            event: what to queue.
            size: the wire bytes it came from (bounds non-audio events by bytes).
        """
        queue = self._queue
        if type(event) is AudioReceived:
            assert isinstance(event, AudioReceived)
            if self.recorder is not None and event.track == "inbound":
                self.recorder.add_caller(event.pcm, event.sample_rate)
            queue.append(event)
            self._queued_audio_ms += event.duration_ms
            limit = self._conn.limits.inbound_queue_ms
            while self._queued_audio_ms > limit:
                self._drop_oldest_audio()
        else:
            limits = self._conn.limits
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
                self._conn.server.stats.dropped_frames += 1
                return
        self._queued_audio_ms = 0.0

    def _drop_oldest_other(self) -> None:
        for index, item in enumerate(self._queue):
            if type(item) is not AudioReceived:
                del self._queue[index]
                self._queued_other -= 1
                self._queued_other_bytes -= self._other_sizes.popleft()
                self._dropped_events += 1
                self._conn.server.stats.dropped_events += 1
                return
        self._queued_other = 0
        self._queued_other_bytes = 0
        self._other_sizes.clear()

    def _take(self) -> Event | None:
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

    def _release(self) -> None:
        """Drop what a finished session no longer needs: only identity and stats stay
        (a closed session is kept ``RECENT_SECONDS`` to route late callbacks)."""
        self._queue.clear()
        self._other_sizes.clear()
        self._queued_audio_ms = 0.0
        self._queued_other = 0
        self._queued_other_bytes = 0
        self.recorder = None

    async def next_event(self) -> Event:
        """The next event; raises ``StreamClosedError`` once closed and drained."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise StreamClosedError(f"stream {self.stream_id} is closed") from None

    def __aiter__(self) -> StreamSession:
        return self

    async def __anext__(self) -> Event:
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

    async def audio(self, track: str = "inbound") -> AsyncIterator[bytes]:
        """PCM16 LE of one track, frame by frame, until the stream ends.

        It reads the same queue as ``async for event in session``: use one or the
        other. Events other than that track's audio are skipped.
        """
        async for event in self:
            if type(event) is AudioReceived and event.track == track:
                yield event.pcm

    async def wait_closed(self) -> None:
        """Wait until the stream has ended."""
        await self._closed_event.wait()

    # -------------------------------------------------------------------- outbound
    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosedError(f"stream {self.stream_id} is closed")

    async def _await_clear_gate(self) -> None:
        gate = self._clear_gate
        if gate is not None and not gate.done():
            timeout = self._conn.pacing.clear_ack_timeout
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(gate)
        self._clear_gate = None

    async def _send_paced(self, generation: int) -> float:
        """Send queued audio frames, keeping ``lead_ms`` ahead of the playout point."""
        lead = self._conn.pacing.lead_ms / 1000
        loop = self._loop
        sent = 0.0
        unsent = self._unsent
        while unsent:
            if generation != self._generation or self._closed:
                return sent
            ahead = self._playout_end - loop.time()
            if ahead > lead:
                await asyncio.sleep(ahead - lead)
                continue
            if self._conn.write_paused:
                await self._conn.drained()
                continue
            self._conn.send_text(unsent.popleft())
            self._playout_end = max(self._playout_end, loop.time()) + _FRAME_S
            sent += FRAME_MS
        return sent

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
            StreamClosedError: the stream had already ended when ``play`` was called.
        """
        self._check_open()
        async with self._play_lock:
            await self._await_clear_gate()
            if self._closed:
                return 0.0
            generation = self._generation
            if self.recorder is not None:
                rate = sample_rate or self.outbound_format.sample_rate
                self.recorder.add_agent(pcm, rate, max(self._loop.time(), self._playout_end))
            proto = self._conn.proto
            rate = sample_rate or self.outbound_format.sample_rate
            return await self._play_sliced(
                pcm,
                2 * rate // 10,
                lambda chunk: proto.play(chunk, sample_rate, now=self._loop.time()),
                generation,
            )

    async def _play_sliced(
        self, data: bytes, step: int, encode: Callable[[bytes], list[str]], generation: int
    ) -> float:
        """Encode and send ``data`` 100 ms at a time, so a long clip never blocks the
        event loop (resampling 3 s of audio at once would stall every call for ~100 ms)
        and a clear stops the work as well as the sending."""
        sent = 0.0
        step = max(2, step - step % 2)
        for offset in range(0, len(data), step):
            if generation != self._generation or self._closed:
                break
            self._unsent.extend(encode(data[offset : offset + step]))
            self._utterance_cleared = False
            sent += await self._send_paced(generation)
        return sent

    async def play_encoded(self, payload: bytes) -> float:
        """Like :meth:`play`, for audio already in :attr:`outbound_format` (encoding,
        rate, byte order): no decode/encode round trip. ``AudioReceived.payload`` can be
        echoed this way when the inbound and outbound formats match.

        Returns:
            Milliseconds of audio sent.
        """
        self._check_open()
        async with self._play_lock:
            await self._await_clear_gate()
            if self._closed:
                return 0.0
            generation = self._generation
            proto = self._conn.proto
            fmt = self.outbound_format
            if self.recorder is not None:
                self.recorder.add_agent(
                    self._decode_outbound(payload, fmt),
                    fmt.sample_rate,
                    max(self._loop.time(), self._playout_end),
                )
            return await self._play_sliced(
                payload,
                round(fmt.bytes_per_ms * 100),
                lambda chunk: proto.play_encoded(chunk, now=self._loop.time()),
                generation,
            )

    def _decode_outbound(self, payload: bytes, fmt: AudioFormat) -> bytes:
        """PCM16 LE of audio in the outbound format (for the recording)."""
        if fmt.encoding is AudioEncoding.MULAW:
            return ulaw_to_pcm16(payload)
        return l16_to_pcm16(payload[: len(payload) & ~1], self._conn.server.outbound_byte_order)

    async def checkpoint(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> CheckpointOutcome:
        """Mark the end of an utterance and wait until it has played.

        Flushes audio held back by :meth:`play`, sends ``checkpoint``, and waits for
        Vobiz's ``playedStream``.

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
        async with self._play_lock:
            if self._closed:
                return CheckpointOutcome.CLOSED
            if self._utterance_cleared:
                self._utterance_cleared = False
                return CheckpointOutcome.CLEARED
            await self._await_clear_gate()
            if self._closed:
                return CheckpointOutcome.CLOSED
            generation = self._generation
            frames = self._conn.proto.checkpoint(name, now=self._loop.time())
            future: asyncio.Future[CheckpointOutcome] = self._loop.create_future()
            self._checkpoints[name] = future
            self._unsent.extend(frames[:-1])
            await self._send_paced(generation)
            if generation == self._generation and not self._closed and not future.done():
                self._conn.send_text(frames[-1])
                self._checkpoint_due[name] = self._playout_end
        if timeout is None:
            timeout = max(0.0, self._playout_end - self._loop.time()) + 5.0
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
        waits briefly for ``clearedAudio``; new audio waits for it either way.

        Returns:
            What was interrupted (see :class:`~vobiz_async.protocol.ClearSummary`).
        """
        self._check_open()
        self._generation += 1
        self._utterance_cleared = True
        dropped = len(self._unsent)
        self._unsent.clear()
        self._dropped_outbound += dropped
        proto = self._conn.proto
        proto.discard_unsent(dropped)
        for frame in proto.clear(now=self._loop.time()):
            self._conn.send_text(frame)
        self._clear_sent_at = self._loop.time()
        self._resolve_voided(proto.take_events())
        self._playout_end = self._loop.time()
        if self.recorder is not None:
            self.recorder.cut_agent(self._playout_end)
        self._clear_gate = self._loop.create_future()
        summary = proto.last_clear
        assert summary is not None
        if wait if wait is not None else self._conn.pacing.wait_for_cleared:
            await self._await_clear_gate()
        return summary

    async def stop(self) -> None:
        """End the stream: send ``stop``; Vobiz closes the socket (we close it if not)."""
        if self._closed:
            return
        self._generation += 1
        self._dropped_outbound += len(self._unsent)
        self._conn.proto.discard_unsent(len(self._unsent))
        self._unsent.clear()
        for frame in self._conn.proto.stop():
            self._conn.send_text(frame)
        self._resolve_voided(self._conn.proto.take_events())
        self._conn.expect_peer_close()
        await self.wait_closed()

    # ------------------------------------------------------------- protocol events
    def _on_event(self, event: Event, size: int = 0) -> None:
        kind = type(event)
        if kind is AudioReceived:  # the common case: 50 a second
            self._deliver(event)
            return
        if kind is UnknownEvent and size > self._conn.limits.max_unknown_event_bytes:
            self._dropped_events += 1
            self._conn.server.stats.dropped_events += 1
            self._conn.server.stats.dropped_unknown_events += 1
            return
        if kind is PlaybackCheckpointReached:
            assert isinstance(event, PlaybackCheckpointReached)
            future = self._checkpoints.pop(event.name, None)
            if future is not None and not future.done():
                future.set_result(CheckpointOutcome.PLAYED)
            due = self._checkpoint_due.pop(event.name, None)
            if due is not None:
                self._latencies.append(max(0.0, (self._loop.time() - due) * 1000))
        elif kind is CheckpointVoided:
            assert isinstance(event, CheckpointVoided)
            self._resolve_voided([event])
        elif kind is AudioCleared:
            if self._clear_sent_at is not None:
                self._clear_trips.append((self._loop.time() - self._clear_sent_at) * 1000)
                self._clear_sent_at = None
            gate = self._clear_gate
            if gate is not None and not gate.done():
                gate.set_result(None)
        elif kind is StreamStopped:
            self._conn.expect_peer_close()
        self._deliver(event, size)

    def _resolve_voided(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, CheckpointVoided):
                self._checkpoint_due.pop(event.name, None)
                future = self._checkpoints.pop(event.name, None)
                if future is not None and not future.done():
                    future.set_result(event.outcome)

    def _on_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        self._dropped_outbound += len(self._unsent)
        self._unsent.clear()
        proto = self._conn.proto
        self._resolve_voided(proto.connection_closed())
        proto.release()
        for future in self._checkpoints.values():
            if not future.done():
                future.set_result(CheckpointOutcome.CLOSED)
        self._checkpoints.clear()
        gate = self._clear_gate
        if gate is not None and not gate.done():
            gate.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._closed_event.set()
        task = self._conn._task
        if task is None or task.done():
            self._release()


class _Connection(asyncio.Protocol):
    """One TCP connection: websockets' Sans-I/O handshake and framing, our protocol."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self.loop = server.loop
        self.limits = server.limits
        self.pacing = server.pacing
        self.ws = ServerProtocol(max_size=server.limits.max_message_bytes, logger=log)
        self.proto = StreamProtocol(
            l16_byte_order=server.l16_byte_order,
            outbound_byte_order=server.outbound_byte_order,
            outbound_format=server.outbound_format,
            max_audio_bytes=server.limits.max_audio_frame_bytes,
            accept_restart=False,
        )
        self.transport: asyncio.Transport | None = None
        self.session: StreamSession | None = None
        self.request_path = ""
        self.request_headers: Headers = Headers()
        self.write_paused = False
        self._drain: asyncio.Event | None = None
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self._mid_message = False  # a fragmented message is being received
        self._rx = bytearray()
        self._slow_path = False
        self._signed_call: str | None = None
        self._last_frame = self.loop.time()
        self._last_rx = self._last_frame
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None
        self._lost = False

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = tcp = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        server = self.server
        server._connections.add(self)
        server.stats.connections += 1
        server.stats.active_connections += 1
        if not server._address_allowed(tcp.get_extra_info("peername")):
            server.stats.rejected_ip += 1
            self._close_transport()
            return
        server._admit_pending(self)
        self._later("handshake", self.limits.handshake_timeout, self._handshake_deadline)

    def data_received(self, data: bytes) -> None:
        self._last_rx = self.loop.time()
        if self.ws.state is WsState.OPEN and not self._slow_path:
            self._receive_fast(data)
        else:
            self._feed(data)
        self._flush()

    def _feed(self, data: bytes | bytearray) -> None:
        """Let websockets' own parser take ``data`` (handshake, control frames, fragments)."""
        ws = self.ws
        try:
            ws.receive_data(data)
        except EOFError:
            return
        for event in ws.events_received():
            if type(event) is Frame:
                self._on_frame(event)
            elif isinstance(event, Request):
                self._on_request(event)
        if ws.handshake_exc is not None and ws.state is not WsState.OPEN:
            # A refused upgrade (no Upgrade header, bad key...): send websockets' 400/426
            # answer, then close, so a plain GET or a load balancer's probe gets a reply.
            self.server.stats.handshake_failures += 1
            self._flush()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            self._later("close", self.limits.close_timeout, self._close_transport)

    def _receive_fast(self, data: bytes) -> None:
        """Parse whole, masked, unfragmented text frames directly (the media hot path).

        Everything else (control frames, fragments, binary) is handed to websockets'
        parser frame by frame, so it keeps all protocol state; its reader is always at a
        frame boundary when it gets one. Unmasked or RSV-flagged client frames fail the
        connection (1002), as RFC 6455 requires. A partial frame waits in a bytearray,
        so a frame arriving in many small reads costs linear time, not quadratic.
        """
        rx = self._rx
        if rx:
            rx += data
            buf: bytes | bytearray = rx
        else:
            buf = data
        size = len(buf)
        pos = 0
        limit = self.limits.max_message_bytes
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if not b1 & 0x80 or b0 & 0x70:
                self._slow_path = True  # let websockets fail it with the right code
                rest = bytes(buf[pos:])
                self._rx = bytearray()
                self._feed(rest)
                return
            if length > limit:
                self.ws.fail(1009, f"frame over {limit} bytes")
                self._rx = bytearray()
                return
            end = head + 4 + length
            if end > size:
                break
            if b0 == 0x81 and not self._mid_message:  # FIN + TEXT, not mid-message
                self._on_message(apply_mask(buf[head + 4 : end], buf[head : head + 4]), False)
            else:
                self._feed(bytes(buf[pos:end]))
                if self.ws.state is not WsState.OPEN:
                    self._rx = bytearray()
                    return
            pos = end
        if buf is rx:
            del rx[:pos]
        elif pos < size:
            self._rx = bytearray(buf[pos:])

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._rx = bytearray()
        server = self.server
        server._connections.discard(self)
        server._pending.pop(self, None)
        if not server._connections:
            server._all_closed.set()
        server.stats.active_connections -= 1
        if self._drain is not None:
            self._drain.set()
        session = self.session
        if session is not None:
            server._forget(session)
            session.close_code = self.ws.close_code
            session._on_closed()
        else:
            self.proto.connection_closed()
        server.stats.malformed_frames += self.proto.stats.malformed
        sent = self.ws.close_sent
        if sent is not None and sent.code == 1009:  # websockets refused a message over max_size
            server.stats.oversized_messages += 1

    def pause_writing(self) -> None:
        """The write buffer passed ``write_buffer_bytes``: stop reading (a peer that
        never reads must not make us queue pongs or replies for ever) and start the
        ``write_stall_timeout`` clock."""
        self.write_paused = True
        if self._drain is None:
            self._drain = asyncio.Event()
        self._drain.clear()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        stall = self.limits.write_stall_timeout
        if stall is not None:
            self._later("stall", stall, self._write_stalled, replace=True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None:
            self._drain.set()
        timer = self._timers.pop("stall", None)
        if timer is not None:
            timer.cancel()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _write_stalled(self) -> None:
        if self.write_paused and not self._lost:
            self.server.stats.write_stalls += 1
            log.info("dropping a connection whose peer stopped reading")
            self._close_transport()

    # ---------------------------------------------------------------- handshake
    def _on_request(self, request: Request) -> None:
        server = self.server
        self.request_path = request.path
        self.request_headers = request.headers
        log.debug("upgrade %r headers=%s", request.path[:200], list(request.headers.keys()))
        try:
            path = urlsplit(request.path).path
        except ValueError:  # e.g. "//[x": an invalid IPv6 netloc
            server.stats.rejected_path += 1
            self.ws.send_response(self.ws.reject(400, "Bad request target\n"))
            return
        if not server._path_matches(path):
            server.stats.rejected_path += 1
            self.ws.send_response(self.ws.reject(404, "Not found\n"))
            return
        if server.token is not None:
            check: TokenCheck = verify_stream_token(
                extract_token(request.path, server.path), server.token
            )
            if not check.ok:
                server.stats.rejected_auth += 1
                status = 401 if check.reason == "missing" else 403
                self.ws.send_response(self.ws.reject(status, f"Token {check.reason}\n"))
                return
            self._signed_call = check.call_id
        if server._session_count >= server.limits.max_sessions:
            server.stats.rejected_limit += 1
            self.ws.send_response(self.ws.reject(503, "Too many streams\n"))
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code == 101:
            self._last_frame = self.loop.time()
            self._cancel("handshake")
            if self.limits.start_timeout is not None:
                self._later("start", self.limits.start_timeout, self._start_deadline)
            if self.limits.idle_timeout is not None:
                self._later("idle", self.limits.idle_timeout, self._idle_check)

    # ------------------------------------------------------------------- frames
    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                self._fragment_binary = opcode is Opcode.BINARY
                self._mid_message = True
                return
            self._on_message(frame.data, opcode is Opcode.BINARY)
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._mid_message = False
                self._on_message(data, self._fragment_binary)

    def _on_message(self, data: bytes | bytearray | memoryview, binary: bool) -> None:
        self._last_frame = self.loop.time()  # media activity: data, not pings
        proto = self.proto
        if binary:
            events = proto.receive(bytes(data))
        else:
            events = proto.receive(str(data, "utf-8", "surrogateescape"))
        session = self.session
        for event in events:
            if type(event) is MalformedFrame:
                assert isinstance(event, MalformedFrame)
                self._on_malformed(event)
            elif session is not None:
                session._on_event(event, len(data))
            elif type(event) is StreamStarted:
                assert isinstance(event, StreamStarted)
                session = self._on_start(event)
                if session is None:
                    return
            else:
                # A well-formed event before any start: no session to give it to.
                self.server.stats.events_before_start += 1

    def _on_malformed(self, event: MalformedFrame) -> None:
        stats = self.server.stats
        if event.reason == "foreign-start":
            # A second start on this socket for another call: it would dodge the
            # signed-URL call check. Reconnects are new sockets (spec 3.1, 4.1).
            stats.foreign_starts += 1
            log.warning("second start on one socket for another call: closing")
            self.close(1008, "start for another call")
        elif event.reason == "repeated-start":
            stats.repeated_starts += 1
        log.debug("malformed frame (%s): %s", event.reason, event.detail)

    def _on_start(self, started: StreamStarted) -> StreamSession | None:
        server = self.server
        if self._signed_call is not None and started.call_id != self._signed_call:
            log.warning(
                "signed URL for call %r used by call %r",
                self._signed_call[:64],
                started.call_id[:64],
            )
            server.stats.rejected_auth += 1
            self.close(1008, "token not valid for this call")
            return None
        if server._session_count >= self.limits.max_sessions:
            server.stats.rejected_limit += 1
            self.close(1013, "too many streams")
            return None
        server._pending.pop(self, None)
        self._cancel("start")
        session = StreamSession(self, started)
        self.session = session
        if server.record:
            session.record()
        server._register(session)
        self._task = self.loop.create_task(server._run_handler(session))
        return session

    # ------------------------------------------------------------------ writing
    def send_text(self, text: str) -> None:
        """Write one text frame now. Every frame of the session goes through here."""
        ws = self.ws
        if ws.state is not WsState.OPEN or self._lost:
            return
        ws.send_text(text.encode())
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.ws.data_to_send()  # discard: the socket is gone or going
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof() and not transport.is_closing():
                transport.write_eof()
        if self.ws.close_expected():
            self._later("close", self.limits.close_timeout, self._close_transport)

    async def drained(self) -> None:
        """Wait until the transport's write buffer is below its limit."""
        if self.write_paused and self._drain is not None and not self._lost:
            await self._drain.wait()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a close handshake; the transport is dropped if the peer stalls."""
        if self.ws.state is WsState.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        self._later("close", self.limits.close_timeout, self._close_transport)

    def expect_peer_close(self) -> None:
        """After our ``stop``, Vobiz closes the socket; close it ourselves if it doesn't.

        One timer per connection however many ``stop`` frames arrive."""
        self._later("stop", self.limits.close_timeout, lambda: self.close(1000, "stopped"))

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # ------------------------------------------------------------------- timers
    def _later(
        self, key: str, delay: float, callback: Callable[[], None], *, replace: bool = False
    ) -> None:
        """Run ``callback`` after ``delay``: at most one timer per ``key`` (an earlier
        one is kept unless ``replace``), so no peer input can pile timers up."""
        if self._lost:
            return
        timers = self._timers
        timer = timers.get(key)
        if timer is not None and not timer.cancelled() and not replace:
            return
        if timer is not None:
            timer.cancel()

        def fire() -> None:
            if timers.get(key) is handle:
                del timers[key]
            callback()

        handle = self.loop.call_later(delay, fire)
        timers[key] = handle

    def _cancel(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _handshake_deadline(self) -> None:
        if self.ws.state is WsState.CONNECTING:
            self.server.stats.handshake_failures += 1
            self._close_transport()

    def _start_deadline(self) -> None:
        if self.session is None and self.ws.state is WsState.OPEN:
            self.server.stats.start_timeouts += 1
            self.close(1008, "no start frame")

    def _idle_check(self) -> None:
        idle = self.limits.idle_timeout
        if idle is None or self._lost:
            return
        quiet = self.loop.time() - self._last_frame
        if quiet >= idle:
            self.server.stats.idle_timeouts += 1
            self.close(1001, "idle")
        else:
            self._later("idle", idle - quiet, self._idle_check, replace=True)


class MediaServer:
    """The WebSocket server Vobiz dials. Create with :func:`serve`.

    Use as ``async with serve(handler, "127.0.0.1", 8765) as server:``. The handler
    runs once per stream, after ``start``; when it returns, its stream is closed.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        path: str | None = None,
        token: str | None = None,
        limits: Limits | None = None,
        pacing: Pacing | None = None,
        l16_byte_order: InboundByteOrder = "little",
        outbound_byte_order: ByteOrder = "little",
        outbound_format: AudioFormat | None = None,
        allow_from: Sequence[str] | None = None,
        record: bool = False,
    ) -> None:
        if token is not None and not token:
            raise ValidationError("token", "must not be empty")
        try:
            self.allow_from = (
                tuple(ipaddress.ip_network(net, strict=False) for net in allow_from)
                if allow_from is not None
                else None
            )
        except ValueError as exc:
            raise ValidationError("allow_from", str(exc)) from None
        self.handler = handler
        self.host = host
        self.port = port
        self.path = "/" + path.strip("/") if path and path.strip("/") else "/"
        self.token = token
        self.limits = limits or Limits()
        self.pacing = pacing or Pacing()
        self.l16_byte_order: InboundByteOrder = l16_byte_order
        self.outbound_byte_order: ByteOrder = outbound_byte_order
        self.outbound_format = outbound_format
        self.record = record
        self.stats = ServerStats()
        self.loop = asyncio.get_running_loop()
        self._listeners: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._connections: set[_Connection] = set()
        self._pending: dict[_Connection, None] = {}  # not yet sessions, oldest first
        self._session_count = 0
        self._last_resource_log = float("-inf")
        self._by_stream: dict[str, StreamSession] = {}
        self._by_call: dict[str, StreamSession] = {}
        self._stream_waiters: dict[str, list[asyncio.Future[StreamSession]]] = {}
        self._call_waiters: dict[str, list[asyncio.Future[StreamSession]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: dict[str, tuple[float, StreamSession]] = {}
        self._all_closed = asyncio.Event()
        self._closing = False

    async def start(self) -> MediaServer:
        """Bind and start accepting connections.

        Logs a warning when the server accepts anyone (no ``token``, no ``allow_from``).

        Raises:
            OSError: the address cannot be bound.
        """
        infos = await self.loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        port = self.port
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], port, *address[2:]))
                sock.listen(_BACKLOG)
                sock.setblocking(False)
                port = sock.getsockname()[1]  # port 0: every address on the one port
        except OSError:
            for sock in self._listeners:
                sock.close()
            self._listeners.clear()
            raise
        self.port = port
        self._accepting = [self.loop.create_task(self._accept(s)) for s in self._listeners]
        log.info("listening on %s", self.url)
        if self.token is None and self.allow_from is None:
            log.warning(
                "media server on %s has no token and no allow_from: anyone who can reach "
                "it can open a stream, send audio to your agent and hear what it says; "
                "use serve(token=...) with server.url_for(call_uuid), or allow_from",
                self.url,
            )
        return self

    async def _accept(self, sock: socket.socket) -> None:
        """Accept connections on ``sock`` until closed.

        Our own accept loop (not ``loop.create_server``) so that running out of file
        descriptors is handled here: counted (``stats.accept_errors``), logged once per
        interval, and retried after a short pause, where asyncio's own loop logs a
        traceback per failed accept and piles up retry timers.
        """
        loop = self.loop
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRNOS:
                    if self._closing:
                        return
                    raise
                self.stats.accept_errors += 1
                now = loop.time()
                if now - self._last_resource_log >= _RESOURCE_LOG_INTERVAL:
                    self._last_resource_log = now
                    log.error(
                        "cannot accept connections: %s (%d so far; lower "
                        "Limits.max_sessions or raise the fd limit)",
                        exc.strerror,
                        self.stats.accept_errors,
                    )
                await asyncio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            try:
                await loop.connect_accepted_socket(lambda: _Connection(self), conn)
            except OSError:
                conn.close()

    def __await__(self) -> Generator[Any, None, MediaServer]:
        return self.start().__await__()

    async def __aenter__(self) -> MediaServer:
        if not self._listeners:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/PATH``."""
        return f"ws://{self.host}:{self.port}{self.path}"

    def url_for(
        self, call_uuid: str, *, ttl: float = DEFAULT_STREAM_TOKEN_TTL, base_url: str | None = None
    ) -> str:
        """The URL a given call must use to stream to this server.

        With a ``token``, a signed per-call URL (see :func:`~vobiz_async.tokens.sign_stream_url`)
        that only admits ``call_uuid``; without one, the plain URL. Pass it to
        ``client.streams.start(call_uuid, server.url_for(call_uuid))`` or put it in
        ``<Stream>`` XML.

        Args:
            call_uuid: the call that will stream.
            ttl: lifetime of the signature in seconds; the default covers the longest
                call Vobiz streams (``streamTimeout`` 86400 s), since ``maxRetries``
                reconnects are checked again.
            base_url: the public ``wss://`` URL when behind a TLS proxy (default
                :attr:`url`).

        Raises:
            ValidationError: a call id that cannot be signed (empty, or with a ``.``).
        """
        url = base_url or self.url
        if self.token is None:
            return url
        return sign_stream_url(url, self.token, call_uuid, ttl=ttl)

    @property
    def sessions(self) -> list[StreamSession]:
        """The sessions currently open."""
        return list(self._by_stream.values())

    def _address_allowed(self, peer: Any) -> bool:
        if self.allow_from is None:
            return True
        try:
            address = ipaddress.ip_address(peer[0])
        except (TypeError, ValueError, IndexError):
            return False
        return any(address in network for network in self.allow_from)

    def _path_matches(self, path: str) -> bool:
        if self.path == "/":
            return True
        base = self.path
        return path == base or path.rstrip("/") == base or path.startswith(base + "/")

    # ------------------------------------------------------------------ binding
    def _admit_pending(self, conn: _Connection) -> None:
        """Track a connection that is not yet a session; over the limit, drop the one
        idle the longest, so handshake floods cannot keep a real call out."""
        pending = self._pending
        while len(pending) >= self.limits.max_pending_handshakes and pending:
            victim = min(pending, key=lambda c: c._last_rx)
            del pending[victim]
            self.stats.evicted_handshakes += 1
            victim._close_transport()
        if self.limits.max_pending_handshakes > 0:
            pending[conn] = None
        else:
            self.stats.rejected_limit += 1
            conn._close_transport()

    def _register(self, session: StreamSession) -> None:
        self.stats.sessions += 1
        self._session_count += 1
        self._by_stream[session.stream_id] = session
        self._by_call[session.call_id] = session
        for future in self._stream_waiters.pop(session.stream_id, []):
            if not future.done():
                future.set_result(session)
        for future in self._call_waiters.pop(session.call_id, []):
            if not future.done():
                future.set_result(session)

    def _forget(self, session: StreamSession) -> None:
        self._session_count -= 1
        if self._by_stream.get(session.stream_id) is session:
            del self._by_stream[session.stream_id]
        if self._by_call.get(session.call_id) is session:
            del self._by_call[session.call_id]
        # Callbacks like DroppedStream arrive after the socket closed: remember closed
        # sessions for RECENT_SECONDS (at most RECENT_MAX of them) to route those.
        now = self.loop.time()
        self._recent[session.stream_id] = (now, session)
        while self._recent:
            oldest, (closed_at, _) = next(iter(self._recent.items()))
            if len(self._recent) <= RECENT_MAX and now - closed_at <= RECENT_SECONDS:
                break
            del self._recent[oldest]

    def get_session(self, stream_id: str) -> StreamSession | None:
        """The session of a stream: open, or closed within the last two minutes."""
        session = self._by_stream.get(stream_id)
        if session is not None:
            return session
        recent = self._recent.get(stream_id)
        return recent[1] if recent is not None else None

    async def wait_for_session(
        self, stream_id: str, *, timeout: float | None = 10.0
    ) -> StreamSession:
        """The session of ``stream_id`` (e.g. from a REST start), waiting for ``start``.

        Works whether Vobiz's ``start`` arrived before or after the REST response. A
        stream that has already ended (within the last ``RECENT_SECONDS``) is answered
        at once with its closed session (``session.closed`` is true, its stats kept):
        a stream id never comes back, reconnects get a new one (spec 3.1).

        Raises:
            SessionTimeoutError: no such stream connected within ``timeout`` (also a
                ``TimeoutError``; carries ``stream_id``).
        """
        recent = self._recent.get(stream_id)
        if recent is not None and stream_id not in self._by_stream:
            return recent[1]
        try:
            return await self._wait(self._by_stream, self._stream_waiters, stream_id, timeout)
        except TimeoutError:
            raise SessionTimeoutError(stream_id=stream_id, timeout=timeout) from None

    async def wait_for_call(self, call_id: str, *, timeout: float | None = 10.0) -> StreamSession:
        """The (latest) open session of a call, waiting for its ``start``.

        Raises:
            SessionTimeoutError: no stream of that call connected within ``timeout``
                (also a ``TimeoutError``; carries ``call_id``).
        """
        try:
            return await self._wait(self._by_call, self._call_waiters, call_id, timeout)
        except TimeoutError:
            raise SessionTimeoutError(call_id=call_id, timeout=timeout) from None

    async def _wait(
        self,
        index: dict[str, StreamSession],
        waiters: dict[str, list[asyncio.Future[StreamSession]]],
        key: str,
        timeout: float | None,
    ) -> StreamSession:
        session = index.get(key)
        if session is not None:
            return session
        future: asyncio.Future[StreamSession] = self.loop.create_future()
        waiters.setdefault(key, []).append(future)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            pending = waiters.get(key)
            if pending is not None and future in pending:
                pending.remove(future)
                if not pending:
                    del waiters[key]

    # ------------------------------------------------------------------ handlers
    async def _run_handler(self, session: StreamSession) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(session)
        except asyncio.CancelledError:
            session._conn.close(1001, "server shutting down")
            raise
        except Exception:
            self.stats.handler_errors += 1
            log.exception(
                "handler failed for stream %s (call %s)", session.stream_id, session.call_id
            )
            session._conn.close(1011, "handler error")
        else:
            if not session.closed:
                session._conn.close(1000, "handler finished")
        finally:
            self._tasks.discard(task)
            if session.closed:
                session._release()

    # ----------------------------------------------------------------- shutdown
    async def close(self, grace: float = 5.0) -> None:
        """Graceful shutdown: stop accepting, let sessions end within ``grace`` seconds,
        then close the rest with 1001 and cancel their handlers."""
        if self._closing:
            return
        self._closing = True
        for task in self._accepting:
            task.cancel()
        for sock in self._listeners:
            sock.close()
        sessions = self.sessions
        if sessions and grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(s.wait_closed() for s in sessions))
        for conn in list(self._connections):
            conn.close(1001, "server shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.limits.close_timeout + 0.5):
                    await self._all_closed.wait()
        for conn in list(self._connections):
            conn._close_transport()
        if self._accepting:
            await asyncio.gather(*self._accepting, return_exceptions=True)
        for waiters in (*self._stream_waiters.values(), *self._call_waiters.values()):
            for future in waiters:
                if not future.done():
                    future.cancel()


def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    path: str | None = None,
    token: str | None = None,
    limits: Limits | None = None,
    pacing: Pacing | None = None,
    l16_byte_order: InboundByteOrder = "little",
    outbound_byte_order: ByteOrder = "little",
    outbound_format: AudioFormat | None = None,
    allow_from: Sequence[str] | None = None,
    record: bool = False,
) -> MediaServer:
    """Create the media server; ``async with serve(...) as server`` (or ``await serve(...)``).

    Args:
        handler: ``async def handler(session)``, called once per stream after ``start``.
        host, port: where to listen; port 0 picks a free port (see ``server.port``).
        path: only accept connections on this path (and below it, for a token segment).
        token: a secret the URL must carry (``?token=`` or the last path segment), or a
            signed per-call token made with :func:`~vobiz_async.tokens.sign_stream_url`.
            Without it, 401 (missing) or 403 (wrong) before any frame is read.
        limits, pacing: see :class:`Limits` and :class:`Pacing`.
        l16_byte_order: inbound L16 order: ``"little"`` (default), ``"big"`` or ``"auto"``.
        outbound_byte_order: L16 order of audio we send (default ``"little"``).
        outbound_format: format of ``playAudio`` (default: the stream's inbound format).
        allow_from: accept connections only from these networks (CIDR strings), e.g.
            ``VOBIZ_MEDIA_NETWORKS`` plus your own test hosts; others are dropped at
            once. Behind a TLS proxy the peer is the proxy: filter there instead.
            With neither ``token`` nor ``allow_from`` the server accepts anyone and
            logs a warning saying so at start-up.
        record: attach a recorder (``session.recorder``) to every session at ``start``,
            before any audio is delivered, so the recording has every frame.
    """
    return MediaServer(
        handler,
        host,
        port,
        path=path,
        token=token,
        limits=limits,
        pacing=pacing,
        l16_byte_order=l16_byte_order,
        outbound_byte_order=outbound_byte_order,
        outbound_format=outbound_format,
        allow_from=allow_from,
        record=record,
    )
