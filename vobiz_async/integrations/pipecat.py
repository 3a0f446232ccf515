"""Vobiz Audio Streams in a pipecat pipeline: a ``FrameSerializer`` on our protocol core.

Needs the ``pipecat`` extra (``pip install "vobiz-async[pipecat]"``). A pipecat bot
accepts the media WebSocket itself (FastAPI), reads the ``start`` frame with
:func:`parse_start`, builds a :class:`VobizSerializer` from it and hands that to
pipecat's FastAPI websocket transport::

    @app.websocket("/media")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        start = await parse_start(websocket)
        serializer = VobizSerializer(start)
        transport = FastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True, audio_out_enabled=True, serializer=serializer
            ),
        )
        pipeline = Pipeline(
            [transport.input(), bot, serializer.checkpoints(), transport.output()]
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(PipelineWorker(pipeline))
        await runner.run()

Everything on the wire goes through one :class:`~vobiz_async.protocol.StreamProtocol`:
``media`` is decoded there (μ-law or L16; L16 byte order ``"auto"`` by default, spec
4.6) and resampled with our :class:`~vobiz_async.codec.Resampler` to the pipeline's
input rate; bot audio is resampled to the stream's outbound format (default: the
inbound format) and cut into 20 ms ``playAudio`` frames (spec 4.4.1, 4.7). pipecat's
output transport paces audio itself, so every frame goes out as soon as it is made.

Checkpoints (spec 4.4.2, 4.3.4): pipecat marks the end of a bot utterance with
``TTSStoppedFrame``, which its output transport queues behind the utterance's audio.
The processor from :meth:`VobizSerializer.checkpoints`, placed just before
``transport.output()``, follows every ``TTSStoppedFrame`` with a
:class:`VobizCheckpointFrame` (``utterance-1``, ``utterance-2``...), which takes the
same queue, so its ``checkpoint`` goes out right after the utterance's last
``playAudio``. Its outcome comes back to the pipeline as a
:class:`VobizCheckpointOutcomeFrame` pushed **upstream** from that processor (so every
processor before it, where the bot logic lives, sees it): ``played`` when Vobiz
acknowledged it with ``playedStream`` (the caller heard all of it), ``cleared`` when
an interruption came first (its ``clearAudio`` voided the checkpoint at Vobiz, which
never acknowledges those; or, as is usual with pipecat's real-time pacing, the
interruption emptied pipecat's output queue before the checkpoint reached the wire),
or ``closed`` when the stream ended before either. Every checkpoint gets exactly one
outcome while the socket is open.

``InterruptionFrame`` becomes ``clearAudio`` (spec 4.4.3), ``EndFrame`` and
``CancelFrame`` become ``stop`` (spec 4.4.4), an inbound ``dtmf`` becomes pipecat's
``InputDTMFFrame`` (spec 4.3.6).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    SystemFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)
from pipecat.serializers.base_serializer import FrameSerializer

from ..codec import SUPPORTED_RATES, AudioFormat, ByteOrder, Resampler
from ..errors import RemoteProtocolError, ValidationError
from ..events import (
    AudioReceived,
    ByteOrderDetected,
    CheckpointOutcome,
    CheckpointVoided,
    DtmfReceived,
    InboundEvent,
    PlaybackCheckpointReached,
    StreamStarted,
)
from ..protocol import InboundByteOrder, ProtocolStats, Provider, State, StreamProtocol

__all__ = [
    "SerializerStats",
    "VobizCheckpointFrame",
    "VobizCheckpointOutcomeFrame",
    "VobizCheckpoints",
    "VobizSerializer",
    "VobizStart",
    "parse_start",
]


class StartSource(Protocol):
    """What :func:`parse_start` needs of a WebSocket (Starlette's ``WebSocket`` has it)."""

    async def receive_text(self) -> str:
        """The next text message."""
        ...

    async def send_text(self, data: str) -> None:
        """Send one text message."""
        ...


@dataclass(frozen=True, slots=True)
class VobizStart:
    """What :func:`parse_start` read: everything a :class:`VobizSerializer` needs.

    Attributes:
        stream_id: the stream id every command carries (spec 4.3.1).
        call_id: the call's UUID (= REST ``call_uuid``).
        media_format: the inbound audio format from ``start``.
        provider: the wire dialect the frames spoke (``"vobiz"``, or a compat one).
        started: the parsed ``start`` event (extra headers, tracks, custom parameters).
        frames: the raw text frames read, ``start`` last; the serializer's own protocol
            replays them, so no second parser exists.
        send: the WebSocket's ``send_text``. pipecat's serializer API returns one
            message per pipeline frame; when one frame makes several (a 40 ms chunk is
            two 20 ms ``playAudio``, a checkpoint follows the flushed tail), the
            leading ones are sent through this, in order, before the last is returned.
    """

    stream_id: str
    call_id: str
    media_format: AudioFormat
    provider: str
    started: StreamStarted
    frames: tuple[str, ...]
    send: Callable[[str], Awaitable[None]] = field(repr=False, compare=False)


async def parse_start(
    websocket: StartSource,
    *,
    timeout: float = 10.0,
    max_frames: int = 4,
    provider: Provider = "auto",
) -> VobizStart:
    """Read the ``start`` frame from a WebSocket the application has already accepted.

    Build the serializer with ``VobizSerializer(await parse_start(websocket))``.

    Args:
        websocket: an accepted Starlette/FastAPI ``WebSocket`` (anything with
            ``receive_text()`` and ``send_text()``).
        timeout: seconds to wait for ``start`` (Vobiz sends it first, spec 4.2).
        max_frames: frames read before giving up (a compat ``connected`` comes first;
            anything else before ``start`` is counted and skipped).
        provider: the wire dialect, ``"auto"`` (default) to tell from the frames.

    Returns:
        The stream's identity and formats, and the frames read.

    Raises:
        TimeoutError: no ``start`` within ``timeout``.
        RemoteProtocolError: ``max_frames`` frames arrived and none was ``start``
            (reason ``no-start``).
    """
    proto = StreamProtocol(provider=provider)
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while len(frames) < max_frames:
            text = await websocket.receive_text()
            frames.append(text)
            for event in proto.receive(text):
                if isinstance(event, StreamStarted):
                    return VobizStart(
                        stream_id=event.stream_id,
                        call_id=event.call_id,
                        media_format=event.media_format,
                        provider=proto.provider,
                        started=event,
                        frames=tuple(frames),
                        send=websocket.send_text,
                    )
    raise RemoteProtocolError("no-start", frames[-1] if frames else "")


@dataclass(slots=True)
class SerializerStats:
    """What the serializer did not turn into pipeline frames or wire frames.

    Attributes:
        audio_dropped_after_stop: bot audio frames that arrived after ``stop`` was sent.
        other_tracks: inbound ``media`` frames of a track other than ``inbound``.
        unsupported_dtmf: digits pipecat's ``KeypadEntry`` has no member for (A-D).
        messages_ignored: ``OutputTransportMessageFrame`` not ours (RTVI and the like:
            Vobiz has no such command and would ignore it silently, spec 4.4).
        outcomes_unrouted: checkpoint outcomes with no :class:`VobizCheckpoints` to
            push them (checkpoints sent with a hand-made :class:`VobizCheckpointFrame`).
    """

    audio_dropped_after_stop: int = 0
    other_tracks: int = 0
    unsupported_dtmf: int = 0
    messages_ignored: int = 0
    outcomes_unrouted: int = 0


@dataclass
class VobizCheckpointFrame(OutputTransportMessageFrame):
    """Ask the serializer for a ``checkpoint`` named ``checkpoint`` (spec 4.4.2).

    It travels in the output transport's audio queue, so the checkpoint follows the
    audio pushed before it. :class:`VobizCheckpoints` pushes one after every
    ``TTSStoppedFrame``; push your own to mark other points.
    """

    checkpoint: str = ""


@dataclass
class VobizCheckpointOutcomeFrame(SystemFrame):
    """How a checkpoint ended, pushed upstream by :class:`VobizCheckpoints`.

    Attributes:
        checkpoint: the checkpoint's name (``utterance-N`` for the automatic ones).
        outcome: ``played`` (Vobiz acknowledged it: everything before it was heard),
            ``cleared`` (an interruption came first: its ``clearAudio`` voided the
            checkpoint, or emptied pipecat's output queue before the checkpoint
            reached the wire) or ``closed`` (the stream ended first).
    """

    checkpoint: str = ""
    outcome: CheckpointOutcome = CheckpointOutcome.PLAYED


class VobizCheckpoints(FrameProcessor):
    """Sends a checkpoint after each bot utterance and pushes its outcome upstream.

    Get it from :meth:`VobizSerializer.checkpoints` and place it just before
    ``transport.output()``.
    """

    def __init__(self, serializer: VobizSerializer) -> None:
        super().__init__(name=f"VobizCheckpoints#{serializer.start.stream_id}")
        self._utterances = 0
        # Issued here, not yet handed to the serializer (still in pipecat's audio queue).
        self._unsent: dict[str, None] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass every frame on; after a downstream ``TTSStoppedFrame``, a checkpoint."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TTSStoppedFrame) and direction is FrameDirection.DOWNSTREAM:
            self._utterances += 1
            name = f"utterance-{self._utterances}"
            self._unsent[name] = None
            await self.push_frame(
                VobizCheckpointFrame(message={"checkpoint": name}, checkpoint=name)
            )

    async def report(self, name: str, outcome: CheckpointOutcome) -> None:
        """Push one outcome upstream."""
        await self.push_frame(VobizCheckpointOutcomeFrame(name, outcome), FrameDirection.UPSTREAM)

    def _sent(self, name: str) -> None:
        self._unsent.pop(name, None)

    async def _drop_unsent(self, outcome: CheckpointOutcome) -> None:
        """Report the checkpoints pipecat dropped with the rest of their utterance."""
        names, self._unsent = list(self._unsent), {}
        for name in names:
            await self.report(name, outcome)


class VobizSerializer(FrameSerializer):
    """A pipecat ``FrameSerializer`` for one Vobiz media stream, on :class:`StreamProtocol`.

    Args:
        start: what :func:`parse_start` read from the accepted WebSocket.
        l16_byte_order: how inbound L16 is read: ``"auto"`` (default: decided from the
            first 0.5 s of speech, spec 4.6), ``"little"`` or ``"big"``.
        outbound_byte_order: how L16 we send is written (default ``"little"``).
        outbound_format: the ``playAudio`` format; default the stream's inbound format.
        sample_rate: the rate of the ``InputAudioRawFrame`` we make; default the
            pipeline's ``audio_in_sample_rate``.
        params: pipecat's base serializer parameters.

    Raises:
        ValidationError: an unknown byte order.
    """

    def __init__(
        self,
        start: VobizStart,
        *,
        l16_byte_order: InboundByteOrder = "auto",
        outbound_byte_order: ByteOrder = "little",
        outbound_format: AudioFormat | None = None,
        sample_rate: int | None = None,
        params: Any = None,
    ) -> None:
        super().__init__(params)
        provider = cast(Provider, start.provider)
        self.protocol = StreamProtocol(
            l16_byte_order=l16_byte_order,
            outbound_byte_order=outbound_byte_order,
            outbound_format=outbound_format,
            # pipecat's output transport paces audio: hand out each frame when made.
            lead_ms=math.inf,
            provider=provider,
            accept_restart=False,
        )
        for text in start.frames:
            self.protocol.receive(text)
        if self.protocol.state is not State.STREAMING:
            raise ValidationError("start", "its frames do not start a stream")
        self.start = start
        self.serializer_stats = SerializerStats()
        self._send = start.send
        self._sample_rate = sample_rate or 0
        self._in_resamplers: dict[int, Resampler] = {}
        self._checkpoints: VobizCheckpoints | None = None
        self.byte_order: ByteOrderDetected | None = None
        """The inbound L16 byte order, once ``"auto"`` has decided it (spec 4.6)."""

    @property
    def stats(self) -> ProtocolStats:
        """The protocol's counters (frames, malformed input, dropped output)."""
        return self.protocol.stats

    def checkpoints(self) -> VobizCheckpoints:
        """The processor that sends checkpoints and reports outcomes (one per serializer).

        Place it just before ``transport.output()`` in the pipeline.
        """
        if self._checkpoints is None:
            self._checkpoints = VobizCheckpoints(self)
        return self._checkpoints

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Take the pipeline's input rate (unless one was given).

        Raises:
            ValidationError: an input or output rate our resampler does not handle
                (8, 16 or 24 kHz), named by the setting to change.
        """
        if not self._sample_rate:
            self._sample_rate = int(setup.audio_in_sample_rate)
        out_rate = int(setup.audio_out_sample_rate)
        for name, rate in (("sample_rate", self._sample_rate), ("audio_out_sample_rate", out_rate)):
            if rate not in SUPPORTED_RATES:
                raise ValidationError(name, f"{rate} Hz: must be one of {SUPPORTED_RATES}")

    # ------------------------------------------------------------------ pipeline -> wire
    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Turn a pipeline frame into the wire frame(s) it means (spec 4.4).

        Returns:
            The last wire frame (earlier ones, if any, were sent already), or None.
        """
        proto = self.protocol
        if proto.state is not State.STREAMING:
            if isinstance(frame, OutputAudioRawFrame):
                self.serializer_stats.audio_dropped_after_stop += 1
            return None
        now = time.monotonic()
        if isinstance(frame, InterruptionFrame):
            clear = proto.clear(now=now)
            await self._route(proto.take_events())
            if self._checkpoints is not None:
                # pipecat's output transport emptied its queue before handing us this
                # frame: checkpoints still in it never reach the wire (their utterance
                # was cut short just the same).
                await self._checkpoints._drop_unsent(CheckpointOutcome.CLEARED)
            return clear
        if isinstance(frame, (EndFrame, CancelFrame)):
            stop = proto.stop()
            await self._route(proto.take_events())
            if self._checkpoints is not None:
                await self._checkpoints._drop_unsent(CheckpointOutcome.CLOSED)
            return stop
        if isinstance(frame, OutputAudioRawFrame):
            proto.play(frame.audio, frame.sample_rate, now=now)
        elif isinstance(frame, VobizCheckpointFrame):
            proto.checkpoint(frame.checkpoint, now=now)
            if self._checkpoints is not None:
                self._checkpoints._sent(frame.checkpoint)
        else:
            if isinstance(frame, OutputTransportMessageFrame):
                self.serializer_stats.messages_ignored += 1
            return None
        frames = proto.frames_due(now)
        if not frames:
            return None
        for text in frames[:-1]:
            await self._send(text)
        return frames[-1]

    # ------------------------------------------------------------------ wire -> pipeline
    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Turn one inbound message into a pipeline frame (spec 4.3); never raises for
        peer input (malformed frames are counted in :attr:`stats`).

        Returns:
            ``InputAudioRawFrame`` at the pipeline's rate, ``InputDTMFFrame``, or None
            (checkpoint outcomes go upstream from :class:`VobizCheckpoints`).
        """
        result: Frame | None = None
        outcomes: list[InboundEvent] = []
        for event in self.protocol.receive(data, now=time.monotonic()):
            if isinstance(event, AudioReceived):
                if event.track != "inbound":
                    self.serializer_stats.other_tracks += 1
                    continue
                result = self._audio_frame(event)
            elif isinstance(event, DtmfReceived):
                try:
                    result = InputDTMFFrame(button=KeypadEntry(event.digit))
                except ValueError:
                    self.serializer_stats.unsupported_dtmf += 1
            elif isinstance(event, (PlaybackCheckpointReached, CheckpointVoided)):
                outcomes.append(event)
            elif isinstance(event, ByteOrderDetected):
                self.byte_order = event
        await self._route(outcomes)
        return result

    def _audio_frame(self, event: AudioReceived) -> Frame:
        rate = self._sample_rate or event.sample_rate
        pcm = event.pcm
        if event.sample_rate != rate:
            resampler = self._in_resamplers.get(event.sample_rate)
            if resampler is None:
                resampler = self._in_resamplers[event.sample_rate] = Resampler(
                    event.sample_rate, rate
                )
            pcm = resampler.process(pcm)
        return InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)

    async def _route(self, events: list[InboundEvent]) -> None:
        """Push checkpoint outcomes upstream through :class:`VobizCheckpoints`."""
        for event in events:
            if isinstance(event, PlaybackCheckpointReached):
                if not event.matched:
                    continue  # counted by the protocol (stats.unknown_marks)
                name, outcome = event.name, CheckpointOutcome.PLAYED
            elif isinstance(event, CheckpointVoided):
                name, outcome = event.name, event.outcome
            else:
                continue
            if self._checkpoints is None:
                self.serializer_stats.outcomes_unrouted += 1
            else:
                await self._checkpoints.report(name, outcome)
