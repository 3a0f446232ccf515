"""See a call: one self-contained HTML page from a call's stereo WAV and its trace.

:func:`render` draws an inline SVG timeline: the caller's (left channel) and the
agent's (right channel) waveform envelopes on one time axis, each utterance as a band,
checkpoint outcomes and clears as markers ("heard X ms of Y ms" on a barge-in), DTMF
digits, and seconds with dropped, late or malformed frames or no inbound audio at all
(gaps) highlighted. Below it, an ``<audio>`` element and a table of the call's figures.
Hovering a marker shows its details (SVG ``<title>``, no script).

The page needs no network and no JavaScript. The WAV is embedded as a ``data:`` URI
when it is at most :data:`EMBED_MAX_BYTES` (512 KiB, about 8 s of 16 kHz stereo), so a
short call's page works on its own; a longer one is linked by a relative URL (by
default the WAV's file name: keep the page beside the WAV), so the page stays well under
1 MB however long the call (the envelopes are a fixed number of columns, not samples).

The page is polyglot XHTML: it parses as XML as well as HTML. Standard library only:
``wave`` reads the WAV in blocks, one per pixel column, and each column's extremes are
found with C-level byte operations (the high bytes searched with ``bytes.translate`` and
``in``, then the low bytes of the extreme samples masked with big-int ``&``/``|``), not a
Python loop per sample: a 10-minute 16 kHz stereo call renders in 0.15 to 0.35 s
(``benchmarks/bench_report.py``).
"""

from __future__ import annotations

import base64
import functools
import html
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from .errors import CodecError
from .trace import read_trace

__all__ = ["COLUMNS", "EMBED_MAX_BYTES", "EXACT_BELOW", "render"]

EMBED_MAX_BYTES: Final = 512 * 1024
"""The largest WAV embedded in the page as a ``data:`` URI; larger ones are linked."""
COLUMNS: Final = 1100
"""Pixel columns of the timeline (one envelope extreme pair per column per channel)."""

# Geometry of the SVG (user units; the SVG scales to the page width).
_LEFT = 80
_WIDTH = _LEFT + COLUMNS + 20
_LABEL_ROWS = (20, 36, 52)  # baselines of marker labels, above the lanes
_AXIS_Y = 64
_CALLER = (72, 192)  # top and bottom of the caller lane
_AGENT = (200, 320)
_HEALTH = (330, 350)
_HEIGHT = 372

CALLER_COLOUR: Final = "#1d4ed8"
"""Fill of the caller's envelope (the browser check looks for it)."""
AGENT_COLOUR: Final = "#15803d"
"""Fill of the agent's envelope (the browser check looks for it)."""
_OUTCOME_COLOURS = {
    "played": "#0f766e",
    "cleared": "#ea580c",
    "closed": "#6b7280",
    "timed_out": "#b91c1c",
    "pending": "#a16207",
}

# Column extremes without a loop over samples. Each search is a memchr (``in``) per
# candidate byte value, narrowed first to one of 16 classes (the high nibble).
_NIBBLE = bytes(b >> 4 for b in range(256))
_BYTE = [bytes((v,)) for v in range(256)]
# A signed high byte in offset order (v = level + 128): its class, and its raw byte.
_OFFSET_NIBBLE = bytes((b ^ 0x80) >> 4 for b in range(256))
_OFFSET_BYTE = [bytes((v ^ 0x80,)) for v in range(256)]
EXACT_BELOW: Final = 16384
"""While the loudest sample so far is below this, column extremes are exact to the
sample; above it, the high byte alone is used (1/256 of full scale: under a pixel)."""


def _top(data: bytes, classes: bytes, patterns: list[bytes]) -> int:
    """The largest value v whose ``patterns[v]`` occurs in ``data`` (``classes`` holds
    each byte's class, v >> 4)."""
    for k in range(15, -1, -1):
        if _BYTE[k] in classes:
            for v in range(16 * k + 15, 16 * k - 1, -1):
                if patterns[v] in data:
                    return v
    return 0


def _bottom(data: bytes, classes: bytes, patterns: list[bytes]) -> int:
    """The smallest value v whose ``patterns[v]`` occurs in ``data``."""
    for k in range(16):
        if _BYTE[k] in classes:
            for v in range(16 * k, 16 * k + 16):
                if patterns[v] in data:
                    return v
    return 255


@functools.cache
def _select(value: int, keep: int, other: int) -> bytes:
    """A translate table: ``value`` to ``keep``, every other byte to ``other``."""
    return bytes(keep if b == value else other for b in range(256))


