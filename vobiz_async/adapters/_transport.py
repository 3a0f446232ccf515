"""What every framework adapter shares: a queued writer behind the sync ``Transport``.

A :class:`~vobiz_async.session.StreamSession` writes with a synchronous
``send_text``; a framework's WebSocket sends with a coroutine. :class:`QueuedTransport`
bridges the two: frames are queued and one writer task sends them in order, the
queue's size is the backpressure signal (``write_paused`` over
``Limits.write_buffer_bytes``; ``link.writable()`` once it drained), and a peer that
stops reading for ``Limits.write_stall_timeout`` is dropped. It moves frames and maps
close codes only: pacing, checkpoints and clears stay in the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections import deque

from .._timers import KeyedTimers
from ..server import MediaServer, StreamLink

__all__ = ["QueuedTransport"]

log = logging.getLogger("vobiz_async.adapters")


class QueuedTransport(ABC):
    """A :class:`~vobiz_async.session.Transport` over a framework WebSocket.

    Subclasses implement :meth:`_send` (one text frame), :meth:`_close` (a close
    handshake) and :meth:`_abort` (drop the connection now). The adapter's read loop
    calls :meth:`finished` once, after the WebSocket ended.

    Args:
        server: the :class:`MediaServer` whose limits apply.
    """

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.link: StreamLink | None = None
        self.close_code_sent: int | None = None
        self._queue: deque[str] = deque()
        self._queued_chars = 0
        self._paused = False
        self._wake = asyncio.Event()
        self._close_request: tuple[int, str] | None = None
        self._done = False
        self._timers = KeyedTimers(self.loop)
        self._writer = self.loop.create_task(self._write_loop())
        server.stats.connections += 1
        server.stats.active_connections += 1

    # ------------------------------------------------------------- Transport
    @property
    def write_paused(self) -> bool:
        """True while more than ``Limits.write_buffer_bytes`` wait to be sent."""
        return self._paused

    def send_text(self, text: str) -> None:
        """Queue one text frame (never blocks); ignored once closing or closed."""
        if self._done or self._close_request is not None:
            return
        self._queue.append(text)
        self._queued_chars += len(text)
        if not self._paused and self._queued_chars > self.limits.write_buffer_bytes:
            self._paused = True
            stall = self.limits.write_stall_timeout
            if stall is not None:
                self._timers.later("stall", stall, self._write_stalled)
        self._wake.set()

    def send_texts(self, texts: list[str]) -> None:
        """Queue several frames, in order (the framework sends them one by one)."""
        for text in texts:
            self.send_text(text)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send what is queued, then a close frame; drop the connection if the close
        handshake has not finished within ``Limits.close_timeout``."""
        if self._done or self._close_request is not None:
            return
        self._close_request = (code, reason)
        self._wake.set()
        self._timers.later("close", self.limits.close_timeout, self._abort_now)

    def expect_peer_close(self) -> None:
        """After our ``stop``: close with 1000 if the peer has not within
        ``Limits.close_timeout`` (one timer however many ``stop`` frames)."""
        self._timers.later("stop", self.limits.close_timeout, lambda: self.close(1000, "stopped"))

    # ---------------------------------------------------------- for adapters
    def oversized(self) -> None:
        """A message over ``Limits.max_message_bytes`` arrived: count it, close with 1009."""
        self.server.stats.oversized_messages += 1
        self.close(1009, f"message over {self.limits.max_message_bytes} bytes")

    def finished(self, code: int | None) -> None:
        """The WebSocket ended (``code``: the peer's close code, when it sent one)."""
        if self._done:
            return
        self._done = True
        self._timers.close()
        self._writer.cancel()
        self._queue.clear()
        self.server.stats.active_connections -= 1
        if self.link is not None:
            self.link.closed(code if code is not None else self.close_code_sent or 1006)

    async def wait_writer(self) -> None:
        """Wait for the writer task to end (after :meth:`finished`)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer

    @abstractmethod
    async def _send(self, text: str) -> None:
        """Send one text frame."""

    @abstractmethod
    async def _close(self, code: int, reason: str) -> None:
        """Send a close frame (and let the framework finish the handshake)."""

    @abstractmethod
    def _abort(self) -> None:
        """Drop the connection now (the read loop then ends)."""

    # -------------------------------------------------------------- internals
    async def _write_loop(self) -> None:
        queue = self._queue
        try:
            while True:
                while queue:
                    text = queue[0]
                    await self._send(text)
                    queue.popleft()
                    self._queued_chars -= len(text)
                    if self._paused and not queue:
                        self._paused = False
                        self._timers.cancel("stall")
                        if self.link is not None:
                            self.link.writable()
                request = self._close_request
                if request is not None:
                    self.close_code_sent = request[0]
                    await self._close(*request)
                    return
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the framework's "connection gone" errors vary
            log.debug("adapter write failed: %r", exc)
            self._abort_now()

    def _write_stalled(self) -> None:
        if self._paused and not self._done:
            self.server.stats.write_stalls += 1
            log.info("dropping a connection whose peer stopped reading")
            self._abort_now()

    def _abort_now(self) -> None:
        if not self._done:
            self._abort()
