"""Call context on log records: ``stream_id`` and ``call_id`` on every record about a call.

Two sources, both read when a record is made (never per frame):

* a :class:`contextvars.ContextVar`, set by :meth:`MediaServer._run_handler` at the start
  of each handler task, so everything the handler (and the tasks it starts) logs carries
  its call;
* the link being read right now (:data:`reading`), set around the synchronous frame
  handling of :class:`~vobiz_async.server.StreamLink` (two attribute stores per frame,
  cheaper than a ContextVar ``set``/``reset`` pair on the hot path), so records logged
  while a frame is parsed carry its call too.

:func:`install` wraps the process's :func:`logging.getLogRecordFactory` once, so every
record (whatever handler formats it, pytest's ``caplog`` included) has the attributes
``stream_id`` and ``call_id`` (None outside a call). :class:`JsonFormatter` prints one
JSON object per record.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import StreamLink

__all__ = ["JsonFormatter", "current_call", "install", "reading"]

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
