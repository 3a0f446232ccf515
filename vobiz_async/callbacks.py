"""Stream status callbacks (spec section 5): parse, verify, acknowledge, dispatch.

Vobiz POSTs ``application/x-www-form-urlencoded`` (or sends a GET with the same query
parameters) to a stream's ``statusCallbackUrl`` for ``StartStream``, ``PlayedStream``,
``ClearedAudio``, ``DegradedStream``, ``DroppedStream`` and ``StopStream``. It retries
a non-200 (or a reply slower than 3 s) up to 3 times, and may deliver out of order, so
:func:`callback_handler` answers 200 at once and hands the event to the application in
a bounded task. A signed callback is taken once per signature nonce (a retry with the
same nonce and fields is answered 200 and dropped); an unsigned one is always
delivered, since two genuine ``ClearedAudio`` in one second look alike.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ._webhooks import (
    BodyTooLarge,
    CallbackLimits,
    Dispatcher,
    content_digest,
    mark_as_coroutine_function,
    parse_form,
    read_body,
)
from .errors import SignatureError
from .events import StatusCallbackReceived
from .signatures import NonceCache, SignatureMode, verify_request

__all__ = [
    "CallbackHandler",
    "CallbackLimits",
    "CallbackStats",
    "StreamCallbackEvent",
    "StreamStatusCallback",
    "callback_handler",
    "parse_callback",
]

log = logging.getLogger("vobiz_async.callbacks")


class StreamCallbackEvent(enum.StrEnum):
    """Documented values of ``Event`` (spec 5.2). Unknown values are kept as strings."""

    START_STREAM = "StartStream"
    PLAYED_STREAM = "PlayedStream"
    CLEARED_AUDIO = "ClearedAudio"
    DEGRADED_STREAM = "DegradedStream"
    DROPPED_STREAM = "DroppedStream"
    STOP_STREAM = "StopStream"


class StreamStatusCallback(BaseModel):
    """One status callback. Every field is optional; all raw fields are kept.

    Attributes:
        event: ``StreamCallbackEvent`` or the raw string for an unknown event.
        call_uuid, stream_id: ``CallUUID``, ``StreamID``.
        from_number, to_number: ``From``, ``To``.
        parent_auth_id: ``ParentAuthID`` (``MA_...``).
        timestamp: ``Timestamp`` parsed (``YYYY-MM-DD HH:MM:SS``; the zone is not
            stated, other Vobiz webhooks use IST: it is left naive) [UNCERTAIN].
        error: ``Error`` (None when empty).
        service_url: ``ServiceURL`` (StartStream); name: ``Name`` (PlayedStream).
        extra_headers: ``X-VH-<key>`` fields, with the prefix removed.
        fields: every field exactly as received.
    """

    model_config = ConfigDict(frozen=True)

    event: StreamCallbackEvent | str | None = None
    call_uuid: str | None = None
    stream_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    parent_auth_id: str | None = None
    timestamp: datetime | None = None
    error: str | None = None
    service_url: str | None = None
    name: str | None = None
    status_callback_url: str | None = None
    status_callback_method: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        """A field by its wire name, as received: ``callback["CallUUID"]``."""
        return self.fields[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        """A field by its wire name, or ``default``."""
        return self.fields.get(name, default)


def _event(value: str | None) -> StreamCallbackEvent | str | None:
    if not value:
        return None
    try:
        return StreamCallbackEvent(value)
    except ValueError:
        return value


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_callback(fields: Mapping[str, str]) -> StreamStatusCallback:
    """Parse a callback's form or query fields into a :class:`StreamStatusCallback`."""
    raw = {str(k): str(v) for k, v in fields.items()}

    def get(name: str) -> str | None:
        value = raw.get(name)
        return value if value else None

    return StreamStatusCallback(
        event=_event(get("Event")),
        call_uuid=get("CallUUID"),
        stream_id=get("StreamID"),
        from_number=get("From"),
        to_number=get("To"),
        parent_auth_id=get("ParentAuthID"),
        timestamp=_timestamp(get("Timestamp")),
        error=get("Error"),
        service_url=get("ServiceURL"),
        name=get("Name"),
        status_callback_url=get("status_callback_url") or get("statusCallbackUrl"),
        status_callback_method=get("status_callback_method") or get("statusCallbackMethod"),
        extra_headers={k[5:]: v for k, v in raw.items() if k.lower().startswith("x-vh-")},
        fields=raw,
    )


class _Session(Protocol):
    status_callbacks: list[Any]

    def deliver_status_callback(self, event: StatusCallbackReceived) -> None: ...


