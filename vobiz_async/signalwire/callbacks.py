"""Stream status callbacks of the compat API (``signalwire-compat-streams.md`` 6).

SignalWire (and Twilio) POST a form, or send a GET with the same query parameters, to a
stream's ``statusCallback`` when it starts, stops or fails (``StreamEvent``
``stream-started`` / ``stream-stopped`` / ``stream-error``). They are signed with
``X-SignalWire-Signature`` (or ``X-Twilio-Signature``) over the full URL and the sorted
form parameters (7.2). There is no nonce, and SignalWire calls these callbacks advisory:
late, retried or lost (6.1). So :func:`callback_handler` verifies, drops a callback
whose *content* it already took (a retry), answers 200 at once and runs the
application's ``on_event`` in a bounded task, with the same hardened defaults as the
Vobiz handler (:mod:`vobiz_async.callbacks`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .._webhooks import (
    BodyTooLarge,
    CallbackLimits,
    SessionLookup,
    WebhookHandler,
    content_digest,
)
from ..events import StatusCallbackReceived
from ..signatures import NonceCache, SignatureMode
from ._signatures import validate_request

__all__ = [
    "CompatCallbackHandler",
    "CompatStreamCallback",
    "StreamEvent",
    "callback_handler",
    "parse_callback",
]

log = logging.getLogger("vobiz_async.signalwire.callbacks")

SIGNATURE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")


class StreamEvent(enum.StrEnum):
    """Values of ``StreamEvent`` (spec 6.2). Unknown values are kept as strings."""

    STARTED = "stream-started"
    STOPPED = "stream-stopped"
    ERROR = "stream-error"


class CompatStreamCallback(BaseModel):
    """One compat stream status callback; every field optional, all raw fields kept.

    Attributes:
        event: ``StreamEvent`` or the raw string for an unknown value.
        account_sid, call_sid, stream_sid: ``AccountSid``, ``CallSid``, ``StreamSid``.
        stream_name: ``StreamName`` (the StreamSid when no name was given, spec 6.2).
        stream_error: ``StreamError`` (None when empty), e.g. ``connection_refused``.
        stream_track: ``StreamTrack`` (SignalWire only).
        conference_sid: ``ConferenceSid``; unique_id: ``Unique-ID`` (SignalWire only).
        timestamp: ``Timestamp`` (ISO 8601) as an aware datetime, None if unparsable.
        fields: every field exactly as received.
    """

    model_config = ConfigDict(frozen=True)

    event: StreamEvent | str | None = None
    account_sid: str | None = None
    call_sid: str | None = None
    stream_sid: str | None = None
    stream_name: str | None = None
    stream_error: str | None = None
    stream_track: str | None = None
    conference_sid: str | None = None
    unique_id: str | None = None
    timestamp: datetime | None = None
    fields: dict[str, str] = Field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        """A field by its wire name, as received: ``callback["StreamSid"]``."""
        return self.fields[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        """A field by its wire name, or ``default``."""
        return self.fields.get(name, default)


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_callback(fields: Mapping[str, str]) -> CompatStreamCallback:
    """Parse a callback's form or query fields into a :class:`CompatStreamCallback`."""
    raw = {str(k): str(v) for k, v in fields.items()}

    def get(name: str) -> str | None:
        return raw.get(name) or None

    event_text = get("StreamEvent")
    event: StreamEvent | str | None = event_text
    if event_text is not None:
        try:
            event = StreamEvent(event_text)
        except ValueError:
            event = event_text
    return CompatStreamCallback(
        event=event,
        account_sid=get("AccountSid"),
        call_sid=get("CallSid"),
        stream_sid=get("StreamSid"),
        stream_name=get("StreamName"),
        stream_error=get("StreamError"),
        stream_track=get("StreamTrack"),
        conference_sid=get("ConferenceSid"),
        unique_id=get("Unique-ID"),
        timestamp=_timestamp(get("Timestamp")),
        fields=raw,
    )


OnEvent = Callable[[CompatStreamCallback], Awaitable[None] | None]


