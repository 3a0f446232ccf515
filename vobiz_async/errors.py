"""Every exception vobiz_async raises, rooted at :class:`VobizError`.

Callers catch a class and read attributes; nobody parses messages::

    VobizError
    ├── ValidationError          bad arguments, refused locally before any I/O (also ValueError)
    ├── CodecError               malformed audio: odd L16 length, bad rate (also ValueError)
    ├── ProtocolError            the media-stream wire protocol was violated
    │   ├── LocalProtocolError   *we* misused it: a command before ``start``, after close
    │   └── RemoteProtocolError  the *peer* sent something invalid (carries the raw frame)
    ├── StreamClosedError        the stream/session/client is closed
    ├── SessionGoneError         a cluster session ended, or its worker's lease expired
    ├── SessionTimeoutError      no media stream connected in time (also TimeoutError)
    ├── SignatureError           a status callback failed its signature check
    └── RestError                any failure of a REST request: catch this one
        ├── APIError             a REST API (Vobiz, SignalWire/Twilio compat) answered an error
        │   ├── InvalidRequestError  400 / 405 / 409 / 422
        │   ├── AuthenticationError  401 (also a wrong path case or missing trailing slash)
        │   ├── PaymentRequiredError 402 (insufficient balance)
        │   ├── ForbiddenError       403
        │   ├── NotFoundError        404
        │   ├── RateLimitError       429 (``retry_after``)
        │   └── ServerError          5xx
        ├── TransportError       no usable HTTP answer: connection refused/reset, bad body
        │   ├── RequestTimeoutError      the request timed out (also TimeoutError)
        │   └── InvalidResponseError     a 2xx whose body cannot be used (``reason``)
        │       └── ResponseTooLargeError    the body passed ``RestLimits.max_body_bytes``
        ├── PaginationLimitError the list went on past ``RestLimits`` (pages or items)
        └── StartOutcomeUnknownError  a start may or may not have created a stream

``retryable`` says whether repeating the same request may help; the client's retry
policy reads it, and so can applications.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "CodecError",
    "ForbiddenError",
    "InvalidRequestError",
    "InvalidResponseError",
    "LocalProtocolError",
    "NotFoundError",
    "PaginationLimitError",
    "PaymentRequiredError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "RestError",
    "ServerError",
    "SessionGoneError",
    "SessionTimeoutError",
    "SignatureError",
    "StartOutcomeUnknownError",
    "StreamClosedError",
    "TransportError",
    "ValidationError",
    "VobizError",
    "api_error_for_status",
]


class VobizError(Exception):
    """Root of every exception raised by vobiz_async."""


class ValidationError(VobizError, ValueError):
    """An argument was refused locally, before any request or frame was sent.

    Attributes:
        field: the parameter at fault (``"audio_track"``, ``"extra_headers"``, ...).
        reason: why it was refused, in one sentence.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CodecError(VobizError, ValueError):
    """Audio bytes or an audio format that the codec cannot handle."""


class ProtocolError(VobizError):
    """The media-stream protocol (spec section 4) was violated."""


class LocalProtocolError(ProtocolError):
    """Our side misused the protocol, e.g. ``play()`` before ``start`` or after close."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a frame we cannot use.

    Attributes:
        reason: a short machine-friendly reason (``"invalid-json"``, ``"bad-base64"``...).
        raw: the offending frame, truncated to 512 characters.
    """

    def __init__(self, reason: str, raw: str | bytes = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw[:512]


class StreamClosedError(VobizError):
    """The stream, session, server or client was already closed."""


class SessionGoneError(VobizError):
    """A session controlled through ``vobiz_async.cluster`` is no longer there.

    Attributes:
        stream_id: the session's stream id.
        reason: ``"ended"`` (the stream closed normally) or ``"lease-expired"`` (its
            worker stopped renewing the registration: it died, stalled or lost Redis).
    """

    def __init__(self, stream_id: str, reason: str) -> None:
        super().__init__(f"session {stream_id} is gone: {reason}")
        self.stream_id = stream_id
        self.reason = reason


class SessionTimeoutError(VobizError, TimeoutError):
    """No media stream connected in time (``wait_for_session``, ``wait_for_call``).

    Attributes:
        stream_id: the stream waited for (None when waiting for a call).
        call_id: the call waited for (None when waiting for a stream).
        timeout: the seconds waited.
    """

    def __init__(
        self,
        *,
        stream_id: str | None = None,
        call_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        what = f"stream {stream_id!r}" if stream_id is not None else f"call {call_id!r}"
        super().__init__(f"no media stream for {what} connected within {timeout} s")
        self.stream_id = stream_id
        self.call_id = call_id
        self.timeout = timeout


class SignatureError(VobizError):
    """A status callback's signature is missing, wrong, or its nonce was replayed.

    Attributes:
        reason: ``"missing"``, ``"mismatch"`` or ``"replayed"``.
    """

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"callback signature {reason}")
        self.reason = reason


class RestError(VobizError):
    """Any failure of a Vobiz REST request: an error status, no usable answer, or an
    outcome the client could not establish. Catch this to handle every REST failure."""


class APIError(RestError):
    """The Vobiz REST API answered with an error status.

    Attributes:
        status_code: the HTTP status.
        message: the error text from the body (both documented body shapes are read).
        api_id: Vobiz's ``api_id`` from the body, when present.
        request_id: ``requestId`` from the envelope error shape, or the request-id header.
        code: the envelope's ``error.code`` (``"RATE_LIMIT_EXCEEDED"``), when present;
            for the SignalWire/Twilio compat API, its numeric code as a string (``"20404"``).
        more_info: a documentation URL for the error (compat API bodies), when present.
        body: the parsed JSON body (or ``{"raw": text}`` when it was not JSON).
        method, url: the request that failed (no credentials in either).
        retryable: whether the same request may succeed if repeated.
    """

    default_retryable = False

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        api_id: str | None = None,
        request_id: str | None = None,
        code: str | None = None,
        body: Mapping[str, Any] | None = None,
        method: str = "",
        url: str = "",
        retryable: bool | None = None,
        more_info: str | None = None,
    ) -> None:
        super().__init__(f"{status_code} {message}" + (f" ({method} {url})" if method else ""))
        self.status_code = status_code
        self.message = message
        self.api_id = api_id
        self.request_id = request_id
        self.code = code
        self.body: Mapping[str, Any] = body or {}
        self.method = method
        self.url = url
        self.retryable = self.default_retryable if retryable is None else retryable
        self.more_info = more_info


