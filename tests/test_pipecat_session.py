"""A pipecat bot as a media-server handler (SessionTransport), over every transport:
``serve``, Starlette under uvicorn, aiohttp; the caller is our emulated MediaPeer."""

from __future__ import annotations

import pytest

pytest.importorskip("pipecat")
pytestmark = pytest.mark.pipecat

import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from collections.abc import Callable  # noqa: E402

from pipecat.audio.dtmf.types import KeypadEntry  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputTransportMessageFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from vobiz_async.app import create_app  # noqa: E402
from vobiz_async.errors import ValidationError  # noqa: E402
from vobiz_async.events import CheckpointOutcome  # noqa: E402
from vobiz_async.integrations.pipecat import (  # noqa: E402
    SessionTransport,
    VobizCheckpointFrame,
    VobizCheckpointOutcomeFrame,
)
from vobiz_async.server import Limits, StreamSession, serve  # noqa: E402
from vobiz_async.testing import CompatMediaPeer, FakeVobiz, MediaPeer, tone  # noqa: E402
from vobiz_async.tokens import sign_stream_url  # noqa: E402

from ._transports import KINDS, Launch, launcher  # noqa: E402
from ._transports import _aiohttp as aiohttp_port  # noqa: E402

PLAYED, CLEARED = CheckpointOutcome.PLAYED, CheckpointOutcome.CLEARED
# No trailing silence after an EndFrame (pipecat's default is 2 s of it).
PARAMS = TransportParams(
    audio_in_enabled=True, audio_out_enabled=True, audio_out_end_silence_secs=0
)


@pytest.fixture(params=KINDS)
def launch(request: pytest.FixtureRequest) -> Launch:
    """Start a media server over each transport in turn."""
    return launcher(request.param)


class Bot(FrameProcessor):
    """Stands in for STT/LLM/TTS: keeps what reaches it; key 1 interrupts the bot."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[InputAudioRawFrame] = []
        self.keys: list[KeypadEntry] = []
        self.outcomes: list[tuple[str, CheckpointOutcome]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.audio.append(frame)
        elif isinstance(frame, InputDTMFFrame):
            self.keys.append(frame.button)
            if frame.button is KeypadEntry.ONE:
                await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        elif isinstance(frame, VobizCheckpointOutcomeFrame):
            self.outcomes.append((frame.checkpoint, frame.outcome))
        await self.push_frame(frame, direction)


class BotCall:
    """One call's pipecat bot, as the handler built it."""

    def __init__(self, session: StreamSession, params: TransportParams) -> None:
        self.session = session
        self.recorder = session.recorder  # the session lets go of it once the call is over
        self.transport = SessionTransport(session, params)
        self.bot = Bot()
        pipeline = Pipeline([self.transport.input(), self.bot, self.transport.output()])
        self.worker = PipelineWorker(pipeline)
        self.returned = False  # WorkerRunner.run returned (not cancelled from outside)
        self.ended = asyncio.Event()
        self.disconnected: list[StreamSession] = []

        @self.transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
        async def gone(_: SessionTransport, session: StreamSession) -> None:
            self.disconnected.append(session)

    async def say(self, seconds: float) -> None:
        """One bot utterance: a 600 Hz tone at 24 kHz, as a TTS would push it."""
        speech = TTSAudioRawFrame(tone(600, seconds, 24000), 24000, 1)
        await self.worker.queue_frames([TTSStartedFrame(), speech, TTSStoppedFrame()])


