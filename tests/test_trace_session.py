"""session.record() keeps a trace of a real emulated call, and the report draws it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from vobiz_async.codec import interleave_stereo, write_wav
from vobiz_async.events import CheckpointOutcome, DtmfReceived
from vobiz_async.report import render
from vobiz_async.server import StreamSession, serve
from vobiz_async.testing import MediaPeer, speech_like, tone
from vobiz_async.trace import CallTrace, read_trace


async def test_trace_of_an_emulated_call_has_every_event_at_a_plausible_time(
    tmp_path: Path,
) -> None:
    """An utterance played, a barge-in on a DTMF, then a hangup: all traced, in order."""
    sessions: list[StreamSession] = []
    outcomes: list[CheckpointOutcome] = []
    traces: list[CallTrace] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        session.record()
        assert session.trace is not None
        traces.append(session.trace)  # the session lets go of it once the call is over
        await session.play(tone(440, 0.4, 8000), 8000)
        outcomes.append(await session.checkpoint("greeting"))
        speaking = asyncio.create_task(session.play(tone(300, 3.0, 8000), 8000))
        async for event in session:
            if isinstance(event, DtmfReceived):
                await session.clear(wait=True)
                break
        await speaking
        outcomes.append(await session.checkpoint("long"))
        await session.wait_closed()

    async with serve(agent, "127.0.0.1", 0) as server:
        peer = MediaPeer(server.url, audio=speech_like(3.0, 8000), seconds=3.0)
        peer.start()
        await peer.started.wait()
        await asyncio.sleep(1.2)
        await peer.send_dtmf("5")
        report = await peer.wait_closed()
        await asyncio.sleep(0.1)
    [session] = sessions
    [trace] = traces
    assert outcomes == [CheckpointOutcome.PLAYED, CheckpointOutcome.CLEARED]
    assert session.trace is None and session.recorder is None  # released after the call
    trace_path = trace.write(tmp_path / "call.wav")
    assert trace_path.suffix == ".jsonl"
    records: list[dict[str, Any]] = read_trace(trace_path)
    kinds = [r["event"] for r in records]
    for kind in ("start", "play", "checkpoint", "outcome", "dtmf", "clear", "cleared", "close"):
        assert kind in kinds, kind
    by_kind = {r["event"]: r for r in records}
    assert by_kind["start"]["stream_id"] == peer.stream_id and by_kind["start"]["t"] < 0.2
    assert 0.9 < by_kind["dtmf"]["t"] < 2.5 and by_kind["dtmf"]["digit"] == "5"
    assert by_kind["clear"]["t"] >= by_kind["dtmf"]["t"]
    assert by_kind["clear"]["estimated_heard_ms"] is not None
    assert by_kind["cleared"]["round_trip_ms"] < 1000
    assert by_kind["close"]["code"] == report.close_code and 2.5 < by_kind["close"]["t"] < 5.0
    played = [r for r in records if r["event"] == "outcome" and r["outcome"] == "played"]
    assert [r["name"] for r in played] == ["greeting"]
    seconds = [r for r in records if r["event"] == "second"]
    assert sum(r["in"] for r in seconds) >= 140 and sum(r["out"] for r in seconds) > 20
    times = [r["t"] for r in records if r["event"] not in ("play", "second")]
    assert times == sorted(times)
    wav = tmp_path / "call.wav"
    write_wav(wav, interleave_stereo(peer.caller_pcm, peer.heard_pcm), 8000, 2)
    html = render(wav, trace_path)
    assert "heard" in html and ">5<" in html and html.count("<svg") >= 1
    assert json.loads(trace_path.read_text().splitlines()[0])["event"] == "start"