class InvalidRequestError(APIError):
    """400, 405, 409 or 422: the request was refused as invalid."""


class AuthenticationError(APIError):
    """401. Vobiz also answers 401 for a lower-cased path segment or a missing trailing slash."""


class PaymentRequiredError(APIError):
    """402: insufficient balance."""


class ForbiddenError(APIError):
    """403: the account may not do this."""


class NotFoundError(APIError):
    """404: unknown call or stream (or a stream already stopped)."""


class RateLimitError(APIError):
    """429: CPS or concurrency limit. ``retry_after`` is in seconds, when Vobiz said."""

    default_retryable = True

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(APIError):
    """A 5xx from Vobiz or a proxy in front of it."""

    default_retryable = True


class TransportError(RestError):
    """No usable HTTP answer: refused, reset, DNS failure, or an unreadable body.

    Attributes:
        method, url: the request that failed.
        retryable: True for connection-level failures.
        sent: False when the connection was never established, so the server cannot
            have acted on the request; True or None (unknown) otherwise.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        url: str = "",
        retryable: bool = True,
        sent: bool | None = None,
    ) -> None:
        super().__init__(message + (f" ({method} {url})" if method else ""))
        self.method = method
        self.url = url
        self.retryable = retryable
        self.sent = sent


class RequestTimeoutError(TransportError, TimeoutError):
    """The request did not complete within its timeout."""


class InvalidResponseError(TransportError):
    """An answer whose body cannot be used (not JSON, nested too deep, wrong shape, an
    undecodable encoding; a body over the limit is its subclass, whatever the status).

    Attributes:
        reason: ``"not-json"``, ``"too-deep"``, ``"not-an-object"``, ``"bad-shape"`` or
            ``"too-large"``.
    """

    def __init__(self, reason: str, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(message, method=method, url=url, retryable=False)
        self.reason = reason


class ResponseTooLargeError(InvalidResponseError):
    """The response body was longer than ``RestLimits.max_body_bytes`` (after decoding).

    Attributes:
        limit: the cap in bytes; reading stopped one byte past it.
    """

    def __init__(self, limit: int, *, method: str = "", url: str = "") -> None:
        super().__init__("too-large", f"response body over {limit} bytes", method=method, url=url)
        self.limit = limit


class PaginationLimitError(RestError):
    """Listing a call's streams went on past the bounds of ``RestLimits``.

    A server that keeps answering fresh full pages would otherwise be paged forever.

    Attributes:
        call_uuid: the call being listed.
        pages, items: how many pages and streams were read before stopping.
        max_pages, max_items: the bounds in force.
    """

    def __init__(
        self, call_uuid: str, *, pages: int, items: int, max_pages: int, max_items: int
    ) -> None:
        super().__init__(
            f"listing streams of {call_uuid} passed the bound ({pages} pages, {items} streams;"
            f" limits {max_pages} pages, {max_items} streams)"
        )
        self.call_uuid = call_uuid
        self.pages = pages
        self.items = items
        self.max_pages = max_pages
        self.max_items = max_items


class StartOutcomeUnknownError(RestError):
    """A stream start may or may not have created a stream, and the client could not find out.

    Raised instead of re-posting blind (spec 2.8: a POST is not idempotent). The stream,
    if it exists, is the call's in-progress stream whose ``service_url`` equals the one
    below: look for it later with ``client.streams.find(call_uuid, service_url)``, or
    stop it with ``stop_all(call_uuid)``.

    Attributes:
        call_uuid, service_url: identify the stream that may exist.
        reason: ``"list-failed"`` (the reconciling list itself failed),
            ``"not-listed"`` (the request may still be in flight and no stream showed up
            in the list yet) or ``"no-stream-id"`` (a 2xx without a ``stream_id``).
        cause: the error that made the outcome unclear (the POST's), when any.
        list_error: the error of the reconciling list, when it failed.
        status_code: the HTTP status of the POST answer, when one arrived.
    """

    def __init__(
        self,
        call_uuid: str,
        service_url: str,
        reason: str,
        *,
        cause: BaseException | None = None,
        list_error: BaseException | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(
            f"start on call {call_uuid} to {service_url}: outcome unknown ({reason});"
            " a stream may be running: list the call's streams or stop_all() before retrying"
        )
        self.call_uuid = call_uuid
        self.service_url = service_url
        self.reason = reason
        self.cause = cause
        self.list_error = list_error
        self.status_code = status_code


_STATUS_CLASSES: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: ForbiddenError,
    404: NotFoundError,
    405: InvalidRequestError,
    409: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def api_error_for_status(status_code: int) -> type[APIError]:
    """Return the :class:`APIError` subclass that represents ``status_code``."""
    if status_code in _STATUS_CLASSES:
        return _STATUS_CLASSES[status_code]
    if status_code >= 500:
        return ServerError
    return APIError
