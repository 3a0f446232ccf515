"""Configuration values of the media plane: frozen, with documented defaults.

Shared by the session (pacing, queue bounds) and the server (connection limits), and
re-exported by both; applications import them from ``vobiz_async``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "Pacing"]


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
        max_sessions: concurrent connections; more are refused with HTTP 503.
        start_timeout: seconds from the handshake to the ``start`` frame (then 1008).
        idle_timeout: seconds without any frame before the connection is closed (1001).
        inbound_queue_ms: audio buffered per session for a slow application; past it
            the oldest audio is dropped and counted (``stats.dropped_frames``).
        max_queued_events: non-audio events buffered per session (oldest dropped).
        close_timeout: seconds to wait for the peer to finish a close handshake.
        write_buffer_bytes: transport buffer above which sends wait (backpressure).
    """

    max_message_bytes: int = 256 * 1024
    max_sessions: int = 2000
    start_timeout: float | None = 10.0
    idle_timeout: float | None = 60.0
    inbound_queue_ms: float = 1000.0
    max_queued_events: int = 256
    close_timeout: float = 2.0
    write_buffer_bytes: int = 64 * 1024
