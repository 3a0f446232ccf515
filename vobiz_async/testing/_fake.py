"""FakeVobiz: a local Vobiz for tests, demos and users' own agent tests."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .._rules import (
    check_callback_method,
    check_callback_url,
    check_stream_timeout,
    check_track,
    format_extra_headers,
    validate_inbound_content_type,
    validate_service_url,
)
from ..client import RetryPolicy, Timeouts, VobizClient
from ..codec import AudioFormat, ByteOrder, read_wav
from ..errors import CodecError, StreamClosedError, ValidationError
from ..signatures import sign_headers
from ._audio import speech_like
from ._calls import CallPeers
from ._media import MediaPeer
from ._rest import FakeStreamRecord, Fault, RecordedRequest, RestState

__all__ = ["CallbackRecord", "FakeCall", "FakeVobiz"]

log = logging.getLogger("vobiz_async.testing")


_VERBS = frozenset(
    {
        "Stream", "Wait", "Hangup", "Record", "Speak", "Play", "Dial", "Conference",
        "GetDigits", "GetInput", "PreAnswer", "Redirect", "DTMF", "Message",
    }
)  # fmt: skip


def _track(value: str) -> Literal["inbound", "outbound", "both"]:
    if value == "outbound":
        return "outbound"
    return "both" if value == "both" else "inbound"


def _check_answer(root: ET.Element) -> str | None:
    """Why Vobiz could not run this answer document, or None (spec 3.1).

    Only ``<Stream>`` attributes are checked in depth (the rules of
    :mod:`vobiz_async._rules`); ``<Connect>`` is Twilio's verb, copied onto two Vobiz
    doc pages, and is refused; ``<Record>`` beside ``<Stream>`` is accepted (documented
    since May 2026) and holds the call for its ``maxLength``.
    """
    if root.tag != "Response":
        return f"the root element is <{root.tag}>, not <Response>"
    for element in root:
        if element.tag == "Connect":
            return "<Connect> is a Twilio verb; Vobiz streams with a top-level <Stream>"
        if element.tag not in _VERBS:
            return f"unknown verb <{element.tag}>"
        for verb, name in (("Wait", "length"), ("Record", "maxLength")):
            value = element.get(name)
            if element.tag == verb and value is not None and not value.strip().isdigit():
                return f"<{verb} {name}>: {value!r} is not whole seconds"
        if element.tag != "Stream":
            continue
        try:
            _check_stream_attributes(element)
        except ValidationError as exc:
            return f"<Stream {exc.field}>: {exc.reason}"
    return None


def _check_stream_attributes(element: ET.Element) -> None:
    """The rules of spec 3.1 on one parsed ``<Stream>`` element.

    Raises:
        ValidationError: the first rule broken.
    """
    validate_service_url((element.text or "").strip(), "url")
    for name in ("bidirectional", "keepCallAlive"):
        if element.get(name, "false").lower() not in ("true", "false"):
            raise ValidationError(name, 'must be "true" or "false"')
    check_track(element.get("audioTrack"), None, "audioTrack", default=None)
    content_type = element.get("contentType")
    if content_type is not None and content_type.replace(" ", "") != "audio/x-l16;rate=24000":
        # 24 kHz is accepted by Vobiz's parser but never streams (spec 3.1): not refused.
        validate_inbound_content_type(content_type, "contentType")
    timeout = element.get("streamTimeout")
    if timeout is not None:
        if not timeout.strip().isdigit():
            raise ValidationError("streamTimeout", f"{timeout!r} is not whole seconds")
        check_stream_timeout(int(timeout), "streamTimeout")
    check_callback_method(element.get("statusCallbackMethod"), "statusCallbackMethod")
    check_callback_url(element.get("statusCallbackUrl"), "statusCallbackUrl")
    headers = element.get("extraHeaders")
    if headers is not None:
        format_extra_headers(headers, separator="=", field="extraHeaders")


def _bound_port(site: web.TCPSite) -> int:
    """The port the OS picked for a site bound to port 0."""
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError("the site is not listening")
    port: int = sockets[0].getsockname()[1]
    return port


@dataclass
class FakeCall(CallPeers[MediaPeer]):
    """A live call on the fake Vobiz: a caller with something to say.

    Attributes:
        call_uuid: the call's id (REST paths, ``start.callId``, callbacks' ``CallUUID``).
        audio, audio_rate: what the caller says (PCM16 LE).
        seconds: how long the caller stays on each stream (None: the audio's length).
        live: False once hung up; starting a stream on it then answers 404.
        peers: the media peers dialed for this call's streams, in order.
        hangup_cause: why the call ended, once it has: ``"hangup"`` (``hangup()``),
            ``"end-of-xml"`` (nothing left in the answer document: spec 3.2, cause
            4010), ``"hangup-verb"``, ``"invalid-answer-xml: <why>"`` (cause 8011) or
            ``"closed"`` (the emulator closed).
    """

    call_uuid: str
    audio: bytes = b""
    audio_rate: int = 8000
    seconds: float | None = None
    speed: float = 1.0
    shape: Literal["nested", "flat"] = "nested"
    l16_byte_order: ByteOrder = "little"
    hangup_when_done: bool = True
    from_number: str = "919800000001"
    to_number: str = "918000000002"
    live: bool = True


@dataclass(frozen=True)
class CallbackRecord:
    """A status callback the fake delivered (or tried to)."""

    event: str
    url: str
    method: str
    params: dict[str, str]
    status: int | None
    attempts: int


class FakeVobiz:
    """A local Vobiz on 127.0.0.1: the Audio Streams REST API and the media side.

    * REST: the five stream endpoints in memory, with Vobiz's observable behaviour
      (both auth headers, PascalCase paths with the trailing slash or 401, 202 on
      start, 204 on stop, 404 for unknown or stopped streams, a JSON-boolean
      ``bidirectional`` giving a one-way stream) and fault injection (:meth:`inject`).
    * Calls: :meth:`call` creates a live call with a caller audio source; a REST start
      on it, or its answer XML's ``<Stream>``, makes a :class:`MediaPeer` dial the
      ``service_url`` and stream the caller's audio in the requested format. Only
      loopback URLs are dialed (127.0.0.0/8, ::1, localhost); a stream to any other
      URL is recorded and stays in progress, but nothing leaves this machine.
    * Status callbacks: ``StartStream``, ``PlayedStream``, ``ClearedAudio``,
      ``DroppedStream`` and ``StopStream`` are posted (form-encoded, or as a GET) to a
      stream's ``status_callback_url``, signed V2 and V3 with the auth token, retried
      up to 3 times on failure like Vobiz does.

    Args:
        auth_id, auth_token: the credentials it accepts (and signs callbacks with).
        list_envelope: ``"page"`` (documented), ``"meta"`` (Plivo-style) or ``"bare"``.
        default_audio_track: used when a REST start omits ``audio_track``.
        host: the loopback address to bind.
        port: the port to bind (0: any free port).
        callback_retry_delay: first delay between callback retries (doubles each time).
        callback_deadline: seconds a callback handler has to answer before the attempt
            counts as failed and is retried (3 s on Vobiz, spec 5.1).
        strict: refuse what live Vobiz refuses (the default): media commands without
            or with a wrong ``streamId``, ``playAudio`` without an integer
            ``sampleRate`` or with ``;rate=`` in its ``contentType`` are dropped and
            counted in the peer's ``report.refused``. False obeys them, as older docs
            allowed. See the README, "Test your agent with the emulator".
    """

    def __init__(
        self,
        *,
        auth_id: str = "MA_FAKE0001",
        auth_token: str = "fake-token",
        list_envelope: str = "page",
        default_audio_track: str = "inbound",
        host: str = "127.0.0.1",
        port: int = 0,
        callback_retry_delay: float = 0.2,
        callback_deadline: float = 3.0,
        strict: bool = True,
    ) -> None:
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.callback_retry_delay = callback_retry_delay
        self.callback_deadline = callback_deadline
        self.strict = strict
        self._closing = False
        self.calls: dict[str, FakeCall] = {}
        self.peers: dict[str, MediaPeer] = {}
        self.callbacks: list[CallbackRecord] = []
        self.rest = RestState(
            auth_id=auth_id,
            auth_token=auth_token,
            list_envelope=list_envelope,
            default_audio_track=default_audio_track,
            is_live=self._is_live,
            on_started=self._stream_started,
            on_stopped=self._stream_stopped,
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> FakeVobiz:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start serving the REST API."""
        self._runner = web.AppRunner(self.rest.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self._port = _bound_port(site)
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        """Hang up every call, finish pending callbacks, stop serving.

        A stream not yet dialed never dials after this.
        """
        self._closing = True
        for call in self.calls.values():
            if call.live:
                call.live = False
                call.hangup_cause = call.hangup_cause or "closed"
        for peer in list(self.peers.values()):
            await peer.hangup()
        pending = [p.wait_closed() for p in self.peers.values()]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*pending, return_exceptions=True)
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: pass it as a client's ``base_url``."""
        if self._port is None:
            raise StreamClosedError("the fake is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every REST request received, in order."""
        return self.rest.requests

    @property
    def streams(self) -> dict[str, FakeStreamRecord]:
        """Every stream ever started (REST or XML), by stream id."""
        return self.rest.streams

    def client(self, **kwargs: Any) -> VobizClient:
        """A :class:`VobizClient` for this fake (fast retries unless overridden)."""
        kwargs.setdefault("retry", RetryPolicy(base_delay=0.01, max_delay=0.05))
        kwargs.setdefault("timeout", Timeouts(connect=2.0, total=5.0))
        return VobizClient(self.auth_id, self.auth_token, base_url=self.base_url, **kwargs)

    def inject(self, status: int | None = None, **kwargs: Any) -> Fault:
        """Fail the next matching REST request(s); see :class:`~vobiz_async.testing.Fault`."""
        fault = Fault(status=status, **kwargs)
        self.rest.inject(fault)
        return fault

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ calls
    def call(
        self,
        call_uuid: str | None = None,
        *,
        audio: bytes | str | Path | None = None,
        audio_rate: int = 8000,
        seconds: float | None = 10.0,
        speed: float = 1.0,
        shape: Literal["nested", "flat"] = "nested",
        l16_byte_order: ByteOrder = "little",
        hangup_when_done: bool = True,
        answer_xml: str | None = None,
        answer_url: str | None = None,
    ) -> FakeCall:
        """Create a live call.

        Args:
            audio: what the caller says: PCM16 LE bytes at ``audio_rate``, a path to a
                16-bit WAV file, or None for the built-in speech-like signal.
            seconds: how long the caller stays on a stream (None: the audio's length).
            speed: 1.0 streams in real time; more runs the peer's clocks faster. Meant
                for receive-side tests: the media server paces playback in real time, so
                with ``speed > 1`` the caller's playout runs ahead of it.
            shape, l16_byte_order: how the media peer speaks (spec 4.3.2, 4.6).
            hangup_when_done: the caller hangs up when ``seconds`` are over.
            answer_xml: an answer document to obey now (its ``<Stream>`` dials).
            answer_url: a URL to fetch the answer document from (POSTed like Vobiz
                does, form-encoded with ``Event=StartApp``).
        """
        if isinstance(audio, (str, Path)):
            wav = read_wav(audio)
            audio, audio_rate = wav.mono(), wav.sample_rate
        elif audio is None:
            audio = speech_like(seconds or 10.0, audio_rate)
        call = FakeCall(
            call_uuid or str(uuid.uuid4()),
            audio=audio,
            audio_rate=audio_rate,
            seconds=seconds,
            speed=speed,
            shape=shape,
            l16_byte_order=l16_byte_order,
            hangup_when_done=hangup_when_done,
        )
        self.calls[call.call_uuid] = call
        if answer_xml is not None or answer_url is not None:
            self._spawn_for(call, self._answer(call, answer_xml, answer_url))
        return call

    def _spawn_for(self, call: FakeCall, coro: Any) -> asyncio.Task[Any]:
        """A task that belongs to ``call`` (its ``wait_done()`` waits for it)."""
        task = self._spawn(coro)
        call._tasks.add(task)
        task.add_done_callback(call._tasks.discard)
        return task

    async def hangup(self, call_uuid: str, cause: str = "hangup") -> None:
        """End a call at any moment: its streams complete and their sockets close (no
        StopStream); a stream not yet dialed never dials."""
        call = self.calls.get(call_uuid)
        if call is not None:
            call.live = False
            call.hangup_cause = call.hangup_cause or cause
        for record in list(self.streams.values()):
            if record.call_uuid == call_uuid:
                await self.rest.stop(record, "hangup")
        for peer in list(call.peers if call is not None else ()):
            await peer.hangup()

    def peer(self, stream_id: str) -> MediaPeer:
        """The media peer of a stream."""
        return self.peers[stream_id]

    def _is_live(self, call_uuid: str) -> bool:
        call = self.calls.get(call_uuid)
        return call is not None and call.live

    # ---------------------------------------------------------------- media
    async def _stream_started(self, record: FakeStreamRecord) -> None:
        """REST hook: the stream was created; dial in the background."""
        call = self.calls.get(record.call_uuid)
        if call is not None:
            self._spawn_for(call, self._run_stream(call, record, 0))

    @staticmethod
    def _dialable(url: str) -> bool:
        """The emulator only ever dials loopback addresses (tests stay on this machine)."""
        host = (urlsplit(url).hostname or "").lower()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    async def _run_stream(self, call: FakeCall, record: FakeStreamRecord, retries: int) -> None:
        """Dial, wait for the stream to end, and redial on failure (``maxRetries``)."""
        if not self._dialable(record.service_url):
            log.info("not dialing %s: the emulator dials loopback URLs only", record.service_url)
            return
        try:
            fmt = AudioFormat.parse(record.content_type)
        except CodecError:
            fmt = AudioFormat.parse("audio/x-l16;rate=8000")
        if fmt.sample_rate == 24000:
            # G4: 24 kHz inbound is accepted but never delivers media (spec 4.5).
            log.warning(
                "stream %s asked for 24 kHz inbound: no media, as on Vobiz", record.stream_id
            )
            return
        while True:
            if self._closing or not call.live or record.status != "in-progress":
                # Stopped (REST DELETE), hung up or closed before dialing: nothing dials.
                log.info("stream %s ended before its socket opened", record.stream_id)
                return
            peer = self._dial(call, record, fmt)
            report = await peer.wait_closed()
            never_opened = report.rejected_status is not None or report.connect_error is not None
            failed = never_opened or (
                report.close_code in (None, 1006)
                and not peer.hung_up
                and not report.stopped
                and not report.not_dialed
            )
            if record.status == "in-progress":
                await self.rest.stop(record, "ended", "failed" if never_opened else "completed")
            if not (failed and retries > 0 and call.live and not self._closing):
                return
            # maxRetries: a fresh socket with a new start and a new streamId (spec 3.1).
            retries -= 1
            record = FakeStreamRecord(**{**record.__dict__, "stream_id": str(uuid.uuid4())})
            record.status, record.end_time = "in-progress", None
            self.rest.add(record)

    def _dial(self, call: FakeCall, record: FakeStreamRecord, fmt: AudioFormat) -> MediaPeer:
        def listener(event: str, params: dict[str, str]) -> None:
            if record.status_callback_url:
                self._spawn(self._post_callback(call, record, event, params))

        peer = MediaPeer(
            record.service_url,
            audio=call.audio,
            audio_rate=call.audio_rate,
            content_type=fmt.content_type,
            shape=call.shape,
            l16_byte_order=call.l16_byte_order,
            seconds=call.seconds,
            speed=call.speed,
            hangup_when_done=call.hangup_when_done,
            call_id=call.call_uuid,
            stream_id=record.stream_id,
            bidirectional=record.bidirectional,
            listener=listener,
            strict=self.strict,
            audio_track=_track(record.audio_track),
            stream_timeout=record.stream_timeout,
        )
        self.peers[record.stream_id] = peer
        call.peers.append(peer)
        call._new_peer.set()
        return peer

    async def _stream_stopped(self, record: FakeStreamRecord, reason: str) -> None:
        peer = self.peers.get(record.stream_id)
        if peer is None or reason == "ended":
            return
        if reason == "api" and record.status_callback_url:
            call = self.calls.get(record.call_uuid)
            if call is not None:
                self._spawn(self._post_callback(call, record, "StopStream", {}))
        await peer.hangup()

    # ------------------------------------------------------------- answer XML
    async def _answer(self, call: FakeCall, answer_xml: str | None, answer_url: str | None) -> None:
        """Run an answer document the way Vobiz does (spec 3.2).

        The whole document is checked first; anything Vobiz cannot run (malformed XML,
        an invalid ``<Stream>`` attribute, a Twilio ``<Connect>``) drops the call, as
        "Invalid Answer XML" (cause 8011, spec 1.3) does. When the document runs out
        the call hangs up ("End Of XML Instructions", cause 4010): a ``<Stream>``
        without ``keepCallAlive`` and nothing after it therefore never gets media.
        """
        if answer_url is not None:
            assert self._http is not None
            form = {
                "Event": "StartApp",
                "CallUUID": call.call_uuid,
                "From": call.from_number,
                "To": call.to_number,
                "Direction": "inbound",
                "CallStatus": "in-progress",
            }
            try:
                async with self._http.post(answer_url, data=form) as resp:
                    answer_xml = await resp.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("call %s: answer_url failed (%s); hanging up", call.call_uuid, exc)
                await self.hangup(call.call_uuid, "answer-url-failed")
                return
        try:
            root = ET.fromstring(answer_xml or "")
        except ET.ParseError as exc:
            # Vobiz answers, then drops the call ~1 s later (cause 8011, spec 1.3).
            log.warning("call %s: invalid answer XML (%s); hanging up", call.call_uuid, exc)
            await self.hangup(call.call_uuid, f"invalid-answer-xml: {exc}")
            return
        problem = _check_answer(root)
        if problem is not None:
            log.warning("call %s: invalid answer XML (%s); hanging up", call.call_uuid, problem)
            await self.hangup(call.call_uuid, f"invalid-answer-xml: {problem}")
            return
        cause = "end-of-xml"
        for element in root:
            if not call.live:
                return
            if element.tag == "Stream":
                await self._xml_stream(call, element)
            elif element.tag == "Wait":
                await asyncio.sleep(float(element.get("length", "1")) / call.speed)
            elif element.tag == "Record":
                # Recording is not emulated: the verb holds the call for maxLength s.
                await asyncio.sleep(float(element.get("maxLength", "60")) / call.speed)
            elif element.tag == "Hangup":
                cause = "hangup-verb"
                break
        if cause == "end-of-xml":
            log.info("call %s: end of XML instructions; hanging up (4010)", call.call_uuid)
        await self.hangup(call.call_uuid, cause)

    async def _xml_stream(self, call: FakeCall, element: ET.Element) -> None:
        """Obey one ``<Stream>`` (already checked by :func:`_check_answer`): in the
        background, or holding the call until it ends when ``keepCallAlive`` is true
        (spec 3.2)."""
        url = (element.text or "").strip()
        bidirectional = element.get("bidirectional", "false").lower() == "true"
        track = element.get("audioTrack", "inbound")
        if bidirectional and track != "inbound":
            log.warning(
                "call %s: bidirectional <Stream> with audioTrack=%s is rejected",
                call.call_uuid,
                track,
            )
            return
        try:
            retries = max(0, min(10, int(element.get("maxRetries", "0"))))
        except ValueError:
            retries = 0  # Vobiz: a non-integer maxRetries is 0 (spec 3.1)
        record = FakeStreamRecord(
            stream_id=str(uuid.uuid4()),
            call_uuid=call.call_uuid,
            service_url=url,
            bidirectional=bidirectional,
            audio_track=track,
            content_type=element.get("contentType", "audio/x-l16;rate=8000"),
            stream_timeout=int(element.get("streamTimeout", "86400")),
            status_callback_url=element.get("statusCallbackUrl"),
            status_callback_method=element.get("statusCallbackMethod", "POST").upper(),
            extra_headers=element.get("extraHeaders"),
            origin="xml",
        )
        self.rest.add(record)
        if element.get("keepCallAlive", "false").lower() == "true":
            await self._run_stream(call, record, retries)
        else:
            self._spawn_for(call, self._run_stream(call, record, retries))

    # -------------------------------------------------------------- callbacks
    async def _post_callback(
        self, call: FakeCall, record: FakeStreamRecord, event: str, extra: dict[str, str]
    ) -> None:
        url = record.status_callback_url
        if not url or self._http is None:
            return
        params = {
            "From": call.from_number,
            "To": call.to_number,
            "CallUUID": call.call_uuid,
            "Event": event,
            "StreamID": record.stream_id,
            "ParentAuthID": self.auth_id,
            "status_callback_url": url,
            "status_callback_method": record.status_callback_method,
            "Timestamp": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "Error": "",
            **extra,
        }
        for pair in (record.extra_headers or "").split(","):
            key, sep, value = pair.partition(":" if ":" in pair else "=")
            if sep and key.strip():
                params[f"X-VH-{key.strip()}"] = value.strip()
        method = record.status_callback_method
        status: int | None = None
        attempts = 0
        delay = self.callback_retry_delay
        while attempts < 4:  # the first try and up to 3 retries (spec 5.1)
            attempts += 1
            nonce = "".join(secrets.choice("0123456789") for _ in range(20))
            headers = {"User-Agent": "Vobiz", **sign_headers(url, self.auth_token, nonce)}
            deadline = aiohttp.ClientTimeout(total=self.callback_deadline)
            try:
                if method == "GET":
                    request = self._http.get(url, params=params, headers=headers, timeout=deadline)
                else:
                    request = self._http.post(url, data=params, headers=headers, timeout=deadline)
                async with request as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("callback %s to %s failed: %s", event, url, exc)
                status = None
            if status == 200 or attempts == 4:
                break
            await asyncio.sleep(delay)
            delay *= 2
        self.callbacks.append(CallbackRecord(event, url, method, params, status, attempts))
