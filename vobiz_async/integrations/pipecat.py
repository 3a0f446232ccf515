"""Vobiz Audio Streams in a pipecat pipeline: our session as a pipecat transport, or a
``FrameSerializer`` on our protocol core.

Needs the ``pipecat`` extra (``pip install "vobiz-async[pipecat]"``). Two ways in:

* :class:`SessionTransport`: a pipecat transport over one of our
  :class:`~vobiz_async.session.StreamSession`, so a pipecat bot is an ordinary
  media-server handler (``serve()``, the Starlette or aiohttp adapter,
  ``create_app``) and the server keeps everything it does (upgrade checks, limits,
  binding, recording, pacing, checkpoints, clear, shutdown with 1001)::

    async def handler(session: StreamSession) -> None:
        transport = SessionTransport(session)
        worker = PipelineWorker(Pipeline([transport.input(), bot, transport.output()]))
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()   # returns when the call ends

* :class:`VobizSerializer`, for pipecat's own FastAPI websocket transport (pipecat then
  owns the socket: the server's guards are the application's to add). The bot accepts
  the media WebSocket itself, reads the ``start`` frame with :func:`parse_start`, builds
  a :class:`VobizSerializer` from it and hands that to pipecat's transport::

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

:class:`SessionTransport` is described on the class. The rest of this docstring is
about the serializer.

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
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelFrame,
    CancelWorkerFrame,
    ClientConnectedFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    SystemFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from ..codec import SUPPORTED_RATES, AudioFormat, ByteOrder, Resampler
from ..errors import RemoteProtocolError, StreamClosedError, ValidationError, VobizError
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
from ..session import StreamSession

__all__ = [
    "SerializerStats",
    "SessionTransport",
    "SessionTransportStats",
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


# ====================================================================== SessionTransport
@dataclass(slots=True)
class SessionTransportStats:
    """What a :class:`SessionTransport` did not turn into pipeline frames or session calls.

    Attributes:
        other_tracks: inbound audio of a track other than ``inbound`` (spec 4.3.3).
        unsupported_dtmf: digits pipecat's ``KeypadEntry`` has no member for (A-D).
        audio_after_close: bot audio chunks that reached the output after the stream
            had ended (nobody to play them to).
        messages_ignored: transport messages not ours (RTVI and the like: Vobiz has no
            such command, spec 4.4).
        checkpoint_errors: checkpoints the session refused (an empty name, or a name
            still pending); each is also pushed upstream as an ``ErrorFrame``.
        clears_skipped: ``InterruptionFrame`` s that came while the bot was silent
            (``session.speaking`` False): pipecat sends one at every user turn, and a
            ``clearAudio`` then would flush nothing.
    """

    other_tracks: int = 0
    unsupported_dtmf: int = 0
    audio_after_close: int = 0
    messages_ignored: int = 0
    checkpoint_errors: int = 0
    clears_skipped: int = 0


def _check_rate(name: str, rate: int) -> None:
    if rate not in SUPPORTED_RATES:
        raise ValidationError(name, f"{rate} Hz: must be one of {SUPPORTED_RATES}")


class SessionInputTransport(BaseInputTransport):
    """The caller's side of a :class:`SessionTransport`: session events in, frames out.

    Get it from :meth:`SessionTransport.input`.
    """

    def __init__(self, transport: SessionTransport, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._owner = transport
        self._reader: asyncio.Task[None] | None = None
        self._resamplers: dict[int, Resampler] = {}

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Take the pipeline's input rate.

        Raises:
            ValidationError: a rate our resampler does not handle (8, 16 or 24 kHz).
        """
        await super().setup(setup)
        _check_rate("audio_in_sample_rate", self.sample_rate)

    async def start(self, frame: StartFrame) -> None:
        """Start reading the session (once the pipeline has started)."""
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._reader is None:
            await self._owner._call_event_handler("on_client_connected", self._owner.session)
            await self.push_frame(ClientConnectedFrame())
            self._reader = self.create_task(self._read(), "session-reader")

    async def stop(self, frame: EndFrame) -> None:
        """The pipeline is ending: stop reading."""
        await super().stop(frame)
        await self._stop_reading()

    async def cancel(self, frame: CancelFrame) -> None:
        """The pipeline is cancelled: stop reading."""
        await super().cancel(frame)
        await self._stop_reading()

    async def cleanup(self) -> None:
        """Release the reader at teardown."""
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._stop_reading()

    async def _stop_reading(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            await self.cancel_task(reader)

    async def _read(self) -> None:
        """Session events to frames until the stream ends; then end the pipeline."""
        owner = self._owner
        session = owner.session
        async for event in session:
            if isinstance(event, AudioReceived):
                if event.track != "inbound":
                    owner.stats.other_tracks += 1
                    continue
                await self.push_audio_frame(self._audio_frame(event))
            elif isinstance(event, DtmfReceived):
                try:
                    button = KeypadEntry(event.digit)
                except ValueError:
                    owner.stats.unsupported_dtmf += 1
                    continue
                await self.push_frame(InputDTMFFrame(button=button))
        # The stream ended on the far side (hang-up, Vobiz's stop, server shutdown):
        # nobody is left to hear the bot, so the pipeline is cancelled, as pipecat's own
        # examples do on a client disconnect.
        await owner._call_event_handler("on_client_disconnected", session)
        await self.push_frame(
            CancelWorkerFrame(reason=f"stream {session.stream_id} closed ({session.close_code})"),
            FrameDirection.UPSTREAM,
        )

    def _audio_frame(self, event: AudioReceived) -> InputAudioRawFrame:
        rate = self.sample_rate
        pcm = event.pcm
        if event.sample_rate != rate:
            resampler = self._resamplers.get(event.sample_rate)
            if resampler is None:
                resampler = self._resamplers[event.sample_rate] = Resampler(event.sample_rate, rate)
            pcm = resampler.process(pcm)
        return InputAudioRawFrame(audio=pcm, sample_rate=rate, num_channels=1)


class SessionOutputTransport(BaseOutputTransport):
    """The bot's side of a :class:`SessionTransport`: frames in, session calls out.

    Get it from :meth:`SessionTransport.output`.
    """

    def __init__(
        self,
        transport: SessionTransport,
        params: TransportParams,
        *,
        checkpoint_utterances: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._owner = transport
        self._checkpoint_utterances = checkpoint_utterances
        self._utterances = 0
        # Checkpoints that entered this processor and wait in pipecat's audio queue, by
        # frame id (a name may come twice: the session refuses the second while pending).
        self._unsent: dict[int, VobizCheckpointFrame] = {}
        self._outcomes: set[asyncio.Task[None]] = set()

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Take the pipeline's output rate.

        Raises:
            ValidationError: a rate our resampler does not handle (8, 16 or 24 kHz), or
                more than one output channel.
        """
        await super().setup(setup)
        _check_rate("audio_out_sample_rate", self.sample_rate)
        if self._params.audio_out_channels != 1:
            raise ValidationError("audio_out_channels", "Vobiz streams are mono: must be 1")

    async def start(self, frame: StartFrame) -> None:
        """Ready to write once the pipeline has started."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        """Play what is queued (pipecat drains its audio queue first), then ``stop``."""
        await super().stop(frame)
        await self._end()

    async def cancel(self, frame: CancelFrame) -> None:
        """Drop what is queued and ``stop`` at once."""
        await super().cancel(frame)
        await self._end()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """pipecat's output handling, plus: a checkpoint after each bot utterance, and
        ``clear()`` on an interruption."""
        if isinstance(frame, VobizCheckpointFrame) and direction is FrameDirection.DOWNSTREAM:
            self._unsent[frame.id] = frame
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            await self._interrupted()
        elif (
            isinstance(frame, TTSStoppedFrame)
            and direction is FrameDirection.DOWNSTREAM
            and self._checkpoint_utterances
        ):
            # Queued right behind the TTSStoppedFrame (after the utterance's audio).
            self._utterances += 1
            name = f"utterance-{self._utterances}"
            checkpoint = VobizCheckpointFrame(message={"checkpoint": name}, checkpoint=name)
            self._unsent[checkpoint.id] = checkpoint
            await super().process_frame(checkpoint, FrameDirection.DOWNSTREAM)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Play one chunk through the session; returns once it is on the wire.

        ``StreamSession.play`` returns when its audio has been handed to the wire, and
        the server's pacer hands it out in real time, at most ``Pacing.lead_ms`` (plus
        ``coalesce_ms``) ahead of the caller's ear. So this call is pipecat's clock: its
        bot-speaking events
        follow what the caller hears (within the lead), and a clear stops the chunk
        being written.

        Returns:
            False when the stream has ended (the chunk is counted, not played).
        """
        session = self._owner.session
        if session.closed:
            self._owner.stats.audio_after_close += 1
            return False
        try:
            await session.play(frame.audio, frame.sample_rate)
        except StreamClosedError:
            self._owner.stats.audio_after_close += 1
            return False
        return True

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        """A :class:`VobizCheckpointFrame` (it waited in the audio queue behind the audio
        before it) becomes ``session.checkpoint``; any other message is counted."""
        if not isinstance(frame, VobizCheckpointFrame):
            self._owner.stats.messages_ignored += 1
            return
        if self._unsent.pop(frame.id, None) is None:
            return  # an interruption came while it was on its way here: reported cleared
        name = frame.checkpoint
        task = self.create_task(self._checkpoint(name), f"checkpoint-{name}")
        self._outcomes.add(task)
        task.add_done_callback(self._outcomes.discard)
        # One loop turn: the task takes the session's play lock and queues the checkpoint
        # (acquiring a free asyncio.Lock does not suspend), so the next chunk's play()
        # queues behind it, never ahead.
        await asyncio.sleep(0)

    async def _checkpoint(self, name: str) -> None:
        try:
            outcome = await self._owner.session.checkpoint(name)
        except VobizError as exc:
            self._owner.stats.checkpoint_errors += 1
            await self.push_error(f"checkpoint {name!r} refused: {exc}", exception=exc)
            return
        await self._report(name, outcome)

    async def _report(self, name: str, outcome: CheckpointOutcome) -> None:
        await self.push_frame(VobizCheckpointOutcomeFrame(name, outcome), FrameDirection.UPSTREAM)

    async def _interrupted(self) -> None:
        """pipecat emptied its audio queue: clear the session's (``clearAudio``), and
        report the checkpoints dropped from pipecat's queue as cleared."""
        session = self._owner.session
        if session.speaking:
            with contextlib.suppress(StreamClosedError):
                # No wait here: the session holds the next play() until clearedAudio.
                await session.clear(wait=False)
        elif not session.closed:
            self._owner.stats.clears_skipped += 1
        for key, checkpoint in list(self._unsent.items()):
            if checkpoint.interruptible:
                del self._unsent[key]
                await self._report(checkpoint.checkpoint, CheckpointOutcome.CLEARED)

    async def _end(self) -> None:
        """``stop`` the stream; every checkpoint still waiting ends ``closed``."""
        await self._owner.session.stop()
        unsent, self._unsent = list(self._unsent.values()), {}
        for checkpoint in unsent:
            await self._report(checkpoint.checkpoint, CheckpointOutcome.CLOSED)
        if self._outcomes:  # resolved by the close: PLAYED before it, else CLOSED
            await asyncio.gather(*self._outcomes, return_exceptions=True)


class SessionTransport(BaseTransport):
    """A pipecat transport over one :class:`~vobiz_async.session.StreamSession`.

    Run a pipecat bot as an ordinary media-server handler, on ``serve()``, the
    Starlette or aiohttp adapter, or ``create_app``: admission, limits, binding,
    recording, pacing, checkpoints, clear and shutdown stay the server's own.

    * caller audio becomes ``InputAudioRawFrame`` at the pipeline's input rate (our
      :class:`~vobiz_async.codec.Resampler`); a ``dtmf`` digit becomes
      ``InputDTMFFrame`` (A-D, which pipecat has no key for, are counted);
    * ``OutputAudioRawFrame`` is played with ``session.play`` (paced by the server;
      the write returns once the chunk is on the wire, see
      :meth:`SessionOutputTransport.write_audio_frame`);
    * ``InterruptionFrame`` calls ``session.clear()`` (``clearAudio``) while the bot
      can still be heard (``session.speaking``); pipecat sends one at every user turn,
      and one while the bot is silent is only counted (``stats.clears_skipped``);
    * ``EndFrame`` plays what is queued, then ``session.stop()``; ``CancelFrame`` stops
      at once;
    * the end of each bot utterance (``TTSStoppedFrame``) is followed by a checkpoint
      ``utterance-N`` (``checkpoint_utterances=False`` to turn off), as is every
      :class:`VobizCheckpointFrame` pushed to the output; its outcome (``played``,
      ``cleared``, ``closed``, ``timed_out``) comes back **upstream** as a
      :class:`VobizCheckpointOutcomeFrame` from the output, so every processor of
      the pipeline sees it;
    * when the stream ends on the far side (hang-up, Vobiz's ``stop``, server
      shutdown) the input pushes ``CancelWorkerFrame`` upstream, so the pipeline ends
      and ``WorkerRunner.run`` returns.

    Events (``@transport.event_handler(name)``): ``on_client_connected(transport,
    session)`` when the pipeline starts reading the session,
    ``on_client_disconnected(transport, session)`` when the stream ended on the far
    side.

    Args:
        session: the stream, as the server hands it to the handler.
        params: pipecat's transport parameters; default audio in and out enabled.
            Rates must be 8, 16 or 24 kHz. The input defaults to the pipeline's input
            rate (the caller's audio is resampled to it with our resampler); the output
            to the stream's outbound rate (pipecat's output resamples the bot's audio to
            it once, so nothing is resampled again on the way to the wire or the
            recording).
        checkpoint_utterances: send a checkpoint after each ``TTSStoppedFrame``.
        name, input_name, output_name: pipecat object names.

    Raises:
        ValidationError: a rate in ``params`` other than 8, 16 or 24 kHz, or more than
            one output channel (a rate that comes from the pipeline is checked when the
            pipeline starts, and pipecat reports it as an ``ErrorFrame``).
    """

    def __init__(
        self,
        session: StreamSession,
        params: TransportParams | None = None,
        *,
        checkpoint_utterances: bool = True,
        name: str | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        super().__init__(name=name, input_name=input_name, output_name=output_name)
        self.session = session
        params = params or TransportParams(audio_in_enabled=True, audio_out_enabled=True)
        for field_name in ("audio_in_sample_rate", "audio_out_sample_rate"):
            rate = getattr(params, field_name)
            if rate is not None:
                _check_rate(field_name, rate)
        if params.audio_out_channels != 1:
            raise ValidationError("audio_out_channels", "Vobiz streams are mono: must be 1")
        if params.audio_out_sample_rate is None:
            # pipecat's output resamples the bot's audio (statefully) to the stream's rate
            # once; session.play then frames it as is, and the recording gets it unchanged.
            rate = session.outbound_format.sample_rate
            params = params.model_copy(update={"audio_out_sample_rate": rate})
        self.params = params
        self.stats = SessionTransportStats()
        self._input = SessionInputTransport(self, self.params, name=input_name)
        self._output = SessionOutputTransport(
            self, self.params, checkpoint_utterances=checkpoint_utterances, name=output_name
        )
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> SessionInputTransport:
        """The processor that puts the caller's audio and keys into the pipeline."""
        return self._input

    def output(self) -> SessionOutputTransport:
        """The processor that plays the bot's audio on the call."""
        return self._output
