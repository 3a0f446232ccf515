"""``vobiz-async demo``: a whole emulated call against an example agent, on loopback.

The caller (the emulator's media peer) says four things; the agent answers each with
synthetic speech at 24 kHz (a stand-in for TTS, resampled to the stream's 16 kHz),
marks every turn with a checkpoint, and is barged in on once during its long answer.
The stream is started through the REST client against the emulator and bound to its
media session by ``stream_id``, exactly as against real Vobiz. With
``provider="signalwire"`` the same agent answers an emulated SignalWire call instead: a
``<Connect><Stream codec="L16@16000h">`` cXML call on ``FakeSignalWire``, its URL
carrying a signed per-call token as a path segment (compat URLs take no query string).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import struct
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TextIO

from .codec import interleave_stereo, write_wav
from .events import AudioReceived
from .report import render
from .server import MediaServer, StreamSession, serve
from .signalwire.cxml import ResponseBuilder
from .testing import FakeSignalWire, FakeVobiz, PeerReport, speech_like
from .tokens import sign_stream_url, sign_token
from .trace import CallTrace

__all__ = ["DemoAgent", "DemoReport", "caller_script", "run_demo"]

RATE = 16000
TTS_RATE = 24000
CALL_SECONDS = 17.0
# (start, length) of each caller utterance, in seconds.
UTTERANCES = [(0.3, 1.5), (5.0, 1.4), (9.2, 1.5), (13.4, 1.0)]
REPLIES = [1.5, 3.5, 1.2, 1.0]  # seconds of agent speech per turn; turn 2 gets barged into


def caller_script(rate: int = RATE) -> bytes:
    """The caller's side: four utterances separated by silence, 17 s in all."""
    total = bytearray(int(CALL_SECONDS * rate) * 2)
    for index, (start, length) in enumerate(UTTERANCES):
        speech = speech_like(length, rate, seed=100 + index, level=7000)
        offset = int(start * rate) * 2
        total[offset : offset + len(speech)] = speech
    return bytes(total)


