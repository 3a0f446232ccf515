"""What an emulated call of either fake provider has: its media peers, and waiting on them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ._media import PeerReport

__all__ = ["CallPeers"]


class _Peer(Protocol):
    report: PeerReport
    _closed: asyncio.Event

    async def wait_closed(self) -> PeerReport: ...


P = TypeVar("P", bound=_Peer)


@dataclass(kw_only=True)
class CallPeers(Generic[P]):
    """The media peers dialed for a call's streams, and the call's own tasks (its answer
    document running). Mixed into ``FakeCall`` and ``FakeCompatCall``.

    Attributes:
        peers: the media peers dialed for this call's streams, in order.
        hangup_cause: why the call ended, once it has (see the call classes).
    """

    peers: list[P] = field(default_factory=list)
    hangup_cause: str | None = None
    _new_peer: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)

    async def next_peer(self, index: int = 0, *, timeout: float = 10.0) -> P:
        """The ``index``-th media peer of this call, waiting until it is dialed.

        Raises:
            TimeoutError: not dialed within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while len(self.peers) <= index:
                self._new_peer.clear()
                await self._new_peer.wait()
        return self.peers[index]

    async def wait_done(self, *, timeout: float | None = None) -> list[PeerReport]:
        """Wait until the call's answer document has run and every stream has ended.

        Streams still being set up count too, so ``fake.call(answer_xml=...)`` then
        ``await call.wait_done()`` waits for the ``<Stream>``'s media (no need to await
        :meth:`next_peer` first).

        Args:
            timeout: seconds to wait at most (None: no limit).

        Returns:
            The reports of every stream dialed for the call, in order.

        Raises:
            TimeoutError: still running after ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while True:
                pending = [t for t in self._tasks if not t.done()]
                open_peers = [p for p in self.peers if not p._closed.is_set()]
                if not pending and not open_peers:
                    break
                await asyncio.gather(
                    *pending, *(p.wait_closed() for p in open_peers), return_exceptions=True
                )
        return [p.report for p in self.peers]
