"""aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument.

Upstream: pnuckowski/aioresponses#289 (open). aiohttp 3.14 is a security release, so
instead of pinning it back, the mocked responses are built with this subclass, which
supplies a stand-in writer (the request is already "sent", so only its size is read).
"""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import ClientResponse

# Older aiohttp (the declared floor, run by `make test-min`) has no such argument.
_NEEDS_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _SentRequest:
    output_size = 0


class CompatResponse(ClientResponse):
    """A ClientResponse that tolerates aioresponses' missing ``stream_writer``."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if _NEEDS_WRITER:
            kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(method, url, **kwargs)
