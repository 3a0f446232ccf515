"""A one-port ``aiohttp.web`` application: answer URL, status callbacks and media.

Vobiz fetches the answer URL when a call comes in (spec 3.2), dials the ``<Stream>``
URL it returns (spec 4), and posts status callbacks (spec 5). :func:`create_app`
serves all three on one port, behind one TLS terminator and load balancer::

    app = create_app(handler, token=SECRET, auth_token=VOBIZ_AUTH_TOKEN,
                     public_url="https://agent.example.com")
    web.run_app(app, port=8080)

The media server's lifecycle is the application's: it opens on start-up, closes every
stream with 1001 (after ``shutdown_grace`` seconds) on shutdown, and is reachable as
``app[MEDIA].server`` while the application runs.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from ._config import Limits, Pacing
from .adapters.aiohttp import websocket_handler
from .callbacks import CallbackHandler, OnEvent, callback_handler
from .errors import ValidationError
from .protocol import InboundByteOrder
from .server import Handler, MediaServer
from .tokens import sign_stream_url
from .xml import ResponseBuilder

__all__ = ["MEDIA", "AnswerXml", "AppMedia", "create_app", "default_answer_xml"]

AnswerXml = Callable[[Mapping[str, str], str], str | Awaitable[str]]
"""``answer_xml(fields, media_url)``: the call's answer-URL form fields and its (signed)
media URL in, the answer document out (sync or async)."""


@dataclass
class AppMedia:
    """The one-port application's media side (``app[MEDIA]``).

    Attributes:
        answers: answer-URL requests answered with XML.
        refused_answers: answer-URL requests refused (no ``CallUUID`` to sign for).
    """

    _server: MediaServer | None = None
    _callbacks: CallbackHandler | None = None
    _media: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
    answers: int = 0
    refused_answers: int = 0

    @property
    def server(self) -> MediaServer:
        """The running :class:`MediaServer` (sessions, binding, stats).

        Raises:
            RuntimeError: the application has not started (or has stopped).
        """
        if self._server is None:
            raise RuntimeError("the application is not running")
        return self._server

    @property
    def callbacks(self) -> CallbackHandler | None:
        """The status-callback handler while the application runs (None when off)."""
        return self._callbacks


MEDIA = web.AppKey("vobiz_async_media", AppMedia)
"""``app[MEDIA]``: the :class:`AppMedia` of an application from :func:`create_app`."""


def default_answer_xml(media_url: str, status_callback_url: str | None) -> str:
    """A bidirectional ``<Stream keepCallAlive="true">`` to ``media_url``, then ``<Hangup/>``
    (spec 3.1, 3.2): the call lasts as long as the stream.

    Args:
        media_url: the (signed) ``ws://``/``wss://`` URL Vobiz dials.
        status_callback_url: where Vobiz posts stream status callbacks, or None.
    """
    return (
        ResponseBuilder()
        .stream(
            media_url,
            bidirectional=True,
            keep_call_alive=True,
            status_callback_url=status_callback_url,
        )
        .hangup()
        .to_xml()
    )


def _public_bases(public_url: str | None) -> tuple[str | None, str | None]:
    """``(https://host, wss://host)`` from a public ``http(s)://`` or ``ws(s)://`` URL."""
    if public_url is None:
        return None, None
    base = public_url.rstrip("/")
    scheme, sep, rest = base.partition("://")
    if not sep or scheme not in ("http", "https", "ws", "wss") or not rest:
        raise ValidationError("public_url", "must be http(s):// or ws(s)://host[:port]")
    secure = scheme in ("https", "wss")
    return f"{'https' if secure else 'http'}://{rest}", f"{'wss' if secure else 'ws'}://{rest}"


def create_app(
    handler: Handler,
    *,
    answer_xml: AnswerXml | None = None,
    callbacks: OnEvent | bool | None = None,
    media_path: str = "/media",
    answer_path: str = "/answer",
    callbacks_path: str = "/vobiz/stream-status",
    token: str | None = None,
    auth_token: str | None = None,
    public_url: str | None = None,
    limits: Limits | None = None,
    pacing: Pacing | None = None,
    record: bool = False,
    l16_byte_order: InboundByteOrder = "little",
    allow_from: Sequence[str] | None = None,
    shutdown_grace: float = 5.0,
) -> web.Application:
    """A ready ``aiohttp.web`` application for a voice agent, on one port.

    Routes: ``answer_path`` (POST or GET; the answer document), ``callbacks_path``
    (status callbacks, unless ``callbacks=False``), ``media_path`` and
    ``media_path/{token}`` (the media WebSocket, :mod:`vobiz_async.adapters.aiohttp`).

    Args:
        handler: ``async def handler(session)``, once per stream after ``start``.
        answer_xml: ``answer_xml(fields, media_url)`` returning the answer document;
            default :func:`default_answer_xml`. ``media_url`` is signed for the call's
            ``CallUUID`` when ``token`` is set.
        callbacks: None (default): the callback endpoint routes each callback to its
            session (``session.status_callbacks``); a function: also called with each
            one; False: no endpoint and no ``statusCallbackUrl``.
        media_path, answer_path, callbacks_path: the routes.
        token: the media server's secret; the answer URL then hands out signed
            per-call media URLs, and other upgrades are refused (401/403).
        auth_token: the Vobiz Auth Token; callbacks must then carry a valid signature
            (spec 5.4), else 401/403.
        public_url: the public ``https://host[:port]`` Vobiz reaches (behind a TLS
            proxy); default: the scheme and ``Host`` of each answer request.
        limits, pacing, record, l16_byte_order, allow_from: as for
            :class:`~vobiz_async.server.MediaServer`.
        shutdown_grace: seconds streams get to end on shutdown before 1001.

    Raises:
        ValidationError: a bad ``public_url`` or path, or an empty ``token``.
    """
    if token is not None and not token:
        raise ValidationError("token", "must not be empty")
    for name, path in (
        ("media_path", media_path),
        ("answer_path", answer_path),
        ("callbacks_path", callbacks_path),
    ):
        if not path.startswith("/") or path == "/":
            raise ValidationError(name, "must be a path below /, like /media")
    http_base, ws_base = _public_bases(public_url)
    media_path = "/" + media_path.strip("/")
    on_event = callbacks if callable(callbacks) else None
    callbacks_on = callbacks is not False
    state = AppMedia()
    app = web.Application()
    app[MEDIA] = state

    async def media_lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with MediaServer(
            handler,
            path=media_path,
            token=token,
            limits=limits,
            pacing=pacing,
            record=record,
            l16_byte_order=l16_byte_order,
            allow_from=allow_from,
            public_url=ws_base,
        ) as server:
            state._server = server
            state._media = websocket_handler(server)
            if callbacks_on:
                state._callbacks = callback_handler(on_event, auth_token=auth_token, server=server)
            try:
                yield
            finally:
                if state._callbacks is not None:
                    await state._callbacks.close()
                await server.close(shutdown_grace)
                state._server = state._media = None

    async def close_streams(app: web.Application) -> None:
        # Before aiohttp waits for running handlers: end the media WebSockets now.
        if state._server is not None:
            await state._server.close(shutdown_grace)

    async def media(request: web.Request) -> web.StreamResponse:
        ws_handler = state._media
        if state._server is None or ws_handler is None:
            return web.Response(status=503, text="not running\n")
        return await ws_handler(request)

    async def status_callback(request: web.Request) -> web.StreamResponse:
        if state._callbacks is None:
            return web.Response(status=503, text="not running\n")
        return await state._callbacks(request)

    async def answer(request: web.Request) -> web.StreamResponse:
        fields: dict[str, str] = dict(request.query)
        if request.method == "POST":
            form = await request.post()
            fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        scheme = "https" if request.secure else "http"
        base_http = http_base or f"{scheme}://{request.host}"
        base_ws = ws_base or f"{'wss' if request.secure else 'ws'}://{request.host}"
        media_url = base_ws + media_path
        if token is not None:
            call_uuid = fields.get("CallUUID", "")
            if not call_uuid or "." in call_uuid:
                state.refused_answers += 1
                return web.Response(status=400, text="CallUUID needed to sign the media URL\n")
            media_url = sign_stream_url(media_url, token, call_uuid)
        callback_url = base_http + callbacks_path if callbacks_on else None
        if answer_xml is None:
            document = default_answer_xml(media_url, callback_url)
        else:
            produced = answer_xml(fields, media_url)
            document = await produced if inspect.isawaitable(produced) else produced
        state.answers += 1
        return web.Response(text=document, content_type="application/xml")

    async def healthz(request: web.Request) -> web.StreamResponse:
        if state._server is None:
            return web.json_response({"status": "starting"}, status=503)
        health = state._server.health()
        return web.json_response(health, status=200 if health["status"] == "ok" else 503)

    async def metrics(request: web.Request) -> web.StreamResponse:
        text = state._server.metrics() if state._server is not None else None
        if text is None:
            return web.Response(status=404, text="metrics need vobiz-async[metrics]\n")
        return web.Response(body=text, content_type="text/plain", charset="utf-8")

    app.cleanup_ctx.append(media_lifecycle)
    app.on_shutdown.append(close_streams)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("POST", answer_path, answer)
    app.router.add_route("GET", answer_path, answer)
    app.router.add_get(media_path, media)
    app.router.add_get(media_path + "/{token}", media)
    if callbacks_on:
        app.router.add_route("*", callbacks_path, status_callback)
    return app
