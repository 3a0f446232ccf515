"""Vobiz's rules for a stream, written once for the REST start and the ``<Stream>`` element.

The REST body (spec 2.3) and the XML attributes (spec 3.1) carry the same settings
under different names (``audio_track`` / ``audioTrack``...). Every check takes the
name to report in its :class:`~vobiz_async.errors.ValidationError`, so each caller
names the field the way its user wrote it. The emulator applies the same rules to what
it receives, so it refuses what our client refuses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from .codec import AudioFormat
from .errors import CodecError, ValidationError
from .events import Track

__all__ = [
    "EXTRA_HEADERS_MAX_BYTES",
    "INBOUND_CONTENT_TYPES",
    "SAFE_ID",
    "check_callback_method",
    "check_callback_url",
    "check_max_retries",
    "check_safe_id",
    "check_stream_timeout",
    "check_track",
    "format_extra_headers",
    "validate_inbound_content_type",
    "validate_service_url",
]

EXTRA_HEADERS_MAX_BYTES = 512
# Documented: [A-Za-z0-9] only. Vobiz's own examples use "_" in keys, so it is allowed
# too (a documented contradiction, spec 3.1 / 7.15). Anything else is refused locally.
_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9_]+$")
INBOUND_CONTENT_TYPES = (
    "audio/x-l16;rate=8000",
    "audio/x-l16;rate=16000",
    "audio/x-mulaw;rate=8000",
)
SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What an id may look like before it goes into a REST path: letters, digits, ``_`` and
``-``, 1 to 128 of them. Live ids are UUIDs and Auth IDs look like ``MA_AB12CD34``
(spec 1.2); anything else (``.``, ``..``, ``%2e%2e``, ``?``, ``#``, ``/``, spaces) could
change which resource a request acts on, so it is refused before any request."""


def check_safe_id(value: object, field: str) -> str:
    """Return ``value`` if it matches :data:`SAFE_ID`.

    Raises:
        ValidationError: not a string, empty, too long, or with any other character.
    """
    if not isinstance(value, str) or SAFE_ID.fullmatch(value) is None:
        shown = repr(value)[:60]
        raise ValidationError(
            field, f"{shown} is not a safe id (1-128 of A-Z a-z 0-9 _ -, e.g. a UUID)"
        )
    return value


def validate_service_url(url: str, field: str = "service_url") -> str:
    """Check a WebSocket URL Vobiz can dial: ``ws://`` or ``wss://`` with a host.

    Raises:
        ValidationError: anything else (http URLs, missing host, spaces).
    """
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ValidationError(field, "must be a ws:// or wss:// URL without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValidationError(field, f"must be a ws:// or wss:// URL, got {url!r}")
    return url


def format_extra_headers(
    headers: Mapping[str, str] | str, *, separator: str = ":", field: str = "extra_headers"
) -> str:
    """Validate extra headers and render them as Vobiz expects.

    Args:
        headers: a mapping, or an already formatted ``k=v,k=v`` / ``k:v,k:v`` string.
        separator: ``":"`` for the REST API (``header:value``), ``"="`` for XML.
        field: the name reported in errors.

    Raises:
        ValidationError: over 512 bytes, or keys/values outside ``[A-Za-z0-9_]``.
    """
    if isinstance(headers, str):
        pairs: list[tuple[str, str]] = []
        for part in headers.split(","):
            key, sep, value = part.partition("=" if "=" in part else ":")
            if not sep:
                raise ValidationError(field, f"{part!r} is not a key=value pair")
            pairs.append((key.strip(), value.strip()))
    elif isinstance(headers, Mapping):
        pairs = [(str(k), str(v)) for k, v in headers.items()]
    else:
        raise ValidationError(field, "must be a mapping or a k=v,k=v string")
    for key, value in pairs:
        if not _HEADER_TOKEN.match(key) or not _HEADER_TOKEN.match(value):
            raise ValidationError(
                field, f"{key!r}={value!r}: only letters, digits and '_' are allowed"
            )
    text = ",".join(f"{k}{separator}{v}" for k, v in pairs)
    if len(text.encode()) > EXTRA_HEADERS_MAX_BYTES:
        raise ValidationError(field, f"{len(text.encode())} bytes, the limit is 512")
    return text


def validate_inbound_content_type(value: object, field: str = "content_type") -> str:
    """The canonical ``;rate=`` form of an inbound content type Vobiz can stream.

    Raises:
        ValidationError: unparseable, or not one of :data:`INBOUND_CONTENT_TYPES`
            (24 kHz is outbound-only, spec 4.5).
    """
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string such as audio/x-l16;rate=8000")
    try:
        fmt = AudioFormat.parse(value)
    except CodecError as exc:
        raise ValidationError(field, str(exc)) from None
    if fmt.content_type not in INBOUND_CONTENT_TYPES:
        raise ValidationError(
            field,
            f"{value!r} cannot be streamed inbound; use one of {', '.join(INBOUND_CONTENT_TYPES)}"
            " (24 kHz is outbound-only, spec 4.5)",
        )
    return fmt.content_type


def check_track(
    track: object, bidirectional: object, field: str, *, default: Track | None
) -> Track | None:
    """The track as a :class:`Track`; a bidirectional stream needs ``inbound`` (spec 2.3, 3.1).

    Raises:
        ValidationError: an unknown track, or ``outbound``/``both`` with bidirectional.
    """
    if track is None or track == "":
        parsed = default
    else:
        try:
            parsed = Track(track) if isinstance(track, str) else Track("?")
        except ValueError:
            raise ValidationError(field, "must be inbound, outbound or both") from None
    if bidirectional is True and parsed not in (None, Track.INBOUND):
        raise ValidationError(
            field, "a bidirectional stream must use the inbound track (spec 2.3, 3.1)"
        )
    return parsed


def check_stream_timeout(value: object, field: str) -> int | None:
    """A positive integer of seconds (spec 2.3, 3.1), or None.

    Raises:
        ValidationError: anything else (bools, floats, strings, zero, negatives).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(field, "must be a positive integer of seconds")
    return value


def check_max_retries(value: object, field: str) -> int | None:
    """An integer 0-10 (spec 3.1). Vobiz clamps; we refuse so a typo means nothing else.

    Raises:
        ValidationError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise ValidationError(field, "must be an integer from 0 to 10")
    return value


def check_callback_method(value: object, field: str) -> str | None:
    """``GET`` or ``POST`` (any case), upper-cased; None stays None.

    Raises:
        ValidationError: anything else.
    """
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in ("GET", "POST"):
        raise ValidationError(field, "must be GET or POST")
    return value.upper()


def check_callback_url(value: object, field: str) -> str | None:
    """An ``http(s)://`` URL with a host and no whitespace; None stays None.

    Raises:
        ValidationError: anything else.
    """
    if value is None:
        return None
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValidationError(field, "must be an http(s) URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, "must be an http(s) URL")
    return value