class Bots:
    """The media-server handler: a pipecat bot on each session."""

    def __init__(self, params: TransportParams = PARAMS) -> None:
        self.params = params
        self.calls: list[BotCall] = []
        self._started = asyncio.Event()

    async def __call__(self, session: StreamSession) -> None:
        call = BotCall(session, self.params)
        self.calls.append(call)
        self._started.set()
        runner = WorkerRunner(handle_sigint=False)
        try:
            await runner.add_workers(call.worker)
            await runner.run()
            call.returned = True
        finally:
            call.ended.set()

    async def first(self) -> BotCall:
        await asyncio.wait_for(self._started.wait(), 10)
        return self.calls[0]


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check()`` (bounded: 20 s of 10 ms turns)."""
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def rms(pcm: bytes) -> float:
    samples = memoryview(pcm).cast("h")
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


async def test_the_caller_hears_the_bot_its_checkpoint_plays_and_end_frame_stops(
    launch: Launch,
) -> None:
    """The bot's utterance is heard and recorded, its checkpoint (and one pushed by hand)
    comes back played, wait_for_call/wait_for_session find the session while the
    pipeline runs, the server paces the audio, and EndFrame sends stop."""
    bots = Bots()
    async with launch(bots, record=True) as running:
        peer = MediaPeer(running.url, audio=tone(300, 1.0), seconds=10, hangup_when_done=False)
        peer.start()
        session = await running.server.wait_for_call(peer.call_id, timeout=5)
        by_stream = await running.server.wait_for_session(peer.stream_id, timeout=5)
        call = await bots.first()
        await call.say(0.6)
        mine = VobizCheckpointFrame(message={}, checkpoint="mine")
        again = VobizCheckpointFrame(message={}, checkpoint="mine")  # refused: still pending
        foreign = OutputTransportMessageFrame(message={"rtvi": 1})
        await call.worker.queue_frames([mine, again, foreign])
        await until(lambda: ("mine", PLAYED) in call.bot.outcomes, "checkpoint mine played")
        running_then = not call.ended.is_set()
        await call.worker.queue_frame(EndFrame())
        report = await peer.wait_closed()
        await asyncio.wait_for(call.ended.wait(), 10)
    assert call.session is session is by_stream and running_then and call.returned
    assert report.max_queued_ms < 700  # paced by the server: about the lead ahead, no burst
    assert report.stopped and report.played_checkpoints == ["utterance-1", "mine"]
    assert call.bot.outcomes == [("utterance-1", PLAYED), ("mine", PLAYED)]
    # Not ours (this one, and RTVI's): counted, never sent to Vobiz.
    assert call.transport.stats.messages_ignored >= 1 and report.malformed == 0
    assert call.transport.stats.checkpoint_errors == 1
    assert report.heard_ms >= 600 and rms(peer.heard_pcm) > 1000  # the tone, not silence
    recorder = call.recorder
    assert recorder is not None and len(recorder.agent_pcm) >= 2 * 8000 * 0.6
    assert rms(recorder.agent_pcm) > 1000


async def test_an_interruption_clears_the_wire_and_reports_the_checkpoint_cleared(
    launch: Launch,
) -> None:
    """A key press while the bot is silent sends nothing (counted); one during a 3 s
    utterance: clearAudio goes out and clearedAudio comes back, the utterance's
    checkpoint is reported cleared, the next one plays, and CancelFrame sends stop (the
    output at 24 kHz: the session resamples it)."""
    bots = Bots(PARAMS.model_copy(update={"audio_out_sample_rate": 24000}))
    async with launch(bots) as running:
        peer = MediaPeer(running.url, seconds=20, hangup_when_done=False)
        peer.start()
        call = await bots.first()
        await peer.send_dtmf("1")
        await until(lambda: call.transport.stats.clears_skipped == 1, "a silent interruption")
        await call.say(3.0)
        await until(lambda: peer.report.heard_ms >= 300, "the caller hears the bot")
        await peer.send_dtmf("1")
        await until(lambda: ("utterance-1", CLEARED) in call.bot.outcomes, "utterance-1 cleared")
        await until(lambda: len(call.session.stats.clear_round_trip_ms) == 1, "clearedAudio")
        await call.say(0.4)
        await until(lambda: ("utterance-2", PLAYED) in call.bot.outcomes, "utterance-2 played")
        await call.worker.cancel()
        report = await peer.wait_closed()
        await asyncio.wait_for(call.ended.wait(), 10)
    assert call.bot.keys == [KeypadEntry.ONE, KeypadEntry.ONE]
    assert call.bot.outcomes == [("utterance-1", CLEARED), ("utterance-2", PLAYED)]
    assert report.clears == 1 and report.cleared_ms > 0 and report.stopped
    assert report.played_checkpoints == ["utterance-2"]
    assert 300 <= report.heard_ms < 3000 + 400  # the interrupted utterance was cut short
    assert call.transport.output().sample_rate == 24000 and rms(peer.heard_pcm) > 1000


async def test_the_callers_hang_up_ends_the_pipeline(launch: Launch) -> None:
    """Caller audio reaches the bot at the pipeline's rate and keys as DTMF frames (A-D
    counted), malformed frames are counted and skipped, and when the caller hangs up,
    WorkerRunner.run returns."""
    bots = Bots()
    async with launch(bots) as running:
        peer = MediaPeer(running.url, audio=tone(440, 1.0), seconds=1.0)
        peer.start()
        await running.server.wait_for_call(peer.call_id, timeout=5)
        call = await bots.first()
        await peer.send_dtmf("5")
        await peer.send_dtmf("A")
        for junk in ("{oops", '{"event":"media"}', b"\x01\x02"):
            await peer.send_raw(junk)
        report = await peer.wait_closed()
        await asyncio.wait_for(call.ended.wait(), 10)
    assert report.close_code == 1000 and not report.stopped
    assert call.returned and call.worker.has_finished()
    assert call.session.stats.malformed == 3
    assert call.disconnected == [call.session]
    assert call.bot.keys == [KeypadEntry.FIVE] and call.transport.stats.unsupported_dtmf == 1
    assert {f.sample_rate for f in call.bot.audio} == {16000}
    heard_ms = sum(len(f.audio) for f in call.bot.audio) / 32
    assert 900 <= heard_ms <= 1000 and rms(b"".join(f.audio for f in call.bot.audio)) > 1000


async def test_server_shutdown_closes_with_1001_and_the_pipeline_ends(launch: Launch) -> None:
    """server.close() mid-call closes the stream with 1001 and the bot's pipeline ends."""
    bots = Bots()
    async with launch(bots) as running:
        peer = MediaPeer(running.url, seconds=30)
        peer.start()
        await running.server.wait_for_call(peer.call_id, timeout=5)
        call = await bots.first()
        await call.say(2.0)
        await until(lambda: peer.report.heard_ms > 0, "the caller hears the bot")
        await running.server.close(grace=0.1)
        report = await peer.wait_closed()
        await asyncio.wait_for(call.ended.wait(), 10)
    assert report.close_code == 1001 and not running.server.sessions
    assert call.worker.has_finished()