class _SessionLookup(Protocol):
    def get_session(self, stream_id: str) -> Any: ...


OnEvent = Callable[[StreamStatusCallback], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class CallbackStats:
    """What a callback handler did with the requests it got (nothing is dropped unseen).

    Attributes:
        received: requests answered (any status).
        delivered: callbacks taken and handed to the application.
        duplicates: signed callbacks whose nonce was already taken with the same
            fields (a provider's retry), answered 200 and not delivered again.
        refused_signature: 401/403 (missing, wrong or replayed signature).
        refused_busy: 503 because ``max_pending`` ``on_event`` calls were running, or
            the handler was closed; the provider retries these.
        bad_request: 400 (not UTF-8, too many fields, no ``Event``) and 405.
        too_large: 413.
        history_trimmed: old entries removed from sessions' ``status_callbacks``.
        handler_errors: ``on_event`` calls that raised (logged).
        cancelled_at_close: ``on_event`` calls cancelled by ``close()`` after the grace.
        pending: ``on_event`` calls running now.
    """

    received: int
    delivered: int
    duplicates: int
    refused_signature: int
    refused_busy: int
    bad_request: int
    too_large: int
    history_trimmed: int
    handler_errors: int
    cancelled_at_close: int
    pending: int


class CallbackHandler:
    """The aiohttp handler :func:`callback_handler` returns (call it with a request).

    Register :meth:`on_shutdown` (or use :meth:`add_to`) so that running ``on_event``
    calls are awaited, then cancelled, when the application stops.
    """

    def __init__(
        self,
        on_event: OnEvent | None,
        *,
        auth_token: str | None,
        parent_auth_token: str | None,
        mode: SignatureMode,
        public_base_url: str | None,
        server: _SessionLookup | None,
        limits: CallbackLimits,
    ) -> None:
        self._auth_token = auth_token
        self._parent_auth_token = parent_auth_token
        self._mode = mode
        self._public_base_url = public_base_url
        self._server = server
        self.limits = limits
        self._nonces = NonceCache(ttl=limits.replay_window, max_size=limits.max_nonces)
        self._dispatcher: Dispatcher[StreamStatusCallback] = Dispatcher(
            on_event, max_pending=limits.max_pending, logger=log
        )
        self._received = 0
        self._duplicates = 0
        self._refused_signature = 0
        self._refused_busy = 0
        self._bad_request = 0
        self._too_large = 0
        self._history_trimmed = 0
        mark_as_coroutine_function(self)

    @property
    def mode(self) -> SignatureMode:
        """How signatures are checked."""
        return self._mode

    @property
    def stats(self) -> CallbackStats:
        """A snapshot of the counters."""
        d = self._dispatcher.counters
        return CallbackStats(
            received=self._received,
            delivered=d.delivered,
            duplicates=self._duplicates,
            refused_signature=self._refused_signature,
            refused_busy=self._refused_busy,
            bad_request=self._bad_request,
            too_large=self._too_large,
            history_trimmed=self._history_trimmed,
            handler_errors=d.handler_errors,
            cancelled_at_close=d.cancelled_at_close,
            pending=self._dispatcher.pending,
        )

    def add_to(self, app: web.Application, path: str) -> None:
        """Route ``path`` (GET and POST) to this handler and close it on app shutdown."""
        app.router.add_route("*", path, self)
        app.on_shutdown.append(self.on_shutdown)

    async def on_shutdown(self, app: web.Application) -> None:
        """An aiohttp ``on_shutdown`` signal handler: :meth:`close`."""
        await self.close()

    async def close(self) -> None:
        """Answer 503 from now on; wait ``limits.shutdown_grace`` s for running
        ``on_event`` calls, then cancel and await the rest."""
        await self._dispatcher.close(self.limits.shutdown_grace)

    def _reply(self, status: int, text: str) -> web.Response:
        if status in (401, 403):
            self._refused_signature += 1
        elif status == 503:
            self._refused_busy += 1
        elif status in (400, 405):
            self._bad_request += 1
        elif status == 413:
            self._too_large += 1
        return web.Response(status=status, text=text)

    async def __call__(self, request: web.Request) -> web.Response:
        """Answer one callback request (see :func:`callback_handler` for the statuses)."""
        self._received += 1
        if request.method not in ("POST", "GET"):
            return self._reply(405, "use POST or GET\n")
        if self._dispatcher.closed:
            return self._reply(503, "shutting down\n")
        nonces: tuple[str, ...] = ()
        if self._mode is not SignatureMode.OFF:
            try:
                verified = verify_request(
                    str(request.url),
                    request.headers,
                    self._auth_token or "",
                    mode=self._mode,
                    parent_auth_token=self._parent_auth_token,
                    public_base_url=self._public_base_url,
                )
            except SignatureError as exc:
                log.warning("refused a status callback: signature %s", exc.reason)
                status = 401 if exc.reason == "missing" else 403
                return self._reply(status, f"signature {exc.reason}\n")
            nonces = verified.nonces if verified.verified else ()
        try:
            if request.method == "POST":
                body = await read_body(request, self.limits.max_body_bytes)
                fields = parse_form(body, self.limits.max_form_fields)
            else:
                fields = dict(request.query)
        except BodyTooLarge:
            return self._reply(413, "body too large\n")
        except (UnicodeDecodeError, ValueError):
            return self._reply(400, "unreadable form body\n")
        callback = parse_callback(fields)
        if callback.event is None:
            return self._reply(400, "no Event field\n")
        # Nonces are recorded only now, when the request is taken: a retry after a 400
        # or a 503 carries the same nonce and must not be refused as a replay.
        digest = content_digest(callback.fields) if nonces else ""
        if nonces:
            seen = self._nonces.lookup(nonces, digest)
            if seen == "replayed":
                log.warning("refused a status callback: signature replayed")
                return self._reply(403, "signature replayed\n")
            if seen == "duplicate":
                self._duplicates += 1
                return web.Response(text="duplicate\n")  # a retry of one we took
        if not self._dispatcher.has_room():
            return self._reply(503, "busy, retry later\n")
        if nonces:
            self._nonces.add(nonces, digest)
        self._route(callback)
        self._dispatcher.dispatch(callback, callback.event)
        return web.Response(text="ok\n")

    def _route(self, callback: StreamStatusCallback) -> None:
        if self._server is None or not callback.stream_id:
            return
        session: _Session | None = self._server.get_session(callback.stream_id)
        if session is None:
            return
        session.deliver_status_callback(
            StatusCallbackReceived(str(callback.event), callback.stream_id, callback)
        )
        history = session.status_callbacks
        excess = len(history) - self.limits.history_per_session
        if excess > 0:
            del history[:excess]
            self._history_trimmed += excess


def callback_handler(
    on_event: OnEvent | None = None,
    *,
    auth_token: str | None = None,
    parent_auth_token: str | None = None,
    mode: SignatureMode | str | None = None,
    public_base_url: str | None = None,
    server: _SessionLookup | None = None,
    limits: CallbackLimits | None = None,
) -> CallbackHandler:
    """An aiohttp handler for a status-callback route (spec 5).

    ``callback_handler(on_event, auth_token=TOKEN).add_to(app, "/vobiz/stream-status")``

    Args:
        on_event: called with each new, verified callback (sync or async); it runs in
            a task after the 200 went out, and its errors are logged and counted.
        auth_token, parent_auth_token: tokens to verify signatures with (spec 5.4).
        mode: ``off``, ``if-present`` or ``require``. Default: ``require`` when an
            ``auth_token`` is given (an unsigned request is then a forgery), else ``off``.
        public_base_url: the public ``scheme://host[:port]`` when behind a proxy.
        server: a ``MediaServer``; the callback is routed to the session with the same
            ``StreamID`` (``session.status_callbacks``, bounded by
            ``limits.history_per_session``, and a ``StatusCallbackReceived``).
        limits: body size, pending ``on_event`` calls, history, nonce window.

    Answers: 200 (taken, or a retry of a signed callback already taken), 400
    (unreadable body or no ``Event``), 401 (signature required and missing), 403 (wrong
    or replayed signature), 405, 413 (body over ``limits.max_body_bytes``), 503 (too
    many ``on_event`` calls running, or closed: the provider retries). Raw headers are
    never logged: some Vobiz callbacks carry credentials in them.

    Raises:
        ValueError: a verifying mode without ``auth_token``.
    """
    resolved = SignatureMode(mode) if mode is not None else None
    if resolved is None:
        resolved = SignatureMode.REQUIRE if auth_token else SignatureMode.OFF
    if resolved is not SignatureMode.OFF and not auth_token:
        raise ValueError("verifying signatures needs auth_token (or mode='off')")
    return CallbackHandler(
        on_event,
        auth_token=auth_token,
        parent_auth_token=parent_auth_token,
        mode=resolved,
        public_base_url=public_base_url,
        server=server,
        limits=limits or CallbackLimits(),
    )
