"""Real loopback calls through CompatMediaPeer and FakeSignalWire against serve()."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from vobiz_async import (
    AudioReceived,
    CheckpointOutcome,
    DtmfReceived,
    Pacing,
    PlaybackCheckpointReached,
    StreamSession,
    StreamStopped,
    serve,
)
from vobiz_async._demo import run_demo
from vobiz_async.cli import main
from vobiz_async.codec import pcm16_to_ulaw, read_wav, ulaw_to_pcm16
from vobiz_async.errors import ValidationError
from vobiz_async.signalwire import CompatStreamCallback, StreamEvent, callback_handler
from vobiz_async.signalwire.cxml import ResponseBuilder
from vobiz_async.testing import CompatMediaPeer, FakeSignalWire, speech_like, tone


def wss(url: str) -> str:
    """The ``wss://`` form of a test server's URL (FakeSignalWire dials it as ws://)."""
    return url.replace("ws://", "wss://", 1)


async def echo(session: StreamSession) -> None:
    """Play every inbound frame straight back, in the stream's own format."""
    async for event in session:
        if isinstance(event, AudioReceived):
            await session.play_encoded(event.payload)


@asynccontextmanager
async def callbacks(fake: FakeSignalWire) -> AsyncIterator[tuple[str, list[CompatStreamCallback]]]:
    """A verified status-callback endpoint on loopback; yields its URL and what arrived."""
    got: list[CompatStreamCallback] = []
    app = web.Application()
    callback_handler(got.append, signing_key=fake.signing_key).add_to(app, "/status")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/status", got
    finally:
        await runner.cleanup()


async def until(predicate: object, what: str) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    assert callable(predicate)
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_twilio_mulaw_echo_round_trip() -> None:
    """Twilio: mu-law 8 kHz in, echoed back, heard by the caller sample for sample."""
    caller = speech_like(1.5, 8000, seed=11)
    async with serve(echo, "127.0.0.1", 0) as server:
        peer = CompatMediaPeer(server.url, audio=caller, twilio=True, seconds=1.5)
        report = await peer.wait_closed()
    said = ulaw_to_pcm16(pcm16_to_ulaw(peer.caller_pcm))  # what crossed the wire
    assert report.frames_sent == 75 and report.play_frames > 50 and report.refused == {}
    assert said[3200:9600] in peer.heard_pcm  # 400 ms of the caller, echoed intact
    assert report.close_code == 1000 and not report.stopped


@pytest.mark.parametrize("codec", ["L16@16000h", "L16@24000h"])
async def test_signalwire_l16_echo_through_connect_stream(codec: str) -> None:
    """SignalWire <Connect><Stream codec=L16>: the stream's format both ways, lossless."""
    rate = int(codec[4:9])
    formats: list[tuple[str, int]] = []

    async def agent(session: StreamSession) -> None:
        formats.append((session.provider, session.inbound_format.sample_rate))
        await echo(session)

    caller = tone(440, 1.2, rate)
    async with serve(agent, "127.0.0.1", 0) as server, FakeSignalWire() as fake:
        xml = ResponseBuilder().connect_stream(wss(server.url), codec=codec).hangup().to_xml()
        call = fake.call(audio=caller, audio_rate=rate, seconds=1.2, answer_xml=xml)
        [report] = await call.wait_done(timeout=30)
        peer = call.peers[0]
    assert formats == [("signalwire", rate)] and peer.format.sample_rate == rate
    assert peer.caller_pcm == caller
    frame = rate // 50 * 2
    assert caller[10 * frame : 30 * frame] in peer.heard_pcm
    assert report.refused == {} and report.malformed == 0
    assert call.hangup_cause == "caller-hangup"  # the caller hung up: <Hangup/> never ran


async def test_checkpoint_is_played_after_playout() -> None:
    """A mark is echoed once its audio has played: PLAYED, and the caller heard it all."""
    outcomes: list[CheckpointOutcome] = []
    sessions: list[StreamSession] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await session.play(tone(300, 0.4, 8000), 8000)
        outcomes.append(await session.checkpoint("greet"))
        await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server:
        peer = CompatMediaPeer(server.url, seconds=5.0)
        report = await peer.wait_closed()
    assert outcomes == [CheckpointOutcome.PLAYED]
    [name] = report.played_checkpoints
    assert name.startswith("greet:") and report.voided_checkpoints == []
    assert report.heard_ms >= 400.0
    stats = sessions[0].stats  # the peer's frames are well-formed and numbered in order
    assert (stats.malformed, stats.unknown_events, stats.sequence_gaps) == (0, 0, 0)


