"""Async REST client for the Streams sub-resource of SignalWire's compatibility API.

Wire facts (``signalwire-compat-streams.md`` section 2): HTTP Basic auth with the
Project ID and API token (1.1), form-encoded bodies and ``.json`` paths under
``/api/laml/2010-04-01`` (1.1), start is ``POST …/Calls/{CallSid}/Streams.json`` and
stop is ``POST …/Streams/{Sid}.json`` with ``Status=stopped`` (2.1, 2.4). There is no
get, list or delete (2.5), so a start whose response was lost cannot be reconciled by
listing: every start carries a deterministic ``Name``, and after an ambiguous failure
(timeout, reset, 5xx) the stream is stopped by that name before the start is sent
again (2.7), so one :meth:`CompatStreamsAPI.start` never leaves two live streams.
Every answer's body is read bounded by ``RestLimits.max_body_bytes`` (after
decompression), as the Vobiz client reads it.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict

from .._http import (
    HttpResource,
    RestLimits,
    RetryPolicy,
    Timeouts,
    coerce_retry,
    coerce_timeouts,
    parse_body,
    read_capped,
    retry_after_header,
)
from ..errors import (
    APIError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    ValidationError,
    api_error_for_status,
)
from ._rules import (
    StreamTrack,
    check_callback_method,
    check_callback_url,
    check_name,
    check_parameters,
    check_stream_url,
    check_track,
)

__all__ = [
    "API_PATH",
    "CompatStream",
    "CompatStreamsAPI",
    "SignalWireClient",
    "default_stream_name",
    "parse_rfc2822",
]

API_PATH = "/api/laml/2010-04-01"
log = logging.getLogger("vobiz_async.signalwire")


def parse_rfc2822(value: str | None) -> datetime | None:
    """An aware datetime from an RFC 2822 date, or None when it cannot be parsed.

    SignalWire's examples write the month ``Sept`` (spec 2.2), which
    ``email.utils.parsedate_to_datetime`` refuses: it is read as ``Sep``. A date
    without a zone is taken as UTC (``-0000`` means "UTC, zone unknown").
    """
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.replace(" Sept ", " Sep "))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


class CompatStream(BaseModel):
    """A stream as the compat API returns it (spec 2.2). Unknown fields are kept.

    Attributes:
        sid: the stream SID (a UUID on SignalWire, ``MZ…`` on Twilio; opaque).
        account_sid: the Project ID. call_sid: the call.
        name: the stream's name (ours when we chose it).
        status: ``queued``, ``in-progress`` or ``stopped`` (any string is kept).
        date_updated: ``date_updated`` as an aware datetime, None when unparsable.
        date_updated_raw: the string as received.
        uri: the resource's relative URI (with ``.json``).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    sid: str
    account_sid: str | None = None
    call_sid: str | None = None
    name: str | None = None
    status: str | None = None
    date_updated: datetime | None = None
    date_updated_raw: str | None = None
    uri: str | None = None

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> CompatStream:
        """Parse a response body (tolerant: every field but ``sid`` may be missing).

        Raises:
            ValueError: no ``sid``.
        """
        sid = body.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ValueError("the stream object has no sid")
        raw_date = body.get("date_updated")
        raw_date = raw_date if isinstance(raw_date, str) else None
        known = {"sid", "account_sid", "call_sid", "name", "status", "date_updated", "uri"}
        extra = {k: v for k, v in body.items() if k not in known and k != "date_updated_raw"}

        def text(key: str) -> str | None:
            value = body.get(key)
            return value if isinstance(value, str) else None

        return cls(
            sid=sid,
            account_sid=text("account_sid"),
            call_sid=text("call_sid"),
            name=text("name"),
            status=text("status"),
            date_updated=parse_rfc2822(raw_date),
            date_updated_raw=raw_date,
            uri=text("uri"),
            **extra,
        )


