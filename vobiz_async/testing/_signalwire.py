"""``FakeSignalWire``: SignalWire's compat REST API for streams, in memory, on loopback.

What it does, from ``signalwire-compat-streams.md``: HTTP Basic auth with the Project
ID and API token (1.1, 401 with code 20003 otherwise), form bodies only, the
``/api/laml/2010-04-01/Accounts/{ProjectId}/Calls/{CallSid}/Streams[.json]`` paths
(2.1), start with SignalWire's REST ``Track`` default ``both_tracks`` (2.3), stop with
``Status=stopped`` only (2.4), 404 with code 20404 for an unknown call or stream,
RFC 2822 ``date_updated`` (2.2), compat error bodies (2.6), and signed
``stream-stopped`` status callbacks (6, 7.2). Fault injection works like ``FakeVobiz``'s.

Behaviour the spec leaves open, chosen here and documented: stopping a stream that is
already stopped answers 404 (like an unknown one, spec 10 item 2); a second *live*
stream with the same name on one call is refused (400, "Duplicated stream name").

The media half: every stream a REST start or a call's cXML creates is dialed by a
:class:`~vobiz_async.testing.CompatMediaPeer` speaking the Twilio dialect (compat spec
4, 5), through the seam :class:`CompatMediaDialer` (``start(stream)`` after a stream is
accepted, ``stop(stream)`` when it is stopped or its call hangs up; the default is
:class:`CompatPeerDialer`; pass another one as ``media=``). The dialer reports the
socket's fate with ``fake.notify(stream, StreamEvent.STARTED)`` when the socket opened,
or ``StreamEvent.ERROR`` (``connection_refused`` when the server answered the upgrade
with an error, ``connection_refused_timeout_or_ssl_error`` when it was unreachable).
When the socket ends by itself (the application closed it, or the caller hung up) the
stream is stopped and ``stream-stopped`` is posted.

Calls: :meth:`FakeSignalWire.call` creates a caller with something to say; with
``answer_xml`` it runs a cXML document: ``<Connect><Stream url=…>`` (bidirectional,
blocks until the socket closes, then the next verb runs, spec 3.1), ``<Start><Stream>``
(one-way: the application's messages are dropped and counted), ``<Stop><Stream
name>``, ``<Pause length>``, ``<Hangup/>``; other verbs are skipped (logged); when the
document runs out the call ends. ``<Stream>`` attributes: ``url``, ``name``, ``track``,
``codec`` (absent: the call's ``codec``), ``statusCallback``, ``statusCallbackMethod``,
``authBearerToken`` (sent as ``Authorization: Bearer``), ``<Parameter>`` children
(``start.customParameters``). A stream SignalWire would refuse (no ``url``, a ``ws://``
URL or a query string, a bad track or codec) is not dialed: it is recorded stopped
with ``stop_reason="error"`` and ``stream-error`` (``missing_url``, ``invalid_url``,
``invalid_track``, ``codec_error``) is posted.

Which URLs are dialed (the emulator's rule): SignalWire dials ``wss://`` only, and the
fake accepts nothing else, in cXML as in REST. It dials **loopback hosts only**
(127.0.0.0/8, ::1, ``localhost``; another host is recorded and stays in progress,
nothing leaves the machine), and, since test servers speak plain WebSocket, with
``FakeSignalWire(tls=False)`` (the default) it dials a loopback ``wss://host:port/path``
as ``ws://host:port/path``; ``tls=True`` dials it as given, over TLS. So the same
``wss://`` URL (``server.url`` with ``ws`` replaced by ``wss``) goes in a test's cXML
or REST start and in production.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import ipaddress
import logging
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from yarl import URL

from ..client import RetryPolicy
from ..codec import read_wav
from ..errors import StreamClosedError, ValidationError
from ..signalwire._client import API_PATH, SignalWireClient
from ..signalwire._rules import (
    check_callback_method,
    check_callback_url,
    check_name,
    check_stream_url,
    check_track,
)
from ..signalwire._signatures import compute_signature
from ..signalwire.callbacks import StreamEvent
from ._audio import speech_like
from ._calls import CallPeers
from ._compat_media import CODECS, CompatMediaPeer
from ._fake import CallbackRecord
from ._rest import Fault, RecordedRequest

__all__ = [
    "CompatMediaDialer",
    "CompatPeerDialer",
    "FakeCompatCall",
    "FakeCompatStream",
    "FakeSignalWire",
]

log = logging.getLogger("vobiz_async.testing.signalwire")

_PATH = re.compile(
    "^" + re.escape(API_PATH) + r"/Accounts/([^/]+)/Calls/([^/]+)/Streams(?:/([^/]+?))?(?:\.json)?$"
)
_MORE_INFO = "https://signalwire.com/docs/compatibility-api/reference/errors"


@dataclass
class FakeCompatCall(CallPeers[CompatMediaPeer]):
    """A live call on the fake SignalWire: a caller with something to say.

    Attributes:
        call_sid: the call's id (REST paths, ``start.callSid``, callbacks' ``CallSid``).
        audio, audio_rate: what the caller says (PCM16 LE).
        seconds: how long the caller stays on each stream (None: the audio's length);
            when it is over the caller hangs up (``stop``, then the socket closes).
        speed: 1.0 is real time; more runs the peers' clocks faster.
        codec: the format of a ``<Stream>`` without ``codec`` and of REST streams.
        live: False once the call ended; starting a stream on it then answers 400.
        peers: the media peers dialed for this call's streams, in order.
        hangup_cause: why the call ended, once it has: ``"hangup"`` (``fake.hangup()``),
            ``"end-of-xml"``, ``"hangup-verb"``, ``"caller-hangup"`` (the caller hung
            up during a ``<Connect><Stream>``), ``"invalid-answer-xml: <why>"`` or
            ``"closed"`` (the emulator closed).
    """

    call_sid: str
    from_number: str = "+15550000001"
    to_number: str = "+15550000002"
    live: bool = True
    audio: bytes = b""
    audio_rate: int = 8000
    seconds: float | None = 10.0
    speed: float = 1.0
    codec: str = "PCMU@8000h"
    hangup_when_done: bool = True


@dataclass
class FakeCompatStream:
    """A stream as the fake SignalWire knows it.

    Attributes:
        status: ``in-progress`` until stopped, then ``stopped``.
        stop_reason: ``"api"`` (REST stop), ``"stop-verb"`` (``<Stop><Stream>``),
            ``"hangup"``, ``"ended"`` (the socket closed by itself) or ``"error"``
            (refused before dialing, or the socket could not be opened); None while live.
        parameters: the ``ParameterN.Name``/``Value`` pairs (or ``<Parameter>``s), in order.
        bidirectional: a ``<Connect><Stream>``; REST and ``<Start>`` streams are one-way.
        codec: the stream's format (REST streams: PCMU 8 kHz, spec 5.1).
        origin: ``"rest"`` or ``"cxml"``.
    """

    sid: str
    call_sid: str
    name: str
    url: str
    track: str
    status_callback: str | None
    status_callback_method: str
    parameters: dict[str, str]
    bearer_token: str | None
    status: str = "in-progress"
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    stop_reason: str | None = None
    bidirectional: bool = False
    codec: str = "PCMU@8000h"
    origin: str = "rest"


class CompatMediaDialer(Protocol):
    """The seam for the Twilio-dialect media peer (see the module docstring)."""

    async def start(self, stream: FakeCompatStream) -> None:
        """Dial ``stream.url`` as SignalWire would (``connected``, ``start``, ``media``)."""
        ...

    async def stop(self, stream: FakeCompatStream) -> None:
        """Send ``stop`` and close the socket of ``stream``."""
        ...


def _audio_track(track: str) -> Literal["inbound", "outbound", "both"]:
    if track == "outbound_track":
        return "outbound"
    return "both" if track == "both_tracks" else "inbound"


class CompatPeerDialer:
    """The default media half: a :class:`CompatMediaPeer` per stream (module docstring).

    Args:
        fake: the emulator whose streams it dials (its calls give the caller's audio).
    """

    def __init__(self, fake: FakeSignalWire) -> None:
        self.fake = fake
        self.peers: dict[str, CompatMediaPeer] = {}

    async def start(self, stream: FakeCompatStream) -> None:
        """Dial ``stream.url`` (loopback only), wait for the stream to end, and stop it."""
        fake = self.fake
        call = fake.calls.get(stream.call_sid)
        url = fake.dial_url(stream.url)
        if call is None or url is None:
            log.info("not dialing %s: the emulator dials loopback URLs only", stream.url)
            return
        if fake._closing or not call.live or stream.status == "stopped":
            return

        def listener(event: str, params: dict[str, str]) -> None:
            if event == "stream-started":
                fake.notify(stream, StreamEvent.STARTED)
            elif event == "stream-error":
                stream.status, stream.stop_reason = "stopped", "error"
                fake.notify(stream, StreamEvent.ERROR, params.get("StreamError"))

        peer = CompatMediaPeer(
            url,
            audio=call.audio,
            audio_rate=call.audio_rate,
            codec=stream.codec,
            seconds=call.seconds,
            speed=call.speed,
            hangup_when_done=call.hangup_when_done,
            call_sid=call.call_sid,
            stream_sid=stream.sid,
            account_sid=fake.project_id,
            custom_parameters=stream.parameters,
            bearer_token=stream.bearer_token,
            bidirectional=stream.bidirectional,
            listener=listener,
            strict=fake.strict,
            audio_track="inbound" if stream.bidirectional else _audio_track(stream.track),
        )
        self.peers[stream.sid] = peer
        call.peers.append(peer)
        call._new_peer.set()
        await peer.wait_closed()
        if stream.status != "stopped":
            fake._stop(stream, "ended", media=False)

    async def stop(self, stream: FakeCompatStream) -> None:
        """The platform ends the stream: ``stop``, then the socket closes."""
        peer = self.peers.get(stream.sid)
        if peer is not None:
            await peer.hangup()


def _error(status: int, code: int, message: str) -> web.Response:
    body = {"code": code, "message": message, "more_info": _MORE_INFO, "status": status}
    return web.json_response(body, status=status)


class FakeSignalWire:
    """SignalWire's compat streams API on ``127.0.0.1``. ``async with FakeSignalWire()``.

    Args:
        project_id, api_token: the credentials it accepts (random when not given).
        signing_key: signs its status callbacks (``X-SignalWire-Signature``).
        media: the media seam (see the module docstring); None: a
            :class:`CompatPeerDialer` (real media peers on loopback).
        host: the loopback address to bind.
        callback_retry_delay: first delay between status-callback retries.
        tls: False (default): a loopback ``wss://`` stream URL is dialed as ``ws://``
            (test servers speak plain WebSocket); True: dialed as given.
        strict: the media peers refuse what Twilio/SignalWire would (see
            :class:`CompatMediaPeer`); False obeys media/mark/clear with a wrong
            ``streamSid``.
    """

    def __init__(
        self,
        *,
        project_id: str | None = None,
        api_token: str | None = None,
        signing_key: str | None = None,
        media: CompatMediaDialer | None = None,
        host: str = "127.0.0.1",
        callback_retry_delay: float = 0.2,
        tls: bool = False,
        strict: bool = True,
    ) -> None:
        self.project_id = project_id or str(uuid.uuid4())
        self.api_token = api_token or "PT" + secrets.token_hex(16)
        self.signing_key = signing_key or "PSK" + secrets.token_hex(12)
        self.media: CompatMediaDialer = media if media is not None else CompatPeerDialer(self)
        self.tls = tls
        self.strict = strict
        self._closing = False
        self.host = host
        self.callback_retry_delay = callback_retry_delay
        self.calls: dict[str, FakeCompatCall] = {}
        self.streams: dict[str, FakeCompatStream] = {}
        self.requests: list[RecordedRequest] = []
        self.callbacks: list[CallbackRecord] = []
        self.faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"FakeSignalWire(project_id={self.project_id!r}, port={self._port})"

    # -------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> FakeSignalWire:
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
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self._port = int(sockets[0].getsockname()[1])
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        """End every live call (their streams stop), finish pending callbacks (5 s at
        most), stop serving. A stream not yet dialed never dials after this."""
        self._closing = True
        for call in list(self.calls.values()):
            if call.live:
                await self.hangup(call.call_sid, "closed")
        peers = [p for call in self.calls.values() for p in call.peers]
        if peers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*(p.wait_closed() for p in peers))
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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

    def client(self, **kwargs: Any) -> SignalWireClient:
        """A :class:`~vobiz_async.signalwire.SignalWireClient` for this fake (fast retries
        unless overridden)."""
        kwargs.setdefault("retry", RetryPolicy(base_delay=0.01, max_delay=0.05))
        return SignalWireClient(self.project_id, self.api_token, base_url=self.base_url, **kwargs)

    def inject(self, status: int | None = None, **kwargs: Any) -> Fault:
        """Fail the next matching REST request(s); see :class:`~vobiz_async.testing.Fault`
        (``after=True`` performs the request first: a lost response)."""
        fault = Fault(status=status, **kwargs)
        self.faults.append(fault)
        return fault

    def call(
        self,
        call_sid: str | None = None,
        *,
        audio: bytes | str | Path | None = None,
        audio_rate: int = 8000,
        seconds: float | None = 10.0,
        speed: float = 1.0,
        codec: str = "PCMU@8000h",
        answer_xml: str | None = None,
        hangup_when_done: bool = True,
        from_number: str = "+15550000001",
        to_number: str = "+15550000002",
    ) -> FakeCompatCall:
        """A new live call: start streams on it by REST, or give it cXML to run.

        Args:
            audio: what the caller says: PCM16 LE bytes at ``audio_rate``, a path to a
                16-bit WAV file, or None for the built-in speech-like signal.
            seconds: how long the caller stays on a stream (None: the audio's length).
            speed: 1.0 streams in real time; more runs the peers' clocks faster.
            codec: the format of streams that name none (cXML without ``codec``, REST).
            answer_xml: a cXML document to run now (see the module docstring).
            hangup_when_done: the caller hangs up when ``seconds`` are over.

        Raises:
            ValidationError: an unknown ``codec``.
        """
        if codec not in CODECS:
            raise ValidationError("codec", f"must be one of {', '.join(CODECS)}, got {codec!r}")
        if isinstance(audio, (str, Path)):
            wav = read_wav(audio)
            audio, audio_rate = wav.mono(), wav.sample_rate
        elif audio is None:
            audio = speech_like(seconds or 10.0, audio_rate)
        call = FakeCompatCall(
            call_sid or str(uuid.uuid4()),
            from_number,
            to_number,
            audio=audio,
            audio_rate=audio_rate,
            seconds=seconds,
            speed=speed,
            codec=codec,
            hangup_when_done=hangup_when_done,
        )
        self.calls[call.call_sid] = call
        if answer_xml is not None:
            self._spawn_for(call, self._answer(call, answer_xml))
        return call

    async def hangup(self, call_sid: str, cause: str = "hangup") -> None:
        """End a call: its live streams stop (``stop`` on their sockets, then close;
        ``stream-stopped`` posted if configured)."""
        call = self.calls.get(call_sid)
        if call is None or not call.live:
            return
        call.live = False
        call.hangup_cause = call.hangup_cause or cause
        for stream in list(self.streams.values()):
            if stream.call_sid == call_sid and stream.status != "stopped":
                self._stop(stream, "hangup")

    def dial_url(self, url: str) -> str | None:
        """The URL the emulator dials for a stream URL, or None if it dials nothing.

        Loopback hosts only; with ``tls=False`` a ``wss://`` URL is dialed as ``ws://``
        (see the module docstring).
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host != "localhost":
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    return None
            except ValueError:
                return None
        if parts.scheme == "wss" and not self.tls:
            return urlunsplit(("ws", *parts[1:]))
        return url

    def live_streams(self, call_sid: str) -> list[FakeCompatStream]:
        """The call's streams that are not stopped."""
        return [
            s for s in self.streams.values() if s.call_sid == call_sid and s.status != "stopped"
        ]

    # -------------------------------------------------------------- callbacks
    def notify(
        self, stream: FakeCompatStream, event: StreamEvent, error: str | None = None
    ) -> None:
        """Post a signed status callback for ``stream`` (if it has a ``StatusCallback``),
        retried up to 3 times on a non-2xx answer (spec 6.1)."""
        if not stream.status_callback or self._http is None:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        params = {
            "AccountSid": self.project_id,
            "CallSid": stream.call_sid,
            "StreamSid": stream.sid,
            "StreamName": stream.name,
            "StreamEvent": event.value,
            "StreamTrack": stream.track,
            "Timestamp": now.replace("+00:00", "Z"),
        }
        if error is not None:
            params["StreamError"] = error
        self._spawn(self._post_callback(stream, event.value, params))

    async def _post_callback(
        self, stream: FakeCompatStream, event: str, params: dict[str, str]
    ) -> None:
        assert stream.status_callback is not None
        assert self._http is not None
        method = stream.status_callback_method
        url = stream.status_callback
        if method == "GET":
            url += ("&" if "?" in url else "?") + urlencode(params)
            signature = compute_signature(url, {}, self.signing_key)
        else:
            signature = compute_signature(url, params, self.signing_key)
        headers = {"X-SignalWire-Signature": signature}
        status: int | None = None
        attempts = 0
        delay = self.callback_retry_delay
        while attempts < 4:
            attempts += 1
            try:
                data = None if method == "GET" else params
                # encoded=True: send the URL exactly as signed (no re-quoting by yarl).
                target = URL(url, encoded=True)
                async with self._http.request(method, target, data=data, headers=headers) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.debug("callback %s to %s failed: %s", event, url, exc)
                status = None
            if status is not None and 200 <= status < 300:
                break
            await asyncio.sleep(delay)
            delay *= 2
        self.callbacks.append(
            CallbackRecord(event, stream.status_callback, method, params, status, attempts)
        )

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn_for(self, call: FakeCompatCall, coro: Any) -> asyncio.Task[Any]:
        """A task that belongs to ``call`` (its ``wait_done()`` waits for it)."""
        task = self._spawn(coro)
        call._tasks.add(task)
        task.add_done_callback(call._tasks.discard)
        return task

    # ------------------------------------------------------------------- REST
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        try:
            form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = []
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), headers, form, raw)
        )
        fault = self._take_fault(request.method, request.path)
        if fault is not None and not fault.after:
            return await self._apply(request, fault)
        response = self._route(request, raw)
        if fault is not None:
            return await self._apply(request, fault)
        return response

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _apply(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp treats it as a dropped connection
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        status = fault.status or 500
        if fault.body is not None:
            return web.Response(status=status, body=fault.body, headers=headers)
        response = _error(status, 10000 + status, f"injected {status}")
        response.headers.update(headers)
        return response

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user.encode(), self.project_id.encode()) and (
            secrets.compare_digest(password.encode(), self.api_token.encode())
        )

    def _route(self, request: web.Request, raw: bytes) -> web.Response:
        if not self._authorized(request):
            return _error(401, 20003, "Authentication failed")
        match = _PATH.match(request.raw_path.split("?", 1)[0])
        if match is None:
            return _error(404, 20404, "The requested resource was not found")
        account, call_sid, sid = (unquote(g) if g else None for g in match.groups())
        if account != self.project_id:
            return _error(401, 20003, "Authentication failed")
        if request.method != "POST":
            return _error(405, 20004, "Method not allowed")
        if request.content_type != "application/x-www-form-urlencoded":
            return _error(400, 10000, "the body must be application/x-www-form-urlencoded")
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return _error(400, 10000, "the body is not UTF-8")
        call = self.calls.get(call_sid or "")
        if call is None:
            return _error(404, 20404, f"call {call_sid} not found")
        if sid is None:
            return self._start(call, form)
        return self._stop_request(call, sid, form)

    def _start(self, call: FakeCompatCall, form: dict[str, str]) -> web.Response:
        if not call.live:
            return _error(400, 10000, "the call is not in progress")
        if "Url" not in form:
            return _error(400, 10000, "missing_url")
        try:
            url = check_stream_url(form["Url"], "Url")
            track = check_track(form.get("Track", "both_tracks"), "Track").value
            callback = form.get("StatusCallback")
            if callback is not None:
                check_callback_url(callback, "StatusCallback")
            method = check_callback_method(
                form.get("StatusCallbackMethod", "POST"), "StatusCallbackMethod"
            )
            name = check_name(form["Name"], "Name") if "Name" in form else None
        except ValidationError as exc:
            return _error(400, 10000, str(exc))
        parameters: dict[str, str] = {}
        for n in range(1, 100):
            key = form.get(f"Parameter{n}.Name")
            if key is None:
                break
            parameters[key] = form.get(f"Parameter{n}.Value", "")
        if f"Parameter{100}.Name" in form:
            return _error(400, 10000, "at most 99 parameters")
        if name is not None and any(s.name == name for s in self.live_streams(call.call_sid)):
            return _error(400, 10000, "Duplicated stream name")
        sid = str(uuid.uuid4())
        stream = FakeCompatStream(
            sid=sid,
            call_sid=call.call_sid,
            name=name or sid,
            url=url,
            track=track,
            status_callback=callback,
            status_callback_method=method,
            parameters=parameters,
            bearer_token=form.get("AuthorizationBearerToken"),
            codec=call.codec,
        )
        self.streams[sid] = stream
        self._dial(stream)
        return web.json_response(self._wire(stream))

    def _stop_request(
        self, call: FakeCompatCall, sid_or_name: str, form: dict[str, str]
    ) -> web.Response:
        if form.get("Status") != "stopped":
            return _error(400, 10000, "Status must be 'stopped'")
        candidates = [
            s
            for s in self.streams.values()
            if s.call_sid == call.call_sid and sid_or_name in (s.sid, s.name)
        ]
        live = [s for s in candidates if s.status != "stopped"]
        if not live:
            return _error(404, 20404, f"stream {sid_or_name} not found or already stopped")
        stream = live[0]
        self._stop(stream, "api")
        return web.json_response(self._wire(stream))

    def _dial(self, stream: FakeCompatStream) -> asyncio.Task[Any]:
        """Start the media half of a stream in the background (a task of its call)."""
        call = self.calls.get(stream.call_sid)
        if call is None:
            return self._spawn(self.media.start(stream))
        return self._spawn_for(call, self.media.start(stream))

    def _stop(self, stream: FakeCompatStream, reason: str, *, media: bool = True) -> None:
        stream.status = "stopped"
        stream.stop_reason = reason
        stream.date_updated = datetime.now(UTC).replace(microsecond=0)
        if media:
            self._spawn(self.media.stop(stream))
        self.notify(stream, StreamEvent.STOPPED)

    def _wire(self, stream: FakeCompatStream) -> dict[str, Any]:
        return {
            "sid": stream.sid,
            "account_sid": self.project_id,
            "call_sid": stream.call_sid,
            "name": stream.name,
            "status": stream.status,
            "date_updated": email.utils.format_datetime(stream.date_updated),
            "uri": f"{API_PATH}/Accounts/{self.project_id}/Calls/{stream.call_sid}"
            f"/Streams/{stream.sid}.json",
        }

    # ------------------------------------------------------------------- cXML
    async def _answer(self, call: FakeCompatCall, answer_xml: str) -> None:
        """Run a cXML document (spec 3.1); see the module docstring for what it obeys."""
        try:
            root = ET.fromstring(answer_xml)
        except ET.ParseError as exc:
            log.warning("call %s: invalid cXML (%s); hanging up", call.call_sid, exc)
            await self.hangup(call.call_sid, f"invalid-answer-xml: {exc}")
            return
        if root.tag != "Response":
            problem = f"the root element is <{root.tag}>, not <Response>"
            log.warning("call %s: invalid cXML (%s); hanging up", call.call_sid, problem)
            await self.hangup(call.call_sid, f"invalid-answer-xml: {problem}")
            return
        cause = "end-of-xml"
        for verb in root:
            if not call.live:
                return
            if verb.tag in ("Connect", "Start"):
                for element in verb.findall("Stream"):
                    stream = self._xml_stream(call, element, bidirectional=verb.tag == "Connect")
                    if stream is None:
                        continue
                    task = self._dial(stream)
                    if verb.tag == "Connect":
                        await task  # blocks until the socket closes (spec 3.1)
                        if not call.live:
                            return
                        if stream.stop_reason == "ended" and call.peers and call.peers[-1].hung_up:
                            cause = "caller-hangup"  # the caller hung up: no next verb
                            break
                if cause == "caller-hangup":
                    break
            elif verb.tag == "Stop":
                for element in verb.findall("Stream"):
                    name = element.get("name")
                    for stream in self.live_streams(call.call_sid):
                        if name in (stream.name, stream.sid):
                            self._stop(stream, "stop-verb")
            elif verb.tag == "Pause":
                length = verb.get("length", "1")
                seconds = float(length) if length.strip().isdigit() else 1.0
                await asyncio.sleep(seconds / call.speed)
            elif verb.tag == "Hangup":
                cause = "hangup-verb"
                break
            else:
                log.info("call %s: <%s> is not emulated; skipped", call.call_sid, verb.tag)
        await self.hangup(call.call_sid, cause)

    def _xml_stream(
        self, call: FakeCompatCall, element: ET.Element, *, bidirectional: bool
    ) -> FakeCompatStream | None:
        """The stream one ``<Stream>`` asks for, or None (after ``stream-error``) when
        SignalWire would refuse it (spec 3.2, 3.5, 6.3)."""
        parameters = {
            p.get("name", ""): p.get("value", "")
            for p in element.findall("Parameter")
            if p.get("name")
        }
        sid = str(uuid.uuid4())
        callback = element.get("statusCallback")
        method = (element.get("statusCallbackMethod") or "POST").upper()
        stream = FakeCompatStream(
            sid=sid,
            call_sid=call.call_sid,
            name=element.get("name") or sid,
            url=element.get("url", ""),
            track=element.get("track", "inbound_track"),
            status_callback=callback,
            status_callback_method=method if method in ("GET", "POST") else "POST",
            parameters=parameters,
            bearer_token=element.get("authBearerToken"),
            bidirectional=bidirectional,
            codec=element.get("codec", call.codec),
            origin="cxml",
        )
        self.streams[sid] = stream
        error: str | None = None
        if not stream.url:
            error = "missing_url"
        else:
            try:
                check_stream_url(stream.url)
            except ValidationError:
                error = "invalid_url"
        if error is None:
            try:
                track = check_track(stream.track)
            except ValidationError:
                error = "invalid_track"
            else:
                if bidirectional and track.value != "inbound_track":
                    error = "invalid_track"  # a bidirectional stream is inbound only (3.2)
        if error is None and stream.codec not in CODECS:
            error = "codec_error"
        if error is not None:
            log.warning("call %s: <Stream> refused (%s)", call.call_sid, error)
            stream.status, stream.stop_reason = "stopped", "error"
            self.notify(stream, StreamEvent.ERROR, error)
            return None
        return stream