async def test_barge_in_clear_voids_the_mark_and_later_audio_plays() -> None:
    """A clear with audio queued: CLEARED; the mark's echo stays cleared; new audio plays."""
    outcomes: dict[str, CheckpointOutcome] = {}
    events: list[object] = []
    mark_queued = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        session.observe(events.append)
        await session.play(tone(300, 1.5, 8000), 8000)  # all of it goes out at once
        first = asyncio.create_task(session.checkpoint("answer"))
        await mark_queued.wait()  # the peer holds the mark behind ~1.5 s of audio
        await session.clear()
        outcomes["answer"] = await first
        await session.play(tone(500, 0.3, 8000), 8000)
        outcomes["after"] = await session.checkpoint("after")
        await session.stop()

    pacing = Pacing(lead_ms=5000.0)
    async with serve(agent, "127.0.0.1", 0, pacing=pacing) as server:
        peer = CompatMediaPeer(server.url, twilio=True, seconds=10.0)
        peer.start()
        await until(lambda: any(type(e).__name__ == "Checkpoint" for e in peer.events), "mark")
        mark_queued.set()
        report = await peer.wait_closed()
    assert outcomes == {"answer": CheckpointOutcome.CLEARED, "after": CheckpointOutcome.PLAYED}
    [voided] = report.voided_checkpoints
    [played] = report.played_checkpoints
    assert voided.startswith("answer:") and played.startswith("after:")
    assert report.clears == 1 and report.cleared_ms > 0
    assert 300.0 <= report.heard_ms < 1800.0
    reached = [e.name for e in events if isinstance(e, PlaybackCheckpointReached)]
    assert reached == ["after"]  # the echo of the cleared mark is no PLAYED


async def test_a_mark_with_nothing_queued_is_echoed_at_once() -> None:
    """With nothing queued the mark comes back at once, not at the peer's next tick."""
    outcomes: list[CheckpointOutcome] = []

    async def agent(session: StreamSession) -> None:
        outcomes.append(await session.checkpoint("empty", timeout=30.0))
        await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server:
        # speed 0.0004: one 20 ms tick every 50 s, so only an immediate echo arrives
        peer = CompatMediaPeer(server.url, speed=0.0004, hangup_when_done=False)
        report = await asyncio.wait_for(peer.wait_closed(), 20)
    assert outcomes == [CheckpointOutcome.PLAYED]
    assert [n.split(":")[0] for n in report.played_checkpoints] == ["empty"]
    assert report.heard_ms == 0.0 and report.frames_sent == 1


@pytest.mark.parametrize(("twilio", "duration"), [(True, None), (False, 250)])
async def test_dtmf_in_both_shapes(twilio: bool, duration: int | None) -> None:
    """Twilio {track, digit} and SignalWire {digit, duration} both reach the app."""
    got: list[DtmfReceived] = []

    async def agent(session: StreamSession) -> None:
        async for event in session:
            if isinstance(event, DtmfReceived):
                got.append(event)
                await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server:
        peer = CompatMediaPeer(server.url, twilio=twilio, seconds=5.0)
        peer.start()
        await peer.started.wait()
        with pytest.raises(ValidationError):
            await peer.send_dtmf("x")
        await peer.send_dtmf("5")
        await peer.wait_closed()
    assert [(d.digit, d.track, d.duration) for d in got] == [("5", "inbound", duration)]


