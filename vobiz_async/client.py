"""Async REST client for Vobiz Audio Streams (spec section 2), on aiohttp.

One private :meth:`VobizClient._request` applies auth, timeouts, retries and error
mapping; the public methods of :class:`StreamsAPI` only build requests. Rules that
come from the spec:

* auth is two headers, ``X-Auth-ID`` and ``X-Auth-Token`` (not HTTP Basic);
* paths are PascalCase and end with ``/`` (otherwise Vobiz answers 401);
* GET and DELETE are safe to retry; POST (start) is not: a lost response may have
  created a stream, so :meth:`StreamsAPI.start` lists the call's streams and adopts an
  in-progress one with the same ``service_url`` before it ever re-posts, and raises
  :class:`~vobiz_async.errors.StartOutcomeUnknownError` rather than re-post blind
  (spec 2.8);
* deleting a stream that is already gone (404) is success (idempotent stop);
* ids go into paths only if they match :data:`vobiz_async._rules.SAFE_ID` (a ``..``
  stream id would otherwise hang up the call);
* every answer is bounded (:class:`RestLimits`): body size while reading (after
  decompression), JSON nesting, pages and streams when listing.
"""

from __future__ import annotations

import asyncio
import builtins
import json as json_module
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import pydantic

from . import __name__ as _package
from ._http import (
    HttpResource,
    RestLimits,
    RetryPolicy,
    Timeouts,
    coerce_retry,
    coerce_timeouts,
    read_capped,
    retry_after_header,
)
from ._rules import check_safe_id
from ._version import __version__
from .errors import (
    APIError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    PaginationLimitError,
    RateLimitError,
    RequestTimeoutError,
    RestError,
    ServerError,
    StartOutcomeUnknownError,
    TransportError,
    ValidationError,
    api_error_for_status,
)
from .models import StartedStream, StartStreamRequest, Stream, StreamPage

__all__ = [
    "DEFAULT_BASE_URL",
    "RestLimits",
    "RetryPolicy",
    "StreamsAPI",
    "Timeouts",
    "VobizClient",
]

DEFAULT_BASE_URL = "https://api.vobiz.ai"
log = logging.getLogger(f"{_package}.client")


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: Any
    headers: Mapping[str, str]
    problem: str | None = None  # why the body is not usable JSON: not-json, too-deep


def _retry_after(headers: Mapping[str, str], body: Any) -> float | None:
    """``Retry-After`` (seconds or an HTTP date), else the envelope's ``retryAfter``."""
    seconds_header = retry_after_header(headers)
    if seconds_header is not None:
        return seconds_header
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        details = body["error"].get("details")
        seconds = details.get("retryAfter") if isinstance(details, dict) else None
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            return float(seconds)
    return None


