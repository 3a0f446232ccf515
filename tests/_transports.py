"""Launch a media server over each transport: the built-in listener (``serve``),
Starlette under a real uvicorn, and ``aiohttp.web``, each on 127.0.0.1, port 0.

Shared by the behavioural tests that run over every transport (tests/test_transports.py,
tests/test_pipecat_session.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from vobiz_async.adapters.aiohttp import websocket_handler
from vobiz_async.adapters.starlette import websocket_endpoint
from vobiz_async.server import MediaServer, StreamSession, serve

__all__ = ["KINDS", "Handler", "Launch", "Running", "launcher"]

Handler = Callable[[StreamSession], Awaitable[None]]
KINDS = ["serve", "starlette", "aiohttp"]


@dataclass
class Running:
    """A media server reachable over one transport."""

    server: MediaServer
    url: str  # ws://127.0.0.1:PORT/media


class Launch(Protocol):
    def __call__(
        self, handler: Handler, **options: Any
    ) -> contextlib.AbstractAsyncContextManager[Running]: ...


@contextlib.asynccontextmanager
async def _uvicorn(app: Any) -> AsyncIterator[int]:
    """``app`` under a real uvicorn on 127.0.0.1, port 0; yields the bound port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # bounded: uvicorn binds within milliseconds
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def _aiohttp(app: web.Application) -> AsyncIterator[int]:
    """``app`` under an ``aiohttp.web`` runner on 127.0.0.1, port 0."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        yield server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


def launcher(kind: str) -> Launch:
    @contextlib.asynccontextmanager
    async def launch(handler: Handler, **options: Any) -> AsyncIterator[Running]:
        if kind == "serve":
            async with serve(handler, "127.0.0.1", 0, path="/media", **options) as server:
                yield Running(server, f"ws://127.0.0.1:{server.port}/media")
            return
        async with MediaServer(handler, path="/media", **options) as server:
            if kind == "starlette":
                endpoint = websocket_endpoint(server)
                app: Any = Starlette(
                    routes=[
                        WebSocketRoute("/media", endpoint),
                        WebSocketRoute("/media/{token}", endpoint),
                    ]
                )
                host = _uvicorn(app)
            else:
                app = web.Application()
                app.router.add_get("/media", websocket_handler(server))
                app.router.add_get("/media/{token}", websocket_handler(server))
                host = _aiohttp(app)
            async with host as port:
                try:
                    yield Running(server, f"ws://127.0.0.1:{port}/media")
                finally:
                    await server.close()  # sessions end with 1001 before the host stops

    return launch
