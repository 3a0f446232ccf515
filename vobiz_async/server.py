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
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from ._config import Limits, Pacing
from .codec import AudioFormat, ByteOrder
from .errors import ValidationError
from .events import MalformedFrame, StreamStarted
from .protocol import InboundByteOrder, StreamProtocol
from .session import Pacer, SessionStats, StreamSession
from .tokens import TokenCheck, extract_token, verify_stream_token

if TYPE_CHECKING:
    from .cluster import Cluster

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


@dataclass(slots=True)
class ServerStats:
    """Server-wide counters (everything refused or dropped is counted)."""

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
            lead_ms=server.pacing.lead_ms,
        )
        self.transport: asyncio.Transport | None = None
        self.session: StreamSession | None = None
        self.request_path = ""
        self.request_headers: Headers = Headers()
        self.write_paused = False
        self._drain: asyncio.Event | None = None
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self._rx: bytes = b""
        self._slow_path = False
        self._signed_call: str | None = None
        self._last_frame = self.loop.time()
        self._timers: list[asyncio.TimerHandle] = []
        self._task: asyncio.Task[None] | None = None
        self._lost = False

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = tcp = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        self.server._connections.add(self)
        self.server.stats.connections += 1
        self.server.stats.active_connections += 1
        if not self.server._address_allowed(tcp.get_extra_info("peername")):
            self.server.stats.rejected_ip += 1
            self._close_transport()
            return
        self._later(10.0, self._handshake_deadline)

    def data_received(self, data: bytes) -> None:
        self._last_frame = self.loop.time()
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
            self.server.stats.handshake_failures += 1
            self._close_transport()

    def _receive_fast(self, data: bytes) -> None:
        """Parse whole, masked, unfragmented text frames directly (the media hot path).

        Everything else (control frames, fragments, binary) is handed to websockets'
        parser frame by frame, so it keeps all protocol state; its reader is always at a
        frame boundary when it gets one. Unmasked or RSV-flagged client frames fail the
        connection (1002), as RFC 6455 requires.
        """
        buf = self._rx + data if self._rx else data
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
                self._feed(buf[pos:])
                self._rx = b""
                return
            if length > limit:
                self.ws.fail(1009, f"frame over {limit} bytes")
                self._rx = b""
                return
            end = head + 4 + length
            if end > size:
                break
            if b0 == 0x81 and self.ws.current_size is None:  # FIN + TEXT, not mid-message
                self._on_message(apply_mask(buf[head + 4 : end], buf[head : head + 4]), False)
            else:
                self._feed(buf[pos:end])
                if self.ws.state is not WsState.OPEN:
                    self._rx = b""
                    return
            pos = end
        self._rx = buf[pos:] if pos < size else b""

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.server._connections.discard(self)
        if not self.server._connections:
            self.server._all_closed.set()
        self.server.stats.active_connections -= 1
        if self._drain is not None:
            self._drain.set()
        session = self.session
        if session is not None:
            self.server._forget(session)
            session.connection_closed(self.ws.close_code)
        else:
            self.proto.connection_closed()
        self.server.stats.malformed_frames += self.proto.stats.malformed
        sent = self.ws.close_sent
        if sent is not None and sent.code == 1009:  # websockets refused a message over max_size
            self.server.stats.oversized_messages += 1

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._drain is None:
            self._drain = asyncio.Event()
        self._drain.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None:
            self._drain.set()
        if self.session is not None:
            self.session.writable()

    # ---------------------------------------------------------------- handshake
    def _on_request(self, request: Request) -> None:
        server = self.server
        self.request_path = request.path
        self.request_headers = request.headers
        log.debug("upgrade %s headers=%s", request.path, list(request.headers.keys()))
        path = urlsplit(request.path).path
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
        if server.stats.active_connections > server.limits.max_sessions:
            server.stats.rejected_limit += 1
            self.ws.send_response(self.ws.reject(503, "Too many streams\n"))
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code == 101 and self.limits.start_timeout is not None:
            self._later(self.limits.start_timeout, self._start_deadline)
        if self.limits.idle_timeout is not None:
            self._later(self.limits.idle_timeout, self._idle_check)

    # ------------------------------------------------------------------- frames
    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                self._fragment_binary = opcode is Opcode.BINARY
                return
            self._on_message(frame.data, opcode is Opcode.BINARY)
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._on_message(data, self._fragment_binary)

    def _on_message(self, data: bytes | bytearray | memoryview, binary: bool) -> None:
        proto = self.proto
        now = self.loop.time()
        if binary:
            events = proto.receive(bytes(data), now=now)
        else:
            events = proto.receive_text(data, now=now)
        session = self.session
        if session is not None:
            for event in events:
                if type(event) is MalformedFrame:
                    assert isinstance(event, MalformedFrame)
                    log.debug("malformed frame (%s): %s", event.reason, event.detail)
            old_stream_id = session.stream_id
            session.events_received(events)
            if session.stream_id != old_stream_id:
                self.server._rebind(session, old_stream_id)
            return
        for event in events:
            if type(event) is StreamStarted:
                assert isinstance(event, StreamStarted)
                session = self._on_start(event)
                if session is None:
                    return
            elif type(event) is MalformedFrame:
                assert isinstance(event, MalformedFrame)
                log.debug("malformed frame (%s): %s", event.reason, event.detail)
            elif session is None:
                # A well-formed event before any start: no session to give it to.
                self.server.stats.events_before_start += 1

    def _on_start(self, started: StreamStarted) -> StreamSession | None:
        if self._signed_call is not None and started.call_id != self._signed_call:
            log.warning(
                "signed URL for call %s used by call %s", self._signed_call, started.call_id
            )
            self.server.stats.rejected_auth += 1
            self.close(1008, "token not valid for this call")
            return None
        server = self.server
        session = StreamSession(
            self,
            self.proto,
            started,
            pacer=server._pacer,
            limits=self.limits,
            pacing=self.pacing,
            request_path=self.request_path,
            request_headers=self.request_headers,
            on_dropped_frame=server._count_dropped_frame,
        )
        self.session = session
        server._register(session)
        self._task = self.loop.create_task(server._run_handler(session, self))
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
            self._later(self.limits.close_timeout, self._close_transport)

    async def drained(self) -> None:
        """Wait until the transport's write buffer is below its limit."""
        if self.write_paused and self._drain is not None and not self._lost:
            await self._drain.wait()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a close handshake; the transport is dropped if the peer stalls."""
        if self.ws.state is WsState.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        self._later(self.limits.close_timeout, self._close_transport)

    def expect_peer_close(self) -> None:
        """After our ``stop``, Vobiz closes the socket; close it ourselves if it doesn't."""
        self._later(self.limits.close_timeout, lambda: self.close(1000, "stopped"))

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # ------------------------------------------------------------------- timers
    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        if not self._lost:
            self._timers.append(self.loop.call_later(delay, callback))

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
            self._later(idle - quiet, self._idle_check)


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
        cluster: Cluster | None = None,
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
        self.stats = ServerStats()
        self.loop = asyncio.get_running_loop()
        self._pacer = Pacer(self.loop)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._by_stream: dict[str, StreamSession] = {}
        self._by_call: dict[str, StreamSession] = {}
        self._stream_waiters: dict[str, list[asyncio.Future[StreamSession]]] = {}
        self._call_waiters: dict[str, list[asyncio.Future[StreamSession]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent: dict[str, tuple[float, StreamSession]] = {}
        self._all_closed = asyncio.Event()
        self._closing = False
        self.cluster = cluster

    async def start(self) -> MediaServer:
        """Bind and start accepting connections."""
        if self.cluster is not None:  # first: a Redis failure leaves nothing bound
            await self.cluster._attach(self)
        self._server = await self.loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening on %s", self.url)
        return self

    def __await__(self) -> Generator[Any, None, MediaServer]:
        return self.start().__await__()

    async def __aenter__(self) -> MediaServer:
        if self._server is None:
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
    def _register(self, session: StreamSession) -> None:
        self.stats.sessions += 1
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

    def _rebind(self, session: StreamSession, old_stream_id: str) -> None:
        """A second ``start`` on one socket gave the session a new stream id: index it
        under the new one (and tell the cluster, if any)."""
        if self._by_stream.get(old_stream_id) is session:
            del self._by_stream[old_stream_id]
        self._register(session)
        self.stats.sessions -= 1

    def _count_dropped_frame(self) -> None:
        self.stats.dropped_frames += 1

    def _forget(self, session: StreamSession) -> None:
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

        Works whether Vobiz's ``start`` arrived before or after the REST response.

        Raises:
            TimeoutError: no such stream connected within ``timeout``.
        """
        return await self._wait(self._by_stream, self._stream_waiters, stream_id, timeout)

    async def wait_for_call(self, call_id: str, *, timeout: float | None = 10.0) -> StreamSession:
        """The (latest) session of a call, waiting for its ``start``."""
        return await self._wait(self._by_call, self._call_waiters, call_id, timeout)

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
    async def _run_handler(self, session: StreamSession, conn: _Connection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(session)
        except asyncio.CancelledError:
            conn.close(1001, "server shutting down")
            raise
        except Exception:
            self.stats.handler_errors += 1
            log.exception(
                "handler failed for stream %s (call %s)", session.stream_id, session.call_id
            )
            conn.close(1011, "handler error")
        else:
            if not session.closed:
                conn.close(1000, "handler finished")
        finally:
            self._tasks.discard(task)

    # ----------------------------------------------------------------- shutdown
    async def close(self, grace: float = 5.0) -> None:
        """Graceful shutdown: stop accepting, let sessions end within ``grace`` seconds,
        then close the rest with 1001 and cancel their handlers."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
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
        if self._server is not None:
            await self._server.wait_closed()
        for waiters in (*self._stream_waiters.values(), *self._call_waiters.values()):
            for future in waiters:
                if not future.done():
                    future.cancel()
        self._pacer.close()


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
    cluster: Cluster | None = None,
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
        cluster: a :class:`~vobiz_async.cluster.Cluster` to register every session in,
            so any process can find and control it (``vobiz-async[cluster]``).
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
        cluster=cluster,
    )
