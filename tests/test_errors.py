"""Errors carry data: status, ids, body and retryability, not just a message."""

from __future__ import annotations

from vobiz_async.errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    RemoteProtocolError,
    ServerError,
    api_error_for_status,
)


def test_status_codes_map_to_classes() -> None:
    """Each documented status maps to its class; unknown 5xx are ServerError."""
    assert api_error_for_status(401) is AuthenticationError
    assert api_error_for_status(404) is NotFoundError
    assert api_error_for_status(429) is RateLimitError
    assert api_error_for_status(503) is ServerError
    assert api_error_for_status(418) is APIError


def test_api_error_attributes_and_retryability() -> None:
    """Attributes are kept; 429/5xx are retryable by default, 4xx are not."""
    err = ServerError(502, "bad gateway", api_id="a1", body={"error": "x"}, method="GET", url="/u")
    assert (err.status_code, err.api_id, err.retryable) == (502, "a1", True)
    assert err.body == {"error": "x"}
    assert not NotFoundError(404, "Stream not found").retryable
    limited = RateLimitError(429, "slow down", retry_after=2.5)
    assert limited.retryable and limited.retry_after == 2.5


def test_remote_protocol_error_truncates_raw_frame() -> None:
    """A huge offending frame is kept only as its first 512 characters."""
    err = RemoteProtocolError("invalid-json", "x" * 10_000)
    assert err.reason == "invalid-json" and len(err.raw) == 512
