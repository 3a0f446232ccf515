"""What the REST clients (Vobiz, SignalWire) share: timeouts, retries, body limits,
the bounded body reader, the lifecycle.

``Timeouts``, ``RetryPolicy`` and ``RestLimits`` are public through ``vobiz_async.client``.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp

from .errors import (
    InvalidResponseError,
    ResponseTooLargeError,
    StreamClosedError,
    ValidationError,
)

__all__ = [
    "HttpResource",
    "RestLimits",
    "RetryPolicy",
    "Timeouts",
    "coerce_retry",
    "coerce_timeouts",
    "parse_body",
    "read_capped",
    "retry_after_header",
]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """HTTP timeouts in seconds. Defaults are those of Vobiz's own samples (spec 2.8).

    Attributes:
        connect: to establish the connection.
        total: for the whole request, including reading the body.
    """

    connect: float = 5.0
    total: float = 20.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how requests are retried.

    GET and DELETE are retried on connection errors, timeouts, 429 and 5xx; a 429 on
    POST is retried too (a rate-limited request created nothing). Delays grow
    exponentially (``base * 2**attempt``, capped at ``max_delay``) with up to
    ``jitter`` (a fraction) added at random; a ``Retry-After`` from Vobiz wins, capped
    at ``max_retry_after``.

    Attributes:
        attempts: total tries per request, first one included (1 disables retries).
        base_delay, max_delay: the exponential backoff, in seconds.
        jitter: random extra fraction of each delay.
        max_retry_after: the longest Retry-After honoured, in seconds.
        retry_statuses: statuses that may succeed if repeated (429 and every 5xx by
            default); an error's ``retryable`` says whether its status is in this set.
        reconcile_delay: when a start's outcome is unclear and the first list shows
            no matching stream, seconds to wait before listing once more (a creation
            still in flight shows up late), 1 s by default.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 30.0
    retry_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({429, *range(500, 600)})
    )
    reconcile_delay: float = 1.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 0)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.max_retry_after)
        base: float = min(self.max_delay, self.base_delay * 2.0**attempt)
        return base * (1 + self.jitter * random.random())


@dataclass(frozen=True, slots=True)
class RestLimits:
    """Bounds on what a REST client (Vobiz or SignalWire) accepts from the network.

    Attributes:
        max_body_bytes: the longest response body read, after decompression (1 MiB;
            a stream list page of 20 is about 10 KB). Longer raises
            :class:`~vobiz_async.errors.ResponseTooLargeError` without reading on.
            Both clients apply it.
        max_pages: pages :meth:`~vobiz_async.client.StreamsAPI.iterate` reads before
            raising :class:`~vobiz_async.errors.PaginationLimitError` (100; Vobiz only,
            SignalWire has no list endpoint).
        max_items: streams :meth:`~vobiz_async.client.StreamsAPI.iterate` yields before
            raising the same (2,000; a call rarely has more than a handful; Vobiz only).
    """

    max_body_bytes: int = 1024 * 1024
    max_pages: int = 100
    max_items: int = 2000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pages", "max_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, "must be a positive integer")


def coerce_timeouts(value: Timeouts | float | None) -> Timeouts:
    """A :class:`Timeouts` from a value, plain seconds (total) or None (the defaults).

    Raises:
        ValidationError: not positive.
    """
    if value is None:
        return Timeouts()
    if isinstance(value, Timeouts):
        return value
    if isinstance(value, bool) or value <= 0:
        raise ValidationError("timeout", "must be positive seconds or a Timeouts value")
    return Timeouts(connect=min(Timeouts().connect, float(value)), total=float(value))


def coerce_retry(value: RetryPolicy | int | None) -> RetryPolicy:
    """A :class:`RetryPolicy` from a value, an attempt count or None (the defaults).

    Raises:
        ValidationError: fewer than one attempt.
    """
    if value is None:
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, bool) or value < 1:
        raise ValidationError("retry", "attempts must be at least 1, or a RetryPolicy value")
    return RetryPolicy(attempts=value)


def parse_body(text: str) -> Any:
    """JSON if it parses, else the text (cut to 2,000 characters), None when empty.

    JSON nested too deep to parse counts as not JSON.
    """
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text[:2000]


async def read_capped(
    raw: aiohttp.ClientResponse, cap: int, method: str, url: str, *, inflate: bool
) -> bytes:
    """Read the decoded body, stopping one byte past ``cap``.

    A client's own HTTP session does not let aiohttp decompress (how much memory
    aiohttp's own decompression takes differs between its releases; see
    :meth:`HttpResource._new_session`): a gzip or deflate body is inflated here, at
    most ``cap + 1`` bytes, so a gzip bomb never inflates in memory (``inflate``).
    With a session the caller passed in, aiohttp has decoded the body already and it
    is read up to the same cap.

    Raises:
        ResponseTooLargeError: more than ``cap`` bytes once decoded.
        InvalidResponseError: a compressed body that does not inflate.
    """
    encoding = raw.headers.get("Content-Encoding", "").strip().lower()
    inflater = None
    if inflate and encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(47)  # gzip or zlib, from the header
    buf = bytearray()
    while len(buf) <= cap:
        chunk = await raw.content.read(64 * 1024)
        if not chunk:
            if inflater is not None:
                buf += inflater.flush()
                if len(buf) > cap:
                    break
            return bytes(buf)
        if inflater is not None:
            try:
                chunk = inflater.decompress(chunk, cap + 1 - len(buf))
            except zlib.error as exc:
                raw.close()
                raise InvalidResponseError(
                    "bad-encoding", f"{encoding} body: {exc}", method=method, url=url
                ) from None
        buf += chunk
    raw.close()
    raise ResponseTooLargeError(cap, method=method, url=url)


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpResource:
    """An ``async with`` REST client's lifecycle: its own or the caller's aiohttp
    session, closed once, refused after close.

    Subclasses set :attr:`name` (for the error message) and may override
    :meth:`_new_session`. Its own session leaves bodies compressed: they are
    inflated, bounded, by :func:`read_capped` (``inflate=self._owns_session``).
    """

    name = "client"

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._owns_session = session is None
        self._closed = False

    async def __aenter__(self) -> Self:
        self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client (and its own HTTP session). Later use raises."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _new_session(self) -> aiohttp.ClientSession:
        # Bodies are inflated by read_capped, bounded; never by aiohttp.
        return aiohttp.ClientSession(auto_decompress=False)

    def _ensure_open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise StreamClosedError(f"the {self.name} is closed")
        if self._session is None:
            self._session = self._new_session()
            self._owns_session = True
        return self._session
