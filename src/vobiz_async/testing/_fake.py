"""FakeVobiz: a local Vobiz for tests, demos and users' own agent tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from ..client import RetryPolicy, Timeouts, VobizClient
from ..errors import StreamClosedError
from ._rest import FakeStreamRecord, Fault, RecordedRequest, RestState

__all__ = ["FakeCall", "FakeVobiz"]


def _bound_port(site: web.TCPSite) -> int:
    """The port the OS picked for a site bound to port 0."""
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError("the site is not listening")
    port: int = sockets[0].getsockname()[1]
    return port


@dataclass
class FakeCall:
    """A live call on the fake Vobiz.

    Attributes:
        call_uuid: the call's id (what REST paths and ``start.callId`` carry).
        live: False once hung up; starting a stream on it then answers 404.
    """

    call_uuid: str
    live: bool = True


class FakeVobiz:
    """A local Vobiz: the Audio Streams REST API on 127.0.0.1, port 0.

    Use as ``async with FakeVobiz() as fake:`` and point a client at it with
    :meth:`client`. Every request is recorded in :attr:`requests`; :meth:`inject`
    queues failures (a status, a delay, a ``Retry-After``, a dropped connection, or a
    lost response after the real effect).

    Args:
        auth_id, auth_token: the credentials it accepts.
        list_envelope: ``"page"`` (documented), ``"meta"`` (Plivo-style) or ``"bare"``.
        default_audio_track: used when a start omits ``audio_track``.
        host: the loopback address to bind.
    """

    def __init__(
        self,
        *,
        auth_id: str = "MA_FAKE0001",
        auth_token: str = "fake-token",
        list_envelope: str = "page",
        default_audio_track: str = "inbound",
        host: str = "127.0.0.1",
    ) -> None:
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.host = host
        self.calls: dict[str, FakeCall] = {}
        self.rest = RestState(
            auth_id=auth_id,
            auth_token=auth_token,
            list_envelope=list_envelope,
            default_audio_track=default_audio_track,
            is_live=self._is_live,
            on_started=self._stream_started,
            on_stopped=self._stream_stopped,
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    async def __aenter__(self) -> FakeVobiz:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start serving the REST API."""
        self._runner = web.AppRunner(self.rest.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = _bound_port(site)

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: pass it as a client's ``base_url``."""
        if self._port is None:
            raise StreamClosedError("the fake is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        return self.rest.requests

    @property
    def streams(self) -> dict[str, FakeStreamRecord]:
        """Every stream ever started, by stream id."""
        return self.rest.streams

    def client(self, **kwargs: Any) -> VobizClient:
        """A :class:`VobizClient` for this fake (fast retries unless overridden)."""
        kwargs.setdefault("retry", RetryPolicy(base_delay=0.01, max_delay=0.05))
        kwargs.setdefault("timeout", Timeouts(connect=2.0, total=5.0))
        return VobizClient(self.auth_id, self.auth_token, base_url=self.base_url, **kwargs)

    def call(self, call_uuid: str | None = None) -> FakeCall:
        """Create a live call to stream from."""
        call = FakeCall(call_uuid or str(uuid.uuid4()))
        self.calls[call.call_uuid] = call
        return call

    async def hangup(self, call_uuid: str) -> None:
        """End a call: its streams complete and their sockets close."""
        call = self.calls.get(call_uuid)
        if call is not None:
            call.live = False
        for record in list(self.streams.values()):
            if record.call_uuid == call_uuid:
                await self.rest.stop(record)

    def inject(self, status: int | None = None, **kwargs: Any) -> Fault:
        """Fail the next matching request(s); see :class:`~vobiz_async.testing.Fault`."""
        fault = Fault(status=status, **kwargs)
        self.rest.inject(fault)
        return fault

    def _is_live(self, call_uuid: str) -> bool:
        call = self.calls.get(call_uuid)
        return call is not None and call.live

    async def _stream_started(self, record: FakeStreamRecord) -> None:
        """Hook: a stream was started (the media half dials here)."""

    async def _stream_stopped(self, record: FakeStreamRecord) -> None:
        """Hook: a stream was stopped (the media half hangs up here)."""
