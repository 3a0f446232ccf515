"""One timer per key (a connection's deadlines: handshake, start, idle, close, stall)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["KeyedTimers"]


class KeyedTimers:
    """At most one pending timer per key on one loop, so no peer input can pile timers
    up or push a deadline back: asking again for a key that is pending keeps the earlier
    timer unless ``replace``. A timer that fires is forgotten before its callback runs
    (the callback may set the same key again); :meth:`close` cancels every timer and
    refuses new ones.
    """

    __slots__ = ("_closed", "_handles", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    def later(
        self, key: str, delay: float, callback: Callable[[], None], *, replace: bool = False
    ) -> None:
        """Run ``callback`` in ``delay`` seconds, unless ``key`` is already pending (then
        the earlier timer stays, or is replaced with ``replace``)."""
        if self._closed:
            return
        handles = self._handles
        pending = handles.get(key)
        if pending is not None:
            if not replace:
                return
            pending.cancel()

        def fire() -> None:
            if handles.get(key) is handle:
                del handles[key]
            callback()

        handle = self._loop.call_later(delay, fire)
        handles[key] = handle

    def cancel(self, key: str) -> None:
        """Cancel ``key``'s timer, if pending."""
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def __contains__(self, key: object) -> bool:
        return key in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        """Cancel every timer; later calls to :meth:`later` do nothing."""
        self._closed = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
