"""A per-call trace: what happened on one media stream, one JSON line per event.

A :class:`CallTrace` is a plain object a session feeds as things happen; it owns no
clock and does no I/O until :meth:`CallTrace.write` (time is passed in as ``now``,
monotonic seconds on any origin, sans-I/O style). Each record is serialised once, when
it is made, so the size bound is exact and ``write`` only joins strings. Standard
library only. :func:`read_trace` parses a written trace back, and
:func:`vobiz_async.report.render` draws it over the call's WAV.

Record schema (version 1)
=========================

Every line is one JSON object with ``t`` (seconds since the trace's origin, the call's
start, 3 decimals) and ``event``. Records are in the order they were made; ``t`` is
non-decreasing except for ``play`` (stamped with when the utterance began, emitted
when it ended) and ``second`` (stamped with the start of its second)::

    start       schema (1), provider, stream_id, call_id, format_in, format_out
                (content types such as "audio/x-l16;rate=16000")
    play        utterance (1, 2, ...), duration_ms (audio handed to play), sent_ms
                (audio actually sent: less when a clear or the close cut it),
                end (t when play returned). t is where it starts playing.
    checkpoint  name, due (estimated t its audio ends playing, or null)
    outcome     name, outcome ("played" | "cleared" | "closed" | "timed_out"):
                t is when the outcome came
    clear       utterance_sent_ms, unconfirmed_ms, estimated_heard_ms (or null),
                voided (checkpoint names), utterance and utterance_ms (the
                interrupted utterance's number and length, or null): see
                vobiz_async.protocol.ClearSummary
    cleared     round_trip_ms: Vobiz's clearedAudio came (spec 4.3.5)
    dtmf        digit
    stop        by ("us" | "peer"), reason (or null)
    close       code (WebSocket close code, or null), reason
    second      in, out, dropped, late, malformed: counts for the whole second that
                starts at t (every second from the first counted one to the last,
                zeros included, so a second with "in": 0 is a gap in the caller's
                audio). "late" counts outbound frames sent after their playout slot
                (the caller heard a gap); "dropped" counts inbound frames the
                application fell behind on.
    truncated   dropped_records, max_bytes: the size bound was reached; always last

Size bound: every record but the one ``close`` and the final ``truncated`` counts
against ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 2 MiB: a ``second`` record
is ~70 bytes, so about eight hours of per-second counts). Past it, records are counted
in :attr:`CallTrace.dropped_records` and not kept, so a long call cannot exhaust memory
and a truncated trace still says how the call ended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from .errors import ValidationError, VobizError

if TYPE_CHECKING:
    from .protocol import ClearSummary

__all__ = [
    "COUNT_KINDS",
    "DEFAULT_MAX_BYTES",
    "SCHEMA_VERSION",
    "CallTrace",
    "CountKind",
    "TraceError",
    "read_trace",
]

SCHEMA_VERSION: Final = 1
DEFAULT_MAX_BYTES: Final = 2 * 1024 * 1024
"""The default bound on a trace's size, in bytes of JSON lines."""

CountKind = Literal["in", "out", "dropped", "late", "malformed"]
COUNT_KINDS: Final[tuple[CountKind, ...]] = ("in", "out", "dropped", "late", "malformed")
"""What :meth:`CallTrace.count` aggregates per second, in ``second`` record order."""

_SEPARATORS: Final = (",", ":")