class CompatCallbackHandler(WebhookHandler[CompatStreamCallback]):
    """The aiohttp handler :func:`callback_handler` returns (call it with a request)."""

    def __init__(
        self,
        on_event: OnEvent | None,
        *,
        signing_key: str | None,
        mode: SignatureMode,
        public_base_url: str | None,
        server: SessionLookup | None,
        limits: CallbackLimits,
    ) -> None:
        super().__init__(on_event, server=server, limits=limits, logger=log)
        self._signing_key = signing_key
        self._mode = mode
        self._public_base_url = public_base_url
        self._seen = NonceCache(ttl=limits.replay_window, max_size=limits.max_nonces)

    @property
    def mode(self) -> SignatureMode:
        """How signatures are checked."""
        return self._mode

    def _signed_url(self, request: web.Request) -> str:
        # The full URL exactly as requested, query string included and not re-encoded
        # (spec 7.2, 7.9); behind a proxy, the public origin the application gives (7.3).
        origin = self._public_base_url or f"{request.scheme}://{request.host}"
        return origin.rstrip("/") + request.raw_path

    async def __call__(self, request: web.Request) -> web.Response:
        """Answer one callback request (see :func:`callback_handler` for the statuses)."""
        self._received += 1
        if request.method not in ("POST", "GET"):
            return self._reply(405, "use POST or GET\n")
        if self._dispatcher.closed:
            return self._reply(503, "shutting down\n")
        signature = next((v for h in SIGNATURE_HEADERS if (v := request.headers.get(h))), None)
        if self._mode is SignatureMode.REQUIRE and not signature:
            self._log_refusal("signature missing")
            return self._reply(401, "signature missing\n")
        try:
            pairs = await self._read_fields(request)
        except BodyTooLarge:
            return self._reply(413, "body too large\n")
        except (UnicodeDecodeError, ValueError):
            return self._reply(400, "unreadable form body\n")
        if self._mode is not SignatureMode.OFF and signature:
            params = pairs if request.method == "POST" else []
            key = self._signing_key or ""
            if not validate_request(self._signed_url(request), params, signature, key):
                self._log_refusal("signature mismatch")
                return self._reply(403, "signature mismatch\n")
        callback = parse_callback(dict(pairs))
        if callback.event is None:
            return self._reply(400, "no StreamEvent field\n")
        digest = content_digest(callback.fields)
        if self._seen.lookup((digest,), digest) != "new":
            self._duplicates += 1
            return web.Response(text="duplicate\n")  # a retry of one we took
        if not self._dispatcher.has_room():
            return self._reply(503, "busy, retry later\n")
        self._seen.add((digest,), digest)
        if callback.stream_sid:
            self._route(
                callback.stream_sid,
                StatusCallbackReceived(str(callback.event), callback.stream_sid, callback),
            )
        self._dispatcher.dispatch(callback, callback.event)
        return web.Response(text="ok\n")


def callback_handler(
    on_event: OnEvent | None = None,
    *,
    signing_key: str | None = None,
    mode: SignatureMode | str | None = None,
    public_base_url: str | None = None,
    server: SessionLookup | None = None,
    limits: CallbackLimits | None = None,
) -> CompatCallbackHandler:
    """An aiohttp handler for a compat stream status-callback route (spec 6).

    ``callback_handler(on_event, signing_key=KEY).add_to(app, "/sw/stream-status")``

    Args:
        on_event: called with each new, verified callback (sync or async), in a task
            after the 200 went out; its errors are logged and counted.
        signing_key: SignalWire's project Signing Key (not the API token), or Twilio's
            Auth Token (spec 7.1).
        mode: ``off``, ``if-present`` or ``require``; default ``require`` when a key is
            given, else ``off``.
        public_base_url: the public ``scheme://host[:port]`` the platform calls, when
            behind a proxy (the path and query of the request are appended).
        server: a ``MediaServer``; the callback reaches the session whose stream id is
            the ``StreamSid`` (``session.status_callbacks``, bounded, and a
            ``StatusCallbackReceived`` event).
        limits: body size, pending ``on_event`` calls, history, dedupe memory.

    Answers: 200 (taken, or a retry with the same content), 400 (unreadable body or no
    ``StreamEvent``), 401 (signature required and missing), 403 (wrong signature),
    405, 413, 503 (too many ``on_event`` calls running, or closed).

    Raises:
        ValueError: a verifying mode without ``signing_key``.
    """
    resolved = SignatureMode(mode) if mode is not None else None
    if resolved is None:
        resolved = SignatureMode.REQUIRE if signing_key else SignatureMode.OFF
    if resolved is not SignatureMode.OFF and not signing_key:
        raise ValueError("verifying signatures needs signing_key (or mode='off')")
    return CompatCallbackHandler(
        on_event,
        signing_key=signing_key,
        mode=resolved,
        public_base_url=public_base_url,
        server=server,
        limits=limits or CallbackLimits(),
    )
