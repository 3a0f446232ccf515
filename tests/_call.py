"""A scripted call for the trace and report tests and the browser check.

Twelve seconds, fed to a :class:`CallTrace` with explicit clock times (origin 100.0):
the caller speaks, the agent answers (checkpoint played), the caller barges in on the
agent's second answer (a clear that cut it after 1200 ms of 3500 ms), presses 7, and
hangs up. Second 9 has no inbound frames (a gap); seconds 3, 4 and 6 have a late, a
dropped and two malformed frames. The WAV has the caller on the left and the agent as
heard on the right.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vobiz_async.codec import interleave_stereo, write_wav
from vobiz_async.protocol import ClearSummary
from vobiz_async.testing import speech_like
from vobiz_async.trace import CallTrace, CountKind

ORIGIN = 100.0
SECONDS = 12
CALLER_SPEECH = [(0.3, 1.3), (4.5, 1.0), (7.0, 1.5)]  # (start, length) seconds
AGENT_HEARD = [(2.0, 1.5), (6.0, 1.2)]  # the second answer cut by the barge-in at 7.2
BARGE_IN = ClearSummary(
    utterance_sent_ms=1400.0, unconfirmed_ms=200.0, estimated_heard_ms=1200.0, voided=()
)


def scripted_trace(trace: CallTrace | None = None) -> CallTrace:
    """Feed the scripted call into ``trace`` (a new one by default) and return it."""
    trace = trace or CallTrace(ORIGIN)
    at = ORIGIN
    trace.start(
        now=at,
        stream_id="stream-1",
        call_id="call-1",
        format_in="audio/x-l16;rate=16000",
        format_out="audio/x-l16;rate=16000",
    )
    steps: list[tuple[float, Callable[[float], object]]] = []
    for second in range(SECONDS):
        if second != 9:
            frames = 45 if second == SECONDS - 1 else 50  # the caller hangs up at 11.9
            steps += [(second + f * 0.02, _counter(trace, "in", 1)) for f in range(frames)]
        if second in (2, 3, 6, 7):
            steps.append((second + 0.5, _counter(trace, "out", 50)))
    steps += [
        (3.4, _counter(trace, "late", 1)),
        (4.1, _counter(trace, "dropped", 1)),
        (6.7, _counter(trace, "malformed", 2)),
        (2.0, lambda now: trace.play_started(1500.0, now=now)),
        (3.3, lambda now: trace.play_ended(1500.0, now=now)),
        (3.3, lambda now: trace.checkpoint_sent("turn-1", now=now, due=now + 0.2)),
        (3.56, lambda now: trace.checkpoint_outcome("turn-1", "played", now=now)),
        (6.0, lambda now: trace.play_started(3500.0, now=now)),
        (7.2, lambda now: trace.clear(BARGE_IN, now=now)),
        (7.2, lambda now: trace.play_ended(1400.0, now=now)),
        (7.2, lambda now: trace.checkpoint_outcome("turn-2", "cleared", now=now)),
        (7.25, lambda now: trace.cleared(now=now)),
        (10.4, lambda now: trace.dtmf("7", now=now)),
        (11.9, lambda now: trace.stop(now=now, by="peer", reason="hangup")),
        (11.92, lambda now: trace.close(1000, now=now)),
    ]
    for t, step in sorted(steps, key=lambda item: item[0]):  # stable: same-time order kept
        step(at + t)
    return trace


def _counter(trace: CallTrace, kind: CountKind, n: int) -> Callable[[float], None]:
    return lambda now: trace.count(kind, n, now=now)


def scripted_wav(path: Path, rate: int = 8000) -> Path:
    """Write the call's stereo WAV (caller left, agent right) at ``rate``."""
    size = SECONDS * rate * 2
    caller = bytearray(size)
    agent = bytearray(size)
    for side, spans, seed in ((caller, CALLER_SPEECH, 10), (agent, AGENT_HEARD, 20)):
        for index, (start, length) in enumerate(spans):
            speech = speech_like(length, rate, seed=seed + index, level=9000)
            offset = int(start * rate) * 2
            side[offset : offset + len(speech)] = speech
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, interleave_stereo(bytes(caller), bytes(agent)), rate, channels=2)
    return path


def scripted_call(directory: Path, rate: int = 8000) -> tuple[Path, Path]:
    """Write ``call.wav`` and ``call.jsonl`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    wav = scripted_wav(directory / "call.wav", rate)
    return wav, scripted_trace().write(wav)
