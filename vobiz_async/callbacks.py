"""Stream status callbacks (spec section 5): parse, verify, acknowledge, dispatch.

Vobiz POSTs ``application/x-www-form-urlencoded`` (or sends a GET with the same query
parameters) to a stream's ``statusCallbackUrl`` for ``StartStream``, ``PlayedStream``,
``ClearedAudio``, ``DegradedStream``, ``DroppedStream`` and ``StopStream``. It retries
a non-200 (or a reply slower than 3 s) up to 3 times, and may deliver out of order, so
:func:`callback_handler` answers 200 at once, hands the event to the application in a
task, and drops duplicates of an event it already took.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .errors import SignatureError
from .events import StatusCallbackReceived
from .signatures import NonceCache, SignatureMode, verify_request

__all__ = [
    "StreamCallbackEvent",
    "StreamStatusCallback",
    "callback_handler",
    "parse_callback",
]

log = logging.getLogger("vobiz_async.callbacks")
MAX_BODY_BYTES = 64 * 1024


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

    @property
    def dedupe_key(self) -> tuple[str | None, ...]:
        """What identifies one logical callback across Vobiz's retries."""
        return (
            str(self.event) if self.event is not None else None,
            self.stream_id,
            self.call_uuid,
            self.name,
            self.fields.get("Timestamp"),
        )


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


class _SessionLookup(Protocol):
    def get_session(self, stream_id: str) -> Any: ...


OnEvent = Callable[[StreamStatusCallback], Awaitable[None] | None]


def callback_handler(
    on_event: OnEvent | None = None,
    *,
    auth_token: str | None = None,
    parent_auth_token: str | None = None,
    mode: SignatureMode | str = SignatureMode.IF_PRESENT,
    public_base_url: str | None = None,
    replay_window: float | None = 300.0,
    server: _SessionLookup | None = None,
    dedupe_size: int = 10_000,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler for a status-callback route.

    ``app.router.add_route("*", "/vobiz/stream-status", callback_handler(on_event, ...))``

    Args:
        on_event: called with each new, verified callback (sync or async); it runs in
            a task after the 200 went out, and its errors are logged, not returned.
        auth_token, parent_auth_token: tokens to verify signatures with (spec 5.4).
        mode: ``off``, ``if-present`` (default) or ``require``.
        public_base_url: the public ``scheme://host[:port]`` when behind a proxy.
        replay_window: refuse a signature nonce seen within this many seconds.
        server: a ``MediaServer``; the callback is routed to the session with the same
            ``StreamID`` (``session.status_callbacks``, and a ``StatusCallbackReceived``).
        dedupe_size: how many callbacks are remembered to drop Vobiz's retries.

    Answers: 200 (taken, or a duplicate), 400 (unreadable body), 401 (signature
    required and missing), 403 (wrong or replayed signature), 405, 413 (over 64 KiB).
    Raw headers are never logged: some Vobiz callbacks carry credentials in them.
    """
    mode = SignatureMode(mode)
    if mode is not SignatureMode.OFF and not auth_token:
        raise ValueError("verifying signatures needs auth_token (or mode='off')")
    nonces = NonceCache(ttl=replay_window) if replay_window else None
    seen: OrderedDict[tuple[str | None, ...], None] = OrderedDict()
    tasks: set[asyncio.Task[None]] = set()

    async def dispatch(callback: StreamStatusCallback) -> None:
        try:
            if on_event is not None:
                result = on_event(callback)
                if result is not None:
                    await result
        except Exception:
            log.exception("status callback handler failed for %s", callback.event)

    async def handler(request: web.Request) -> web.Response:
        if request.method not in ("POST", "GET"):
            return web.Response(status=405, text="use POST or GET\n")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.Response(status=413, text="body too large\n")
        if mode is not SignatureMode.OFF:
            try:
                verify_request(
                    str(request.url),
                    request.headers,
                    auth_token or "",
                    mode=mode,
                    parent_auth_token=parent_auth_token,
                    public_base_url=public_base_url,
                    nonces=nonces,
                )
            except SignatureError as exc:
                log.warning("refused a status callback: signature %s", exc.reason)
                status = 401 if exc.reason == "missing" else 403
                return web.Response(status=status, text=f"signature {exc.reason}\n")
        try:
            if request.method == "POST":
                body = await request.content.read(MAX_BODY_BYTES + 1)
                if len(body) > MAX_BODY_BYTES:
                    return web.Response(status=413, text="body too large\n")
                text = body.decode("utf-8")
                fields = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
            else:
                fields = dict(request.query)
        except (UnicodeDecodeError, ValueError):
            return web.Response(status=400, text="unreadable form body\n")
        callback = parse_callback(fields)
        if callback.event is None:
            return web.Response(status=400, text="no Event field\n")
        key = callback.dedupe_key
        if key in seen:
            return web.Response(text="duplicate\n")  # Vobiz retried: already taken
        seen[key] = None
        while len(seen) > dedupe_size:
            seen.popitem(last=False)
        if server is not None and callback.stream_id:
            session = server.get_session(callback.stream_id)
            if session is not None:
                session.deliver_status_callback(
                    StatusCallbackReceived(str(callback.event), callback.stream_id, callback)
                )
        task = asyncio.get_running_loop().create_task(dispatch(callback))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.Response(text="ok\n")

    return handler
