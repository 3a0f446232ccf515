"""Validation rules shared by the SignalWire REST client and the cXML builder.

Wire facts from ``signalwire-compat-streams.md``: stream URLs are ``wss://`` only and
carry no query string (3.5: SignalWire says "ws is NOT supported" and "the url does not
support query string parameters"; a query string makes the handshake fail or is
dropped); tracks and callback methods are closed vocabularies (2.3, 3.2); at most 99
custom parameters (2.3); codecs of call streams (3.2).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..errors import ValidationError

__all__ = [
    "MAX_PARAMETERS",
    "Codec",
    "StreamTrack",
    "check_callback_method",
    "check_callback_url",
    "check_name",
    "check_parameters",
    "check_stream_url",
    "check_track",
]

MAX_PARAMETERS = 99


class StreamTrack(enum.StrEnum):
    """Which audio a stream carries (spec 2.3, 3.2; values with ``_track``)."""

    INBOUND = "inbound_track"
    OUTBOUND = "outbound_track"
    BOTH = "both_tracks"


class Codec(enum.StrEnum):
    """SignalWire ``codec`` values for call streams (spec 3.2; both directions, 5.1)."""

    PCMU_8000 = "PCMU@8000h"
    L16_16000 = "L16@16000h"
    L16_24000 = "L16@24000h"


def check_stream_url(url: str, field: str = "url") -> str:
    """A ``wss://`` URL with a host, no query string, no fragment, no spaces.

    Raises:
        ValidationError: anything else (``ws://`` included: spec 3.5).
    """
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ValidationError(field, "must be a wss:// URL without spaces")
    parts = urlsplit(url)
    if parts.scheme != "wss" or not parts.hostname:
        raise ValidationError(field, f"SignalWire dials wss:// URLs only, got {url!r}")
    if "?" in url:
        raise ValidationError(
            field,
            "a SignalWire stream URL cannot carry a query string (spec 3.5): put a secret"
            " in a path segment, or use parameters or a bearer token",
        )
    if "#" in url:
        raise ValidationError(field, "a stream URL has no fragment")
    return url


def check_callback_url(url: str, field: str = "status_callback") -> str:
    """An absolute ``http(s)://`` URL for status callbacks.

    Raises:
        ValidationError: not absolute http(s), or spaces.
    """
    if not isinstance(url, str) or any(c.isspace() for c in url):
        raise ValidationError(field, "must be an absolute http(s) URL without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"must be an absolute http(s) URL, got {url!r}")
    return url


def check_callback_method(method: str, field: str = "status_callback_method") -> str:
    """``GET`` or ``POST`` (upper-cased).

    Raises:
        ValidationError: anything else (Twilio's OpenAPI example's ``PUT`` included).
    """
    value = str(method).upper()
    if value not in ("GET", "POST"):
        raise ValidationError(field, f"must be GET or POST, got {method!r}")
    return value


def check_track(track: StreamTrack | str, field: str = "track") -> StreamTrack:
    """One of ``inbound_track``, ``outbound_track``, ``both_tracks``.

    Raises:
        ValidationError: anything else.
    """
    try:
        return StreamTrack(track)
    except ValueError:
        allowed = ", ".join(t.value for t in StreamTrack)
        raise ValidationError(field, f"must be one of {allowed}, got {track!r}") from None


def check_name(name: str, field: str = "name") -> str:
    """A non-empty stream name of at most 256 characters without control characters.

    Raises:
        ValidationError: empty, too long, or with control characters.
    """
    if not isinstance(name, str) or not name or len(name) > 256:
        raise ValidationError(field, "must be 1 to 256 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError(field, "must not contain control characters")
    return name


def check_parameters(
    parameters: Mapping[str, str] | None, field: str = "parameters"
) -> list[tuple[str, str]]:
    """Custom parameters as ``(name, value)`` pairs, at most :data:`MAX_PARAMETERS`.

    Raises:
        ValidationError: more than 99, an empty name, or a non-string name or value.
    """
    if not parameters:
        return []
    if len(parameters) > MAX_PARAMETERS:
        raise ValidationError(
            field, f"at most {MAX_PARAMETERS} parameters are allowed, got {len(parameters)}"
        )
    pairs: list[tuple[str, str]] = []
    for key, value in parameters.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(field, "every parameter needs a non-empty string name")
        if not isinstance(value, str):
            raise ValidationError(field, f"parameter {key!r} must have a string value")
        pairs.append((key, value))
    return pairs