def _error_from(
    status: int,
    body: Any,
    headers: Mapping[str, str],
    method: str,
    url: str,
    retry_statuses: frozenset[int],
) -> APIError:
    """The typed error for a non-2xx compat answer; reads every shape of spec 2.6."""
    data: dict[str, Any] = body if isinstance(body, dict) else {"raw": body}
    code: Any = data.get("code")
    message: Any = data.get("message") or data.get("detail") or data.get("title")
    more_info: Any = data.get("more_info")
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        first = errors[0]
        if isinstance(first, dict):
            message = message or first.get("message")
            code = code if code is not None else first.get("code")
            more_info = more_info or first.get("more_info")
        else:
            message = message or "; ".join(str(e) for e in errors)
    if not message:
        raw = data.get("raw")
        message = str(raw)[:200] if raw else f"HTTP {status}"
    cls = api_error_for_status(status)
    kwargs: dict[str, Any] = {
        "code": str(code) if code is not None and not isinstance(code, bool) else None,
        "more_info": more_info if isinstance(more_info, str) else None,
        "body": data,
        "method": method,
        "url": url,
        "request_id": headers.get("X-Request-Id") or headers.get("Twilio-Request-Id"),
        "retryable": status in retry_statuses,
    }
    if cls is RateLimitError:
        kwargs["retry_after"] = retry_after_header(headers)
    return cls(status, str(message), **kwargs)


class SignalWireClient(HttpResource):
    """The SignalWire compat REST client. Use as ``async with SignalWireClient(...)``.

    Args:
        project_id: the Project ID (the compat API's AccountSid); default
            ``SIGNALWIRE_PROJECT_ID``.
        api_token: an API token with the Voice scope; default ``SIGNALWIRE_API_TOKEN``.
            Never shown in ``repr()`` or logs.
        space_url: the Space host, e.g. ``example.signalwire.com`` (an ``https://``
            prefix is accepted); default ``SIGNALWIRE_SPACE_URL``.
        base_url: a full origin (``http://127.0.0.1:PORT``) that overrides the Space,
            for tests and the emulator; ``/api/laml/2010-04-01`` is appended unless present.
        timeout: a :class:`~vobiz_async.Timeouts` value, or seconds for the whole request.
        retry: a :class:`~vobiz_async.RetryPolicy` value, or the number of attempts.
        session: an ``aiohttp.ClientSession`` to use; it is not closed by the client.
            Its bodies are decoded by aiohttp, then read up to the same bound.
        limits: a :class:`~vobiz_async.RestLimits` value; only ``max_body_bytes``
            applies (1 MiB by default, after decompression; the client's own session
            inflates gzip/deflate itself, bounded). A longer body raises
            :class:`~vobiz_async.errors.ResponseTooLargeError`.

    Raises:
        ValidationError: missing credentials or Space (also not in the environment).
    """

    name = "SignalWireClient"

    def __init__(
        self,
        project_id: str | None = None,
        api_token: str | None = None,
        *,
        space_url: str | None = None,
        base_url: str | None = None,
        timeout: Timeouts | float | None = None,
        retry: RetryPolicy | int | None = None,
        session: aiohttp.ClientSession | None = None,
        limits: RestLimits | None = None,
    ) -> None:
        project_id = project_id or os.environ.get("SIGNALWIRE_PROJECT_ID")
        api_token = api_token or os.environ.get("SIGNALWIRE_API_TOKEN")
        if not project_id:
            raise ValidationError("project_id", "pass project_id or set SIGNALWIRE_PROJECT_ID")
        if not api_token:
            raise ValidationError("api_token", "pass api_token or set SIGNALWIRE_API_TOKEN")
        if "/" in project_id or ":" in project_id:
            raise ValidationError("project_id", "must not contain '/' or ':'")
        self.project_id = project_id
        credentials = base64.b64encode(f"{project_id}:{api_token}".encode()).decode()
        self._authorization = f"Basic {credentials}"
        self.base_url = _base_url(space_url, base_url)
        self.timeout = coerce_timeouts(timeout)
        self.retry = coerce_retry(retry)
        self.limits = limits or RestLimits()
        super().__init__(session)
        self.streams = CompatStreamsAPI(self)

    def __repr__(self) -> str:
        return f"SignalWireClient(project_id={self.project_id!r}, base_url={self.base_url!r})"

    def call_path(self, call_sid: str, *rest: str) -> str:
        """``/Accounts/{project}/Calls/{call_sid}/…`` with every segment percent-encoded
        and ``.json`` on the last one (spec 1.1).

        Raises:
            ValidationError: an empty segment.
        """
        parts = ["Accounts", self.project_id, "Calls", call_sid, *rest]
        for part in parts:
            if not isinstance(part, str) or not part:
                raise ValidationError("path", f"invalid path segment {part!r}")
        return "/" + "/".join(quote(p, safe="") for p in parts) + ".json"

    async def _request(
        self, path: str, form: list[tuple[str, str]], *, retry: bool
    ) -> tuple[int, Any]:
        """POST one form to the compat API with auth, timeout, retries and error mapping.

        Args:
            retry: retry transport errors and retryable statuses (stop); a 429 is
                always retried (a rate-limited request did nothing).

        Raises:
            APIError: a non-2xx answer (after retries, when allowed).
            ResponseTooLargeError: a body over ``limits.max_body_bytes`` once decoded
                (not retried here; a start still stops its stream by name, 2.7).
            InvalidResponseError: a compressed body that does not inflate.
            TransportError / RequestTimeoutError: no usable answer.
        """
        session = self._ensure_open()
        url = self.base_url + path
        policy = self.retry
        client_timeout = aiohttp.ClientTimeout(
            total=self.timeout.total, connect=self.timeout.connect
        )
        attempt = 0
        while True:
            failure: APIError | TransportError
            try:
                async with session.post(
                    url,
                    data=form,
                    headers={"Accept": "application/json", "Authorization": self._authorization},
                    timeout=client_timeout,
                ) as raw:
                    data = await read_capped(
                        raw, self.limits.max_body_bytes, "POST", url, inflate=self._owns_session
                    )
                    body = parse_body(data.decode("utf-8", "replace"))
                    status, headers = raw.status, dict(raw.headers)
            except TimeoutError:
                failure = RequestTimeoutError(
                    f"no answer within {self.timeout.total:g}s", method="POST", url=url
                )
            except aiohttp.ClientError as exc:
                failure = TransportError(f"{type(exc).__name__}: {exc}", method="POST", url=url)
            else:
                log.debug("POST %s -> %s (try %d)", path, status, attempt + 1)
                if 200 <= status < 300:
                    return status, body
                failure = _error_from(status, body, headers, "POST", url, policy.retry_statuses)
            allowed = retry or isinstance(failure, RateLimitError)
            retry_after = failure.retry_after if isinstance(failure, RateLimitError) else None
            attempt += 1
            if not (allowed and failure.retryable and attempt < policy.attempts):
                raise failure
            delay = policy.delay(attempt - 1, retry_after)
            log.info("POST %s failed (%s); retry %d in %.2fs", path, failure, attempt, delay)
            await asyncio.sleep(delay)