def _error_from(resp: _Response, method: str, url: str, retry_statuses: frozenset[int]) -> APIError:
    """Build the typed error for a non-2xx answer; reads both error body shapes."""
    body = resp.body if isinstance(resp.body, dict) else {"raw": resp.body}
    error = body.get("error")
    code = None
    if isinstance(error, dict):  # the G4 envelope: {"status":"error","error":{...}}
        message = str(error.get("message") or error.get("code") or "error")
        code = error.get("code") if isinstance(error.get("code"), str) else None
    elif isinstance(error, str):  # the flat shape: {"api_id":..., "error": "..."}
        message = error
    else:
        message = str(body.get("message") or body.get("raw") or "")[:200] or f"HTTP {resp.status}"
    if resp.status == 401:
        message += (
            " (Vobiz also answers 401 for a lower-cased path segment or a missing trailing"
            " slash, not only for bad credentials)"
        )
    request_id = body.get("requestId") or resp.headers.get("X-Request-Id")
    api_id = body.get("api_id")
    cls = api_error_for_status(resp.status)
    kwargs: dict[str, Any] = {
        "api_id": api_id if isinstance(api_id, str) else None,
        "request_id": request_id if isinstance(request_id, str) else None,
        "code": code,
        "body": body,
        "method": method,
        "url": url,
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = _retry_after(resp.headers, body)
    kwargs["retryable"] = resp.status in retry_statuses
    return cls(resp.status, message, **kwargs)


class VobizClient(HttpResource):
    """The Vobiz REST client. Use as ``async with VobizClient(...) as client:``.

    Args:
        auth_id: the account's Auth ID (``MA_...``/``SA_...``); default ``VOBIZ_AUTH_ID``.
        auth_token: the Auth Token; default ``VOBIZ_AUTH_TOKEN``. Never shown in
            ``repr()`` or logs.
        base_url: default ``VOBIZ_BASE_URL``, then ``https://api.vobiz.ai``. A URL
            already ending in ``/api/v1`` is accepted as is.
        timeout: a :class:`Timeouts` value, or seconds for the whole request (the
            connect timeout is then the smaller of 5 s and that).
        retry: a :class:`RetryPolicy` value, or the number of attempts (1: no retries).
        session: an ``aiohttp.ClientSession`` to use; it is not closed by the client.
        limits: bounds on bodies and listing (:class:`RestLimits`).

    Raises:
        ValidationError: no credentials given and none in the environment.
    """

    name = "VobizClient"

    def __init__(
        self,
        auth_id: str | None = None,
        auth_token: str | None = None,
        *,
        base_url: str | None = None,
        timeout: Timeouts | float | None = None,
        retry: RetryPolicy | int | None = None,
        session: aiohttp.ClientSession | None = None,
        limits: RestLimits | None = None,
    ) -> None:
        auth_id = auth_id or os.environ.get("VOBIZ_AUTH_ID")
        auth_token = auth_token or os.environ.get("VOBIZ_AUTH_TOKEN")
        if not auth_id:
            raise ValidationError("auth_id", "pass auth_id or set VOBIZ_AUTH_ID")
        if not auth_token:
            raise ValidationError("auth_token", "pass auth_token or set VOBIZ_AUTH_TOKEN")
        self.auth_id = auth_id
        self._auth_token = auth_token
        root = (base_url or os.environ.get("VOBIZ_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = root if root.endswith("/api/v1") else root + "/api/v1"
        self.timeout = coerce_timeouts(timeout)
        self.retry = coerce_retry(retry)
        self.limits = limits or RestLimits()
        super().__init__(session)
        self.streams = StreamsAPI(self)

    def __repr__(self) -> str:
        return f"VobizClient(auth_id={self.auth_id!r}, base_url={self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        return {
            "X-Auth-ID": self.auth_id,
            "X-Auth-Token": self._auth_token,
            "Accept": "application/json",
            "User-Agent": f"vobiz-async/{__version__}",
        }

    def call_path(self, call_uuid: str, *rest: str, stream_id: str | None = None) -> str:
        """``/Account/{id}/Call/{uuid}/.../{stream_id}/`` with the trailing slash Vobiz requires.

        Args:
            call_uuid: checked against :data:`~vobiz_async._rules.SAFE_ID`.
            rest: further segments (``"Stream"``), held to the same pattern.
            stream_id: checked like ``call_uuid``; appended last when given.

        Raises:
            ValidationError: an id that could change what the request acts on
                (``..``, ``.``, ``%2e%2e``, ``?``, ``#``, ``/``, spaces, empty, over 128).
        """
        ids = [check_safe_id(self.auth_id, "auth_id"), check_safe_id(call_uuid, "call_uuid")]
        segments = [check_safe_id(part, "path") for part in rest]  # positional ids too
        tail = [] if stream_id is None else [check_safe_id(stream_id, "stream_id")]
        parts = ["Account", ids[0], "Call", ids[1], *segments, *tail]
        return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts) + "/"

    async def _request(
        self,
        method: Literal["GET", "POST", "DELETE"],
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        retry: bool | None = None,
    ) -> _Response:
        """Send one API request with auth, timeout, retries and error mapping.

        Args:
            retry: retry on transport errors and retryable statuses; default True for
                GET and DELETE, False for POST (429 is always retried).

        Raises:
            APIError: a non-2xx answer (after retries, when retryable).
            TransportError / RequestTimeoutError: no usable answer.
        """
        session = self._ensure_open()
        url = self.base_url + path
        retry = method != "POST" if retry is None else retry
        policy = self.retry
        client_timeout = aiohttp.ClientTimeout(
            total=self.timeout.total, connect=self.timeout.connect
        )
        attempt = 0
        while True:
            failure: APIError | TransportError
            try:
                async with session.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers=self._headers(),
                    timeout=client_timeout,
                ) as raw:
                    data = await read_capped(
                        raw, self.limits.max_body_bytes, method, url, inflate=self._owns_session
                    )
                    body, problem = _parse_body(data.decode("utf-8", "replace"))
                    resp = _Response(raw.status, body, dict(raw.headers), problem)
            except aiohttp.ConnectionTimeoutError:
                failure = RequestTimeoutError(
                    f"could not connect within {self.timeout.connect:g}s",
                    method=method,
                    url=url,
                    sent=False,
                )
            except TimeoutError:
                failure = RequestTimeoutError(
                    f"no answer within {self.timeout.total:g}s", method=method, url=url
                )
            except aiohttp.ClientConnectorError as exc:
                failure = TransportError(
                    f"{type(exc).__name__}: {exc}", method=method, url=url, sent=False
                )
            except aiohttp.ClientError as exc:
                failure = TransportError(f"{type(exc).__name__}: {exc}", method=method, url=url)
            else:
                log.debug("%s %s -> %s (try %d)", method, path, resp.status, attempt + 1)
                if 200 <= resp.status < 300:
                    return resp
                failure = _error_from(resp, method, url, policy.retry_statuses)
            allowed = retry or isinstance(failure, RateLimitError)
            retry_after = failure.retry_after if isinstance(failure, RateLimitError) else None
            attempt += 1
            if not (allowed and failure.retryable and attempt < policy.attempts):
                raise failure
            delay = policy.delay(attempt - 1, retry_after)
            log.info("%s %s failed (%s); retry %d in %.2fs", method, path, failure, attempt, delay)
            await asyncio.sleep(delay)


