"""The call trace: records, times, per-second counts, the size bound, reading it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests._call import BARGE_IN, ORIGIN, scripted_trace
from vobiz_async.errors import ValidationError
from vobiz_async.trace import DEFAULT_MAX_BYTES, CallTrace, TraceError, read_trace


def _written(tmp_path: Path) -> list[dict[str, Any]]:
    return read_trace(scripted_trace().write(tmp_path / "call.wav"))


def _only(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == event]


def test_scripted_call_has_every_event_at_its_time(tmp_path: Path) -> None:
    """Start, both utterances, the checkpoint and its outcomes, the clear with its summary,
    the ack, the DTMF, the stop and the close are all there, at call-relative times."""
    records = _written(tmp_path)
    start = _only(records, "start")[0]
    assert (start["t"], start["stream_id"], start["call_id"], start["provider"]) == (
        0.0,
        "stream-1",
        "call-1",
        "vobiz",
    )
    assert start["format_in"] == "audio/x-l16;rate=16000" and start["schema"] == 1
    plays = _only(records, "play")
    assert [(p["t"], p["utterance"], p["duration_ms"], p["sent_ms"], p["end"]) for p in plays] == [
        (2.0, 1, 1500.0, 1500.0, 3.3),
        (6.0, 2, 3500.0, 1400.0, 7.2),
    ]
    assert _only(records, "checkpoint") == [
        {"t": 3.3, "event": "checkpoint", "name": "turn-1", "due": 3.5}
    ]
    outcomes = [(o["t"], o["name"], o["outcome"]) for o in _only(records, "outcome")]
    assert outcomes == [(3.56, "turn-1", "played"), (7.2, "turn-2", "cleared")]
    (clear,) = _only(records, "clear")
    assert clear["t"] == 7.2
    assert clear["utterance_sent_ms"] == BARGE_IN.utterance_sent_ms
    assert clear["unconfirmed_ms"] == BARGE_IN.unconfirmed_ms
    assert clear["estimated_heard_ms"] == BARGE_IN.estimated_heard_ms
    assert (clear["voided"], clear["utterance"], clear["utterance_ms"]) == ([], 2, 3500.0)
    assert _only(records, "cleared") == [{"t": 7.25, "event": "cleared", "round_trip_ms": 50.0}]
    assert _only(records, "dtmf") == [{"t": 10.4, "event": "dtmf", "digit": "7"}]
    assert _only(records, "stop") == [
        {"t": 11.9, "event": "stop", "by": "peer", "reason": "hangup"}
    ]
    assert records[-1] == {"t": 11.92, "event": "close", "code": 1000, "reason": ""}
    assert not _only(records, "truncated")


def test_counts_are_aggregated_per_whole_second(tmp_path: Path) -> None:
    """One ``second`` record per second of the call, zeros included (second 9 is a gap),
    with each kind counted in the second its time falls in."""
    seconds = {r["t"]: r for r in _only(_written(tmp_path), "second")}
    assert sorted(seconds) == [float(s) for s in range(12)]
    assert seconds[9.0]["in"] == 0 and seconds[8.0]["in"] == 50 and seconds[11.0]["in"] == 45
    assert sum(r["in"] for r in seconds.values()) == 545
    assert [s for s, r in seconds.items() if r["out"]] == [2.0, 3.0, 6.0, 7.0]
    assert (seconds[3.0]["late"], seconds[4.0]["dropped"], seconds[6.0]["malformed"]) == (1, 1, 2)
    assert sum(r["late"] + r["dropped"] + r["malformed"] for r in seconds.values()) == 4


def test_tick_closes_seconds_without_counts() -> None:
    """``tick`` emits the finished seconds (with zeros for empty ones) and nothing more."""
    trace = CallTrace(50.0)
    trace.count("in", now=50.5)
    trace.tick(now=50.9)
    assert trace.lines() == [
        '{"t":0.0,"event":"second","in":1,"out":0,"dropped":0,"late":0,"malformed":0}'
    ]
    trace.tick(now=53.2)
    records = [json.loads(line) for line in trace.lines()]
    assert [(r["t"], r["in"]) for r in records] == [(0.0, 1), (1.0, 0), (2.0, 0)]


def test_lines_mid_call_show_work_in_progress_without_changing_the_trace() -> None:
    """A snapshot taken mid-utterance has the unfinished play (sent_ms null) and the second
    in progress; the final trace still gets the real values."""
    trace = CallTrace(0.0)
    trace.play_started(2000.0, now=1.0, at=1.2)
    trace.count("out", 10, now=1.5)
    snapshot = [json.loads(line) for line in trace.lines()]
    assert snapshot == [
        {
            "t": 1.2,
            "event": "play",
            "utterance": 1,
            "duration_ms": 2000.0,
            "sent_ms": None,
            "end": None,
        },
        {"t": 1.0, "event": "second", "in": 0, "out": 10, "dropped": 0, "late": 0, "malformed": 0},
    ]
    trace.play_ended(2000.0, now=2.5)
    trace.close(1000, now=3.0)
    final = [json.loads(line) for line in trace.lines()]
    assert final[0]["sent_ms"] == 2000.0 and final[0]["end"] == 2.5
    assert [r["event"] for r in final] == ["play", "second", "second", "second", "close"]


def test_size_bound_drops_records_and_says_so(tmp_path: Path) -> None:
    """Past max_bytes records are counted, not kept; the close is still kept and a final
    ``truncated`` record gives the count."""
    trace = CallTrace(0.0, max_bytes=1024)
    for index in range(200):
        trace.dtmf(str(index % 10), now=index * 0.1)
    trace.close(1006, now=25.0, reason="abnormal")
    assert trace.size <= 1024 and trace.dropped_records > 100
    path = trace.write(tmp_path / "long")
    assert path == tmp_path / "long.jsonl"
    records = read_trace(path)
    kept = [r for r in records if r["event"] == "dtmf"]
    assert len(kept) + trace.dropped_records == 200
    assert sum(len(line) + 1 for line in path.read_text().splitlines()[: len(kept)]) <= 1024
    assert records[-2] == {"t": 25.0, "event": "close", "code": 1006, "reason": "abnormal"}
    assert records[-1] == {
        "t": 25.0,
        "event": "truncated",
        "dropped_records": trace.dropped_records,
        "max_bytes": 1024,
    }
    assert DEFAULT_MAX_BYTES == 2 * 1024 * 1024


def test_write_replaces_the_suffix_and_leaves_no_temporary(tmp_path: Path) -> None:
    """``write(call.wav)`` writes ``call.jsonl`` beside it, atomically."""
    path = scripted_trace().write(tmp_path / "calls" / "abc.wav")
    assert path == tmp_path / "calls" / "abc.jsonl"
    assert sorted(p.name for p in path.parent.iterdir()) == ["abc.jsonl"]


def test_read_trace_skips_a_cut_last_line(tmp_path: Path) -> None:
    """A file cut mid-line (a crash while writing) still reads, without the partial line."""
    path = scripted_trace().write(tmp_path / "call")
    whole = read_trace(path)
    text = path.read_text()
    path.write_text(text[: len(text) - 20])
    assert whole[-1]["event"] == "close"
    assert read_trace(path) == whole[:-1]


def test_read_trace_rejects_a_bad_line_in_the_middle(tmp_path: Path) -> None:
    """A broken line that is not the last one is an error that names the line."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t":0,"event":"start"}\nnot json\n{"t":1,"event":"dtmf","digit":"1"}\n')
    with pytest.raises(TraceError) as caught:
        read_trace(path)
    assert caught.value.line == 2 and caught.value.path == str(path)
    path.write_text('{"t":0,"event":"start"}\n[1, 2]\n')
    with pytest.raises(TraceError, match="needs t and event"):
        read_trace(path)


def test_bad_arguments_are_refused() -> None:
    """An unknown count kind and a tiny bound are validation errors."""
    trace = CallTrace(0.0)
    with pytest.raises(ValidationError) as caught:
        trace.count("bogus", now=1.0)  # type: ignore[arg-type]
    assert caught.value.field == "kind"
    with pytest.raises(ValidationError):
        CallTrace(0.0, max_bytes=100)


def test_time_before_the_origin_is_clamped() -> None:
    """A hook called with a time before the call's start records t = 0, not negative."""
    trace = CallTrace(ORIGIN)
    trace.dtmf("1", now=ORIGIN - 5)
    trace.count("in", now=ORIGIN - 1)
    records = [json.loads(line) for line in trace.lines()]
    assert [(r["event"], r["t"]) for r in records] == [("dtmf", 0.0), ("second", 0.0)]
