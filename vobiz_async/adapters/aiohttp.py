"""Media streams on an ``aiohttp.web`` application (aiohttp is already a dependency).

::

    app.router.add_get("/media", websocket_handler(server))

``server`` is a :class:`~vobiz_async.server.MediaServer` made without a socket
(``async with MediaServer(handler, path="/media", token=...) as server:``, e.g. in a
``cleanup_ctx``); give it the route's ``path`` so a token in the last path segment is
found (add ``/media/{token}`` too for that form). :func:`vobiz_async.app.create_app`
builds a whole one-port application around it. Everything
:func:`~vobiz_async.server.serve` does holds here: the upgrade is checked before it is
accepted (refused with the plain HTTP status), messages over
``Limits.max_message_bytes`` close with 1009, and the session's pacing, checkpoints
and clears run in the core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from ..server import MediaServer, StreamLink
from ._transport import QueuedTransport

__all__ = ["websocket_handler"]


class _AiohttpTransport(QueuedTransport):
    """The session's transport over an aiohttp :class:`web.WebSocketResponse`."""

    def __init__(
        self, server: MediaServer, request: web.Request, ws: web.WebSocketResponse
    ) -> None:
        super().__init__(server)
        self.request = request
        self.ws = ws

    async def _send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode()[:123])

    def _abort(self) -> None:
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


async def _read(
    ws: web.WebSocketResponse, link: StreamLink, transport: QueuedTransport
) -> int | None:
    """Feed messages to ``link`` until the WebSocket closes; returns the peer's code."""
    peer_code: int | None = None
    while True:
        msg = await ws.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT:
            link.text_received(msg.data)
        elif kind is WSMsgType.BINARY:
            link.binary_received(msg.data)
        elif kind is WSMsgType.CLOSE:
            peer_code = int(msg.data) if msg.data is not None else None
        elif kind is WSMsgType.ERROR:
            error = msg.data
            if isinstance(error, WebSocketError) and error.code == 1009:
                transport.close_code_sent = 1009  # aiohttp sent it already
                transport.server.stats.oversized_messages += 1
            return peer_code if peer_code is not None else 1006
        elif kind is WSMsgType.CLOSED:
            return peer_code


def websocket_handler(
    server: MediaServer,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler for ``app.router.add_get(path, ...)`` that carries media streams.

    Args:
        server: the :class:`MediaServer` (made without a socket) to serve.

    Returns:
        ``async def handler(request)``: refuses a bad upgrade with a plain HTTP
        response (401/403/404/503, from :meth:`MediaServer.admit`), else runs the
        stream to its end.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        transport_info = request.transport
        peer = transport_info.get_extra_info("peername") if transport_info is not None else None
        if peer is None:  # unknown: ("", 0) fails an allow_from check rather than skipping it
            peer = ("", 0)
        admission = server.admit(request.raw_path, request.headers, peer)
        if not admission.ok:
            return web.Response(status=admission.status, text=f"{admission.reason}\n")
        limits = server.limits
        ws = web.WebSocketResponse(
            max_msg_size=limits.max_message_bytes,
            timeout=limits.close_timeout,
            compress=False,
        )
        await ws.prepare(request)
        transport = _AiohttpTransport(server, request, ws)
        link = StreamLink(
            server,
            transport,
            admission,
            request_path=request.raw_path,
            request_headers=request.headers,
        )
        transport.link = link
        code: int | None = None
        try:
            code = await _read(ws, link, transport)
        except (asyncio.CancelledError, Exception):
            code = 1006
            raise
        finally:
            transport.finished(code)
            await transport.wait_writer()
        return ws

    return handler