def _extremes(low: bytes, high: bytes, exact: bool) -> tuple[int, int]:
    """The smallest and largest 16-bit sample, given their low and high bytes.

    The high bytes give the extremes to 1/256 of full scale. With ``exact``, the low
    bytes of just the samples with that high byte (masked with big-int ``&`` and ``|``,
    which run in C) give the exact values; without, the low byte is taken as 128.
    """
    if not high:
        return 0, 0
    classes = high.translate(_OFFSET_NIBBLE)
    top = _top(high, classes, _OFFSET_BYTE)
    bottom = _bottom(high, classes, _OFFSET_BYTE)
    if not exact:
        return (bottom - 128) * 256 + 128, (top - 128) * 256 + 128
    size = len(low)
    lows = int.from_bytes(low, "little")
    mask = int.from_bytes(high.translate(_select(top ^ 0x80, 255, 0)), "little")
    kept = (mask & lows).to_bytes(size, "little")  # low bytes of the top samples, else 0
    mask = int.from_bytes(high.translate(_select(bottom ^ 0x80, 0, 255)), "little")
    filled = (mask | lows).to_bytes(size, "little")  # low bytes of the bottom ones, else 255
    highest = _top(kept, kept.translate(_NIBBLE), _BYTE)
    lowest = _bottom(filled, filled.translate(_NIBBLE), _BYTE)
    return (bottom - 128) * 256 + lowest, (top - 128) * 256 + highest


@dataclass(slots=True)
class _Audio:
    """A WAV's envelopes: per column, (lowest, highest) sample of each channel."""

    sample_rate: int
    channels: int
    frames: int
    size: int
    columns: list[list[tuple[int, int]]]

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _read_envelopes(path: Path, columns: int) -> _Audio:
    """Read a 16-bit mono or stereo WAV in blocks, one block per column."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise CodecError(f"{path}: only 16-bit WAV is supported")
            channels = wav.getnchannels()
            if channels not in (1, 2):
                raise CodecError(f"{path}: only mono or stereo WAV is supported")
            frames = wav.getnframes()
            count = max(1, min(columns, frames))
            bounds = [frames * c // count for c in range(count + 1)]
            step = 2 * channels
            envelopes: list[list[tuple[int, int]]] = [[] for _ in range(channels)]
            peak = 0
            for c in range(count):
                raw = wav.readframes(bounds[c + 1] - bounds[c])
                for channel in range(channels):
                    low, high = _extremes(
                        raw[2 * channel :: step], raw[2 * channel + 1 :: step], peak < EXACT_BELOW
                    )
                    envelopes[channel].append((low, high))
                    peak = max(peak, high, -low)
            return _Audio(wav.getframerate(), channels, frames, path.stat().st_size, envelopes)
    except (wave.Error, EOFError) as exc:
        raise CodecError(f"{path}: not a readable WAV file ({exc})") from exc


@dataclass(slots=True)
class _Call:
    """A trace's records, sorted by kind."""

    start: dict[str, Any] = field(default_factory=dict)
    plays: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    clears: list[dict[str, Any]] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    dtmf: list[dict[str, Any]] = field(default_factory=list)
    stops: list[dict[str, Any]] = field(default_factory=list)
    close: dict[str, Any] | None = None
    seconds: list[dict[str, Any]] = field(default_factory=list)
    truncated: dict[str, Any] | None = None
    end: float = 0.0

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> _Call:
        call = cls()
        lists = {
            "play": call.plays,
            "checkpoint": call.sent,
            "outcome": call.outcomes,
            "clear": call.clears,
            "cleared": call.acks,
            "dtmf": call.dtmf,
            "stop": call.stops,
            "second": call.seconds,
        }
        for record in records:
            kind = record.get("event")
            t = _num(record.get("t"))
            call.end = max(call.end, t + (1.0 if kind == "second" else 0.0))
            if kind == "play":
                call.end = max(call.end, t + _num(record.get("duration_ms")) / 1000)
            if kind == "start":
                call.start = record
            elif kind == "close":
                call.close = record
            elif kind == "truncated":
                call.truncated = record
            elif isinstance(kind, str) and kind in lists:
                lists[kind].append(record)
        return call


