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
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ._webhooks import (
    BodyTooLarge,
    CallbackLimits,
    CallbackStats,
    SessionLookup,
    WebhookHandler,
    content_digest,
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


OnEvent = Callable[[StreamStatusCallback], Awaitable[None] | None]


class CallbackHandler(WebhookHandler[StreamStatusCallback]):
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
        server: SessionLookup | None,
        limits: CallbackLimits,
    ) -> None:
        super().__init__(on_event, server=server, limits=limits, logger=log)
        self._auth_token = auth_token
        self._parent_auth_token = parent_auth_token
        self._mode = mode
        self._public_base_url = public_base_url
        self._nonces = NonceCache(ttl=limits.replay_window, max_size=limits.max_nonces)

    @property
    def mode(self) -> SignatureMode:
        """How signatures are checked."""
        return self._mode

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
                self._log_refusal(f"signature {exc.reason}")
                status = 401 if exc.reason == "missing" else 403
                return self._reply(status, f"signature {exc.reason}\n")
            nonces = verified.nonces if verified.verified else ()
        try:
            fields = dict(await self._read_fields(request))
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
                self._log_refusal("signature replayed")
                return self._reply(403, "signature replayed\n")
            if seen == "duplicate":
                self._duplicates += 1
                return web.Response(text="duplicate\n")  # a retry of one we took
        if not self._dispatcher.has_room():
            return self._reply(503, "busy, retry later\n")
        if nonces:
            self._nonces.add(nonces, digest)
        if callback.stream_id:
            self._route(
                callback.stream_id,
                StatusCallbackReceived(str(callback.event), callback.stream_id, callback),
            )
        self._dispatcher.dispatch(callback, callback.event)
        return web.Response(text="ok\n")


def callback_handler(
    on_event: OnEvent | None = None,
    *,
    auth_token: str | None = None,
    parent_auth_token: str | None = None,
    mode: SignatureMode | str | None = None,
    public_base_url: str | None = None,
    server: SessionLookup | None = None,
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
