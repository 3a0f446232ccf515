"""Vobiz webhook signatures (spec 5.4): V2/V3 over the callback URL and a nonce.

Vobiz signs ``base_url + nonce`` (V2) or ``base_url + "." + nonce`` (V3) with
HMAC-SHA256 keyed by the auth token, base64-encoded, where ``base_url`` is the callback
URL without its query string or fragment. **The body is not signed.** (The official
``vobiz-python`` SDK's V3 helper implements Plivo's scheme, which also hashes the POST
parameters; it disagrees with Vobiz's docs whenever a URL has a query or a body has
parameters.)

Headers: ``X-Vobiz-Signature-V3`` / ``-V3-Nonce``, ``-V2`` / ``-V2-Nonce``, and for
sub-account callbacks ``X-Vobiz-Signature-MA-V3`` / ``-MA-V2`` keyed by the *parent*
account's token. A header may hold several comma-separated signatures; any match wins.

[UNCERTAIN] The docs' Python sample keeps URL userinfo while its other samples drop it;
we drop it (``scheme://host[:port]/path``). Signing is only on when the callback URL
has credentials configured in the console, so verification has three modes: ``off``,
``if-present`` and ``require``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import SignatureError

__all__ = [
    "NonceCache",
    "SignatureMode",
    "VerifiedRequest",
    "base_url",
    "compute_signature",
    "sign_headers",
    "validate_v2",
    "validate_v3",
    "verify_request",
]


class SignatureMode(enum.StrEnum):
    """How strictly callbacks are verified."""

    OFF = "off"
    IF_PRESENT = "if-present"
    REQUIRE = "require"


def base_url(url: str) -> str:
    """``scheme://host[:port]/path``: the URL with query, fragment and userinfo removed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def compute_signature(url: str, nonce: str, auth_token: str, *, version: int = 3) -> str:
    """The base64 HMAC-SHA256 Vobiz would send for ``url`` and ``nonce``."""
    joiner = "." if version == 3 else ""
    message = base_url(url) + joiner + nonce
    digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _matches(expected: str, header: str) -> bool:
    candidates = [c.strip() for c in header.split(",") if c.strip()]
    # Compare against every candidate (no early exit) to keep timing uniform.
    results = [hmac.compare_digest(expected.encode(), c.encode()) for c in candidates]
    return any(results)


def validate_v2(url: str, nonce: str, signature: str, auth_token: str) -> bool:
    """Check an ``X-Vobiz-Signature-V2`` header value (constant-time; several allowed)."""
    return _matches(compute_signature(url, nonce, auth_token, version=2), signature)


def validate_v3(url: str, nonce: str, signature: str, auth_token: str) -> bool:
    """Check an ``X-Vobiz-Signature-V3`` header value (constant-time; several allowed)."""
    return _matches(compute_signature(url, nonce, auth_token, version=3), signature)


def sign_headers(
    url: str, auth_token: str, nonce: str, *, parent_token: str | None = None
) -> dict[str, str]:
    """The signature headers Vobiz would attach (used by the emulator)."""
    headers = {
        "X-Vobiz-Signature-V2": compute_signature(url, nonce, auth_token, version=2),
        "X-Vobiz-Signature-V2-Nonce": nonce,
        "X-Vobiz-Signature-V3": compute_signature(url, nonce, auth_token, version=3),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }
    if parent_token is not None:
        headers["X-Vobiz-Signature-MA-V2"] = compute_signature(url, nonce, parent_token, version=2)
        headers["X-Vobiz-Signature-MA-V3"] = compute_signature(url, nonce, parent_token, version=3)
    return headers