def _num(value: Any) -> float:
    """A number from a trace field (null or a wrong type counts as 0)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    """A coordinate with at most one decimal and no trailing zeros."""
    return f"{round(value, 1):g}"


def _ms(value: Any) -> str:
    return "?" if value is None else f"{_num(value):.0f} ms"


class _Timeline:
    """Builds the SVG text."""

    def __init__(self, length: float) -> None:
        self.length = max(length, 0.001)
        self.parts: list[str] = []
        self.rows: list[list[tuple[float, float]]] = [[] for _ in _LABEL_ROWS]

    def x(self, t: float) -> float:
        return _LEFT + COLUMNS * min(max(t, 0.0), self.length) / self.length

    def label_y(self, start: float, width: float) -> float | None:
        """The first label row with room from ``start`` for ``width``, which it takes;
        None when every row is taken there (the marker keeps its tooltip)."""
        end = start + width
        for row, taken in enumerate(self.rows):
            if all(end <= left or start >= right for left, right in taken):
                taken.append((start, end))
                return _LABEL_ROWS[row]
        return None

    def axis(self) -> None:
        steps = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
        step = next((s for s in steps if self.length / s <= 12), 7200.0)
        out = ['<g class="axis">']
        tick = 0.0
        while tick <= self.length + 1e-9:
            x = _fmt(self.x(tick))
            label = f"{int(tick) // 60}:{int(tick) % 60:02d}" if step >= 60 else f"{tick:g}s"
            out.append(
                f'<line x1="{x}" y1="{_AXIS_Y}" x2="{x}" y2="{_HEALTH[1]}" class="grid"/>'
                f'<text x="{x}" y="{_HEIGHT - 6}" text-anchor="middle">{label}</text>'
            )
            tick += step
        out.append("</g>")
        self.parts.append("".join(out))

    def lanes(self, frames: bool) -> None:
        """The caller's and agent's lanes, and the frames lane's label with a trace."""
        for name, (top, bottom) in (("caller", _CALLER), ("agent", _AGENT)):
            self.parts.append(
                f'<rect class="lane" x="{_LEFT}" y="{top}" width="{COLUMNS}"'
                f' height="{bottom - top}"/>'
                f'<text class="lane-label" x="{_LEFT - 8}" y="{(top + bottom) / 2 + 4:g}"'
                f' text-anchor="end">{name}</text>'
            )
        if frames:
            self.parts.append(
                f'<text class="lane-label" x="{_LEFT - 8}" y="{_HEALTH[1] - 5}"'
                f' text-anchor="end">frames</text>'
            )

    def envelope(
        self,
        name: str,
        colour: str,
        lane: tuple[int, int],
        column_x: list[float],
        extremes: list[tuple[int, int]],
        scale: float,
    ) -> None:
        """One channel's envelope as a filled path: highs left to right, lows back."""
        centre = (lane[0] + lane[1]) / 2
        half = (lane[1] - lane[0]) / 2 - 4
        tops: list[str] = []
        lows: list[str] = []
        for x, (low, high) in zip(column_x, extremes, strict=True):
            y_top = min(centre - 0.5, centre - high / scale * half)
            y_low = max(centre + 0.5, centre - low / scale * half)
            xs = _fmt(x)
            tops.append(f"{xs},{_fmt(y_top)}")
            lows.append(f"{xs},{_fmt(y_low)}")
        if not tops:
            return
        lows.reverse()
        self.parts.append(
            f'<path class="envelope {name}" data-channel="{name}" fill="{colour}"'
            f' d="M{" ".join(tops)} L{" ".join(lows)} Z"/>'
        )

    def marker(
        self, kind: str, t: float, colour: str, label: str, title: str, dashed: bool = False
    ) -> None:
        """A vertical line from a label row down through both lanes, with a tooltip; the
        label is left out where the rows are full (dense calls)."""
        x = self.x(t)
        width = 6.2 * len(label) + 8
        right = x + width > _LEFT + COLUMNS  # near the end: the label goes left of the line
        y = self.label_y(x - width if right else x, width)
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        anchor = f'x="{_fmt(x - 3)}" text-anchor="end"' if right else f'x="{_fmt(x + 3)}"'
        text = "" if y is None else f'<text {anchor} y="{y}" fill="{colour}">{_text(label)}</text>'
        self.parts.append(
            f'<g class="marker {kind}"><title>{_text(title)}</title>'
            f'<line x1="{_fmt(x)}" y1="{_AXIS_Y if y is None else y + 3}" x2="{_fmt(x)}"'
            f' y2="{_AGENT[1]}" stroke="{colour}" stroke-width="1.5"{dash}/>{text}</g>'
        )

    def svg(self, description: str) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}"'
            f' class="timeline" role="img" aria-label="{_text(description)}">'
            + "".join(self.parts)
            + "</svg>"
        )


