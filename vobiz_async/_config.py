"""Configuration values of the media plane: frozen, with documented defaults.

Shared by the session (pacing, queue bounds) and the server (connection limits), and
re-exported by both; applications import them from ``vobiz_async``.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass, field

from .errors import ValidationError
from .recording import DEFAULT_MAX_RECORDING_BYTES

__all__ = ["Limits", "Pacing", "default_max_sessions"]

_FD_RESERVE = 64  # descriptors kept for everything else: logs, recordings, REST clients
_MAX_SESSIONS_CAP = 2000


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


@dataclass(frozen=True, slots=True)
class Pacing:
    """How audio we play is paced out to Vobiz.

    Attributes:
        lead_ms: audio kept queued at Vobiz ahead of the playout point. More absorbs
            network jitter; less makes a barge-in flush less. The first ``lead_ms`` of
            an utterance go out at once (the head start), the rest as the clock
            advances (every 20 ms, or in batches with ``coalesce_ms``).
        wait_for_cleared: after ``clear()``, hold new audio until ``clearedAudio``
            arrives (Vobiz's own sample does this: audio sent during a flush can be
            partly dropped, spec 4.4.3), with ``clear_ack_timeout`` as the fallback.
        clear_ack_timeout: seconds to wait for ``clearedAudio``.
        coalesce_ms: when a frame is due, also send those due within this much more
            time, in one write (one syscall instead of several). Vobiz then holds up
            to ``lead_ms + coalesce_ms`` of audio, so a barge-in flushes that much more
            there (our accounting of what was heard is unchanged), in exchange for
            about ``20 / (20 + coalesce_ms)`` of the writes while speaking. 0: one
            frame per write. Replies that arrive in real time (an echo, a streaming
            TTS at 1x) are sent as they come either way.
    """

    lead_ms: float = 200.0
    wait_for_cleared: bool = True
    clear_ack_timeout: float = 1.0
    coalesce_ms: float = 40.0

    def __post_init__(self) -> None:
        for name in ("lead_ms", "coalesce_ms", "clear_ack_timeout"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValidationError(name, f"must be a finite number >= 0, got {value!r}")


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