def _base_url(space_url: str | None, base_url: str | None) -> str:
    if base_url:
        root = base_url.rstrip("/")
    else:
        space = space_url or os.environ.get("SIGNALWIRE_SPACE_URL")
        if not space:
            raise ValidationError(
                "space_url", "pass space_url (example.signalwire.com) or set SIGNALWIRE_SPACE_URL"
            )
        space = space.strip().rstrip("/")
        if "://" not in space:
            space = "https://" + space
        root = space
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("base_url", f"must be an http(s) origin, got {root!r}")
    return root if root.endswith(API_PATH) else root + API_PATH


def default_stream_name(call_sid: str, url: str, track: str) -> str:
    """The name a start gets when the caller gives none: ``va-`` and 16 hex digits of a
    hash of the call, URL and track (spec 2.7: derived from our own state, URL-safe)."""
    digest = hashlib.sha256(f"{call_sid}\n{url}\n{track}".encode()).hexdigest()
    return f"va-{digest[:16]}"


class CompatStreamsAPI:
    """``client.streams``: start and stop streams on a live call (spec 2.1)."""

    def __init__(self, client: SignalWireClient) -> None:
        self._client = client

    async def start(
        self,
        call_sid: str,
        url: str,
        *,
        name: str | None = None,
        track: StreamTrack | str = StreamTrack.INBOUND,
        status_callback: str | None = None,
        status_callback_method: str | None = None,
        parameters: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
    ) -> CompatStream:
        """Fork a live call's audio to ``url`` (a unidirectional stream, spec 1.3).

        ``Track`` is always sent: SignalWire's REST default (``both_tracks``) differs
        from its cXML default and Twilio's (spec 2.3). Without ``name`` the stream is
        named :func:`default_stream_name` (the same call, URL and track give the same
        name). The POST is never blindly repeated: after a timeout, a connection error
        or a 5xx, the stream is stopped by its name first (a 404 there means nothing
        was created), then the start is sent again, up to the retry policy's attempts.
        If that stop itself fails, the original error is raised and nothing is resent.
        An answer that cannot be read (over ``limits.max_body_bytes``, a bad encoding)
        is not resent either: the stream is stopped by name, then the error raised.

        Args:
            bearer_token: sent as ``AuthorizationBearerToken``; SignalWire puts it in
                the upgrade's ``Authorization: Bearer`` header (spec 2.3, 4.1).

        Raises:
            ValidationError: a ``ws://`` URL, a query string, a bad track or method,
                more than 99 parameters (before any request).
            ResponseTooLargeError: the answer's body passed ``limits.max_body_bytes``.
            APIError, TransportError: the API refused, or could not be reached.
        """
        url = check_stream_url(url)
        track = check_track(track)
        form: list[tuple[str, str]] = [("Url", url)]
        name = check_name(name) if name is not None else default_stream_name(call_sid, url, track)
        form.append(("Name", name))
        form.append(("Track", track.value))
        if status_callback is not None:
            form.append(("StatusCallback", check_callback_url(status_callback)))
        if status_callback_method is not None:
            form.append(("StatusCallbackMethod", check_callback_method(status_callback_method)))
        for n, (key, value) in enumerate(check_parameters(parameters), start=1):
            form += [(f"Parameter{n}.Name", key), (f"Parameter{n}.Value", value)]
        if bearer_token is not None:
            if not isinstance(bearer_token, str) or not bearer_token.strip():
                raise ValidationError("bearer_token", "must be a non-empty string")
            form.append(("AuthorizationBearerToken", bearer_token))
        client = self._client
        path = client.call_path(call_sid, "Streams")
        attempt = 0
        while True:
            try:
                status, body = await client._request(path, form, retry=False)
            except (TransportError, ServerError) as exc:
                attempt += 1
                try:
                    await self.stop(call_sid, name)
                except (APIError, TransportError) as stop_exc:
                    log.warning(
                        "start on %s failed (%s) and stopping %r failed too (%s): not retrying",
                        call_sid,
                        exc,
                        name,
                        stop_exc,
                    )
                    raise exc from stop_exc
                if attempt >= client.retry.attempts or isinstance(exc, InvalidResponseError):
                    raise  # an unreadable answer (too large, bad encoding) would come again
                log.info("start on %s failed (%s); stopped %r, starting again", call_sid, exc, name)
                await asyncio.sleep(client.retry.delay(attempt - 1))
                continue
            if not isinstance(body, dict):
                raise TransportError(
                    f"start answered {status} without a stream object",
                    method="POST",
                    url=client.base_url + path,
                    retryable=False,
                )
            try:
                return CompatStream.from_wire(body)
            except ValueError as exc:
                raise TransportError(
                    f"start answered {status} with {exc}",
                    method="POST",
                    url=client.base_url + path,
                    retryable=False,
                ) from None

    async def stop(self, call_sid: str, sid_or_name: str) -> bool:
        """Stop a stream by SID or name (``Status=stopped``, spec 2.4). Idempotent.

        Returns:
            True if it stopped now; False if it was already stopped or is unknown (404).

        Raises:
            APIError, TransportError: any other refusal, or no answer after retries.
        """
        path = self._client.call_path(call_sid, "Streams", sid_or_name)
        try:
            await self._client._request(path, [("Status", "stopped")], retry=True)
        except NotFoundError:
            return False
        return True