def _draw_call(line: _Timeline, call: _Call) -> None:
    """Utterance bands, gaps and drops, then the markers on top."""
    clear_times = sorted(_num(c.get("t")) for c in call.clears)
    for play in call.plays:
        start = _num(play.get("t"))
        end = start + _num(play.get("duration_ms")) / 1000
        cut = next((c for c in clear_times if start <= c < end), None)
        heard_end = end if cut is None else cut
        title = (
            f"utterance {play.get('utterance')}: {_ms(play.get('duration_ms'))},"
            f" sent {_ms(play.get('sent_ms'))}"
        )
        x0, x1, x2 = line.x(start), line.x(heard_end), line.x(end)
        line.parts.append(
            f'<g class="utterance"><title>{_text(title)}</title>'
            f'<rect class="band" x="{_fmt(x0)}" y="{_AGENT[0]}" width="{_fmt(max(x1 - x0, 1))}"'
            f' height="{_AGENT[1] - _AGENT[0]}"/>'
            + (
                f'<rect class="band-cut" x="{_fmt(x1)}" y="{_AGENT[0]}"'
                f' width="{_fmt(max(x2 - x1, 1))}" height="{_AGENT[1] - _AGENT[0]}"/>'
                if cut is not None
                else ""
            )
            + f'<text class="band-label" x="{_fmt(x0 + 3)}" y="{_AGENT[0] + 12}">'
            f"#{_text(play.get('utterance'))}</text></g>"
        )
    if call.seconds:
        first = min(_num(s.get("t")) for s in call.seconds)
        last = max(_num(s.get("t")) for s in call.seconds)
        for second in call.seconds:
            t = _num(second.get("t"))
            x0, x1 = line.x(t), line.x(t + 1)
            width = _fmt(max(x1 - x0, 1))
            if not second.get("in") and first <= t <= last:
                line.parts.append(
                    f'<rect class="gap" x="{_fmt(x0)}" y="{_CALLER[0]}" width="{width}"'
                    f' height="{_HEALTH[1] - _CALLER[0]}"><title>{t:g}s: no audio from the'
                    " caller</title></rect>"
                )
            bad = {k: int(_num(second.get(k))) for k in ("dropped", "late", "malformed")}
            if any(bad.values()):
                detail = ", ".join(f"{n} {k}" for k, n in bad.items() if n)
                line.parts.append(
                    f'<rect class="drop" x="{_fmt(x0)}" y="{_HEALTH[0]}" width="{width}"'
                    f' height="{_HEALTH[1] - _HEALTH[0]}"><title>{t:g}s: {detail}</title></rect>'
                )
    for digit in call.dtmf:
        x = line.x(_num(digit.get("t")))
        line.parts.append(
            f'<g class="dtmf"><title>DTMF {_text(digit.get("digit"))} at'
            f" {_num(digit.get('t')):.3f}s</title>"
            f'<rect x="{_fmt(x - 7)}" y="{_CALLER[0] + 4}" width="14" height="16" rx="3"/>'
            f'<text x="{_fmt(x)}" y="{_CALLER[0] + 16}" text-anchor="middle">'
            f"{_text(digit.get('digit'))}</text></g>"
        )
    # Barge-ins and the end first: where labels crowd, theirs are kept.
    for clear in call.clears:
        heard = _heard(clear)
        line.marker(
            "clear",
            _num(clear.get("t")),
            "#dc2626",
            f"barge-in: {heard}",
            f"clear at {_num(clear.get('t')):.3f}s: {heard};"
            f" unconfirmed {_ms(clear.get('unconfirmed_ms'))};"
            f" voided {', '.join(map(str, clear.get('voided') or [])) or 'nothing'}",
            dashed=True,
        )
    for stop in call.stops:
        line.marker(
            "stop",
            _num(stop.get("t")),
            "#374151",
            f"stop ({stop.get('by')})",
            f"stop by {stop.get('by')}: {stop.get('reason') or 'no reason'}",
        )
    if call.close is not None:
        line.marker(
            "close",
            _num(call.close.get("t")),
            "#374151",
            f"close {call.close.get('code')}",
            f"WebSocket closed with {call.close.get('code')} {call.close.get('reason') or ''}",
        )
    answered = {(o.get("name")) for o in call.outcomes}
    for sent in call.sent:
        if sent.get("name") not in answered:
            name = str(sent.get("name"))
            line.marker(
                "checkpoint",
                _num(sent.get("t")),
                _OUTCOME_COLOURS["pending"],
                f"{name}: sent",
                f"checkpoint {name} sent at {_num(sent.get('t')):.3f}s, no outcome recorded",
            )
    due = {s.get("name"): s.get("due") for s in call.sent}
    for outcome in call.outcomes:
        name, result = str(outcome.get("name")), str(outcome.get("outcome"))
        t = _num(outcome.get("t"))
        title = f"checkpoint {name}: {result} at {t:.3f}s"
        if due.get(name) is not None and result == "played":
            title += f" ({(t - _num(due[name])) * 1000:.0f} ms after its estimated end)"
        line.marker(
            "checkpoint", t, _OUTCOME_COLOURS.get(result, "#374151"), f"{name}: {result}", title
        )


