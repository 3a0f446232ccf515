"""Plumbing shared by the webhook handlers (Vobiz and SignalWire status callbacks).

Three hardened pieces, each bounded by :class:`CallbackLimits`:

* :func:`read_body` reads the *whole* body up to a limit. ``request.content.read(n)``
  returns whatever has arrived so far, so a body sent in two TCP segments would be cut.
* :func:`parse_form` parses a form body leniently (a trailing ``&`` is not an error),
  with a bound on the number of fields.
* :class:`Dispatcher` runs the application's callback in bounded tasks: over the limit
  the caller answers 503 (so the provider retries later), and ``close()`` waits for the
  pending ones for a grace period, then cancels and awaits the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from .events import StatusCallbackReceived

__all__ = [
    "BodyTooLarge",
    "CallbackLimits",
    "CallbackStats",
    "Dispatcher",
    "SessionLookup",
    "WebhookHandler",
    "content_digest",
    "mark_as_coroutine_function",
    "parse_form",
    "read_body",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallbackLimits:
    """Every bound of a status-callback handler, with its default.

    Attributes:
        max_body_bytes: a larger body is answered 413 (64 KiB; a real callback is < 2 KiB).
        max_form_fields: a form with more fields is answered 400 (a real one has ~15).
        max_pending: ``on_event`` calls running at once; a callback over it is answered
            503, which the provider retries (Vobiz: 3 times with backoff, spec 5.1).
        history_per_session: status callbacks kept on one session's
            ``status_callbacks`` list; the oldest go first (counted). A 125 s call
            produced 15 (spec 5.1); 256 leaves room for a long call with many barge-ins.
        max_nonces: signature nonces remembered for replay protection and deduplication.
        replay_window: seconds a nonce is remembered (the spec's "~5 min", 5.4).
        shutdown_grace: seconds ``close()`` waits for running ``on_event`` calls before
            cancelling them.
        route_wait: seconds a callback for a stream the server does not know yet waits
            for that stream's session before it is given up (counted in ``unrouted``):
            ``StartStream`` is posted when the socket connects and can overtake the
            stream's ``start`` frame.
        refusal_log_interval: at most one log line per refusal reason (signature
            missing, mismatch, replayed...) in this many seconds; the next line says
            how many were not logged (every refusal is counted in ``stats`` either
            way), so a flood of forged callbacks cannot flood the logs.
    """

    max_body_bytes: int = 64 * 1024
    max_form_fields: int = 1000
    max_pending: int = 256
    history_per_session: int = 256
    max_nonces: int = 100_000
    replay_window: float = 300.0
    shutdown_grace: float = 5.0
    route_wait: float = 5.0
    refusal_log_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_form_fields", "max_pending", "history_per_session"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_nonces < 1 or self.replay_window <= 0 or self.shutdown_grace < 0:
            raise ValueError("max_nonces and replay_window must be positive, grace >= 0")
        if self.route_wait < 0 or self.refusal_log_interval < 0:
            raise ValueError("route_wait and refusal_log_interval must be >= 0")


def mark_as_coroutine_function(handler: object) -> None:
    """Let aiohttp's router take a handler *object* whose ``__call__`` is ``async``.

    aiohttp accepts a route handler only if ``inspect.iscoroutinefunction`` (or, before
    Python 3.14, ``asyncio.iscoroutinefunction``) says so, and wraps anything else with a
    DeprecationWarning. Python 3.12+ has ``inspect.markcoroutinefunction`` for this; on
    3.11 the only marker ``asyncio.iscoroutinefunction`` reads is ``_is_coroutine``.
    """
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(handler)
    else:  # Python 3.11
        handler._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


class BodyTooLarge(Exception):
    """The request body is over the limit (answer 413)."""


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole request body, however it was segmented, or :class:`BodyTooLarge`.

    Raises:
        BodyTooLarge: the declared or received length is over ``limit``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def parse_form(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    """A form body as ``(name, value)`` pairs, in order (signatures need repeats).

    Lenient like browsers and Twilio's samples: empty pairs (``a=1&``, ``&&``) are
    skipped and a pair without ``=`` is a name with an empty value.

    Raises:
        UnicodeDecodeError: not UTF-8.
        ValueError: more than ``max_fields`` fields.
    """
    text = body.decode("utf-8")
    return parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields)


def content_digest(fields: Mapping[str, str]) -> str:
    """A digest of a callback's fields, independent of their order."""
    h = hashlib.sha256()
    for key in sorted(fields):
        h.update(key.encode("utf-8", "surrogatepass") + b"\x00")
        h.update(fields[key].encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


@dataclass(slots=True)
class DispatchCounters:
    """The dispatcher's counters (copied into each handler's stats)."""

    delivered: int = 0
    refused_busy: int = 0
    handler_errors: int = 0
    cancelled_at_close: int = 0


class Dispatcher(Generic[T]):
    """Runs ``on_event(item)`` in tasks, at most ``max_pending`` at once."""

    def __init__(
        self,
        on_event: Callable[[T], Awaitable[None] | None] | None,
        *,
        max_pending: int,
        logger: logging.Logger,
    ) -> None:
        self._on_event = on_event
        self._max_pending = max_pending
        self._log = logger
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters = DispatchCounters()
        self.closed = False

    @property
    def pending(self) -> int:
        """``on_event`` calls still running."""
        return len(self._tasks)

    def has_room(self) -> bool:
        """Whether one more item can be dispatched now."""
        return not self.closed and (self._on_event is None or len(self._tasks) < self._max_pending)

    def dispatch(self, item: T, label: Any) -> None:
        """Start ``on_event(item)`` in a task (the caller checked :meth:`has_room`)."""
        self.counters.delivered += 1
        if self._on_event is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(item, label))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, item: T, label: Any) -> None:
        assert self._on_event is not None
        try:
            result = self._on_event(item)
            if result is not None:
                await result
        except Exception:
            self.counters.handler_errors += 1
            self._log.exception("status callback handler failed for %s", label)

    async def close(self, grace: float) -> None:
        """Refuse new items; wait up to ``grace`` s for running ones, then cancel them."""
        self.closed = True
        if not self._tasks:
            return
        _, still = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in still:
            task.cancel()
        self.counters.cancelled_at_close += len(still)
        if still:
            await asyncio.gather(*still, return_exceptions=True)


