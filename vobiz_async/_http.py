"""Small HTTP helpers shared by the REST clients (no client state here).

The SignalWire client uses them; ``VobizClient`` has private equivalents that could
move here (left to its owner).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from .client import RetryPolicy, Timeouts
from .errors import ValidationError

__all__ = ["coerce_retry", "coerce_timeouts", "parse_body", "retry_after_header"]


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
    """JSON if it parses, else the text (cut to 2,000 characters), None when empty."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text[:2000]


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
