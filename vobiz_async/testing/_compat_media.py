"""The emulator's compat media peer: SignalWire's (or Twilio's) side of a stream.

:class:`CompatMediaPeer` mirrors :class:`~vobiz_async.testing.MediaPeer` on the
Twilio-compatible dialect (``signalwire-compat-streams.md``, "compat spec" below): it
dials the application's WebSocket (with ``Authorization: Bearer <token>`` on the
upgrade when a bearer token is set, 4.1), sends ``connected`` (``1.0.0`` Twilio,
``0.2.0`` SignalWire, 4.3.1) and ``start`` (4.3.2), then 20 ms ``media`` frames on a
real-time deadline clock with string counters, ``chunk`` per track from ``"1"`` and
``timestamp`` in ms since the stream started (4.3.3). It plays the application's
``media`` on a real-time playout clock in the stream's format (5.1), echoes a ``mark``
when everything queued before it has played, at once when nothing is queued, and on
``clear`` flushes the queue and echoes every pending mark immediately (4.5.2, 4.5.3,
4.6; there is no ``clearedAudio``). At hangup it sends ``stop`` (4.3.6), then closes.
It records what the caller said and heard, sample for sample.

Strict by default, like the Vobiz peer: a message Twilio would answer with protocol
error 31924 (anything but ``media``/``mark``/``clear``, e.g. a Vobiz ``playAudio`` or a
``stop``, which does not exist on this dialect, 4.7) is dropped and counted in
:attr:`PeerReport.refused` (``"unsupported-event"``), and so is a message without
``streamSid`` (``"missing-stream-sid"``) or with another stream's (``"foreign-stream-sid"``).
SignalWire's app-side ``dtmf`` (4.5.4) is accepted on SignalWire streams and kept in
:attr:`CompatMediaPeer.injected_digits`. ``strict=False`` obeys media/mark/clear whatever
their ``streamSid``. On a unidirectional stream every message from the application is
dropped and counted (``"unidirectional"``, strict or not): the platform cannot play it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .._wire import compat
from ..codec import (
    FRAME_MS,
    AudioEncoding,
    AudioFormat,
    l16_to_pcm16,
    pcm16_to_l16,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from ..errors import ValidationError
from ..events import Checkpoint, ClearAudio, MalformedFrame, PlayAudio, UnknownEvent
from ..signalwire._signatures import compute_signature
from ._media import PeerReport, _PeerBase

__all__ = ["CODECS", "CompatMediaPeer", "codec_format"]

log = logging.getLogger("vobiz_async.testing")

CODECS: dict[str, AudioFormat] = {
    "PCMU@8000h": AudioFormat(AudioEncoding.MULAW, 8000),
    "L16@16000h": AudioFormat(AudioEncoding.L16, 16000),
    "L16@24000h": AudioFormat(AudioEncoding.L16, 24000),
}
"""SignalWire ``codec`` values and the format they fix in both directions (compat 5.1)."""

_DIGITS = frozenset("0123456789*#ABCD")


def codec_format(codec: str, *, twilio: bool = False) -> AudioFormat:
    """The stream format of a SignalWire ``codec`` (compat 3.2, 5.1).

    Args:
        codec: ``PCMU@8000h``, ``L16@16000h`` or ``L16@24000h``.
        twilio: Twilio streams are mu-law 8 kHz only.

    Raises:
        ValidationError: an unknown codec, or anything but ``PCMU@8000h`` on Twilio.
    """
    fmt = CODECS.get(codec)
    if fmt is None:
        raise ValidationError("codec", f"must be one of {', '.join(CODECS)}, got {codec!r}")
    if twilio and fmt.encoding is not AudioEncoding.MULAW:
        raise ValidationError("codec", "Twilio streams are mu-law 8 kHz only (PCMU@8000h)")
    return fmt


def _twilio_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class CompatMediaPeer(_PeerBase):
    """One emulated SignalWire (or Twilio) media stream dialing ``url``.

    Args:
        url: the application's WebSocket URL, dialed as given (``ws://`` on loopback in
            tests; :class:`~vobiz_async.testing.FakeSignalWire` maps ``wss://`` to it).
        audio: caller audio as PCM16 LE at ``audio_rate`` (resampled to the stream's
            rate); when it runs out the caller is silent (or hangs up).
        audio_rate: the rate of ``audio``.
        codec: the stream's format in both directions: ``PCMU@8000h`` (default),
            ``L16@16000h`` or ``L16@24000h`` (L16 little-endian, compat 5.3).
        twilio: speak as Twilio (``connected`` 1.0.0, top-level ``streamSid`` on every
            message, ``AC``/``CA``/``MZ`` ids, dtmf ``{track, digit}``); mu-law only.
        seconds: how long the call lasts (None: the audio's length).
        speed: 1.0 is real time; 2.0 runs the clocks twice as fast.
        hangup_when_done: send ``stop`` and close when the call's time is up; otherwise
            keep sending silence until the application closes the socket.
        call_sid, stream_sid, account_sid: ids to announce (random by default: UUIDs
            for SignalWire, 34-character ``CA…``/``MZ…``/``AC…`` for Twilio).
        custom_parameters: ``start.customParameters`` (from ``<Parameter>``, 3.3).
        bearer_token: sent as ``Authorization: Bearer <token>`` on the upgrade (4.1).
        extra_headers: more HTTP headers for the upgrade.
        auth_token: Twilio only: sign the upgrade with ``X-Twilio-Signature``, an
            HMAC-SHA1 of the ``wss://`` form of ``url`` with this Auth Token (compat 7.6),
            as Twilio does on every media socket.
        bidirectional: False for a ``<Start><Stream>``/REST stream: the application's
            messages are ignored (and counted in ``report.refused``).
        record: keep what the caller said and heard (:attr:`caller_pcm`,
            :attr:`heard_pcm`); about 64 KB a second per call at 16 kHz.
        listener: called with ``("stream-started", {})`` when the socket opened, and
            ``("stream-error", {"StreamError": ...})`` when it could not be opened
            (``connection_refused``: the server answered the upgrade with an error;
            ``connection_refused_timeout_or_ssl_error``: unreachable), compat 6.3.
        strict: drop (and count) what Twilio would refuse, see the module docstring.
        audio_track: ``inbound`` (caller audio), ``outbound`` (what the caller hears)
            or ``both`` (one frame per track every 20 ms); bidirectional streams carry
            ``inbound`` only (compat 3.2).

    Raises:
        ValidationError: an unknown codec, a non-mu-law codec on Twilio, a
            bidirectional stream with a track other than ``inbound``, or an
            ``auth_token`` without ``twilio``.
    """

    def __init__(
        self,
        url: str,
        *,
        audio: bytes = b"",
        audio_rate: int = 8000,
        codec: str = "PCMU@8000h",
        twilio: bool = False,
        seconds: float | None = None,
        speed: float = 1.0,
        hangup_when_done: bool = True,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        bidirectional: bool = True,
        record: bool = True,
        listener: Callable[[str, dict[str, str]], None] | None = None,
        strict: bool = True,
        audio_track: Literal["inbound", "outbound", "both"] = "inbound",
    ) -> None:
        self.format = codec_format(codec, twilio=twilio)
        if bidirectional and audio_track != "inbound":
            raise ValidationError("audio_track", "a bidirectional stream carries inbound only")
        self.url = url
        self.codec = codec
        self.twilio = twilio
        self.provider = "twilio" if twilio else "signalwire"
        self.speed = speed
        self.hangup_when_done = hangup_when_done
        self.bidirectional = bidirectional
        self.record = record
        self.listener = listener
        self.strict = strict
        self.audio_track = audio_track
        self.custom_parameters = dict(custom_parameters or {})
        self.headers = dict(extra_headers or {})
        if bearer_token is not None:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        if auth_token is not None:
            if not twilio:
                raise ValidationError("auth_token", "signs Twilio upgrades only (twilio=True)")
            signed = "wss://" + url.split("://", 1)[-1]  # Twilio signs the URL it dialed
            self.headers["X-Twilio-Signature"] = compute_signature(signed, {}, auth_token)
        self.account_sid = account_sid or (_twilio_sid("AC") if twilio else str(uuid.uuid4()))
        self.report = PeerReport(
            stream_id=stream_sid or (_twilio_sid("MZ") if twilio else str(uuid.uuid4())),
            call_id=call_sid or (_twilio_sid("CA") if twilio else str(uuid.uuid4())),
        )
        self._init_peer(audio, audio_rate, seconds)
        self._seq = 0
        self._chunks = {"inbound": 0, "outbound": 0}
        self._send_lock = asyncio.Lock()
        self._ending = False
        self.events: list[object] = []
        """Messages received other than ``media`` (marks, clears, refused or junk)."""
        self.injected_digits: list[str] = []
        """Digits the application injected with SignalWire's ``dtmf`` (compat 4.5.4)."""

    # ------------------------------------------------------------------ results
    @property
    def stream_sid(self) -> str:
        """The ``streamSid`` announced in ``start`` (same as :attr:`stream_id`)."""
        return self.report.stream_id

    # ----------------------------------------------------------------- control
    async def send_dtmf(self, digit: str) -> None:
        """Press a key on the caller's phone: a ``dtmf`` message (compat 4.3.4).

        Raises:
            ValidationError: not one of ``0-9 * # A-D``, or a Twilio stream that is not
                bidirectional (Twilio sends ``dtmf`` on bidirectional streams only).
        """
        if len(digit) != 1 or digit.upper() not in _DIGITS:
            raise ValidationError("digit", f"must be one of 0-9 * # A-D, got {digit!r}")
        if self.twilio and not self.bidirectional:
            raise ValidationError("digit", "Twilio sends dtmf on bidirectional streams only")

        def frame(seq: int) -> str:
            text = compat.dtmf_frame(
                sequence_number=seq,
                stream_sid=self.stream_sid,
                digit=digit.upper(),
                twilio=self.twilio,
            )
            if self.bidirectional:
                return text
            body = json.loads(text)  # SignalWire: streamSid on bidirectional streams only
            del body["streamSid"]
            return json.dumps(body, separators=(",", ":"))

        await self._send(frame)

    async def hangup(self) -> None:
        """The caller hangs up (or the platform ends the stream): ``stop``, then close.

        Before the socket is open this still counts: the peer then never dials, or
        closes the socket as soon as it opens.
        """
        self.hung_up = True
        ws = self._ws
        if ws is not None:
            await self._send_stop()
            await ws.close()

    async def _send(self, build: Callable[[int], str]) -> bool:
        """Number and send one frame; frames go out in ``sequenceNumber`` order."""
        ws = self._ws
        if ws is None:
            return False
        async with self._send_lock:
            self._seq += 1
            try:
                await ws.send(build(self._seq))
            except ConnectionClosed:
                return False
        return True

    async def _send_stop(self) -> None:
        if self._ending or self._ws is None or self._ws.close_code is not None:
            return
        self._ending = True
        await self._send(
            lambda seq: compat.stop_frame(
                sequence_number=seq,
                stream_sid=self.stream_sid,
                account_sid=self.account_sid,
                call_sid=self.call_id,
                twilio=self.twilio,
            )
        )

    # --------------------------------------------------------------------- run
    async def run(self) -> PeerReport:
        """Connect, stream for the call's duration, and return the report."""
        report = self.report
        if self.hung_up:
            report.not_dialed = True
            self._closed.set()
            return report
        try:
            async with connect(
                self.url,
                additional_headers=self.headers or None,
                max_size=4 * 1024 * 1024,
                open_timeout=10,
                ping_interval=None,
            ) as ws:
                if self.hung_up:
                    report.not_dialed = True
                    await ws.close()
                    report.close_code = ws.close_code
                    return report
                self._ws = ws
                self._notify("stream-started")
                await ws.send(compat.connected_frame(twilio=self.twilio))
                tracks = (
                    ("inbound", "outbound") if self.audio_track == "both" else (self.audio_track,)
                )
                await self._send(
                    lambda seq: compat.start_frame(
                        sequence_number=seq,
                        stream_sid=self.stream_sid,
                        call_sid=self.call_id,
                        account_sid=self.account_sid,
                        media_format=self.format,
                        tracks=tracks,
                        custom_parameters=self.custom_parameters,
                        twilio=self.twilio,
                    )
                )
                await self._stream(ws)
                self._finish(ws)
        except InvalidStatus as exc:
            report.rejected_status = exc.response.status_code
            self._notify("stream-error", StreamError="connection_refused")
        except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
            log.debug("compat peer %s ended: %s", report.stream_id, exc)
            if self._ws is not None:
                self._finish(self._ws)
            else:
                report.connect_error = f"{type(exc).__name__}: {exc}"[:300]
                self._notify("stream-error", StreamError="connection_refused_timeout_or_ssl_error")
        finally:
            self._closed.set()
        return self.report

    async def _stream(self, ws: ClientConnection) -> None:
        """Run the clock and the receiver until the socket closes (either side)."""
        receiver = asyncio.create_task(self._receive(ws))
        clock = asyncio.create_task(self._clock(ws))
        tasks = {receiver, clock}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if clock in done:  # our hangup: let the close handshake finish reading
                await asyncio.wait({receiver}, timeout=2.0)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, (asyncio.CancelledError, ConnectionClosed)
            ):
                raise result

    def _finish(self, ws: ClientConnection) -> None:
        """Record how the socket ended; the application closing it first (a close
        handshake, not a dropped connection) is its stop (compat 4.7)."""
        self.report.close_code = ws.close_code
        if not self.hung_up and not self._ending and ws.close_code not in (None, 1006):
            self.report.stopped = True

    async def _clock(self, ws: ClientConnection) -> None:
        """One tick per 20 ms: send caller audio, advance the playout of agent audio."""
        frame_s = FRAME_MS / 1000 / self.speed
        total = round(self._seconds * 1000 / FRAME_MS)
        start = time.monotonic()
        tick = 0
        silence = bytes(self._frame_pcm)
        while True:
            if ws.close_code is not None or self.hung_up:
                return
            if self.hangup_when_done and tick >= total:
                self.hung_up = True  # the caller hangs up: stop, then close (compat 4.3.6)
                await self._send_stop()
                await ws.close()
                return
            delay = start + tick * frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if ws.close_code is not None or self.hung_up:
                return
            offset = tick * self._frame_pcm
            pcm = self._audio[offset : offset + self._frame_pcm] or silence
            pcm = pcm + silence[len(pcm) :]
            if self.record:
                self._caller += pcm
            heard, echoes = self._advance_playout()
            for name in echoes:
                await self._echo(name)
            if time.monotonic() >= self._stall_until:
                timestamp = tick * FRAME_MS  # ms since the stream started (compat 4.3.3)
                sent = True
                if self.audio_track != "outbound":
                    sent = await self._media(pcm, timestamp, "inbound")
                if sent and self.audio_track != "inbound":
                    sent = await self._media(heard, timestamp, "outbound")
                if not sent:
                    return
                self.report.frames_sent += 1
                self.report.sent_ms += FRAME_MS
                self.started.set()
            tick += 1

    def _encode(self, pcm: bytes) -> bytes:
        if self.format.encoding is AudioEncoding.MULAW:
            return pcm16_to_ulaw(pcm)
        return pcm16_to_l16(pcm, "little")

    async def _media(self, pcm: bytes, timestamp: int, track: str) -> bool:
        self._chunks[track] += 1
        chunk = self._chunks[track]
        payload = self._encode(pcm)
        sid = self.stream_sid if self.twilio else None  # SignalWire media has no streamSid
        return await self._send(
            lambda seq: compat.platform_media_frame(
                sequence_number=seq,
                stream_sid=sid,
                track=track,
                chunk=chunk,
                timestamp=timestamp,
                payload=payload,
            )
        )

    def _advance_playout(self) -> tuple[bytes, list[str]]:
        """Play 20 ms of queued agent audio; collect the marks it reached.

        Returns:
            What the caller heard in these 20 ms (PCM16 LE, silence-padded) and the
            names of the marks whose audio has now played, in order.
        """
        need = self._frame_pcm
        out = bytearray()
        echoes: list[str] = []
        queue = self._playout
        while queue:
            kind, item = queue[0]
            if kind == "mark":
                queue.popleft()
                assert isinstance(item, str)
                echoes.append(item)
                self.report.played_checkpoints.append(item)
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
        return heard, echoes

    async def _echo(self, name: str) -> None:
        await self._send(
            lambda seq: compat.echo_mark_frame(
                sequence_number=seq, stream_sid=self.stream_sid, name=name
            )
        )

    def _refuse(self, reason: str) -> None:
        self.report.refused[reason] = self.report.refused.get(reason, 0) + 1
        log.warning(
            "stream %s: message dropped as %s would (%s)", self.stream_sid, self.provider, reason
        )

    async def _receive(self, ws: ClientConnection) -> None:
        async for message in ws:
            self.report.frames_received += 1
            await self._handle(message)

    async def _handle(self, message: str | bytes) -> None:
        command, _ = compat.parse_command(message, self.format, binary=isinstance(message, bytes))
        if isinstance(command, PlayAudio):
            self.report.play_frames += 1
        else:
            self.events.append(command)
        if not self.bidirectional:
            self._refuse("unidirectional")  # compat 4.1: any message is error 31924
            return
        if isinstance(command, MalformedFrame):
            self.report.malformed += 1
            return
        if isinstance(command, UnknownEvent):
            if self._injected_digit(command):
                return
            if self.strict:
                self._refuse("unsupported-event")
            else:
                self.report.malformed += 1
            return
        if self.strict and command.stream_id != self.stream_sid:
            self._refuse("foreign-stream-sid" if command.stream_id else "missing-stream-sid")
            return
        if isinstance(command, PlayAudio):
            self._play(command)
        elif isinstance(command, Checkpoint):
            if self._queued_bytes == 0 and not self._playout:
                self.report.played_checkpoints.append(command.name)  # nothing queued: at once
                await self._echo(command.name)
            else:
                self._playout.append(("mark", command.name))
        elif isinstance(command, ClearAudio):
            await self._clear()

    def _injected_digit(self, command: UnknownEvent) -> bool:
        """SignalWire's app-side ``dtmf`` (compat 4.5.4), kept; False on Twilio (31924)."""
        if self.twilio or command.event != "dtmf":
            return False
        body = command.payload.get("dtmf")
        digit = body.get("digit") if isinstance(body, dict) else None
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in _DIGITS:
            return False
        if self.strict and command.payload.get("streamSid") != self.stream_sid:
            return False
        self.injected_digits.append(digit.upper())
        return True

    def _play(self, command: PlayAudio) -> None:
        if self.format.encoding is AudioEncoding.MULAW:
            pcm = ulaw_to_pcm16(command.payload)
        else:
            pcm = l16_to_pcm16(command.payload, "little")
        self._playout.append(("audio", pcm))
        self._queued_bytes += len(pcm)
        queued_ms = self._queued_bytes / (2 * self.format.sample_rate) * 1000
        self.report.max_queued_ms = max(self.report.max_queued_ms, queued_ms)

    async def _clear(self) -> None:
        """Flush the queue and return every pending mark at once (compat 4.5.3, 4.6)."""
        report = self.report
        report.clears += 1
        report.cleared_ms += self._queued_bytes / (2 * self.format.sample_rate) * 1000
        pending = [str(item) for kind, item in self._playout if kind == "mark"]
        self._playout.clear()
        self._queued_bytes = 0
        report.voided_checkpoints += pending
        for name in pending:
            await self._echo(name)
