"""The media server the provider dials: a thin I/O shell around the session and protocol.

Three layers, each smaller than the one it drives:

* :class:`MediaServer` holds what is shared by every stream: configuration, the
  registry that binds REST-started streams to their sessions (``wait_for_session``),
  limits, the one pacing timer, status-callback routing, graceful shutdown. It works
  without a socket of its own (``async with MediaServer(handler):``), so framework
  adapters (``vobiz_async.adapters``) carry its streams on their own WebSockets; or it
  listens itself (:func:`serve`).
* :class:`StreamLink` (in :mod:`vobiz_async._link`) is one stream on any transport: it
  checks nothing the upgrade has not already admitted, feeds text frames to the
  protocol, creates the :class:`~vobiz_async.session.StreamSession` on ``start``, runs
  the handler, and enforces the per-stream limits and timers (start, idle, a second
  ``start``).
* ``_Connection`` (in :mod:`vobiz_async._listener`) is the built-in transport:
  websockets' Sans-I/O ``ServerProtocol`` driven from an ``asyncio.Protocol``; whole
  text frames are cut by :mod:`vobiz_async._wsframes` inside ``data_received``, with
  no task, future or ``recv()`` per frame. It owns what is TCP's: the handshake
  deadline, pending handshakes, backpressure (stop reading while our write buffer is
  full), write stalls.

One connection's trouble stays in that connection: malformed frames are counted and
skipped, a handler that raises closes only its own stream, and the peer vanishing at
any moment (the normal end of a Vobiz stream) resolves everything pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from ssl import SSLContext
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, Unpack
from urllib.parse import urlsplit

from . import _logcontext, _metrics
from ._config import Limits, Pacing, default_max_sessions
from ._link import Admission, ServerStats, StreamLink
from ._listener import _Listener
from .codec import AudioFormat, ByteOrder
from .errors import SessionTimeoutError, ValidationError
from .protocol import InboundByteOrder, Provider
from .session import Pacer, SessionStats, StreamSession
from .tokens import DEFAULT_STREAM_TOKEN_TTL, extract_token, sign_stream_url, verify_stream_token

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = [
    "VOBIZ_MEDIA_NETWORKS",
    "Admission",
    "Limits",
    "MediaServer",
    "Pacing",
    "ServerOptions",
    "ServerStats",
    "SessionStats",
    "StreamLink",
    "StreamSession",
    "default_max_sessions",
    "serve",
]

log = logging.getLogger("vobiz_async.server")
Handler = Callable[[StreamSession], Awaitable[None]]
RECENT_SECONDS = 120.0
RECENT_MAX = 1024

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


def _bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (SignalWire's ``authBearerToken``,
    compat spec 4.1), or None."""
    value = headers.get("Authorization") or headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