async def test_stop_closes_with_1000_and_the_next_verb_runs() -> None:
    """session.stop() closes the socket with 1000; the call goes on to <Hangup/>."""
    async with FakeSignalWire() as fake, callbacks(fake) as (status_url, got):

        async def agent(session: StreamSession) -> None:
            await session.stop()

        async with serve(agent, "127.0.0.1", 0) as server:
            xml = (
                ResponseBuilder()
                .connect_stream(wss(server.url), status_callback=status_url)
                .hangup()
                .to_xml()
            )
            call = fake.call(answer_xml=xml, seconds=10.0)
            [report] = await call.wait_done(timeout=20)
            await until(lambda: len(got) == 2, "stream-started and stream-stopped")
    assert report.close_code == 1000 and report.stopped
    assert call.hangup_cause == "hangup-verb"
    assert sorted(str(cb.event) for cb in got) == [StreamEvent.STARTED, StreamEvent.STOPPED]
    [stream] = fake.streams.values()
    assert stream.status == "stopped" and stream.stop_reason == "ended"


async def test_hangup_sends_stop_which_reaches_the_app() -> None:
    """The caller hangs up: an inbound stop reaches the app as StreamStopped, then close."""
    seen: list[object] = []

    async def agent(session: StreamSession) -> None:
        async for event in session:
            if not isinstance(event, AudioReceived):
                seen.append(event)

    async with serve(agent, "127.0.0.1", 0) as server:
        peer = CompatMediaPeer(server.url, twilio=True, seconds=0.4)
        report = await peer.wait_closed()
        await until(lambda: bool(seen), "the stop event")
    assert [type(e) for e in seen] == [StreamStopped]
    assert report.close_code == 1000 and not report.stopped


