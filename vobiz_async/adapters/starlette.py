"""Media streams on a Starlette or FastAPI application (``vobiz-async[fastapi]``).

Mount a route::

    app.router.add_websocket_route("/media", websocket_endpoint(server))

or call :func:`handle` from your own endpoint::

    @app.websocket("/media")
    async def media(websocket: WebSocket) -> None:
        await handle(websocket, server)

``server`` is a :class:`~vobiz_async.server.MediaServer` made without a socket
(``async with MediaServer(handler, path="/media", token=...) as server:``, e.g. in the
application's lifespan); give it the route's ``path`` so a token in the last path
segment is found (mount ``/media/{token}`` too for that form). Everything
:func:`~vobiz_async.server.serve` does holds here: the upgrade is checked before it is
accepted (refused with the HTTP status where the ASGI server supports the
``websocket.http.response`` extension, as uvicorn does; else closed with 1008),
messages over ``Limits.max_message_bytes`` close with 1009, and the session's pacing,
checkpoints and clears run in the core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from ..server import MediaServer, StreamLink
from ._transport import QueuedTransport

__all__ = ["handle", "websocket_endpoint"]


class _StarletteTransport(QueuedTransport):
    """The session's transport over a Starlette :class:`WebSocket`."""

    def __init__(self, server: MediaServer, websocket: WebSocket) -> None:
        super().__init__(server)
        self.websocket = websocket
        self.reader: asyncio.Task[int | None] | None = None

    async def _send(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def _close(self, code: int, reason: str) -> None:
        await self.websocket.close(code, reason)

    def _abort(self) -> None:
        # ASGI has no abort: end the read loop; the endpoint returns and the
        # ASGI server drops the connection.
        if self.reader is not None:
            self.reader.cancel()


def _target(websocket: WebSocket) -> str:
    """The request target (path and query) as the client sent it."""
    scope = websocket.scope
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else str(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


async def _read(websocket: WebSocket, link: StreamLink, transport: QueuedTransport) -> int | None:
    """Feed messages to ``link`` until the peer disconnects; returns its close code."""
    limit = transport.limits.max_message_bytes
    while True:
        message = await websocket.receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            code = message.get("code")
            return int(code) if code is not None else None
        if kind != "websocket.receive":
            continue
        text = message.get("text")
        if text is not None:
            if len(text) > limit // 4 and len(text.encode()) > limit:
                transport.oversized()
                continue
            link.text_received(text)
            continue
        data = message.get("bytes")
        if data is not None:
            if len(data) > limit:
                transport.oversized()
                continue
            link.binary_received(data)


async def handle(websocket: WebSocket, server: MediaServer) -> None:
    """Carry one media stream on ``websocket`` (not yet accepted) until it ends.

    Args:
        websocket: the incoming Starlette/FastAPI WebSocket, before ``accept()``.
        server: the :class:`MediaServer` whose handler, limits and registry apply.
    """
    headers: Mapping[str, str] = websocket.headers
    client = websocket.client
    # Unknown peer: ("", 0) fails an allow_from check rather than skipping it.
    peer = (client.host, client.port) if client is not None else ("", 0)
    target = _target(websocket)
    admission = server.admit(target, headers, peer)
    if not admission.ok:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(
                PlainTextResponse(f"{admission.reason}\n", status_code=admission.status)
            )
        else:
            await websocket.close(code=1008, reason=admission.reason)
        return
    await websocket.accept()
    transport = _StarletteTransport(server, websocket)
    link = StreamLink(
        server,
        transport,
        admission,
        request_path=target,
        request_headers=headers,
    )
    transport.link = link
    transport.reader = reader = asyncio.ensure_future(_read(websocket, link, transport))
    code: int | None = None
    try:
        code = await reader
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the endpoint itself is cancelled (the ASGI server stops)
        # aborted by the transport (close handshake or write stalled past its limit)
    except Exception:
        code = 1006  # the ASGI server's "connection gone" error
    finally:
        if not reader.done():
            reader.cancel()
        transport.finished(code)
        await transport.wait_writer()


def websocket_endpoint(server: MediaServer) -> Callable[[WebSocket], Awaitable[None]]:
    """An endpoint for ``app.router.add_websocket_route(path, ...)`` or a
    ``WebSocketRoute`` that carries media streams for ``server``.

    Args:
        server: the :class:`MediaServer` (made without a socket) to serve.

    Returns:
        ``async def endpoint(websocket)``.
    """

    async def endpoint(websocket: WebSocket) -> None:
        await handle(websocket, server)

    return endpoint
