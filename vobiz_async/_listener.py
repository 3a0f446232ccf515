"""The built-in transport: the server's own listening sockets and TCP connections.

websockets' Sans-I/O ``ServerProtocol`` does the handshake and the rare frames, driven
straight from an ``asyncio.Protocol``; whole text frames are cut by
:mod:`vobiz_async._wsframes` inside ``data_received``, with no task, future or
``recv()`` per frame, and handed to the stream's :class:`~vobiz_async.server.StreamLink`.
This module owns what is TCP's: the accept loop (file-descriptor exhaustion), pending
handshakes and their deadline, backpressure (stop reading while our write buffer is
full), write stalls, TLS (``MediaServer(ssl=...)``), ``SO_REUSEPORT`` for several
worker processes on one port, and the plain HTTP answers load balancers probe with
(``/healthz``, ``/metrics``). Everything else is the link's and the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import json
import logging
import socket
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from ._timers import KeyedTimers
from ._wsframes import FrameSplitter, Piece, text_frame

if TYPE_CHECKING:
    from .server import MediaServer, StreamLink

__all__: list[str] = []

log = logging.getLogger("vobiz_async.server")
# websockets' own handshake and close lines (INFO per connection): a child logger, so an
# operator can quiet them without quieting the server.
ws_log = logging.getLogger("vobiz_async.server.websocket")
_RESOURCE_LOG_INTERVAL = 10.0  # at most one "out of file descriptors" log line per interval
_ACCEPT_RETRY_DELAY = 0.5  # pause accepting this long after the fd limit was hit
_BACKLOG = 128
_ACCEPT_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Listener:
    """The server's own sockets: the accept loop and the TCP connections on them.

    Running out of file descriptors is handled here: counted (``stats.accept_errors``),
    logged once per interval, and retried after a short pause, where asyncio's own
    ``create_server`` logs a traceback per failed accept and piles up retry timers.
    Connections that have not become streams yet are bounded by
    ``Limits.max_pending_handshakes``: past it, the one idle the longest is dropped, so
    handshake floods cannot keep a real call out.
    """

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self.loop = server.loop
        self.connections: set[_Connection] = set()
        self.pending: dict[_Connection, None] = {}  # not yet streams, oldest first
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._all_closed = asyncio.Event()
        self._last_resource_log = float("-inf")
        self._closing = False
        self._tls_handshakes: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Bind every address of ``host`` on one port and accept; returns the port.

        Args:
            host, port: where to listen (port 0: a free port, the same on every address).
            reuse_port: set ``SO_REUSEPORT``, so other processes may listen on the port
                too and the kernel spreads new connections over them (the workers of
                ``vobiz-async serve --workers N``).

        Raises:
            OSError: the address cannot be bound.
        """
        infos = await self.loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address[0], port, *address[2:]))
                sock.listen(_BACKLOG)
                sock.setblocking(False)
                port = sock.getsockname()[1]  # port 0: every address on the one port
        except OSError:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
            raise
        self._accepting = [self.loop.create_task(self._accept(s)) for s in self._sockets]
        return port

    async def _accept(self, sock: socket.socket) -> None:
        loop = self.loop
        stats = self.server.stats
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRNOS:
                    if self._closing:
                        return
                    raise
                stats.accept_errors += 1
                now = loop.time()
                if now - self._last_resource_log >= _RESOURCE_LOG_INTERVAL:
                    self._last_resource_log = now
                    log.error(
                        "cannot accept connections: %s (%d so far; lower "
                        "Limits.max_sessions or raise the fd limit)",
                        exc.strerror,
                        stats.accept_errors,
                    )
                await asyncio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            if self.server.ssl is not None:
                self._start_tls(conn)
                continue
            try:
                await loop.connect_accepted_socket(lambda: _Connection(self), conn)
            except OSError:
                conn.close()

    def _start_tls(self, conn: socket.socket) -> None:
        """Run the TLS handshake of an accepted socket in its own task, so a slow client
        cannot hold up the accept loop. Handshakes in flight count against
        ``Limits.max_pending_handshakes`` (past it the new socket is closed and counted
        in ``stats.rejected_limit``) and are cut at ``Limits.handshake_timeout``
        (``stats.handshake_failures``)."""
        limits = self.server.limits
        if len(self._tls_handshakes) + len(self.pending) >= limits.max_pending_handshakes:
            self.server.stats.rejected_limit += 1
            conn.close()
            return
        task = self.loop.create_task(self._tls_connect(conn))
        self._tls_handshakes.add(task)
        task.add_done_callback(self._tls_handshakes.discard)

    async def _tls_connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: _Connection(self),
                conn,
                ssl=self.server.ssl,
                ssl_handshake_timeout=self.server.limits.handshake_timeout,
            )
        except OSError:
            # A failed or timed-out TLS handshake (bad client, plain HTTP on a TLS port).
            self.server.stats.handshake_failures += 1
            conn.close()

    def admit_pending(self, conn: _Connection) -> None:
        """Track a connection that is not yet a stream (see the class docstring)."""
        pending = self.pending
        limit = self.server.limits.max_pending_handshakes
        while len(pending) >= limit and pending:
            victim = min(pending, key=lambda c: c._last_rx)
            del pending[victim]
            self.server.stats.evicted_handshakes += 1
            victim.abort()
        if limit > 0:
            pending[conn] = None
        else:
            self.server.stats.rejected_limit += 1
            conn.abort()

    def connection_lost(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        self.pending.pop(conn, None)
        self.server.stats.active_connections -= 1
        if not self.connections:
            self._all_closed.set()

    async def stop_accepting(self) -> None:
        """Close the listening sockets; open connections go on."""
        self._closing = True
        for task in (*self._accepting, *self._tls_handshakes):
            task.cancel()
        for sock in self._sockets:
            sock.close()
        if self._accepting or self._tls_handshakes:
            await asyncio.gather(*self._accepting, *self._tls_handshakes, return_exceptions=True)

    async def close(self, timeout: float) -> None:
        """Close every connection with 1001, wait up to ``timeout`` for the close
        handshakes, then drop what is left."""
        for conn in list(self.connections):
            conn.close(1001, "server shutting down")
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._all_closed.wait()
        for conn in list(self.connections):
            conn.abort()


class _Connection(asyncio.Protocol):
    """One TCP connection: websockets' Sans-I/O handshake, our frame splitter, a link.

    It is the :class:`~vobiz_async.session.Transport` of its stream.
    """

    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.server = server = listener.server
        self.loop = server.loop
        self.limits = server.limits
        self.ws = ServerProtocol(max_size=server.limits.max_message_bytes, logger=ws_log)
        self.splitter = FrameSplitter(server.limits.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.link: StreamLink | None = None
        self.write_paused = False
        self._fragments: list[bytes] = []
        self._fragment_binary = False
        self._last_rx = self.loop.time()
        self._timers = KeyedTimers(self.loop)
        self._lost = False
        self.pending = True  # counted among pending handshakes until its start

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = tcp = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        stats = self.server.stats
        self.listener.connections.add(self)
        stats.connections += 1
        stats.active_connections += 1
        if not self.server.address_allowed(tcp.get_extra_info("peername")):
            stats.rejected_ip += 1
            self._close_transport()
            return
        self.listener.admit_pending(self)
        self._timers.later("handshake", self.limits.handshake_timeout, self._handshake_deadline)

    def data_received(self, data: bytes) -> None:
        self._last_rx = now = self.loop.time()
        if self.ws.state is WsState.OPEN:
            link = self.link
            protocol_output = False  # whether websockets' protocol may have bytes to send
            for piece, payload in self.splitter.feed(data):
                if piece is Piece.TEXT:
                    if link is not None:
                        link.text_received(payload, now)
                    if self.ws.state is WsState.OPEN:
                        continue
                    protocol_output = True  # the link closed the connection
                    break
                protocol_output = True
                if piece is Piece.TOO_BIG:
                    self.ws.fail(1009, f"frame over {self.limits.max_message_bytes} bytes")
                else:  # RAW or REST: websockets' parser keeps all protocol state
                    self._feed(payload)
                if self.ws.state is not WsState.OPEN:
                    break
            if self.pending and link is not None and link.session is not None:
                self.pending = False  # a stream now, not a pending handshake
                self.listener.pending.pop(self, None)
            if not protocol_output:
                return  # media text frames only: we wrote what we had to say already
        else:
            self._feed(data)
        self._flush()

    def _feed(self, data: bytes) -> None:
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
            self._timers.later("close", self.limits.close_timeout, self._close_transport)

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        link = self.link
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                self._fragment_binary = opcode is Opcode.BINARY
                return
            data = bytes(frame.data)
            binary = opcode is Opcode.BINARY
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data = b"".join(self._fragments)
            self._fragments = []
            binary = self._fragment_binary
        else:
            return  # ping/pong/close: websockets answers them
        if link is not None:
            if binary:
                link.binary_received(data)
            else:
                link.text_received(data)

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.ws.state is not WsState.CLOSED:
            # No EOF came first (TLS ends without one): let websockets settle the close
            # code (the peer's close frame if it sent one, else 1006).
            with contextlib.suppress(EOFError):
                self.ws.receive_eof()
        self._timers.close()
        self.listener.connection_lost(self)
        if self.link is not None:
            self.link.closed(self.ws.close_code)
        sent = self.ws.close_sent
        if sent is not None and sent.code == 1009:  # a message over max_message_bytes
            self.server.stats.oversized_messages += 1

    def pause_writing(self) -> None:
        """The write buffer passed ``write_buffer_bytes``: stop reading (a peer that
        never reads must not make us queue pongs or replies for ever) and start the
        ``write_stall_timeout`` clock."""
        self.write_paused = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        stall = self.limits.write_stall_timeout
        if stall is not None:
            self._timers.later("stall", stall, self._write_stalled, replace=True)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._timers.cancel("stall")
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        if self.link is not None:
            self.link.writable()

    def _write_stalled(self) -> None:
        if self.write_paused and not self._lost:
            self.server.stats.write_stalls += 1
            log.info("dropping a connection whose peer stopped reading")
            self._close_transport()

    # ---------------------------------------------------------------- handshake
    def _on_request(self, request: Request) -> None:
        from .server import StreamLink  # the link is the server's room; imported late

        server = self.server
        upgrade = request.headers.get("Upgrade", "").lower()
        if "websocket" not in upgrade and self._answer_http(request):
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        admission = server.admit(request.path, request.headers, peer)
        if not admission.ok:
            body = f"{admission.reason}\n"
            self.ws.send_response(self.ws.reject(admission.status, body))
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code == 101:
            self._timers.cancel("handshake")
            self.link = StreamLink(
                server,
                self,
                admission,
                request_path=request.path,
                request_headers=request.headers,
            )

    def _answer_http(self, request: Request) -> bool:
        """Answer a plain HTTP GET (no ``Upgrade: websocket``) ourselves, then close:
        ``/healthz`` 200 with the server's health as JSON (503 while draining),
        ``/metrics`` the Prometheus text (404 without prometheus-client), any other path
        outside the stream path 404. Returns False for the stream path itself, which
        websockets answers ``426 Upgrade Required`` (clearer to someone pointing a
        browser at the stream URL). Counted in ``stats.probes``."""
        server = self.server
        try:
            path = urlsplit(request.path).path
        except ValueError:
            path = ""
        if path not in ("/healthz", "/metrics") and server._path_matches(path):
            return False
        server.stats.probes += 1
        self._timers.cancel("handshake")
        self.listener.pending.pop(self, None)  # answered: no longer a pending handshake
        self.pending = False
        body: bytes | None
        content_type = "text/plain; charset=utf-8"
        if path == "/healthz":
            health = server.health()
            status = 200 if health["status"] == "ok" else 503
            body = json.dumps(health).encode()
            content_type = "application/json"
        elif path == "/metrics":
            body = server.metrics()
            status = 200 if body is not None else 404
            if body is None:
                body = b"metrics need prometheus-client: pip install 'vobiz-async[metrics]'\n"
            else:
                from ._metrics import CONTENT_TYPE

                content_type = CONTENT_TYPE
        else:
            status, body = 404, b"not found\n"
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", content_type),
                ("Cache-Control", "no-store"),
            ]
        )
        self.ws.send_response(Response(status, reason, headers, body))
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self._timers.later("close", self.limits.close_timeout, self._close_transport)
        return True

    # ------------------------------------------------------------------ writing
    def send_text(self, text: str) -> None:
        """Write one text frame now. Every frame of the stream goes through here."""
        if self.ws.state is not WsState.OPEN or self._lost:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        # The frame is built here rather than by websockets' protocol object: no
        # extension is ever negotiated and we never fragment, so its send_text would
        # only add a frame object, a list and a second write call per frame.
        transport.write(text_frame(text.encode()))

    def send_texts(self, texts: list[str]) -> None:
        """Write several text frames with one ``write`` (one syscall)."""
        if self.ws.state is not WsState.OPEN or self._lost:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(b"".join([text_frame(text.encode()) for text in texts]))

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.ws.data_to_send()  # discard: the socket is gone or going
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.is_closing():
                pass
            elif transport.can_write_eof():
                transport.write_eof()
            else:  # TLS cannot half-close: close (after the buffered writes, close_notify)
                transport.close()
        if self.ws.close_expected():
            self._timers.later("close", self.limits.close_timeout, self._close_transport)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start a close handshake; the transport is dropped if the peer stalls."""
        if self.ws.state is WsState.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        self._timers.later("close", self.limits.close_timeout, self._close_transport)

    def expect_peer_close(self) -> None:
        """After our ``stop``, Vobiz closes the socket; close it ourselves if it doesn't.

        One timer per connection however many ``stop`` frames arrive."""
        self._timers.later("stop", self.limits.close_timeout, lambda: self.close(1000, "stopped"))

    def abort(self) -> None:
        """Drop the TCP connection at once (no close handshake)."""
        self._close_transport()

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # ------------------------------------------------------------------- timers
    def _handshake_deadline(self) -> None:
        if self.ws.state is WsState.CONNECTING:
            self.server.stats.handshake_failures += 1
            self._close_transport()