class _Session(Protocol):
    status_callbacks: list[Any]

    def deliver_status_callback(self, event: StatusCallbackReceived) -> None: ...


class SessionLookup(Protocol):
    """What a handler's ``server=`` needs: a ``MediaServer`` has it."""

    def get_session(self, stream_id: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class CallbackStats:
    """What a callback handler did with the requests it got (nothing is dropped unseen).

    Attributes:
        received: requests answered (any status).
        delivered: callbacks taken and handed to the application.
        duplicates: callbacks already taken (a provider's retry: same signature nonce
            and fields for Vobiz, same content for SignalWire), answered 200, not
            delivered again.
        refused_signature: 401/403 (missing, wrong or replayed signature).
        refused_busy: 503 because ``max_pending`` ``on_event`` calls were running, or
            the handler was closed; the provider retries these.
        bad_request: 400 (not UTF-8, too many fields, no event field) and 405.
        too_large: 413.
        history_trimmed: old entries removed from sessions' ``status_callbacks``.
        unrouted: callbacks for a stream whose session never showed up (``route_wait``),
            or that could not wait because ``max_pending`` were already waiting.
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
    unrouted: int
    handler_errors: int
    cancelled_at_close: int
    pending: int


class WebhookHandler(Generic[T]):
    """The shared half of a status-callback handler: counters, bounded dispatch,
    routing to a live session with a bounded history, and shutdown.

    Subclasses implement ``async def __call__(self, request) -> web.Response``.
    """

    def __init__(
        self,
        on_event: Callable[[T], Awaitable[None] | None] | None,
        *,
        server: SessionLookup | None,
        limits: CallbackLimits,
        logger: logging.Logger,
    ) -> None:
        self.limits = limits
        self._server = server
        self._dispatcher: Dispatcher[T] = Dispatcher(
            on_event, max_pending=limits.max_pending, logger=logger
        )
        self._received = 0
        self._duplicates = 0
        self._refused_signature = 0
        self._refused_busy = 0
        self._bad_request = 0
        self._too_large = 0
        self._history_trimmed = 0
        self._unrouted = 0
        self._route_waits: set[asyncio.Task[None]] = set()
        self._logger = logger
        self._refusal_logged: dict[str, tuple[float, int]] = {}  # reason: (when, held)
        mark_as_coroutine_function(self)

    def _log_refusal(self, reason: str) -> None:
        """Log a refused callback, at most once per reason per
        ``limits.refusal_log_interval``; the next line says how many were held back."""
        now = time.monotonic()
        logged = self._refusal_logged
        last, held = logged.get(reason, (float("-inf"), 0))
        if now - last < self.limits.refusal_log_interval:
            logged[reason] = (last, held + 1)
            return
        logged[reason] = (now, 0)
        if held:
            self._logger.warning(
                "refused a status callback: %s (%d more not logged in the last %.0f s)",
                reason,
                held,
                now - last,
            )
        else:
            self._logger.warning("refused a status callback: %s", reason)

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
            unrouted=self._unrouted,
            handler_errors=d.handler_errors,
            cancelled_at_close=d.cancelled_at_close,
            pending=self._dispatcher.pending,
        )

    def add_to(self, app: web.Application, path: str) -> None:
        """Route ``path`` (GET and POST) to this handler and close it on app shutdown."""
        app.router.add_route("*", path, self)  # type: ignore[arg-type]
        app.on_shutdown.append(self.on_shutdown)

    async def on_shutdown(self, app: web.Application) -> None:
        """An aiohttp ``on_shutdown`` signal handler: :meth:`close`."""
        await self.close()

    async def close(self) -> None:
        """Answer 503 from now on; wait ``limits.shutdown_grace`` s for running
        ``on_event`` calls, then cancel and await the rest."""
        for task in list(self._route_waits):
            task.cancel()
        if self._route_waits:
            await asyncio.gather(*self._route_waits, return_exceptions=True)
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

    async def _read_fields(self, request: web.Request) -> list[tuple[str, str]]:
        """The callback's fields: the form body of a POST, the query of a GET.

        Raises:
            BodyTooLarge, UnicodeDecodeError, ValueError: see :func:`read_body`,
                :func:`parse_form`.
        """
        if request.method == "POST":
            body = await read_body(request, self.limits.max_body_bytes)
            return parse_form(body, self.limits.max_form_fields)
        return list(request.query.items())

    def _route(self, stream_id: str, event: StatusCallbackReceived) -> None:
        """Deliver to the live (or recently closed) session of ``stream_id``, keeping
        at most ``limits.history_per_session`` entries in its ``status_callbacks``."""
        if self._server is None:
            return
        session: _Session | None = self._server.get_session(stream_id)
        if session is None:
            wait = getattr(self._server, "wait_for_session", None)
            if (
                wait is None
                or self.limits.route_wait <= 0
                or (len(self._route_waits) >= self.limits.max_pending)
            ):
                self._unrouted += 1
                return
            task = asyncio.get_running_loop().create_task(self._route_later(stream_id, event))
            self._route_waits.add(task)
            task.add_done_callback(self._route_waits.discard)
            return
        self._deliver(session, event)

    async def _route_later(self, stream_id: str, event: StatusCallbackReceived) -> None:
        """Wait up to ``limits.route_wait`` for the stream's session, then deliver."""
        assert self._server is not None
        try:
            session = await self._server.wait_for_session(  # type: ignore[attr-defined]
                stream_id, timeout=self.limits.route_wait
            )
        except TimeoutError:
            self._unrouted += 1
            return
        self._deliver(session, event)

    def _deliver(self, session: _Session, event: StatusCallbackReceived) -> None:
        session.deliver_status_callback(event)
        history = session.status_callbacks
        excess = len(history) - self.limits.history_per_session
        if excess > 0:
            del history[:excess]
            self._history_trimmed += excess