async def test_strict_peer_refuses_what_twilio_would() -> None:
    """A Vobiz playAudio, a stop, a foreign streamSid are refused and counted; the bearer
    token rides on the upgrade; a valid mark is still obeyed."""
    headers: list[str | None] = []

    async def app(ws: ServerConnection) -> None:
        assert ws.request is not None
        headers.append(ws.request.headers.get("Authorization"))
        sid = ""
        async for message in ws:
            body = json.loads(message)
            if body.get("event") == "start":
                sid = body["start"]["streamSid"]
                vobiz = {"event": "playAudio", "streamId": sid, "media": {"payload": "AA=="}}
                await ws.send(json.dumps(vobiz))
                await ws.send(json.dumps({"event": "stop", "streamSid": sid}))
                await ws.send(json.dumps({"event": "clear", "streamSid": "other"}))
                await ws.send(json.dumps({"event": "mark", "mark": {"name": "x"}}))
                await ws.send(
                    json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "ok"}})
                )
            elif body.get("event") == "mark":
                await ws.close()

    async with ws_serve(app, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        peer = CompatMediaPeer(f"ws://127.0.0.1:{port}/m", seconds=5.0, bearer_token="tok_1")
        report = await asyncio.wait_for(peer.wait_closed(), 20)
    assert headers == ["Bearer tok_1"]
    assert report.refused == {
        "unsupported-event": 2,
        "foreign-stream-sid": 1,
        "missing-stream-sid": 1,
    }
    assert report.played_checkpoints == ["ok"] and report.clears == 0 and report.stopped


def test_twilio_is_mulaw_only() -> None:
    """A Twilio peer refuses any codec but PCMU@8000h, and unknown codecs are refused."""
    with pytest.raises(ValidationError) as twilio:
        CompatMediaPeer("ws://127.0.0.1:1/", twilio=True, codec="L16@16000h")
    with pytest.raises(ValidationError):
        CompatMediaPeer("ws://127.0.0.1:1/", codec="PCMA@8000h")
    assert twilio.value.field == "codec"


async def test_custom_parameters_and_bearer_token_from_cxml() -> None:
    """<Parameter>s reach session.started.custom_parameters; the stream is SignalWire's."""
    started: list[tuple[str, dict[str, str], str]] = []

    async def agent(session: StreamSession) -> None:
        s = session.started
        started.append((session.provider, dict(s.custom_parameters), s.call_id))
        await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server, FakeSignalWire() as fake:
        xml = (
            ResponseBuilder()
            .connect_stream(
                wss(server.url),
                parameters={"corr": "c-2f9e41", "tenant": "42"},
                auth_bearer_token="tok_5d1a90c7",
            )
            .to_xml()
        )
        call = fake.call(answer_xml=xml)
        await call.wait_done(timeout=20)
    [stream] = fake.streams.values()
    assert started == [("signalwire", {"corr": "c-2f9e41", "tenant": "42"}, call.call_sid)]
    assert stream.bearer_token == "tok_5d1a90c7" and stream.bidirectional
    assert call.hangup_cause == "end-of-xml"


async def test_start_stream_is_one_way_and_rest_starts_dial() -> None:
    """<Start><Stream> and REST streams dial one-way: app media is dropped and counted."""
    outcomes: list[CheckpointOutcome] = []

    async def agent(session: StreamSession) -> None:
        await session.play(tone(300, 0.2, 8000), 8000)
        outcomes.append(await session.checkpoint("never", timeout=5.0))

    async with serve(agent, "127.0.0.1", 0) as server, FakeSignalWire() as fake:
        xml = ResponseBuilder().start_stream(wss(server.url)).pause(1).to_xml()
        xml_call = fake.call(answer_xml=xml, seconds=0.6)
        rest_call = fake.call(seconds=0.6)
        async with fake.client() as client:
            await client.streams.start(rest_call.call_sid, wss(server.url) + "/rest")
        reports = [*await xml_call.wait_done(timeout=20), *await rest_call.wait_done(timeout=20)]
    assert len(reports) == 2 and outcomes == [CheckpointOutcome.CLOSED] * 2
    for report in reports:
        assert report.heard_ms == 0.0 and report.play_frames > 0
        assert report.refused == {"unidirectional": report.frames_received}
    assert [s.bidirectional for s in fake.streams.values()] == [False, False]


async def test_refused_socket_posts_stream_error_and_ws_urls_are_refused() -> None:
    """A 401 at the upgrade is stream-error connection_refused; ws:// in cXML is invalid_url."""

    async def agent(session: StreamSession) -> None:
        await session.stop()

    async with (
        FakeSignalWire() as fake,
        callbacks(fake) as (status_url, got),
        serve(agent, "127.0.0.1", 0, token="secret") as server,
    ):
        builder = ResponseBuilder()
        xml = builder.connect_stream(wss(server.url), status_callback=status_url).to_xml()
        call = fake.call(answer_xml=xml)  # no token in the URL: 401 at the upgrade
        [report] = await call.wait_done(timeout=20)
        plain = f'<Response><Connect><Stream url="{server.url}/secret"'
        plain += f' statusCallback="{status_url}"/></Connect></Response>'
        refused = fake.call(answer_xml=plain)
        assert await refused.wait_done(timeout=20) == []
        await until(lambda: len(got) == 2, "two stream-error callbacks")
    assert report.rejected_status == 401
    assert sorted((str(cb.event), cb.stream_error or "") for cb in got) == [
        ("stream-error", "connection_refused"),
        ("stream-error", "invalid_url"),
    ]


async def test_emulate_cli_speaks_signalwire(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`emulate --provider signalwire --codec L16@16000h` streams and prints the report."""
    formats: list[str] = []

    async def agent(session: StreamSession) -> None:
        formats.append(f"{session.provider} {session.inbound_format.content_type}")
        await session.play(tone(300, 0.2, 16000), 16000)
        await session.checkpoint("hi")
        await session.wait_closed()

    async with serve(agent, "127.0.0.1", 0) as server:
        args = ["emulate", server.url, "--provider", "signalwire", "--codec", "L16@16000h"]
        record = ["--seconds", "0.6", "--record", str(tmp_path / "call.wav")]
        code = await asyncio.to_thread(main, [*args, *record])
        bad = await asyncio.to_thread(main, [*args[:2], "--provider", "twilio", *args[4:]])
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert (code, bad) == (0, 2) and "codec" in out.err
    assert report["provider"] == "signalwire" and report["frames_sent"] == 30
    assert [n.split(":")[0] for n in report["played_checkpoints"]] == ["hi"]
    assert formats == ["signalwire audio/x-l16;rate=16000"]
    wav = read_wav(tmp_path / "call.wav")
    assert (wav.channels, wav.sample_rate) == (2, 16000)


async def test_demo_on_signalwire(tmp_path: Path) -> None:
    """`demo --provider signalwire`: the same agent, checkpoints played and one cleared."""
    # 1.25x: the caller's script runs faster than the agent's real-time replies; more
    # would make the caller speak over turn 1 too.
    report = await run_demo(tmp_path, progress=None, speed=1.25, provider="signalwire")
    assert report.frames_caller_to_agent == 850 and report.frames_agent_to_caller > 100
    assert sorted(report.checkpoints) == ["turn-1", "turn-2", "turn-3", "turn-4"]
    assert report.checkpoints["turn-2"] == "cleared" and "played" in report.checkpoints.values()
    assert report.rest_requests == [] and report.malformed_frames == 0
    assert [s.split()[1] for s in report.streams_listed] == ["stopped"]
    wav = read_wav(tmp_path / "call.wav")
    assert wav.channels == 2 and wav.sample_rate == 16000
    assert (tmp_path / "call.html").exists() and (tmp_path / "call.jsonl").exists()


async def test_garbage_is_counted_and_an_abort_is_not_a_stop() -> None:
    """Malformed compat frames are counted and skipped; a dropped TCP link is no app stop."""
    sessions: list[StreamSession] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await session.wait_closed()

    async with serve(agent, "127.0.0.1", 0) as server:
        peer = CompatMediaPeer(server.url, seconds=10.0)
        peer.start()
        await peer.started.wait()
        await peer.send_raw("{not json")
        await peer.send_raw(b"\x00\x01")
        await peer.send_raw('{"event":"media","media":{"payload":"***"}}')
        await until(lambda: bool(sessions) and sessions[0].stats.malformed == 3, "3 counted")
        peer.abort()
        report = await peer.wait_closed()
        await sessions[0].wait_closed()
    assert sessions[0].stats.frames_in > 3 and not report.stopped
    assert report.close_code == 1006


async def test_flushed_and_unknown_marks_are_visible_in_session_stats() -> None:
    """The echo of a cleared mark and an unknown mark show up in session.stats."""
    sessions: list[StreamSession] = []
    mark_queued = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await session.play(tone(300, 1.0, 8000), 8000)
        checkpoint = asyncio.create_task(session.checkpoint("a"))
        await mark_queued.wait()
        await session.clear()
        await checkpoint
        await session.wait_closed()

    async with serve(agent, "127.0.0.1", 0, pacing=Pacing(lead_ms=5000.0)) as server:
        peer = CompatMediaPeer(server.url, seconds=2.0)
        peer.start()
        await until(lambda: any(type(e).__name__ == "Checkpoint" for e in peer.events), "mark")
        mark_queued.set()
        await peer.send_raw('{"event":"mark","mark":{"name":"nobody-sent-this"}}')
        await peer.wait_closed()
    stats = sessions[0].stats
    assert stats.marks_after_clear == 1 and stats.unknown_marks == 1


async def test_upgrade_auth_bearer_token_and_twilio_signature() -> None:
    """serve(token=) takes SignalWire's bearer token; a Twilio peer's signed upgrade passes
    serve(twilio_auth_token=) and a wrong Auth Token is refused with 403."""
    providers: list[str] = []

    async def agent(session: StreamSession) -> None:
        providers.append(session.provider)
        await session.stop()

    async with serve(agent, "127.0.0.1", 0, token="tok_5d1a90c7") as server:
        async with FakeSignalWire() as fake:
            xml = (
                ResponseBuilder()
                .connect_stream(wss(server.url), auth_bearer_token="tok_5d1a90c7")
                .to_xml()
            )
            [bearer] = await fake.call(answer_xml=xml).wait_done(timeout=20)
        no_token = await CompatMediaPeer(server.url, seconds=1.0).wait_closed()
    async with serve(agent, "127.0.0.1", 0, twilio_auth_token="tw-secret") as server:
        url = server.url + "/stream"
        twilio = CompatMediaPeer(url, twilio=True, auth_token="tw-secret", seconds=5.0)
        signed = await twilio.wait_closed()
        forged = await CompatMediaPeer(url, twilio=True, auth_token="guess").wait_closed()
    assert providers == ["signalwire", "twilio"]
    assert bearer.stopped and signed.stopped and signed.close_code == 1000
    assert (no_token.rejected_status, forged.rejected_status) == (401, 403)
    with pytest.raises(ValidationError):
        CompatMediaPeer(url, auth_token="tw-secret")  # SignalWire does not sign upgrades