class TraceError(VobizError, ValueError):
    """A trace file that is not a trace (a line that is not a JSON object).

    Attributes:
        path: the file.
        line: the 1-based line number at fault.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line


class CallTrace:
    """The timeline of one call, kept as JSON lines in memory, bounded in size.

    Args:
        origin: the clock time (seconds) of the call's start: ``t`` is relative to it.
        max_bytes: the size bound (see the module docstring); at least 1024.

    Raises:
        ValidationError: ``max_bytes`` below 1024.
    """

    def __init__(self, origin: float, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1024:
            raise ValidationError("max_bytes", "must be at least 1024")
        self.origin = origin
        self.max_bytes = max_bytes
        self.dropped_records = 0
        self._lines: list[str] = []
        self._bytes = 0
        self._close_line: str | None = None
        self._second = -1  # the second being counted; -1 before the first count
        self._counts: dict[str, int] = dict.fromkeys(COUNT_KINDS, 0)
        self._utterances = 0
        self._playing: tuple[int, float, float] | None = None  # number, at, duration_ms
        self._last_utterance: tuple[int, float] | None = None  # number, duration_ms
        self._clear_at: float | None = None
        self._latest = 0.0  # the latest t of any record, kept or dropped

    # ------------------------------------------------------------------ plumbing
    def _t(self, now: float) -> float:
        return round(max(0.0, now - self.origin), 3)

    def _emit(self, record: dict[str, Any]) -> None:
        self._latest = max(self._latest, record["t"])
        line = json.dumps(record, separators=_SEPARATORS)
        size = len(line) + 1  # ASCII (json.dumps escapes the rest) plus the newline
        if self._bytes + size > self.max_bytes:
            self.dropped_records += 1
            return
        self._bytes += size
        self._lines.append(line)

    @property
    def size(self) -> int:
        """Bytes of JSON lines kept so far (the ``close`` record excluded)."""
        return self._bytes

    # ------------------------------------------------------------------- events
    def start(
        self,
        *,
        now: float,
        stream_id: str,
        call_id: str,
        format_in: str,
        format_out: str,
        provider: str = "vobiz",
    ) -> None:
        """The stream started (hook: when the session begins recording).

        Args:
            now: clock time.
            stream_id, call_id: from the ``start`` frame (spec 4.3.1).
            format_in, format_out: content types of the caller's and our audio.
            provider: the wire dialect ("vobiz", "signalwire").
        """
        self._emit(
            {
                "t": self._t(now),
                "event": "start",
                "schema": SCHEMA_VERSION,
                "provider": provider,
                "stream_id": stream_id,
                "call_id": call_id,
                "format_in": format_in,
                "format_out": format_out,
            }
        )

    def play_started(self, duration_ms: float, *, now: float, at: float | None = None) -> int:
        """An utterance was handed to ``play`` (hook: start of ``play``/``play_encoded``).

        Args:
            duration_ms: its length.
            now: clock time.
            at: clock time it starts playing (after audio already queued); default now.

        Returns:
            The utterance's number (1, 2, ...).
        """
        if self._playing is not None:  # the previous play never reported its end
            self._finish_play(None, now)
        self._utterances += 1
        self._playing = (self._utterances, now if at is None else at, duration_ms)
        return self._utterances

    def play_ended(self, sent_ms: float, *, now: float) -> None:
        """``play`` returned (hook: end of ``play``/``play_encoded``, in a ``finally``).

        Args:
            sent_ms: audio actually sent (``play``'s return value).
            now: clock time.
        """
        if self._playing is not None:
            self._finish_play(sent_ms, now)

    def _finish_play(self, sent_ms: float | None, now: float) -> None:
        assert self._playing is not None
        number, at, duration_ms = self._playing
        self._playing = None
        self._last_utterance = (number, duration_ms)
        self._emit(
            {
                "t": self._t(at),
                "event": "play",
                "utterance": number,
                "duration_ms": round(duration_ms, 1),
                "sent_ms": None if sent_ms is None else round(sent_ms, 1),
                "end": self._t(now),
            }
        )

    def checkpoint_sent(self, name: str, *, now: float, due: float | None = None) -> None:
        """A ``checkpoint`` frame was sent (hook: in ``checkpoint``, after sending it).

        Args:
            name: the checkpoint's name.
            now: clock time.
            due: clock time its audio is estimated to end playing.
        """
        self._emit(
            {
                "t": self._t(now),
                "event": "checkpoint",
                "name": name,
                "due": None if due is None else self._t(due),
            }
        )

    def checkpoint_outcome(self, name: str, outcome: str, *, now: float) -> None:
        """A checkpoint ended (hook: when ``checkpoint`` returns its outcome).

        Args:
            name: the checkpoint's name.
            outcome: ``played``, ``cleared``, ``closed`` or ``timed_out``
                (a :class:`~vobiz_async.events.CheckpointOutcome`).
            now: clock time.
        """
        self._emit({"t": self._t(now), "event": "outcome", "name": name, "outcome": str(outcome)})

    def clear(self, summary: ClearSummary, *, now: float) -> None:
        """``clearAudio`` was sent (hook: in ``clear``, with the protocol's summary).

        Args:
            summary: what the clear interrupted.
            now: clock time.
        """
        current = self._last_utterance
        if self._playing is not None:
            current = (self._playing[0], self._playing[2])
        self._clear_at = now
        self._emit(
            {
                "t": self._t(now),
                "event": "clear",
                "utterance_sent_ms": round(summary.utterance_sent_ms, 1),
                "unconfirmed_ms": round(summary.unconfirmed_ms, 1),
                "estimated_heard_ms": None
                if summary.estimated_heard_ms is None
                else round(summary.estimated_heard_ms, 1),
                "voided": list(summary.voided),
                "utterance": None if current is None else current[0],
                "utterance_ms": None if current is None else round(current[1], 1),
            }
        )

    def cleared(self, *, now: float) -> None:
        """Vobiz acknowledged a clear (hook: on ``clearedAudio``, spec 4.3.5)."""
        trip = None if self._clear_at is None else round((now - self._clear_at) * 1000, 2)
        self._clear_at = None
        self._emit({"t": self._t(now), "event": "cleared", "round_trip_ms": trip})

    def dtmf(self, digit: str, *, now: float) -> None:
        """The caller pressed a key (hook: delivering a ``DtmfReceived``)."""
        self._emit({"t": self._t(now), "event": "dtmf", "digit": digit})

    def stop(self, *, now: float, by: Literal["us", "peer"], reason: str | None = None) -> None:
        """The stream was stopped (hook: ``stop()`` sent it, or a ``StreamStopped`` came)."""
        self._emit({"t": self._t(now), "event": "stop", "by": by, "reason": reason})

    def close(self, code: int | None, *, now: float, reason: str = "") -> None:
        """The WebSocket closed (hook: the session's close). Flushes the counts.

        Kept even past the size bound; a second ``close`` replaces the first.
        """
        self.tick(now=now + 1.0)  # the second in progress is complete now
        self._latest = max(self._latest, self._t(now))
        self._close_line = json.dumps(
            {"t": self._t(now), "event": "close", "code": code, "reason": reason},
            separators=_SEPARATORS,
        )

    # ------------------------------------------------------------------ counts
    def count(self, kind: CountKind, n: int = 1, *, now: float) -> None:
        """Count ``n`` frames of one kind in the second that ``now`` falls in.

        Hooks: ``in`` per inbound media frame, ``out`` per ``playAudio`` frame sent,
        ``late`` per frame sent after its playout slot, ``dropped`` per inbound frame
        dropped for a slow application, ``malformed`` per ``MalformedFrame``.

        Raises:
            ValidationError: an unknown kind.
        """
        second = int(now - self.origin) if now > self.origin else 0
        if second > self._second:
            self._roll(second)
        try:
            self._counts[kind] += n
        except KeyError:
            raise ValidationError("kind", f"{kind!r} is not one of {COUNT_KINDS}") from None

    def tick(self, *, now: float) -> None:
        """Emit the ``second`` records of every second that ended before ``now``."""
        second = int(now - self.origin) if now > self.origin else 0
        if self._second >= 0 and second > self._second:
            self._roll(second)

    def _roll(self, second: int) -> None:
        """Close the counted second (and zero-count ones up to ``second``)."""
        if self._second >= 0:
            counts = self._counts
            self._emit({"t": float(self._second), "event": "second", **counts})
            for missing in range(self._second + 1, second):
                self._emit({"t": float(missing), "event": "second", **dict.fromkeys(counts, 0)})
            self._counts = dict.fromkeys(COUNT_KINDS, 0)
        self._second = second

    # ------------------------------------------------------------------ output
    def lines(self) -> list[str]:
        """The trace as JSON lines, now: the kept records, the second in progress
        and an unfinished utterance (``sent_ms`` null), ``close``, then ``truncated``.
        Does not change the trace, so it can be taken mid-call."""
        lines = list(self._lines)  # one C-level copy: safe against the loop appending
        extra: list[dict[str, Any]] = []
        if self._playing is not None:
            number, at, duration_ms = self._playing
            extra.append(
                {
                    "t": self._t(at),
                    "event": "play",
                    "utterance": number,
                    "duration_ms": round(duration_ms, 1),
                    "sent_ms": None,
                    "end": None,
                }
            )
        if self._second >= 0 and any(self._counts.values()):
            extra.append({"t": float(self._second), "event": "second", **self._counts})
        dropped = self.dropped_records
        size = self._bytes
        for record in extra:
            line = json.dumps(record, separators=_SEPARATORS)
            if size + len(line) + 1 > self.max_bytes:
                dropped += 1
                continue
            size += len(line) + 1
            lines.append(line)
        if self._close_line is not None:
            lines.append(self._close_line)
        if dropped:
            lines.append(
                json.dumps(
                    {
                        "t": self._latest,
                        "event": "truncated",
                        "dropped_records": dropped,
                        "max_bytes": self.max_bytes,
                    },
                    separators=_SEPARATORS,
                )
            )
        return lines

    def write(self, path: str | Path) -> Path:
        """Write the trace as ``<name>.jsonl`` (``path`` with its suffix replaced, so
        the WAV's path works); returns that path. Blocking: run it in a thread from a
        coroutine. Written to a temporary file first, then renamed into place."""
        target = Path(path).with_suffix(".jsonl")
        target.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(line + "\n" for line in self.lines())
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(text, encoding="ascii")
        os.replace(temporary, target)
        return target


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """Parse a trace written by :meth:`CallTrace.write` into its records, in order.

    A last line cut short (a crash mid-write, a file still being written) is skipped;
    blank lines are ignored. Records of unknown kinds are returned as they are.

    Raises:
        OSError: the file cannot be read.
        TraceError: a complete line that is not a JSON object.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    complete = text.endswith("\n")
    return list(_parse(str(path), lines, complete))


def _parse(path: str, lines: list[str], complete: bool) -> Iterable[dict[str, Any]]:
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if index == last and not complete:
                return  # cut short mid-write
            raise TraceError(path, index + 1, "not a JSON line") from None
        if not isinstance(record, dict) or "event" not in record or "t" not in record:
            raise TraceError(path, index + 1, "not a trace record (needs t and event)")
        yield record