async def test_tokens_and_signed_urls_are_checked_before_a_bot_runs(launch: Launch) -> None:
    """Without the token the upgrade is refused 401/403; a signed URL admits its own call
    only (another is closed 1008); only the admitted call gets a pipecat bot."""
    bots = Bots()
    async with launch(bots, token="k") as running:
        bare = await MediaPeer(running.url, seconds=0.2).wait_closed()
        wrong = await MediaPeer(running.url + "?token=wrong", seconds=0.2).wait_closed()
        good = sign_stream_url(running.url, "k", "call-1")
        ok = await MediaPeer(good, call_id="call-1", seconds=0.5).wait_closed()
        other = await MediaPeer(good, call_id="call-2", seconds=0.2).wait_closed()
        [call] = bots.calls
        await asyncio.wait_for(call.ended.wait(), 10)
        rejected = running.server.stats.rejected_auth
    assert (bare.rejected_status, wrong.rejected_status, rejected) == (401, 403, 3)
    assert bare.frames_sent == wrong.frames_sent == 0
    assert ok.close_code == 1000 and ok.frames_sent > 0 and other.close_code == 1008
    assert call.session.call_id == "call-1" and call.returned


async def test_limits_hold_while_a_bot_runs(launch: Launch) -> None:
    """With max_sessions=1 and a pipecat bot on a call, the next upgrade is refused 503;
    a message over max_message_bytes closes the call with 1009 and the pipeline ends."""
    bots = Bots()
    limits = Limits(max_sessions=1, max_message_bytes=4096)
    async with launch(bots, limits=limits) as running:
        first = MediaPeer(running.url, seconds=30, hangup_when_done=False)
        first.start()
        await running.server.wait_for_call(first.call_id, timeout=5)
        call = await bots.first()
        second = await MediaPeer(running.url, seconds=0.2).wait_closed()
        await first.send_raw(json.dumps({"event": "media", "junk": "x" * 8000}))
        report = await first.wait_closed()
        await asyncio.wait_for(call.ended.wait(), 10)
        stats = running.server.stats
    assert second.rejected_status == 503 and stats.rejected_limit == 1
    assert report.close_code == 1009 and stats.oversized_messages == 1
    assert len(bots.calls) == 1 and call.returned