def _heard(clear: dict[str, Any]) -> str:
    """``heard X ms of Y ms`` for a barge-in (X estimated, Y the utterance's length)."""
    heard = clear.get("estimated_heard_ms")
    if heard is None:
        heard = max(0.0, _num(clear.get("utterance_sent_ms")) - _num(clear.get("unconfirmed_ms")))
    total = clear.get("utterance_ms")
    if total is None:
        total = clear.get("utterance_sent_ms")
    return f"heard {_num(heard):.0f} ms of {_num(total):.0f} ms"


def _figures(audio: _Audio, call: _Call | None, wav: Path) -> list[tuple[str, str]]:
    rows = [
        (
            "recording",
            f"{wav.name}: {audio.duration:.2f} s, {audio.sample_rate} Hz, "
            + ("stereo (left: caller, right: agent as heard)" if audio.channels == 2 else "mono"),
        ),
    ]
    if call is None:
        return [*rows, ("trace", "none")]
    start = call.start
    if start:
        rows += [
            ("stream / call", f"{start.get('stream_id')} / {start.get('call_id')}"),
            (
                "provider, formats",
                f"{start.get('provider')}; in {start.get('format_in')},"
                f" out {start.get('format_out')}",
            ),
        ]
    sent = sum(_num(p.get("sent_ms")) for p in call.plays)
    planned = sum(_num(p.get("duration_ms")) for p in call.plays)
    rows.append(("agent utterances", f"{len(call.plays)}: {sent:.0f} ms sent of {planned:.0f} ms"))
    by_outcome: dict[str, int] = {}
    for outcome in call.outcomes:
        key = str(outcome.get("outcome"))
        by_outcome[key] = by_outcome.get(key, 0) + 1
    rows.append(("checkpoints", ", ".join(f"{n} {k}" for k, n in by_outcome.items()) or "none"))
    rows.append(("barge-ins", "; ".join(_heard(c) for c in call.clears) or "none"))
    trips = [f"{_num(a.get('round_trip_ms')):.1f} ms" for a in call.acks if a.get("round_trip_ms")]
    if trips:
        rows.append(("clear round trip", ", ".join(trips)))
    rows.append(("DTMF", " ".join(str(d.get("digit")) for d in call.dtmf) or "none"))
    totals = {
        k: sum(int(_num(s.get(k))) for s in call.seconds)
        for k in ("in", "out", "dropped", "late", "malformed")
    }
    rows.append(("frames in / out", f"{totals['in']} / {totals['out']}"))
    rows.append(
        (
            "dropped / late / malformed",
            f"{totals['dropped']} / {totals['late']} / {totals['malformed']}",
        )
    )
    if call.seconds:
        first = min(_num(s.get("t")) for s in call.seconds)
        last = max(_num(s.get("t")) for s in call.seconds)
        gaps = sum(1 for s in call.seconds if not s.get("in") and first <= _num(s.get("t")) <= last)
        rows.append(("seconds without caller audio", str(gaps)))
    for stop in call.stops:
        rows.append(("stop", f"by {stop.get('by')} at {_num(stop.get('t')):.2f} s"))
    if call.close is not None:
        rows.append(
            ("close", f"code {call.close.get('code')} at {_num(call.close.get('t')):.2f} s")
        )
    if call.truncated is not None:
        rows.append(
            (
                "trace truncated",
                f"{call.truncated.get('dropped_records')} records past"
                f" {call.truncated.get('max_bytes')} bytes",
            )
        )
    return rows


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px auto;max-width:1320px;padding:0 16px;
color:#111827;background:#fff}
h1{font-size:20px;margin:0 0 4px}
.sub{color:#4b5563;margin:0 0 12px}
svg.timeline{width:100%;height:auto;display:block;border:1px solid #e5e7eb}
svg text{font:11px system-ui,sans-serif;fill:#374151}
.lane{fill:#f9fafb}
.lane-label{font-weight:600}
.grid{stroke:#e5e7eb}
.band{fill:#bbf7d0;fill-opacity:.6}
.band-cut{fill:#fed7aa;fill-opacity:.6}
.band-label{fill:#166534}
.gap{fill:#6b7280;fill-opacity:.22}
.drop{fill:#dc2626}
.dtmf rect{fill:#7c3aed}
.dtmf text{fill:#fff;font-weight:700}
.legend{color:#4b5563;margin:6px 0 12px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
audio{width:100%;margin:8px 0 16px}
table{border-collapse:collapse}
th,td{text-align:left;padding:3px 12px 3px 0;border-bottom:1px solid #f3f4f6;
vertical-align:top}
th{color:#4b5563;font-weight:500}
"""


_TRACE_LEGEND = (
    ("#bbf7d0", "utterance"),
    ("#fed7aa", "cut by barge-in"),
    (_OUTCOME_COLOURS["played"], "checkpoint played"),
    ("#dc2626", "barge-in, drops"),
    ("#c4c7cc", "no caller audio (gap)"),
    ("#7c3aed", "DTMF"),
)
"""Legend entries for what only a trace draws."""


def render(
    wav_path: str | Path,
    trace_path: str | Path | None = None,
    *,
    audio_href: str | None = None,
    embed_max_bytes: int = EMBED_MAX_BYTES,
) -> str:
    """One self-contained HTML page showing the call: timeline, audio, figures.

    Args:
        wav_path: the call's 16-bit WAV (stereo: caller left, agent right; mono is
            drawn as the caller alone).
        trace_path: its trace (:mod:`vobiz_async.trace`), or None for the WAV alone.
        audio_href: the URL the page links the WAV by when it is too big to embed;
            default its file name (the page is meant to sit beside it).
        embed_max_bytes: embed the WAV as a ``data:`` URI up to this size.

    Returns:
        The page (polyglot XHTML, UTF-8 text).

    Raises:
        OSError: a file cannot be read.
        CodecError: the WAV is not a 16-bit mono or stereo WAV.
        TraceError: the trace is not a trace.
    """
    wav = Path(wav_path)
    audio = _read_envelopes(wav, COLUMNS)
    call = _Call.of(read_trace(trace_path)) if trace_path is not None else None
    line = _Timeline(max(audio.duration, call.end if call is not None else 0.0))
    line.axis()
    line.lanes(call is not None)
    if call is not None:
        _draw_call(line, call)
    count = len(audio.columns[0])
    span = line.x(audio.duration) - _LEFT
    column_x = [_LEFT + span * (c + 0.5) / count for c in range(count)]
    peak = max((max(-lo, hi) for ch in audio.columns for lo, hi in ch), default=0)
    scale = max(peak, 1024)  # full lane at the call's peak; quiet stays quiet
    lanes = (("caller", CALLER_COLOUR, _CALLER), ("agent", AGENT_COLOUR, _AGENT))
    for (name, colour, lane), extremes in zip(lanes, audio.columns, strict=False):
        line.envelope(name, colour, lane, column_x, extremes, scale)
    title = f"Call {call.start.get('stream_id')}" if call and call.start else f"Call {wav.name}"
    svg = line.svg(f"Timeline of {wav.name}: caller and agent audio, events")
    if audio.size <= embed_max_bytes:
        src = "data:audio/wav;base64," + base64.b64encode(wav.read_bytes()).decode("ascii")
    else:
        src = audio_href if audio_href is not None else quote(wav.name)
    rows = "".join(
        f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in _figures(audio, call, wav)
    )
    keys = [(CALLER_COLOUR, "caller"), (AGENT_COLOUR, "agent")]
    if call is not None:
        keys += _TRACE_LEGEND
    legend = "".join(f'<span style="background:{c}"></span>{label}' for c, label in keys)
    return (
        '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n'
        f'<head><meta charset="utf-8"/><title>{_text(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n"
        f"<h1>{_text(title)}</h1>\n"
        f'<p class="sub">{_text(wav.name)}, {audio.duration:.2f} s</p>\n'
        f"{svg}\n"
        f'<p class="legend">{legend}</p>\n'
        f'<audio controls="controls" preload="metadata" src="{_text(src)}"></audio>\n'
        f'<table class="figures">{rows}</table>\n'
        "</body>\n</html>\n"
    )