class MediaServer:
    """The media server: every stream's registry, limits, pacing and lifecycle.

    Listening on its own socket: ``async with serve(handler, "127.0.0.1", 8765) as
    server:`` (or ``MediaServer(handler, host, port)``). Without one, inside a web
    framework: ``async with MediaServer(handler, token=...) as server:`` and mount an
    adapter (``vobiz_async.adapters.starlette`` / ``.aiohttp``) on a route. The
    handler runs once per stream, after ``start``; when it returns, its stream is
    closed.

    Args:
        handler: ``async def handler(session)``, called once per stream after ``start``.
        host, port: where to listen (port 0 picks a free port); None: no socket.
        path: only accept streams on this path (and below it, for a token segment).
        token: a secret the stream must present: ``?token=``, the last path segment,
            or ``Authorization: Bearer`` (SignalWire's ``authBearerToken``); or a
            signed per-call token made with :meth:`url_for` /
            :func:`~vobiz_async.tokens.sign_stream_url`. Without it, 401 (missing) or
            403 (wrong) before any frame is read.
        limits, pacing: see :class:`Limits` and :class:`Pacing`.
        l16_byte_order: inbound L16 order: ``"little"`` (default), ``"big"`` or ``"auto"``.
        outbound_byte_order: L16 order of audio we send (default ``"little"``).
        outbound_format: format of Vobiz ``playAudio`` (default: the stream's inbound
            format); compat streams always play back in their own format.
        provider: ``"auto"`` (default: the first frame tells), ``"vobiz"``,
            ``"signalwire"`` or ``"twilio"``.
        allow_from: accept connections only from these networks (CIDR strings), e.g.
            ``VOBIZ_MEDIA_NETWORKS`` plus your own test hosts; others are dropped at
            once (the built-in listener; adapters pass the peer to :meth:`admit`).
            With neither ``token`` nor ``allow_from`` the server accepts anyone and
            logs a warning saying so at start-up.
        record: attach a recorder (``session.recorder``) and a trace to every session
            at ``start``, before any audio is delivered, so the recording has every frame.
        twilio_auth_token: verify Twilio's ``X-Twilio-Signature`` on the upgrade
            (HMAC-SHA1 of the ``wss://`` URL, compat spec 7.6) with this Auth Token.
        public_url: the public ``wss://host[:port]`` the provider dials (behind a TLS
            proxy), used to check upgrade signatures and by :meth:`url_for`.
        cluster: a :class:`~vobiz_async.cluster.Cluster` to register every session in,
            so any process can find and control it (``vobiz-async[cluster]``).
        ssl: a server :class:`ssl.SSLContext`: the built-in listener speaks TLS
            (``wss://``; the TLS handshake counts against ``Limits.handshake_timeout``
            and ``Limits.max_pending_handshakes``) and :attr:`url` is ``wss://``.
        reuse_port: bind with ``SO_REUSEPORT``, so several processes (workers) listen
            on one port and the kernel spreads connections over them.
        worker: this process's name in health answers, metrics (``worker`` label) and
            logs (default: the cluster's worker id, else the pid).

    Also on the listening port, for load balancers: a plain HTTP ``GET /healthz``
    (200 and :meth:`health` as JSON; 503 while shutting down), ``GET /metrics``
    (Prometheus text with ``vobiz-async[metrics]``, else 404), any other path without
    ``Upgrade: websocket`` 404, and an upgrade-less GET on the stream path 426.

    Raises:
        ValidationError: an empty token, a bad network in ``allow_from``, a bad provider.
    """

    def __init__(
        self,
        handler: Handler,
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | None = None,
        token: str | None = None,
        limits: Limits | None = None,
        pacing: Pacing | None = None,
        l16_byte_order: InboundByteOrder = "little",
        outbound_byte_order: ByteOrder = "little",
        outbound_format: AudioFormat | None = None,
        provider: Provider = "auto",
        allow_from: Sequence[str] | None = None,
        record: bool = False,
        twilio_auth_token: str | None = None,
        public_url: str | None = None,
        cluster: Cluster | None = None,
        ssl: SSLContext | None = None,
        reuse_port: bool = False,
        worker: str | None = None,
    ) -> None:
        if token is not None and not token:
            raise ValidationError("token", "must not be empty")
        if provider not in ("auto", "vobiz", "signalwire", "twilio"):
            raise ValidationError("provider", "must be auto, vobiz, signalwire or twilio")
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
        self.port = port if port is not None else 0
        self.path = "/" + path.strip("/") if path and path.strip("/") else "/"
        self.token = token
        self.limits = limits or Limits()
        self.pacing = pacing or Pacing()
        self.l16_byte_order: InboundByteOrder = l16_byte_order
        self.outbound_byte_order: ByteOrder = outbound_byte_order
        self.outbound_format = outbound_format
        self.provider: Provider = provider
        self.record = record
        self.twilio_auth_token = twilio_auth_token
        self.public_url = public_url.rstrip("/") if public_url else None
        self.cluster = cluster
        self.ssl = ssl
        self.reuse_port = reuse_port
        self.worker = worker or (cluster.worker_id if cluster is not None else str(os.getpid()))
        self.stats = ServerStats()
        self._call_totals = _metrics.CallTotals()  # streams finished, summed
        self._finishing: set[StreamLink] = set()  # closed, handler still running
        self._metrics_registry: Any = None  # a prometheus CollectorRegistry, made on scrape
        _logcontext.install()
        self.loop = asyncio.get_running_loop()
        self._pacer = Pacer(self.loop)
        self._listener: _Listener | None = None
        self._links: set[StreamLink] = set()
        self._session_count = 0
        self._by_stream: dict[str, StreamSession] = {}
        self._by_call: dict[str, StreamSession] = {}
        self._stream_waiters: dict[str, list[asyncio.Future[StreamSession]]] = {}
        self._call_waiters: dict[str, list[asyncio.Future[StreamSession]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: dict[str, tuple[float, StreamSession]] = {}
        self._opened = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> MediaServer:
        """Get ready to carry streams (join the cluster, if any), without listening."""
        if not self._opened:
            self._opened = True
            if self.cluster is not None:  # first: a Redis failure leaves nothing bound
                await self.cluster._attach(self)
            if self.token is None and self.allow_from is None and self.twilio_auth_token is None:
                log.warning(
                    "media server has no token and no allow_from: anyone who can reach it "
                    "can open a stream, send audio to your agent and hear what it says; "
                    "use token=... with server.url_for(call_uuid), or allow_from"
                )
        return self

    async def start(self) -> MediaServer:
        """Open, then bind ``host``/``port`` and start accepting connections.

        Raises:
            OSError: the address cannot be bound.
            ValidationError: the server was made without a host.
        """
        if self.host is None:
            raise ValidationError("host", "this MediaServer has no socket: mount an adapter")
        await self.open()
        if self._listener is None:
            listener = _Listener(self)
            self.port = await listener.start(self.host, self.port, reuse_port=self.reuse_port)
            self._listener = listener
            log.info("listening on %s", self.url)
        return self

    def __await__(self) -> Generator[Any, None, MediaServer]:
        return self.start().__await__()

    async def __aenter__(self) -> MediaServer:
        if self.host is None:
            return await self.open()
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/PATH`` (``wss://`` with ``ssl``; or ``public_url`` + path when
        configured).

        Raises:
            ValidationError: a server without a socket and without ``public_url`` (its
                URL is the application's: pass ``base_url`` to :meth:`url_for`).
        """
        if self.public_url is not None:
            return self.public_url + self.path
        if self.host is None:
            raise ValidationError("public_url", "a MediaServer without a socket has no URL")
        scheme = "wss" if self.ssl is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}{self.path}"

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

    # ------------------------------------------------------------ health, metrics
    @property
    def pending_handshakes(self) -> int:
        """Connections of the built-in listener that are not streams yet."""
        return len(self._listener.pending) if self._listener is not None else 0

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers, for adapters to expose on their own route.

        Returns:
            ``{"status": "ok" | "draining", "sessions": N, "max_sessions": M,
            "pending_handshakes": K, "worker": ID}``; ``draining`` once :meth:`close`
            has begun (the built-in listener then answers 503).
        """
        return {
            "status": "draining" if self._closing else "ok",
            "sessions": self._session_count,
            "max_sessions": self.limits.max_sessions,
            "pending_handshakes": self.pending_handshakes,
            "worker": self.worker,
        }

    def metrics(self) -> bytes | None:
        """The server's metrics in Prometheus text format (what ``GET /metrics`` answers).

        Gathered at call time from the counters the server keeps anyway (nothing is
        recorded per frame); every sample has a ``worker`` label.

        Returns:
            The exposition text, or None when ``prometheus-client`` is not installed
            (``vobiz-async[metrics]``; logged once).
        """
        return _metrics.render(self)

    # ------------------------------------------------------------------ admission
    def admit(self, target: str, headers: Mapping[str, str], peer: Any = None) -> Admission:
        """Check a WebSocket upgrade before accepting it: path, token (or signed URL,
        or bearer token), Twilio's upgrade signature, source address, session limit.

        Every transport asks this first; a refusal is counted in :attr:`stats`.

        Args:
            target: the request target (path and query).
            headers: the upgrade request's headers.
            peer: the remote address (``(host, port)``), when the transport knows it.
        """
        stats = self.stats
        if self._closing:  # adapters' routes outlive close(): no new streams after it
            stats.rejected_limit += 1
            return Admission(False, 503, "shutting down")
        if peer is not None and not self.address_allowed(peer):
            stats.rejected_ip += 1
            return Admission(False, 403, "address not allowed")
        try:
            path = urlsplit(target).path
        except ValueError:  # e.g. "//[x": an invalid IPv6 netloc
            stats.rejected_path += 1
            return Admission(False, 400, "bad request target")
        if not self._path_matches(path):
            stats.rejected_path += 1
            return Admission(False, 404, "not found")
        call_id = None
        if self.token is not None:
            token = extract_token(target, self.path) or _bearer(headers)
            check = verify_stream_token(token, self.token)
            if not check.ok and token is not None and _bearer(headers) not in (None, token):
                check = verify_stream_token(_bearer(headers), self.token)
            if not check.ok:
                stats.rejected_auth += 1
                return Admission(False, 401 if check.reason == "missing" else 403, check.reason)
            call_id = check.call_id
        if self.twilio_auth_token is not None and not self._twilio_signed(target, headers):
            stats.rejected_auth += 1
            return Admission(False, 403, "bad X-Twilio-Signature")
        if self._session_count >= self.limits.max_sessions:
            stats.rejected_limit += 1
            return Admission(False, 503, "too many streams")
        return Admission(True, call_id=call_id)

    def _twilio_signed(self, target: str, headers: Mapping[str, str]) -> bool:
        """Twilio signs the ``wss://`` URL it dialled (compat spec 7.6)."""
        from .signalwire import validate_request

        signature = headers.get("X-Twilio-Signature") or headers.get("x-twilio-signature")
        if not signature or self.twilio_auth_token is None:
            return False
        if self.public_url is not None:
            base = self.public_url
        else:
            host = headers.get("Host") or headers.get("host") or f"{self.host}:{self.port}"
            base = f"wss://{host}"
        return validate_request(base + target, {}, signature, self.twilio_auth_token)

    def address_allowed(self, peer: Any) -> bool:
        """Whether ``peer`` (``(host, port)``) may connect under ``allow_from``."""
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
        if self.cluster is not None:
            self.cluster._session_started(session)

    def _forget(self, session: StreamSession) -> None:
        self._session_count -= 1
        if self._by_stream.get(session.stream_id) is session:
            del self._by_stream[session.stream_id]
        if self._by_call.get(session.call_id) is session:
            del self._by_call[session.call_id]
        if self.cluster is not None:
            self.cluster._session_ended(session)
        # Callbacks like DroppedStream arrive after the socket closed: remember closed
        # sessions for RECENT_SECONDS (at most RECENT_MAX of them) to route those.
        now = self.loop.time()
        self._recent[session.stream_id] = (now, session)
        while self._recent:
            oldest, (closed_at, _) = next(iter(self._recent.items()))
            if len(self._recent) <= RECENT_MAX and now - closed_at <= RECENT_SECONDS:
                break
            del self._recent[oldest]

    def _count_dropped_frame(self) -> None:
        self.stats.dropped_frames += 1

    def _count_dropped_event(self, unknown: bool) -> None:
        self.stats.dropped_events += 1
        if unknown:
            self.stats.dropped_unknown_events += 1

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
    async def _run_handler(self, session: StreamSession, link: StreamLink) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        _logcontext.current_call.set((session.stream_id, session.call_id))  # this task's
        try:
            await self.handler(session)
        except asyncio.CancelledError:
            link.close(1001, "server shutting down")
            raise
        except Exception:
            self.stats.handler_errors += 1
            log.exception(
                "handler failed for stream %s (call %s)", session.stream_id, session.call_id
            )
            link.close(1011, "handler error")
        else:
            if not session.closed:
                link.close(1000, "handler finished")
        finally:
            self._tasks.discard(task)
            if session.closed:
                self._call_finished(link, session)
                session.release()

    def _call_finished(self, link: StreamLink, session: StreamSession) -> None:
        """Once both the transport has closed and the handler has returned (where the
        session is released): fold the stream's counters into the metrics' totals and
        log the call's last line (how it ended)."""
        self._finishing.discard(link)
        self._call_totals.add(link)
        stats = link.proto.stats
        with _logcontext.about(link):
            log.info(
                "call ended: stream %s call %s duration %.1fs frames in %d out %d "
                "dropped in %d out %d malformed %d late %d close code %s",
                session.stream_id,
                session.call_id,
                link.ended_at - link.started_at,
                stats.frames_in,
                stats.frames_out,
                session._dropped_frames,
                stats.dropped_outbound,
                stats.malformed,
                stats.late_outbound,
                session.close_code,
            )

    # ----------------------------------------------------------------- shutdown
    async def close(self, grace: float = 5.0) -> None:
        """Graceful shutdown: stop accepting, let sessions end within ``grace`` seconds,
        then close the rest with 1001 and cancel their handlers."""
        if self._closing:
            return
        self._closing = True
        listener = self._listener
        if listener is not None:
            await listener.stop_accepting()
        sessions = self.sessions
        if sessions and grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(s.wait_closed() for s in sessions))
        for link in list(self._links):
            link.close(1001, "server shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if listener is not None:
            await listener.close(self.limits.close_timeout + 0.5)
        for waiters in (*self._stream_waiters.values(), *self._call_waiters.values()):
            for future in waiters:
                if not future.done():
                    future.cancel()
        self._pacer.close()
        if self.cluster is not None:
            await self.cluster._detach(self)


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`MediaServer`, for :func:`serve` (typed)."""

    path: str | None
    token: str | None
    limits: Limits | None
    pacing: Pacing | None
    l16_byte_order: InboundByteOrder
    outbound_byte_order: ByteOrder
    outbound_format: AudioFormat | None
    provider: Provider
    allow_from: Sequence[str] | None
    record: bool
    twilio_auth_token: str | None
    public_url: str | None
    cluster: Cluster | None
    ssl: SSLContext | None
    reuse_port: bool
    worker: str | None


def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 8765,
    **options: Unpack[ServerOptions],
) -> MediaServer:
    """Create a listening media server: ``async with serve(handler, host, port) as server``
    (or ``await serve(...)``).

    Args:
        handler: ``async def handler(session)``, called once per stream after ``start``.
        host, port: where to listen; port 0 picks a free port (see ``server.port``).
        options: every keyword argument of :class:`MediaServer` (``path``, ``token``,
            ``limits``, ``pacing``, ``l16_byte_order``, ``outbound_byte_order``,
            ``outbound_format``, ``provider``, ``allow_from``, ``record``,
            ``twilio_auth_token``, ``public_url``, ``cluster``, ``ssl``, ``reuse_port``,
            ``worker``), documented there.

    Raises:
        ValidationError, TypeError: as :class:`MediaServer` does for bad options.
    """
    return MediaServer(handler, host, port, **options)