async def test_rates_our_resampler_does_not_handle_are_refused() -> None:
    """A 48 kHz or 44.1 kHz rate, or stereo output, is refused with the setting's name."""
    fields: list[str] = []

    async def handler(session: StreamSession) -> None:
        for params in (
            TransportParams(audio_out_sample_rate=48000),
            TransportParams(audio_in_sample_rate=44100),
            TransportParams(audio_out_channels=2),
        ):
            with pytest.raises(ValidationError) as info:
                SessionTransport(session, params)
            fields.append(info.value.field)
        await session.stop()

    async with serve(handler, "127.0.0.1", 0) as server:
        report = await MediaPeer(server.url, seconds=5, hangup_when_done=False).wait_closed()
    assert fields == ["audio_out_sample_rate", "audio_in_sample_rate", "audio_out_channels"]
    assert report.stopped


async def test_create_app_serves_the_answer_url_the_callbacks_and_a_bot() -> None:
    """create_app(bot) on one port: FakeVobiz fetches the answer URL and dials the signed
    media URL, the pipecat bot is heard and its checkpoint plays, and the signed status
    callbacks reach its session."""
    bots = Bots()
    async with FakeVobiz() as fake:
        app = create_app(bots, token="s3cret", auth_token=fake.auth_token)
        async with aiohttp_port(app) as port:
            answer = f"http://127.0.0.1:{port}/answer"
            call = fake.call(answer_url=answer, seconds=10, hangup_when_done=False)
            bot = await bots.first()
            await bot.say(0.4)
            await until(lambda: ("utterance-1", PLAYED) in bot.bot.outcomes, "utterance-1")
            await bot.worker.queue_frame(EndFrame())
            [report] = await call.wait_done(timeout=15)
            await asyncio.wait_for(bot.ended.wait(), 10)
            await fake.close()  # delivers the pending callbacks
    [peer] = call.peers
    assert "token=" in peer.url and report.stopped and bot.returned
    assert report.played_checkpoints == ["utterance-1"] and report.heard_ms >= 400
    events = [c.fields.get("Event") for c in bot.session.status_callbacks]
    assert "StartStream" in events and "PlayedStream" in events


async def test_the_same_bot_answers_a_signalwire_stream() -> None:
    """On serve(provider="auto") the same pipecat bot is heard on a SignalWire stream and
    its checkpoint (a mark there) comes back played; the hang-up ends the pipeline."""
    bots = Bots()
    async with serve(bots, "127.0.0.1", 0, provider="auto") as server:
        peer = CompatMediaPeer(server.url, seconds=30, hangup_when_done=False)
        peer.start()
        call = await bots.first()
        await call.say(0.6)
        await until(lambda: ("utterance-1", PLAYED) in call.bot.outcomes, "utterance-1 played")
        await peer.hangup()
        report = await peer.wait_closed()
        await asyncio.wait_for(call.ended.wait(), 10)
    assert call.session.provider == "signalwire" and call.returned
    assert report.heard_ms >= 600 and rms(peer.heard_pcm) > 1000
