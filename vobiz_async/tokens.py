"""Secrets in the media-socket URL: the only gate on a Vobiz media socket.

Vobiz sends no signature of its own on the WebSocket (spec 4.1), but it preserves the
query string and path of the service URL. So the URL carries a secret, checked at the
handshake in constant time:

* a static token: ``wss://host/media?token=SECRET`` (or ``.../media/SECRET``);
* a signed, expiring per-call token made by :func:`sign_stream_url`:
  ``token=<expiry>.<call_id>.<signature>``, an HMAC-SHA256 over the call id and the
  expiry. The server checks it at the handshake, then checks that ``start.callId`` is
  that call, so a leaked URL is useless for other calls and after it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import ValidationError

__all__ = [
    "DEFAULT_STREAM_TOKEN_TTL",
    "TokenCheck",
    "extract_token",
    "sign_stream_url",
    "sign_token",
    "verify_stream_token",
]

DEFAULT_STREAM_TOKEN_TTL = 86400.0
"""Default lifetime of a signed stream URL: one day, Vobiz's longest stream.

A signed URL is checked again on every ``maxRetries`` reconnect (a new socket, spec 3.1
and 4.1), so it must outlive the call: Vobiz's ``streamTimeout`` defaults to 86400 s
(spec 3.1). A shorter lifetime refuses a reconnect late in a long call."""

_MAX_EXPIRY_DIGITS = 12  # Unix times fit in 11 digits until the year 5138


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The result of checking a URL token.

    Attributes:
        ok: whether the token is acceptable.
        reason: ``"ok"``, ``"missing"``, ``"mismatch"``, ``"expired"`` or ``"malformed"``.
        call_id: for a signed token, the only call it admits (checked against ``start``).
    """

    ok: bool
    reason: str
    call_id: str | None = None


def _signature(secret: str, call_id: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"{call_id}.{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def sign_token(
    secret: str, call_id: str, *, ttl: float = DEFAULT_STREAM_TOKEN_TTL, now: float | None = None
) -> str:
    """A per-call token ``<expiry>.<call_id>.<signature>`` valid for ``ttl`` seconds.

    The default ``ttl`` (:data:`DEFAULT_STREAM_TOKEN_TTL`, 86400 s) covers the longest
    call, because reconnects re-check the token.

    Raises:
        ValidationError: an empty secret, or a call id containing a dot.
    """
    if not secret:
        raise ValidationError("secret", "must not be empty")
    if not call_id or "." in call_id:
        raise ValidationError("call_id", "must be non-empty and contain no '.'")
    expires = int((time.time() if now is None else now) + ttl)
    return f"{expires}.{call_id}.{_signature(secret, call_id, expires)}"


def sign_stream_url(
    url: str,
    secret: str,
    call_id: str,
    *,
    ttl: float = DEFAULT_STREAM_TOKEN_TTL,
    now: float | None = None,
) -> str:
    """``url`` with a signed per-call ``token`` query parameter added (other params kept).

    ``ttl`` defaults to one day (:data:`DEFAULT_STREAM_TOKEN_TTL`): ``maxRetries``
    reconnects come on new sockets and are checked again, so the URL must stay valid
    for the whole call (Vobiz's ``streamTimeout`` defaults to 86400 s, spec 3.1).

    Put the result in ``<Stream>`` XML (XML-escaped; the builder does it) or in a REST
    start. The server created with the same ``token`` verifies it.
    """
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", sign_token(secret, call_id, ttl=ttl, now=now)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def extract_token(path: str, base_path: str = "/") -> str | None:
    """The token from ``?token=`` or, failing that, the last path segment below ``base_path``.

    Args:
        path: the request target, e.g. ``/media/SECRET?tenant=4``.
        base_path: the server's own path; its segments are never taken as the token.

    Returns:
        The token, or None when absent or when ``path`` is not a parsable target.
    """
    try:
        parts = urlsplit(path)
    except ValueError:  # e.g. "//[x": an invalid IPv6 netloc
        return None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "token":
            return value
    base = base_path.rstrip("/")
    rest = parts.path[len(base) :] if parts.path.startswith(base) else parts.path
    segment = rest.strip("/").rsplit("/", 1)[-1]
    return segment or None


def verify_stream_token(token: str | None, secret: str, *, now: float | None = None) -> TokenCheck:
    """Check a static or signed token in constant time.

    Args:
        token: what the URL carried (None when absent).
        secret: the server's secret.
        now: the current Unix time (default: the clock).
    """
    if not token:
        return TokenCheck(False, "missing")
    if hmac.compare_digest(token.encode(), secret.encode()):
        return TokenCheck(True, "ok")
    pieces = token.split(".")
    if len(pieces) != 3:
        return TokenCheck(False, "mismatch")
    expires_text, call_id, signature = pieces
    # ASCII digits only ("1²" is isdigit() but not int()), and few of them (int() of a
    # 5000-digit string raises; no real expiry needs more than 11).
    if (
        not expires_text.isascii()
        or not expires_text.isdigit()
        or len(expires_text) > _MAX_EXPIRY_DIGITS
        or not call_id
    ):
        return TokenCheck(False, "malformed")
    expected = _signature(secret, call_id, int(expires_text))
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return TokenCheck(False, "mismatch")
    if int(expires_text) < (time.time() if now is None else now):
        return TokenCheck(False, "expired", call_id)
    return TokenCheck(True, "ok", call_id)
