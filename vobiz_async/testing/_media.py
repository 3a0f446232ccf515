"""The emulator's media peer: the Vobiz side of a stream, dialing the application.

It runs :class:`~vobiz_async.testing._peer.PeerProtocol` (Vobiz's side) over a real
WebSocket: it sends ``start`` and 20 ms ``media`` frames on a deadline clock, plays
received ``playAudio`` on a real-time playout clock, acknowledges a checkpoint only
when everything queued before it has played, answers ``clearAudio`` by flushing,
sending ``clearedAudio`` and never acknowledging the voided checkpoints, and closes on
``stop``. It records what the caller heard, aligned sample for sample with what the
caller said.

Strict by default: a command live Vobiz would not obey is dropped, counted in
:attr:`PeerReport.refused` by reason, and logged, so an agent that passes here does not
fail in production. Refused: ``playAudio``/``checkpoint``/``clearAudio``/``stop``
without ``streamId`` or with another stream's id (required since July 2026, spec 4.4);
``playAudio`` without an integer ``media.sampleRate`` (a string ``"8000"`` included), or
with a ``;rate=`` suffix in ``media.contentType`` (spec 4.4.1 forbids it; the rate
comes from ``sampleRate`` only). ``strict=False`` obeys them as the older docs allowed.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..codec import FRAME_MS, AudioFormat, ByteOrder, Resampler, Resamplers, frame_size
from ..errors import ValidationError
from ..events import Checkpoint, ClearAudio, MalformedFrame, PlayAudio, Stop, UnknownEvent
from ._peer import PeerProtocol

__all__ = ["MediaPeer", "PeerReport"]

log = logging.getLogger("vobiz_async.testing")


@dataclass
class PeerReport:
    """What happened on one emulated stream (Vobiz, or compat: see
    :class:`~vobiz_async.testing.CompatMediaPeer`, whose checkpoints are marks).

    Attributes:
        stream_id, call_id: the ids the peer announced in ``start``.
        frames_sent, frames_received: media frames out; command frames in.
        play_frames: ``playAudio`` frames received.
        played_checkpoints: names acknowledged with ``playedStream``, in order (compat:
            marks echoed after their audio played, or at once with nothing queued).
        voided_checkpoints: names a ``clearAudio`` voided (never acknowledged; compat:
            marks a ``clear`` flushed, echoed at once).
        clears: ``clearAudio`` (compat: ``clear``) commands received.
        heard_ms, sent_ms: agent audio played to the caller; caller audio sent.
        cleared_ms: agent audio flushed by clears before it was heard.
        malformed: frames from the application the peer could not use.
        close_code: the WebSocket close code, when known.
        stopped: the application sent ``stop`` (compat: closed the socket first).
        rejected_status: the HTTP status when the handshake was refused.
        max_queued_ms: the most agent audio ever waiting in the playout queue (a paced
            sender keeps it near its lead; a burst shows up here).
        refused: commands dropped because live Vobiz would not obey them, by reason
            (``"missing-stream-id"``, ``"foreign-stream-id"``, ``"missing-sample-rate"``,
            ``"string-sample-rate"``, ``"rate-in-content-type"``); empty when not strict.
        connect_error: why the socket could not be opened (refused, unreachable,
            timeout), when it could not.
        not_dialed: the stream was stopped or the call ended before dialing.
        stream_timed_out: the stream reached its ``stream_timeout`` and was stopped.
    """

    stream_id: str = ""
    call_id: str = ""
    frames_sent: int = 0
    frames_received: int = 0
    play_frames: int = 0
    played_checkpoints: list[str] = field(default_factory=list)
    voided_checkpoints: list[str] = field(default_factory=list)
    clears: int = 0
    heard_ms: float = 0.0
    sent_ms: float = 0.0
    cleared_ms: float = 0.0
    malformed: int = 0
    close_code: int | None = None
    stopped: bool = False
    rejected_status: int | None = None
    max_queued_ms: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)
    connect_error: str | None = None
    not_dialed: bool = False
    stream_timed_out: bool = False


class _PeerBase(abc.ABC):
    """What both emulated media peers share (this one and
    :class:`~vobiz_async.testing.CompatMediaPeer`): the caller's audio at the stream's
    rate, the recordings, the ids, and the controls a test drives."""

    report: PeerReport
    format: AudioFormat
    speed: float
    listener: Callable[[str, dict[str, str]], None] | None

    def _init_peer(self, audio: bytes, audio_rate: int, seconds: float | None) -> None:
        """The shared state; ``audio`` resampled to the stream's rate."""
        if self.speed <= 0:
            raise ValidationError("speed", "must be positive")
        rate = self.format.sample_rate
        if audio and audio_rate != rate:
            resampler = Resampler(audio_rate, rate)
            audio = resampler.process(audio) + resampler.flush()
        self._audio = audio
        self._seconds = seconds if seconds is not None else len(audio) / (2 * rate)
        self._frame_pcm = frame_size("audio/x-l16", rate)
        self._ws: ClientConnection | None = None
        self._playout: deque[tuple[str, bytes | str]] = deque()
        self._queued_bytes = 0
        self._caller = bytearray()
        self._heard = bytearray()
        self._stall_until = 0.0
        self._closed = asyncio.Event()
        self._task: asyncio.Task[PeerReport] | None = None
        self.hung_up = False
        self.started = asyncio.Event()

    # ------------------------------------------------------------------ results
    @property
    def caller_pcm(self) -> bytes:
        """What the caller said, as sent (PCM16 LE at the stream's rate)."""
        return bytes(self._caller)

    @property
    def heard_pcm(self) -> bytes:
        """What the caller heard, on the same timeline as :attr:`caller_pcm`."""
        return bytes(self._heard)

    @property
    def stream_id(self) -> str:
        """The stream id (``streamSid`` on the compat dialect) announced in ``start``."""
        return self.report.stream_id

    @property
    def call_id(self) -> str:
        """The call id (``callSid`` on the compat dialect) announced in ``start``."""
        return self.report.call_id

    # ----------------------------------------------------------------- control
    @abc.abstractmethod
    async def run(self) -> PeerReport:
        """Connect, stream for the call's duration, and return the report."""

    def start(self) -> asyncio.Task[PeerReport]:
        """Dial in the background; returns the task (also awaitable via :meth:`run`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def wait_closed(self) -> PeerReport:
        """Wait for the stream to end; returns the report."""
        return await self.start()

    async def send_raw(self, frame: str | bytes) -> None:
        """Send anything (for hostile-input tests): malformed JSON, binary frames..."""
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(frame)

    def stall(self, seconds: float) -> None:
        """Stop sending media (the media path stalls) for ``seconds``."""
        self._stall_until = time.monotonic() + seconds / self.speed

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        if self._ws is not None and self._ws.transport is not None:
            self._ws.transport.abort()

    def _notify(self, event: str, **params: str) -> None:
        if self.listener is not None:
            self.listener(event, params)


class MediaPeer(_PeerBase):
    """One emulated Vobiz media stream dialing ``url``.

    Args:
        url: the application's ``ws://`` URL.
        audio: caller audio as PCM16 LE at ``audio_rate`` (resampled to the stream's
            format); when it runs out the caller is silent (or hangs up, see
            ``hangup_when_done``).
        audio_rate: the rate of ``audio``.
        content_type: the inbound format, e.g. ``audio/x-mulaw;rate=8000``.
        shape: ``"nested"`` (newest docs) or ``"flat"`` (oldest) ``start``.
        l16_byte_order: how L16 goes on the wire.
        seconds: how long the call lasts (None: the audio's length).
        speed: 1.0 is real time; 2.0 runs the clocks twice as fast.
        hangup_when_done: close the socket when the call's time is up (the caller hangs
            up); otherwise keep sending silence until the application stops.
        call_id, stream_id: ids to announce (random UUIDs by default).
        bidirectional: when False, ``playAudio`` is ignored (a one-way stream).
        extra_headers: the raw ``extra_headers`` string of the start frame.
        listener: called with Vobiz's lifecycle event names as they happen
            (``StartStream``, ``PlayedStream`` with ``Name``, ``ClearedAudio``, then
            ``StopStream`` when the application stopped the stream, or
            ``DroppedStream`` when its side of the socket went away); the emulator
            turns them into status callbacks.
        record: keep what the caller said and heard (:attr:`caller_pcm`,
            :attr:`heard_pcm`); about 64 KB a second per call at 16 kHz, so long soaks
            turn it off.
        strict: drop (and count in ``report.refused``) commands live Vobiz would not
            obey (see the module docstring); False obeys them.
        audio_track: ``inbound`` (caller audio), ``outbound`` (what the caller hears,
            i.e. the agent's playback) or ``both`` (one frame per track every 20 ms;
            ``start.tracks`` lists both), spec 2.3 / 4.3.3.
        stream_timeout: seconds after which the stream is stopped (``streamTimeout``,
            spec 2.3); counted in call time, so ``speed`` shortens it too.
        ssl: the client TLS context for a ``wss://`` URL (e.g. trusting a test CA);
            None: websockets' default (the system's trust store) for ``wss://``.
    """

    def __init__(
        self,
        url: str,
        *,
        audio: bytes = b"",
        audio_rate: int = 8000,
        content_type: str = "audio/x-mulaw;rate=8000",
        shape: Literal["nested", "flat"] = "nested",
        l16_byte_order: ByteOrder = "little",
        seconds: float | None = None,
        speed: float = 1.0,
        hangup_when_done: bool = True,
        call_id: str | None = None,
        stream_id: str | None = None,
        bidirectional: bool = True,
        extra_headers: str = "{}",
        listener: Callable[[str, dict[str, str]], None] | None = None,
        record: bool = True,
        strict: bool = True,
        audio_track: Literal["inbound", "outbound", "both"] = "inbound",
        stream_timeout: float | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.url = url
        self.ssl = ssl
        self.listener = listener
        self.record = record
        self.format = AudioFormat.parse(content_type)
        self.shape: Literal["nested", "flat"] = shape
        self.byte_order: ByteOrder = l16_byte_order
        self.speed = speed
        self.hangup_when_done = hangup_when_done
        self.bidirectional = bidirectional
        self.extra_headers = extra_headers
        self.strict = strict
        self.audio_track = audio_track
        self.stream_timeout = stream_timeout
        self.report = PeerReport(
            stream_id=stream_id or str(uuid.uuid4()), call_id=call_id or str(uuid.uuid4())
        )
        self._init_peer(audio, audio_rate, seconds)
        self.proto = PeerProtocol()
        self._resamplers = Resamplers(self.format.sample_rate)
        self._background: set[asyncio.Task[None]] = set()
        self._timed_out = False
        self.events: list[object] = []
        """Commands received other than ``playAudio`` (checkpoints, clears, stop, junk)."""

    # ----------------------------------------------------------------- control
    async def send_dtmf(self, digit: str) -> None:
        """Press a key on the caller's phone."""
        await self.send_raw(self.proto.send_dtmf(digit, timestamp=int(time.time() * 1000)))

    async def hangup(self) -> None:
        """The caller hangs up (or Vobiz ends the stream): close the socket normally.

        Before the socket is open this still counts: the peer then never dials, or
        closes the socket as soon as it opens, without sending ``start``.
        """
        self.hung_up = True
        if self._ws is not None:
            await self._ws.close()

    # --------------------------------------------------------------------- run
    async def run(self) -> PeerReport:
        """Connect, stream for the call's duration, and return the report."""
        report = self.report
        if self.hung_up:  # stopped or hung up before dialing: nothing dials
            report.not_dialed = True
            self._closed.set()
            return report
        try:
            async with connect(
                self.url,
                max_size=4 * 1024 * 1024,
                open_timeout=10,
                ping_interval=None,
                ssl=self.ssl or (True if self.url.startswith("wss:") else None),
            ) as ws:
                if self.hung_up:  # ended while the handshake was in flight
                    report.not_dialed = True
                    await ws.close()
                    report.close_code = ws.close_code
                    return report
                self._ws = ws
                tracks = (
                    ("inbound", "outbound") if self.audio_track == "both" else (self.audio_track,)
                )
                await ws.send(
                    self.proto.send_start(
                        call_id=report.call_id,
                        stream_id=report.stream_id,
                        media_format=self.format,
                        shape=self.shape,
                        extra_headers=self.extra_headers,
                        tracks=tracks,
                    )
                )
                self._notify("StartStream", ServiceURL=self.url)
                receiver = asyncio.create_task(self._receive(ws))
                try:
                    await self._clock(ws)
                finally:
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiver
                report.close_code = ws.close_code
                self._notify_end()
        except InvalidStatus as exc:
            report.rejected_status = exc.response.status_code
        except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
            log.debug("peer %s ended: %s", report.stream_id, exc)
            if self._ws is not None:
                report.close_code = self._ws.close_code
                self._notify_end()
            else:
                report.connect_error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self._closed.set()
        return report

    async def _clock(self, ws: ClientConnection) -> None:
        """One tick per 20 ms: send caller audio, advance the playout of agent audio."""
        frame_s = FRAME_MS / 1000 / self.speed
        total = round(self._seconds * 1000 / FRAME_MS)
        limit = None if self.stream_timeout is None else round(self.stream_timeout * 50)
        start = time.monotonic()
        # The media clock: epoch ms at the first frame, then exactly 20 ms per frame, as
        # in live samples (spec 4.3.3), whatever the wall clock does between frames.
        epoch_ms = int(time.time() * 1000)
        tick = 0
        silence = bytes(self._frame_pcm)
        while True:
            if self.hangup_when_done and tick >= total:
                self._timed_out = True  # the caller hung up: no Stop/Dropped callback
                await ws.close()
                return
            if limit is not None and tick >= limit:
                self.report.stream_timed_out = True  # streamTimeout: Vobiz ends the stream
                await ws.close()
                return
            if ws.close_code is not None or self.report.stopped:
                return
            deadline = start + tick * frame_s
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            offset = tick * self._frame_pcm
            pcm = self._audio[offset : offset + self._frame_pcm] or silence
            pcm = pcm + silence[len(pcm) :]
            if self.record:
                self._caller += pcm
            heard = self._advance_playout()
            if time.monotonic() >= self._stall_until:
                timestamp = epoch_ms + tick * FRAME_MS
                try:
                    if self.audio_track != "outbound":
                        await ws.send(self._media_frame(pcm, timestamp, "inbound"))
                    if self.audio_track != "inbound":
                        await ws.send(self._media_frame(heard, timestamp, "outbound"))
                except ConnectionClosed:
                    return
                self.report.frames_sent += 1
                self.report.sent_ms += FRAME_MS
                self.started.set()
            tick += 1

    def _media_frame(self, pcm: bytes, timestamp: int, track: str) -> str:
        """One ``media`` frame as live Vobiz sends it: ``chunk`` equal to
        ``sequenceNumber`` (spec 4.3.3); for the flat (G1) shape, the oldest media shape
        instead: format repeated per frame, integer timestamp, no track/chunk/sequence."""
        frame = self.proto.send_media(
            pcm, timestamp=timestamp, track=track, byte_order=self.byte_order
        )
        if self.shape == "flat":
            msg = json.loads(frame)
            old = {
                "event": "media",
                "streamId": msg["streamId"],
                "media": {
                    "payload": msg["media"]["payload"],
                    "contentType": self.format.encoding.value,
                    "sampleRate": self.format.sample_rate,
                    "timestamp": timestamp,
                },
            }
            return json.dumps(old, separators=(",", ":"))
        return frame

    def _advance_playout(self) -> bytes:
        """Play 20 ms of queued agent audio; acknowledge checkpoints reached.

        Returns:
            What the caller heard in these 20 ms (PCM16 LE, silence-padded).
        """
        need = self._frame_pcm
        out = bytearray()
        queue = self._playout
        while queue:
            kind, item = queue[0]
            if kind == "mark":
                queue.popleft()
                assert isinstance(item, str)
                self._ack(item)
                continue
            if len(out) >= need:
                break
            assert isinstance(item, bytes)
            take = need - len(out)
            out += item[:take]
            if len(item) > take:
                queue[0] = ("audio", item[take:])
            else:
                queue.popleft()
        self._queued_bytes -= len(out)
        if out:
            self.report.heard_ms += len(out) / (2 * self.format.sample_rate) * 1000
        heard = bytes(out) + bytes(need - len(out))
        if self.record:
            self._heard += heard
        return heard

    def _notify_end(self) -> None:
        if self.report.stopped or self.report.stream_timed_out:
            # A streamTimeout is a server-side termination: StopStream (spec 5.2).
            self._notify("StopStream")
        elif not self.hung_up and not self._timed_out:
            self._notify("DroppedStream", Error="connection disconnected with the remote service")

    def _ack(self, name: str) -> None:
        self.report.played_checkpoints.append(name)
        self._notify("PlayedStream", Name=name)
        if self._ws is not None:
            task = asyncio.get_running_loop().create_task(
                self._send_quietly(self.proto.send_played(name))
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_quietly(self, frame: str) -> None:
        if self._ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(frame)

    async def _receive(self, ws: ClientConnection) -> None:
        rate = self.format.sample_rate
        async for message in ws:
            self.report.frames_received += 1
            if self.strict:
                reason = self._refusal(message)
                if reason is not None:
                    self.report.refused[reason] = self.report.refused.get(reason, 0) + 1
                    log.warning(
                        "stream %s: command dropped as Vobiz would (%s)",
                        self.report.stream_id,
                        reason,
                    )
                    continue
            for event in self.proto.receive(message):
                if not isinstance(event, PlayAudio):
                    self.events.append(event)  # audio itself is in heard_pcm
                if isinstance(event, PlayAudio):
                    self.report.play_frames += 1
                    if not self.bidirectional:
                        continue  # one-way stream: Vobiz discards playAudio
                    pcm = event.pcm(self.byte_order)
                    pcm = self._resamplers.process(pcm, event.sample_rate)
                    self._playout.append(("audio", pcm))
                    self._queued_bytes += len(pcm)
                    queued_ms = self._queued_bytes / (2 * rate) * 1000
                    self.report.max_queued_ms = max(self.report.max_queued_ms, queued_ms)
                elif isinstance(event, Checkpoint):
                    if self.bidirectional:
                        self._playout.append(("mark", event.name))
                elif isinstance(event, ClearAudio):
                    self.report.clears += 1
                    self.report.cleared_ms += self._queued_bytes / (2 * rate) * 1000
                    self.report.voided_checkpoints += [
                        str(item) for kind, item in self._playout if kind == "mark"
                    ]
                    self._playout.clear()
                    self._queued_bytes = 0
                    await ws.send(self.proto.send_cleared())
                    self._notify("ClearedAudio")
                elif isinstance(event, Stop):
                    self.report.stopped = True
                    await ws.close()
                    return
                elif isinstance(event, (MalformedFrame, UnknownEvent)):
                    self.report.malformed += 1

    def _refusal(self, message: str | bytes) -> str | None:
        """Why live Vobiz would not obey this command (spec 4.4), or None.

        Frames that are not JSON commands are left to the protocol (it reports them as
        malformed or unknown).
        """
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            return None
        if not isinstance(msg, dict) or msg.get("event") not in _COMMANDS:
            return None
        stream_id = msg.get("streamId")
        if not isinstance(stream_id, str) or not stream_id:
            return "missing-stream-id"
        if stream_id != self.report.stream_id:
            return "foreign-stream-id"
        media = msg.get("media")
        if msg["event"] == "playAudio" and isinstance(media, dict):
            rate = media.get("sampleRate")
            if rate is None:
                return "missing-sample-rate"
            if isinstance(rate, str):
                return "string-sample-rate"
            content_type = media.get("contentType")
            if isinstance(content_type, str) and ";" in content_type:
                return "rate-in-content-type"
        return None


_COMMANDS = frozenset({"playAudio", "checkpoint", "clearAudio", "stop"})