def _rms(pcm: bytes) -> float:
    count = len(pcm) // 2
    if not count:
        return 0.0
    samples = struct.unpack(f"<{count}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / count)


@dataclass
class DemoAgent:
    """The example agent: an energy VAD, turn-taking, replies, barge-in.

    Attributes:
        latencies_ms: per inbound frame, media timestamp to handler receipt. Compat
            timestamps count from the stream's start, not the epoch, so on a SignalWire
            or Twilio stream it is the delay added since the first frame (its arrival
            is the zero).
        outcomes: each turn's checkpoint outcome.
        state: what the agent is doing now (for the progress line).
    """

    speech_threshold: float = 500.0
    end_of_turn_ms: float = 700.0
    barge_in_ms: float = 200.0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    state: str = "listening"
    turns: int = 0
    session: StreamSession | None = None
    trace: CallTrace | None = None
    replies: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Rendered up front: a real agent's TTS is network I/O, which does not block the
        # event loop; synthesising seconds of audio in Python right in the call would.
        self.replies = [
            speech_like(seconds, TTS_RATE, seed=200 + turn, level=6000)
            for turn, seconds in enumerate(REPLIES, start=1)
        ]

    async def __call__(self, session: StreamSession) -> None:
        self.session = session
        session.record()  # the call's trace for the HTML report; kept past the call
        self.trace = session.trace
        speaking: asyncio.Task[None] | None = None
        speech_ms = silence_ms = 0.0
        epoch: float | None = 0.0 if session.provider == "vobiz" else None
        async for event in session:
            if type(event) is not AudioReceived:
                continue
            assert isinstance(event, AudioReceived)
            if event.timestamp is not None:
                now_ms = time.time() * 1000
                if epoch is None:  # compat: ms since the stream started (compat 4.3.3)
                    epoch = now_ms - event.timestamp
                if event.timestamp or epoch:
                    self.latencies_ms.append(max(0.0, now_ms - epoch - event.timestamp))
            loud = _rms(event.pcm) > self.speech_threshold
            speech_ms, silence_ms = (speech_ms + 20, 0.0) if loud else (speech_ms, silence_ms + 20)
            agent_talking = speaking is not None and not speaking.done()
            if agent_talking and loud and speech_ms >= self.barge_in_ms:
                self.state = "barged in: clearing"
                await session.clear(wait=False)
                assert speaking is not None
                await speaking
                self.state = "listening"
            elif not agent_talking and speech_ms >= 200 and silence_ms >= self.end_of_turn_ms:
                speech_ms = silence_ms = 0.0
                self.turns += 1
                speaking = asyncio.create_task(self._reply(session, self.turns))
            if not loud and silence_ms > 1000:
                speech_ms = 0.0
        if speaking is not None:
            await speaking

    async def _reply(self, session: StreamSession, turn: int) -> None:
        self.state = f"speaking (turn {turn})"
        tts = self.replies[min(turn - 1, len(self.replies) - 1)]
        await session.play(tts, TTS_RATE)
        outcome = await session.checkpoint(f"turn-{turn}")
        self.outcomes[f"turn-{turn}"] = outcome.value
        if self.state.startswith("speaking"):
            self.state = "listening"


@dataclass
class DemoReport:
    """The demo's figures (also written to ``report.json``)."""

    call_seconds: float
    frames_caller_to_agent: int
    frames_agent_to_caller: int
    latency_p50_ms: float
    latency_p99_ms: float
    checkpoints: dict[str, str]
    agent_sent_ms: float
    caller_heard_ms: float
    cleared_unheard_ms: float
    clear_round_trip_ms: list[float]
    malformed_frames: int
    dropped_frames: int
    rest_requests: list[str]
    streams_listed: list[str]
    recording: str
    html_report: str


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _progress(agent: DemoAgent, total: float, stream: TextIO, done: asyncio.Event) -> None:
    start = time.monotonic()
    tty = stream.isatty()
    last_line = -1.0
    while not done.is_set():
        elapsed = min(total, time.monotonic() - start)
        bar = "#" * int(24 * elapsed / total)
        line = f"  call {elapsed:4.1f}/{total:.0f}s [{bar:<24}] agent: {agent.state}"
        if tty:
            stream.write("\r" + line.ljust(78))
            stream.flush()
        elif elapsed - last_line >= 2.0:
            stream.write(line + "\n")
            last_line = elapsed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await done.wait()
    if tty:
        stream.write("\r" + " " * 78 + "\r")


async def run_demo(
    out_dir: Path,
    *,
    progress: TextIO | None = sys.stderr,
    speed: float = 1.0,
    provider: Literal["vobiz", "signalwire"] = "vobiz",
) -> DemoReport:
    """Run the demo call and write ``call.wav``, ``call.jsonl`` (its trace), ``call.html``
    (the report) and ``report.json`` into ``out_dir``.

    Args:
        progress: where the progress line goes (None: nowhere).
        speed: the emulated caller's clock speed (1.0: real time).
        provider: ``vobiz`` (a REST-started stream on ``FakeVobiz``) or ``signalwire``
            (a ``<Connect><Stream>`` call on ``FakeSignalWire``, L16 16 kHz).
    """
    agent = DemoAgent()
    secret = "demo-secret"
    done = asyncio.Event()
    ticker = (
        asyncio.create_task(_progress(agent, CALL_SECONDS / speed, progress, done))
        if progress is not None
        else None
    )
    try:
        async with serve(agent, "127.0.0.1", 0, path="/media", token=secret) as server:
            if provider == "signalwire":
                session, peer, report, requests, streams = await _signalwire_call(
                    agent, server.url, secret, speed
                )
            else:
                session, peer, report, requests, streams = await _vobiz_call(
                    server.url, secret, speed, server
                )
    finally:
        done.set()
        if ticker is not None:
            await ticker
    stats = session.stats
    wav = out_dir / "call.wav"
    result = DemoReport(
        call_seconds=CALL_SECONDS,
        frames_caller_to_agent=report.frames_sent,
        frames_agent_to_caller=report.play_frames,
        latency_p50_ms=round(statistics.median(agent.latencies_ms), 2)
        if agent.latencies_ms
        else 0.0,
        latency_p99_ms=round(_percentile(agent.latencies_ms, 0.99), 2),
        checkpoints=dict(agent.outcomes),
        agent_sent_ms=stats.sent_ms,
        caller_heard_ms=report.heard_ms,
        cleared_unheard_ms=report.cleared_ms,
        clear_round_trip_ms=[round(v, 2) for v in stats.clear_round_trip_ms],
        malformed_frames=stats.malformed,
        dropped_frames=stats.dropped_frames,
        rest_requests=requests,
        streams_listed=streams,
        recording=str(wav),
        html_report=str(out_dir / "call.html"),
    )
    stereo = interleave_stereo(peer.caller_pcm, peer.heard_pcm)
    await asyncio.to_thread(_write_outputs, out_dir, stereo, result, agent.trace)
    return result


class _Peer(Protocol):
    @property
    def caller_pcm(self) -> bytes: ...

    @property
    def heard_pcm(self) -> bytes: ...


_Call = tuple[StreamSession, _Peer, PeerReport, list[str], list[str]]


async def _vobiz_call(url: str, secret: str, speed: float, server: MediaServer) -> _Call:
    """A REST-started bidirectional stream on FakeVobiz, bound by ``stream_id``."""
    async with FakeVobiz() as fake:
        call = fake.call(audio=caller_script(), audio_rate=RATE, seconds=CALL_SECONDS, speed=speed)
        signed = sign_stream_url(url, secret, call.call_uuid, ttl=300)
        async with fake.client() as client:
            started = await client.streams.start(
                call.call_uuid, signed, bidirectional=True, content_type=f"audio/x-l16;rate={RATE}"
            )
            session = await started.session(server, timeout=10)
            peer = await call.next_peer()
            report = await peer.wait_closed()
            await session.wait_closed()
            streams = [s async for s in client.streams.iterate(call.call_uuid)]
        requests = [f"{r.method} {r.path}" for r in fake.requests]
    return session, peer, report, requests, [f"{s.stream_id} {s.status}" for s in streams]


async def _signalwire_call(agent: DemoAgent, url: str, secret: str, speed: float) -> _Call:
    """A ``<Connect><Stream codec="L16@16000h">`` call on FakeSignalWire; the signed
    per-call token rides as the URL's last path segment (no query string on compat)."""
    call_sid = str(uuid.uuid4())
    stream_url = url.replace("ws://", "wss://", 1) + "/" + sign_token(secret, call_sid, ttl=300)
    xml = (
        ResponseBuilder()
        .connect_stream(stream_url, codec="L16@16000h", name="demo-agent")
        .hangup()
        .to_xml()
    )
    async with FakeSignalWire() as fake:
        call = fake.call(
            call_sid,
            audio=caller_script(),
            audio_rate=RATE,
            seconds=CALL_SECONDS,
            speed=speed,
            answer_xml=xml,
        )
        peer = await call.next_peer()
        report = await peer.wait_closed()
        await call.wait_done(timeout=30)
        session = agent.session
        assert session is not None, "the agent never got the stream"
        await session.wait_closed()
        streams = [f"{s.sid} {s.status}" for s in fake.streams.values()]
        requests = [f"{r.method} {r.path}" for r in fake.requests]
    return session, peer, report, requests, streams


def _write_outputs(
    out_dir: Path, stereo: bytes, report: DemoReport, trace: CallTrace | None
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    wav = out_dir / "call.wav"
    write_wav(wav, stereo, RATE, channels=2)
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    trace_path = trace.write(wav) if trace is not None else None
    (out_dir / "call.html").write_text(render(wav, trace_path), encoding="utf-8")


def format_report(report: DemoReport) -> str:
    """The short human-readable report printed at the end."""
    lines = [
        "vobiz-async demo: one emulated call, agent over real loopback sockets",
        f"  call length            {report.call_seconds:.0f} s",
        f"  frames caller->agent   {report.frames_caller_to_agent}",
        f"  frames agent->caller   {report.frames_agent_to_caller}",
        f"  inbound latency        p50 {report.latency_p50_ms:.2f} ms,"
        f" p99 {report.latency_p99_ms:.2f} ms",
        "  checkpoints            "
        + ", ".join(f"{name}={outcome}" for name, outcome in report.checkpoints.items()),
        f"  agent audio sent       {report.agent_sent_ms:.0f} ms",
        f"  caller heard           {report.caller_heard_ms:.0f} ms"
        f" ({report.cleared_unheard_ms:.0f} ms flushed by barge-in)",
        "  clear round trip       "
        + (
            ", ".join(f"{v:.2f} ms" for v in report.clear_round_trip_ms)
            or ("not acknowledged (compat)" if report.cleared_unheard_ms else "no barge-in")
        ),
        f"  malformed / dropped    {report.malformed_frames} / {report.dropped_frames}",
        f"  recording              {report.recording} (left: caller, right: agent as heard)",
        f"  call report            {report.html_report} (open it in a browser)",
    ]
    return "\n".join(lines)
