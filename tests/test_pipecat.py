"""VobizSerializer (pipecat) on its own: start, audio both ways, clear, stop, DTMF, checkpoints."""

from __future__ import annotations

import pytest

pytest.importorskip("pipecat")
pytestmark = pytest.mark.pipecat

from pipecat.audio.dtmf.types import KeypadEntry  # noqa: E402
from pipecat.clocks.system_clock import SystemClock  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.processors.frame_processor import (  # noqa: E402
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402
from pipecat.utils.asyncio.task_manager import TaskManager  # noqa: E402

from vobiz_async.codec import (  # noqa: E402
    AudioEncoding,
    AudioFormat,
    Resampler,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from vobiz_async.errors import RemoteProtocolError, ValidationError  # noqa: E402
from vobiz_async.events import (  # noqa: E402
    Checkpoint,
    CheckpointOutcome,
    ClearAudio,
    Command,
    PlayAudio,
    Stop,
)
from vobiz_async.integrations.pipecat import (  # noqa: E402
    VobizCheckpointFrame,
    VobizCheckpointOutcomeFrame,
    VobizSerializer,
    parse_start,
)
from vobiz_async.testing import speech_like, tone  # noqa: E402
from vobiz_async.testing._peer import PeerProtocol  # noqa: E402

MULAW_8K = AudioFormat(AudioEncoding.MULAW, 8000)
L16_16K = AudioFormat(AudioEncoding.L16, 16000)


class Inbox:
    """The two WebSocket methods parse_start uses, over in-memory lists."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.sent: list[str] = []

    async def receive_text(self) -> str:
        return self.frames.pop(0)

    async def send_text(self, data: str) -> None:
        self.sent.append(data)


async def started(
    fmt: AudioFormat = MULAW_8K, **kwargs: object
) -> tuple[PeerProtocol, Inbox, VobizSerializer]:
    """A serializer on a started stream, with the peer (Vobiz's side) that started it."""
    peer = PeerProtocol()
    inbox = Inbox([peer.send_start(call_id="call-1", stream_id="stream-1", media_format=fmt)])
    serializer = VobizSerializer(await parse_start(inbox), sample_rate=16000, **kwargs)  # type: ignore[arg-type]
    return peer, inbox, serializer


async def wire(inbox: Inbox, serializer: VobizSerializer, frame: Frame) -> list[Command]:
    """Everything one pipeline frame put on the wire (sent early, then returned), parsed."""
    inbox.sent.clear()
    last = await serializer.serialize(frame)
    texts = [*inbox.sent, *([last] if isinstance(last, str) else [])]
    commands: list[Command] = []
    for text in texts:
        (command,) = PeerProtocol().receive(text)
        assert isinstance(command, (PlayAudio, Checkpoint, ClearAudio, Stop)), command
        commands.append(command)
    return commands


async def test_parse_start_returns_the_stream_identity_and_format() -> None:
    """parse_start reads the start frame and reports stream id, call id and format."""
    peer = PeerProtocol()
    first = peer.send_start(call_id="call-9", stream_id="stream-9", media_format=L16_16K)
    start = await parse_start(Inbox([first]))
    assert (start.stream_id, start.call_id, start.media_format) == ("stream-9", "call-9", L16_16K)
    assert start.provider == "vobiz" and start.frames == (first,)


async def test_parse_start_gives_up_after_max_frames_without_start() -> None:
    """Frames that are not start, up to max_frames, end in a typed no-start error."""
    with pytest.raises(RemoteProtocolError) as info:
        await parse_start(Inbox(['{"event":"media"}', "junk"]), max_frames=2)
    assert info.value.reason == "no-start"


async def test_media_mulaw_8k_becomes_input_audio_at_16k() -> None:
    """mu-law 8 kHz media becomes InputAudioRawFrame at 16 kHz, resampled by our Resampler."""
    peer, _, serializer = await started()
    signal = tone(440, 0.2, 8000)
    expected = Resampler(8000, 16000)
    for i in range(10):
        chunk = signal[i * 320 : (i + 1) * 320]
        frame = await serializer.deserialize(peer.send_media(chunk, timestamp=1000 + 20 * i))
        assert isinstance(frame, InputAudioRawFrame)
        assert frame.sample_rate == 16000 and frame.num_channels == 1
        assert frame.audio == expected.process(ulaw_to_pcm16(pcm16_to_ulaw(chunk)))


async def test_output_audio_at_24k_becomes_playaudio_in_the_streams_format() -> None:
    """40 ms chunks at 24 kHz become 20 ms mu-law 8 kHz playAudio frames, none held back
    at the utterance's checkpoint, which comes last."""
    _, inbox, serializer = await started()
    speech = speech_like(0.4, 24000)
    played: list[PlayAudio] = []
    counts: list[int] = []
    for i in range(10):
        chunk = speech[i * 1920 : (i + 1) * 1920]
        commands = await wire(inbox, serializer, OutputAudioRawFrame(chunk, 24000, 1))
        played += [c for c in commands if isinstance(c, PlayAudio)]
        counts.append(len(commands))
    assert len(played) == sum(counts) and 2 in counts  # one chunk, two frames, in order
    tail = await wire(inbox, serializer, VobizCheckpointFrame(message={}, checkpoint="u1"))
    assert isinstance(tail[-1], Checkpoint) and tail[-1].name == "u1"
    played += [c for c in tail if isinstance(c, PlayAudio)]
    assert all(
        (p.encoding, p.sample_rate, len(p.payload), p.stream_id)
        == (AudioEncoding.MULAW, 8000, 160, "stream-1")
        for p in played
    )
    assert len(played) == 20  # 400 ms, all of it out by the checkpoint


async def test_interruption_sends_clear_audio_and_reports_the_checkpoint_cleared() -> None:
    """InterruptionFrame becomes clearAudio; the pending checkpoint is voided as cleared."""
    _, inbox, serializer = await started()
    await wire(inbox, serializer, OutputAudioRawFrame(speech_like(0.1, 24000), 24000, 1))
    await wire(inbox, serializer, VobizCheckpointFrame(message={}, checkpoint="u1"))
    assert await wire(inbox, serializer, InterruptionFrame()) == [ClearAudio("stream-1")]
    assert serializer.protocol.pending_checkpoints == ()
    assert serializer.serializer_stats.outcomes_unrouted == 1  # no VobizCheckpoints in use


@pytest.mark.parametrize("end", [EndFrame, CancelFrame])
async def test_end_and_cancel_send_stop_and_later_audio_is_counted(end: type[Frame]) -> None:
    """EndFrame/CancelFrame become stop; bot audio after it is dropped and counted."""
    _, inbox, serializer = await started()
    assert await wire(inbox, serializer, end()) == [Stop("stream-1")]
    assert await serializer.serialize(OutputAudioRawFrame(bytes(960), 24000, 1)) is None
    assert serializer.serializer_stats.audio_dropped_after_stop == 1


async def test_dtmf_becomes_input_dtmf_frame_and_unknown_keys_are_counted() -> None:
    """A dtmf digit becomes InputDTMFFrame; a digit pipecat has no key for is counted."""
    peer, _, serializer = await started()
    frame = await serializer.deserialize(peer.send_dtmf("5", timestamp=1))
    assert isinstance(frame, InputDTMFFrame) and frame.button is KeypadEntry.FIVE
    assert await serializer.deserialize(peer.send_dtmf("A", timestamp=2)) is None
    assert serializer.serializer_stats.unsupported_dtmf == 1


async def test_l16_byte_order_is_detected_by_default() -> None:
    """Big-endian L16 is detected (auto by default) and decoded to the caller's audio."""
    peer, _, serializer = await started(L16_16K)
    speech = speech_like(1.0, 16000)
    frames: list[bytes] = []
    for i in range(50):
        chunk = speech[i * 640 : (i + 1) * 640]
        media = peer.send_media(chunk, timestamp=20 * i, byte_order="big")
        frame = await serializer.deserialize(media)
        assert isinstance(frame, InputAudioRawFrame)
        frames.append(frame.audio)
    assert frames[-1] == speech[49 * 640 :]  # after detection: the caller's samples
    assert serializer.byte_order is not None and serializer.byte_order.order == "big"


async def test_foreign_transport_messages_are_not_sent_and_are_counted() -> None:
    """An OutputTransportMessageFrame not ours (e.g. RTVI) is never sent to Vobiz."""
    _, _, serializer = await started()
    assert await serializer.serialize(OutputTransportMessageFrame(message={"x": 1})) is None
    assert serializer.serializer_stats.messages_ignored == 1


class FakeLine(FrameProcessor):
    """Stands for the output transport and Vobiz: serializes, and acknowledges
    checkpoint ``utterance-1`` the way Vobiz does (playedStream). With ``hold``, it
    keeps checkpoints queued, as pipecat's output does while their audio plays, until
    an interruption empties the queue."""

    def __init__(self, serializer: VobizSerializer, peer: PeerProtocol, hold: bool = False) -> None:
        super().__init__()
        self.serializer, self.peer, self.hold = serializer, peer, hold

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VobizCheckpointFrame) and self.hold:
            pass
        elif isinstance(frame, (VobizCheckpointFrame, InterruptionFrame)):
            await self.serializer.serialize(frame)
            if isinstance(frame, VobizCheckpointFrame) and frame.checkpoint == "utterance-1":
                await self.serializer.deserialize(self.peer.send_played(frame.checkpoint))
        await self.push_frame(frame, direction)


async def test_checkpoint_outcomes_reach_the_pipeline_upstream() -> None:
    """Each TTSStoppedFrame is followed by a checkpoint; played and cleared outcomes come
    back upstream as VobizCheckpointOutcomeFrame."""
    peer, _, serializer = await started()
    pipeline = Pipeline([serializer.checkpoints(), FakeLine(serializer, peer)])
    down, up = await run_test(
        pipeline,
        frames_to_send=[
            TTSStoppedFrame(),
            SleepFrame(0.1),
            TTSStoppedFrame(),
            SleepFrame(0.1),
            InterruptionFrame(),
            SleepFrame(0.1),
        ],
    )
    outcomes = [(f.checkpoint, f.outcome) for f in up if isinstance(f, VobizCheckpointOutcomeFrame)]
    assert outcomes == [
        ("utterance-1", CheckpointOutcome.PLAYED),
        ("utterance-2", CheckpointOutcome.CLEARED),
    ]
    names = [f.checkpoint for f in down if isinstance(f, VobizCheckpointFrame)]
    assert names == ["utterance-1", "utterance-2"]


async def test_a_checkpoint_dropped_with_its_utterance_is_reported_cleared() -> None:
    """A checkpoint still in pipecat's queue when an interruption empties it never reaches
    the wire; its outcome is still reported, as cleared."""
    peer, _, serializer = await started()
    pipeline = Pipeline([serializer.checkpoints(), FakeLine(serializer, peer, hold=True)])
    _, up = await run_test(
        pipeline,
        frames_to_send=[TTSStoppedFrame(), SleepFrame(0.1), InterruptionFrame(), SleepFrame(0.1)],
    )
    outcomes = [(f.checkpoint, f.outcome) for f in up if isinstance(f, VobizCheckpointOutcomeFrame)]
    assert outcomes == [("utterance-1", CheckpointOutcome.CLEARED)]
    assert serializer.protocol.pending_checkpoints == ()  # it never went out


async def test_setup_takes_the_pipeline_rate_and_refuses_rates_we_cannot_resample() -> None:
    """Without sample_rate, the pipeline's input rate is used; a 48 kHz output is refused."""
    peer = PeerProtocol()
    start = peer.send_start(call_id="c", stream_id="s", media_format=MULAW_8K)
    serializer = VobizSerializer(await parse_start(Inbox([start])))

    def setup(rate_in: int, rate_out: int) -> FrameProcessorSetup:
        return FrameProcessorSetup(
            clock=SystemClock(),  # type: ignore[no-untyped-call]
            task_manager=TaskManager(),
            pipeline_worker=None,  # type: ignore[arg-type]
            audio_in_sample_rate=rate_in,
            audio_out_sample_rate=rate_out,
        )

    await serializer.setup(setup(24000, 24000))
    frame = await serializer.deserialize(peer.send_media(bytes(320), timestamp=0))
    assert isinstance(frame, InputAudioRawFrame) and frame.sample_rate == 24000
    with pytest.raises(ValidationError) as info:
        await serializer.setup(setup(24000, 48000))
    assert info.value.field == "audio_out_sample_rate"