class NonceCache:
    """Remembers nonces for ``ttl`` seconds to refuse replays (bounded in size).

    Keyed on the nonce alone, whatever signature version carried it: a request signed
    V2 and V3 and replayed with one pair of headers removed is still a replay. Each
    nonce keeps a digest of the content it came with, so a provider's retry of the
    same callback (same nonce, same fields) is told apart from a replay that swaps the
    unsigned body (same nonce, other fields).
    """

    def __init__(self, ttl: float = 300.0, max_size: int = 100_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            when, _ = next(iter(seen.values()))
            if now - when <= self.ttl and len(seen) < self.max_size:
                break
            seen.popitem(last=False)

    def lookup(self, nonces: Iterable[str], digest: str = "", now: float | None = None) -> str:
        """``"new"``, ``"duplicate"`` (seen with this digest) or ``"replayed"``; adds nothing."""
        self._expire(time.monotonic() if now is None else now)
        outcome = "new"
        for nonce in nonces:
            entry = self._seen.get(nonce)
            if entry is None:
                continue
            if entry[1] != digest or not digest:
                return "replayed"
            outcome = "duplicate"
        return outcome

    def add(self, nonces: Iterable[str], digest: str = "", now: float | None = None) -> None:
        """Remember every one of ``nonces`` with the content ``digest``."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        for nonce in nonces:
            self._seen[nonce] = (now, digest)
            self._seen.move_to_end(nonce)
            if len(self._seen) > self.max_size:
                self._seen.popitem(last=False)

    def check_and_add(self, nonce: str, now: float | None = None) -> bool:
        """True if ``nonce`` is new (and now remembered); False if it was seen recently."""
        if self.lookup((nonce,), now=now) != "new":
            return False
        self.add((nonce,), now=now)
        return True


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """The outcome of :func:`verify_request`.

    Attributes:
        verified: a signature matched.
        scheme: ``"v3"``, ``"v2"``, ``"ma-v3"``, ``"ma-v2"`` or None (unsigned, allowed).
        nonces: every distinct nonce header value in the request (V3 and V2 may differ);
            a handler records all of them once it has taken the request.
    """

    verified: bool
    scheme: str | None
    nonces: tuple[str, ...] = ()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, item in headers.items():
            if key.lower() == lower:
                return item
    return value


def verify_request(
    url: str,
    headers: Mapping[str, str],
    auth_token: str,
    *,
    mode: SignatureMode | str = SignatureMode.IF_PRESENT,
    parent_auth_token: str | None = None,
    public_base_url: str | None = None,
    nonces: NonceCache | None = None,
) -> VerifiedRequest:
    """Verify a whole callback request.

    Args:
        url: the URL the request reached (its path is kept; query, fragment and
            userinfo are dropped).
        headers: the request headers (never logged here).
        auth_token: the (sub-)account's auth token.
        mode: ``off`` accepts everything; ``if-present`` checks signatures when any
            header is there; ``require`` refuses unsigned requests.
        parent_auth_token: the main account's token, for ``-MA-`` headers.
        public_base_url: behind a proxy the request URL is the internal one: give the
            public ``scheme://host[:port]`` and the request's path is appended to it.
        nonces: a cache that refuses nonces seen in the last ~5 minutes (replays). Every
            nonce of the request is checked and recorded, keyed on the nonce alone. A
            handler that may still refuse the request (unreadable body) passes None
            here and records ``result.nonces`` itself once it takes the request.

    Raises:
        SignatureError: ``reason`` is ``"missing"``, ``"mismatch"`` or ``"replayed"``.
    """
    mode = SignatureMode(mode)
    if mode is SignatureMode.OFF:
        return VerifiedRequest(False, None)
    if public_base_url:
        path = urlsplit(url).path
        url = public_base_url.rstrip("/") + path
    checks: list[tuple[str, str, str, str]] = []
    for scheme, sig_name, nonce_name, token in (
        ("v3", "X-Vobiz-Signature-V3", "X-Vobiz-Signature-V3-Nonce", auth_token),
        ("v2", "X-Vobiz-Signature-V2", "X-Vobiz-Signature-V2-Nonce", auth_token),
        ("ma-v3", "X-Vobiz-Signature-MA-V3", "X-Vobiz-Signature-V3-Nonce", parent_auth_token or ""),
        ("ma-v2", "X-Vobiz-Signature-MA-V2", "X-Vobiz-Signature-V2-Nonce", parent_auth_token or ""),
    ):
        signature = _header(headers, sig_name)
        nonce = _header(headers, nonce_name)
        if signature and nonce and token:
            checks.append((scheme, signature, nonce, token))
    if not checks:
        if mode is SignatureMode.REQUIRE:
            raise SignatureError("missing", "the callback carries no Vobiz signature")
        return VerifiedRequest(False, None)
    all_nonces = tuple(
        dict.fromkeys(
            n
            for n in (
                _header(headers, "X-Vobiz-Signature-V3-Nonce"),
                _header(headers, "X-Vobiz-Signature-V2-Nonce"),
            )
            if n
        )
    )
    for scheme, signature, nonce, token in checks:
        version = 3 if scheme.endswith("v3") else 2
        if _matches(compute_signature(url, nonce, token, version=version), signature):
            if nonces is not None:
                if nonces.lookup(all_nonces) != "new":
                    raise SignatureError("replayed", "this callback's nonce was already used")
                nonces.add(all_nonces)
            return VerifiedRequest(True, scheme, all_nonces)
    raise SignatureError("mismatch", "the callback's signature does not match")
