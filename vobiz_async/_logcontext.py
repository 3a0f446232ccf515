"""Call context on log records: ``stream_id`` and ``call_id`` on every record about a call.

Two sources, both read when a record is made (never per frame):

* a :class:`contextvars.ContextVar`, set by :meth:`MediaServer._run_handler` at the start
  of each handler task, so everything the handler (and the tasks it starts) logs carries
  its call;
* the link being handled right now (:data:`reading`, set with :func:`about`) around
  the parts of :class:`~vobiz_async.server.StreamLink`'s synchronous frame handling
  that log: a ``start``, a malformed frame, the end of the stream. The media fast path
  (``session.events_received``) logs nothing, so it sets nothing: no cost per frame.

:func:`install` wraps the process's :func:`logging.getLogRecordFactory` once, so every
record (whatever handler formats it, pytest's ``caplog`` included) has the attributes
``stream_id`` and ``call_id`` (None outside a call). :class:`JsonFormatter` prints one
JSON object per record.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import StreamLink

__all__ = ["JsonFormatter", "about", "current_call", "install", "reading"]

current_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "vobiz_call", default=None
)
"""``(stream_id, call_id)`` of the handler task running now, or None."""


class _Reading:
    """The link whose frame is being handled right now (synchronous code only)."""

    __slots__ = ("link",)

    def __init__(self) -> None:
        self.link: StreamLink | None = None


reading = _Reading()
_installed = False


@contextlib.contextmanager
def about(link: StreamLink) -> Iterator[None]:
    """Records logged inside the block are about ``link``'s call (synchronous code)."""
    previous = reading.link
    reading.link = link
    try:
        yield
    finally:
        reading.link = previous


def _call_ids() -> tuple[str | None, str | None]:
    link = reading.link
    if link is not None:
        session = link.session
        if session is not None:
            return session.stream_id, session.call_id
        return None, None
    ids = current_call.get()
    if ids is not None:
        return ids
    return None, None


def install() -> None:
    """Wrap the log record factory (once per process) to add ``stream_id``/``call_id``."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.stream_id, record.call_id = _call_ids()
        return record

    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``stream_id``, ``call_id``, ``worker`` (and ``exc_info`` as text).

    Args:
        worker: this process's id in the output (default: its pid).
    """

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker or str(os.getpid())

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        created = record.created
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        out: dict[str, Any] = {
            "time": f"{stamp}.{int(created % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "stream_id": getattr(record, "stream_id", None),
            "call_id": getattr(record, "call_id", None),
            "worker": self.worker,
        }
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