def _parse_body(text: str) -> tuple[Any, str | None]:
    """The JSON body, or its text (truncated) and why it is not usable JSON."""
    if not text.strip():
        return None, None
    try:
        return json_module.loads(text), None
    except RecursionError:
        return text[:2000], "too-deep"
    except ValueError:
        return text[:2000], "not-json"


def _json_object(resp: _Response, method: str, url: str) -> dict[str, Any]:
    """The body of a 2xx answer as a JSON object.

    Raises:
        InvalidResponseError: not JSON, nested too deep, or not an object.
    """
    if isinstance(resp.body, dict):
        return resp.body
    reason = resp.problem or "not-an-object"
    raise InvalidResponseError(
        reason, f"HTTP {resp.status} body is not a JSON object ({reason})", method=method, url=url
    )


def _stream_from(body: Mapping[str, Any], method: str, url: str) -> Stream:
    """A :class:`Stream` from a JSON object, with any model failure typed."""
    try:
        return Stream.model_validate(body)
    except (pydantic.ValidationError, RecursionError, ValueError) as exc:
        raise InvalidResponseError(
            "bad-shape", f"unreadable stream object: {str(exc)[:200]}", method=method, url=url
        ) from None


class StreamsAPI:
    """``client.streams``: the stream lifecycle on a live call (spec 2.1)."""

    def __init__(self, client: VobizClient) -> None:
        self._client = client

    async def start(
        self,
        call_uuid: str,
        service_url: str,
        *,
        bidirectional: bool = False,
        audio_track: str | None = None,
        content_type: str | None = None,
        stream_timeout: int | None = None,
        status_callback_url: str | None = None,
        status_callback_method: str | None = None,
        extra_headers: Mapping[str, str] | str | None = None,
    ) -> StartedStream:
        """Start streaming a live call's audio to ``service_url``; never two streams.

        A POST is not idempotent (spec 2.8), so it is never re-sent blind. The algorithm:

        1. POST once. A 2xx with a ``stream_id`` is the answer. A 429 is retried by the
           request layer (a rate-limited request created nothing), and so is a
           connection that was never established.
        2. Otherwise the outcome is unclear (a timeout, a dropped connection, a 5xx, a
           2xx without ``stream_id``, an unreadable or oversized answer, or a G1-style
           400 "already active"): list the
           call's streams and adopt an in-progress one with the same ``service_url``
           (``reconciled=True``).
        3. None listed: wait ``RetryPolicy.reconcile_delay`` and list once more, since a
           creation still in flight on Vobiz shows up late. Found: adopt it.
        4. Still none: the POST is sent again only when the server has finished with it
           and said it failed (500, 503 and other 5xx except the gateway ones, 502 and
           504, which may hide a request still in flight), up to ``RetryPolicy.attempts``.
           After a timeout, a dropped connection, a 502/504 or a 2xx without
           ``stream_id`` a stream may still appear, so
           :class:`~vobiz_async.errors.StartOutcomeUnknownError` is raised instead; a
           400 is re-raised.
        5. If any reconciling list fails, the outcome is unknown too:
           :class:`~vobiz_async.errors.StartOutcomeUnknownError` carries ``call_uuid``,
           ``service_url``, the POST's error and the list's error.

        A stream already running at the same ``service_url`` before this call would be
        adopted by step 2; use distinct URLs (a query string per stream) to tell them
        apart. Vobiz's G1 docs refuse a second stream on an active URL anyway.

        Raises:
            ValidationError: an invalid parameter or id (before any request).
            StartOutcomeUnknownError: a stream may exist and could not be found.
            APIError, TransportError: the API refused, or could not be reached at all.
        """
        request = StartStreamRequest.create(
            service_url=service_url,
            bidirectional=bidirectional,
            audio_track=audio_track,
            content_type=content_type,
            stream_timeout=stream_timeout,
            status_callback_url=status_callback_url,
            status_callback_method=status_callback_method,
            extra_headers=extra_headers,
        )
        client = self._client
        path = client.call_path(call_uuid, "Stream")
        url = client.base_url + path
        policy = client.retry
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            try:
                resp = await client._request("POST", path, json=request.to_wire(), retry=False)
            except TransportError as exc:
                if exc.sent is False and attempt < policy.attempts:
                    await asyncio.sleep(policy.delay(attempt - 1))
                    continue  # the connection never opened: nothing can have been created
                if exc.sent is False:
                    raise
                cause: RestError = exc
                reason, may_repost = "not-listed", False
            except ServerError as exc:
                cause, status = exc, exc.status_code
                reason, may_repost = "not-listed", exc.status_code not in (502, 504)
            except InvalidRequestError as exc:
                if not _looks_like_duplicate(exc):
                    raise
                cause, status, reason, may_repost = exc, exc.status_code, "not-listed", False
            else:
                body = resp.body if isinstance(resp.body, dict) else {}
                stream_id = body.get("stream_id")
                message, api_id = body.get("message"), body.get("api_id")
                if isinstance(stream_id, str) and stream_id:
                    return StartedStream(
                        stream_id=stream_id,
                        call_uuid=call_uuid,
                        request=request,
                        message=message if isinstance(message, str) else None,
                        api_id=api_id if isinstance(api_id, str) else None,
                    )
                cause = InvalidResponseError(
                    "no-stream-id",
                    f"start answered {resp.status} without a stream_id",
                    method="POST",
                    url=url,
                )
                status, reason, may_repost = resp.status, "no-stream-id", False
            found = await self._reconcile(call_uuid, request.service_url, cause, status)
            if found is not None:
                log.info("start on %s reconciled to %s after %s", call_uuid, found, cause)
                return StartedStream(
                    stream_id=found, call_uuid=call_uuid, request=request, reconciled=True
                )
            if isinstance(cause, InvalidRequestError):
                raise cause
            if not may_repost:
                raise StartOutcomeUnknownError(
                    call_uuid, request.service_url, reason, cause=cause, status_code=status
                )
            if attempt >= policy.attempts:
                raise cause
            await asyncio.sleep(policy.delay(attempt - 1))

    async def _reconcile(
        self, call_uuid: str, service_url: str, cause: RestError, status: int | None
    ) -> str | None:
        """List (then, after ``reconcile_delay``, list again) for a stream at ``service_url``.

        Raises:
            StartOutcomeUnknownError: a list failed, so nothing can be concluded.
        """
        for round_ in range(2):
            if round_:
                await asyncio.sleep(self._client.retry.reconcile_delay)
            try:
                matches = await self.find(call_uuid, service_url)
            except RestError as exc:
                log.warning("could not list streams of %s to reconcile a start: %s", call_uuid, exc)
                raise StartOutcomeUnknownError(
                    call_uuid,
                    service_url,
                    "list-failed",
                    cause=cause,
                    list_error=exc,
                    status_code=status,
                ) from exc
            if matches:
                return matches[0].stream_id
        return None

    async def find(self, call_uuid: str, service_url: str) -> builtins.list[Stream]:
        """The call's in-progress streams whose ``service_url`` is ``service_url``.

        What to call after a :class:`~vobiz_async.errors.StartOutcomeUnknownError`.

        Raises:
            RestError: the list failed (including :class:`PaginationLimitError`).
        """
        return [
            stream
            async for stream in self.iterate(call_uuid)
            if stream.service_url == service_url and stream.in_progress and stream.stream_id
        ]

    async def get(self, call_uuid: str, stream_id: str) -> Stream:
        """Retrieve one stream.

        Raises:
            ValidationError: an unsafe id (no request is sent).
            NotFoundError: unknown stream (or call).
            InvalidResponseError: the body is not a stream object.
        """
        client = self._client
        path = client.call_path(call_uuid, "Stream", stream_id=stream_id)
        resp = await client._request("GET", path)
        url = client.base_url + path
        return _stream_from(_json_object(resp, "GET", url), "GET", url)

    async def list(self, call_uuid: str, *, limit: int = 20, offset: int = 0) -> StreamPage:
        """One page of the call's streams (active and stopped), any envelope (spec 2.5).

        Raises:
            ValidationError: a non-positive limit, a negative offset, an unsafe id.
            InvalidResponseError: a body in none of the documented envelopes.
        """
        if limit <= 0 or offset < 0:
            raise ValidationError("limit", "limit must be positive and offset not negative")
        client = self._client
        path = client.call_path(call_uuid, "Stream")
        resp = await client._request(
            "GET", path, params={"limit": str(limit), "offset": str(offset)}
        )
        if resp.problem is not None:
            raise InvalidResponseError(
                resp.problem,
                f"unreadable stream list ({resp.problem})",
                method="GET",
                url=client.base_url + path,
            )
        try:
            return StreamPage.from_body(resp.body, limit=limit, offset=offset)
        except (ValueError, RecursionError) as exc:
            raise InvalidResponseError(
                "bad-shape",
                f"unreadable stream list: {str(exc)[:200]}",
                method="GET",
                url=client.base_url + path,
            ) from None

    async def iterate(self, call_uuid: str, *, page_size: int = 20) -> AsyncIterator[Stream]:
        """Every stream of the call, page by page (``offset += limit`` until a short page).

        Stops as well when a page repeats what was already seen (a server that ignores
        ``offset``). A server that keeps sending fresh full pages is cut off at
        ``RestLimits.max_pages`` pages or ``max_items`` streams.

        Raises:
            PaginationLimitError: past those bounds.
        """
        limits = self._client.limits
        offset = pages = items = 0
        seen: set[str] = set()
        while True:
            if pages >= limits.max_pages:
                raise PaginationLimitError(
                    call_uuid,
                    pages=pages,
                    items=items,
                    max_pages=limits.max_pages,
                    max_items=limits.max_items,
                )
            page = await self.list(call_uuid, limit=page_size, offset=offset)
            pages += 1
            fresh = [s for s in page.streams if s.stream_id not in seen]
            for stream in fresh:
                if items >= limits.max_items:
                    raise PaginationLimitError(
                        call_uuid,
                        pages=pages,
                        items=items,
                        max_pages=limits.max_pages,
                        max_items=limits.max_items,
                    )
                if stream.stream_id:
                    seen.add(stream.stream_id)
                items += 1
                yield stream
            if len(page.streams) < page_size or not fresh:
                return
            offset += page_size

    async def stop(self, call_uuid: str, stream_id: str) -> bool:
        """Stop one stream. Idempotent.

        Returns:
            True if a running stream was stopped now; False if it was already gone
            (404: stopped before, or ended with the call).

        Raises:
            ValidationError: an unsafe id (``..`` would otherwise hang up the call).
        """
        client = self._client
        try:
            await client._request(
                "DELETE", client.call_path(call_uuid, "Stream", stream_id=stream_id)
            )
        except NotFoundError:
            return False
        return True

    async def stop_all(self, call_uuid: str) -> int | None:
        """Stop every stream on the call. Idempotent.

        Returns:
            How many were stopped when Vobiz says so (older API), 0 on a 404, else None.
        """
        client = self._client
        try:
            resp = await client._request("DELETE", client.call_path(call_uuid, "Stream"))
        except NotFoundError:
            return 0
        body = resp.body if isinstance(resp.body, dict) else {}
        count = body.get("streams_stopped")
        return count if isinstance(count, int) else None


def _looks_like_duplicate(exc: InvalidRequestError) -> bool:
    """G1 docs: a second stream on an active service_url is a 400 (spec 2.8)."""
    return exc.status_code == 400 and "active" in exc.message.lower()
