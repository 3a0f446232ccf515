"""Compat webhook signatures: SignalWire (Scheme A and B) and Twilio (spec section 7).

Form posts (every stream status callback): ``base64(HMAC-SHA1(key, url + sorted
params))`` where ``url`` is the full URL the platform requested, query string included,
and the parameters are sorted by name with their *decoded* values appended (7.2). The
key is SignalWire's project **Signing Key** (not the API token) or Twilio's Auth Token.
JSON bodies: SignalWire's Scheme A, ``hex(HMAC-SHA1(key, url + raw body))`` (7.5), or
the ``bodySHA256`` query parameter with the URL signed alone (7.4).

The platform may have signed the URL with or without the scheme's default port (7.3),
so the URL as given, with the default port added when absent, and with it removed when
present are all tried. Comparisons are constant-time on bytes. There is no nonce and so
no replay protection on these webhooks (7.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = ["compute_signature", "url_variants", "validate_json", "validate_request"]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(params: Params) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        return [(str(k), str(v)) for k, v in params.items()]
    return [(str(k), str(v)) for k, v in params]


def _b64_hmac_sha1(key: str, data: str) -> str:
    digest = hmac.new(key.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _equal(a: str, b: str) -> bool:
    # On bytes: hmac.compare_digest refuses non-ASCII str.
    return hmac.compare_digest(a.encode(), b.encode())


def compute_signature(
    url: str, params: Params, signing_key: str, *, dedupe_repeated: bool = False
) -> str:
    """The base64 signature a compat platform sends for a form request (spec 7.2).

    Args:
        url: the full URL, query string included.
        params: the decoded form parameters (a mapping or ``(name, value)`` pairs).
        signing_key: SignalWire's Signing Key, or Twilio's Auth Token.
        dedupe_repeated: Twilio's rule for a repeated name (``sorted(set(values))``);
            the default is SignalWire's (every value, in submission order).
    """
    pairs = _pairs(params)
    if dedupe_repeated:
        names = sorted({k for k, _ in pairs})
        data = url + "".join(
            k + v for k in names for v in sorted({v for kk, v in pairs if kk == k})
        )
    else:
        data = url + "".join(k + v for k, v in sorted(pairs, key=lambda kv: kv[0]))
    return _b64_hmac_sha1(signing_key, data)


def url_variants(url: str) -> list[str]:
    """The URL as given, and with the scheme's default port toggled (spec 7.3)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    out = [url]
    try:
        port = parts.port
    except ValueError:
        return out
    if default is None or not parts.hostname:
        return out
    userinfo, _, hostport = parts.netloc.rpartition("@")
    prefix = userinfo + "@" if userinfo else ""
    host = hostport if port is None else hostport.rsplit(":", 1)[0]
    if port is None:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif port == default:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return out


def validate_request(url: str, params: Params, signature: str, signing_key: str) -> bool:
    """Whether ``signature`` (``X-SignalWire-Signature`` / ``X-Twilio-Signature``) signs
    this form request; both rules for repeated names and the port variants are tried.

    Args:
        url: the public URL the platform requested, query string included (behind a
            proxy, rebuild it; for a WebSocket upgrade, the ``wss://`` URL, spec 7.6).
        params: the decoded form parameters (empty for GET and upgrades).
        signature: the header's value.
        signing_key: SignalWire's Signing Key, or Twilio's Auth Token.

    Returns:
        True when any variant matches (constant-time comparisons).
    """
    if not signature or not signing_key:
        return False
    pairs = _pairs(params)
    rules = (False, True) if len({k for k, _ in pairs}) != len(pairs) else (False,)
    results = [
        _equal(compute_signature(u, pairs, signing_key, dedupe_repeated=rule), signature)
        for u in url_variants(url)
        for rule in rules
    ]
    return any(results)


def validate_json(url: str, raw_body: str | bytes, signature: str, signing_key: str) -> bool:
    """Whether ``signature`` signs a JSON request: SignalWire's Scheme A (hex over URL
    and raw body, spec 7.5) or ``bodySHA256`` (base64 over the URL, whose
    ``bodySHA256`` query parameter must be the body's SHA-256, spec 7.4).

    Returns:
        True when either scheme matches for any URL variant.
    """
    if not signature or not signing_key:
        return False
    body = raw_body if isinstance(raw_body, bytes) else raw_body.encode()
    key = signing_key.encode()
    body_hash = hashlib.sha256(body).hexdigest()
    matched = False
    for variant in url_variants(url):
        scheme_a = hmac.new(key, variant.encode() + body, hashlib.sha1).hexdigest()
        if _equal(scheme_a, signature):
            matched = True
        if _equal(_b64_hmac_sha1(signing_key, variant), signature):
            query = dict(parse_qsl(urlsplit(variant).query, keep_blank_values=True))
            expected = query.get("bodySHA256")
            if expected is not None and _equal(body_hash, expected.lower()):
                matched = True
    return matched
