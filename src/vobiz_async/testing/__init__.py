"""A local Vobiz for tests: REST API and media peer on loopback (``FakeVobiz``)."""

from __future__ import annotations

from ._fake import FakeCall, FakeVobiz
from ._rest import FakeStreamRecord, Fault, RecordedRequest

__all__ = ["FakeCall", "FakeStreamRecord", "FakeVobiz", "Fault", "RecordedRequest"]
