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

The media half (a peer that dials the stream's ``wss://`` URL and speaks the Twilio
dialect) is not here: it needs the media plane's provider dialects (issue 14, "Media").
Its seam is :class:`CompatMediaDialer`: pass one as ``media=`` and the fake calls its
``start(stream)`` after every accepted REST start and ``stop(stream)`` when a stream is
stopped or its call hangs up; the dialer reports the socket's fate with
``fake.notify(stream, StreamEvent.STARTED)`` (or ``ERROR``). Without a dialer nothing
dials and no ``stream-started`` is posted (a 2xx only means "accepted", spec 2.3).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode

import aiohttp
from aiohttp import web
from yarl import URL

from ..client import RetryPolicy
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
from ._fake import CallbackRecord
from ._rest import Fault, RecordedRequest

__all__ = ["CompatMediaDialer", "FakeCompatCall", "FakeCompatStream", "FakeSignalWire"]

log = logging.getLogger("vobiz_async.testing.signalwire")

_PATH = re.compile(
    "^" + re.escape(API_PATH) + r"/Accounts/([^/]+)/Calls/([^/]+)/Streams(?:/([^/]+?))?(?:\.json)?$"
)
_MORE_INFO = "https://signalwire.com/docs/compatibility-api/reference/errors"


@dataclass
class FakeCompatCall:
    """A live call on the fake (start streams on it with its ``call_sid``)."""

    call_sid: str
    from_number: str = "+15550000001"
    to_number: str = "+15550000002"
    live: bool = True


@dataclass
class FakeCompatStream:
    """A stream as the fake SignalWire knows it.

    Attributes:
        status: ``in-progress`` until stopped, then ``stopped``.
        stop_reason: ``"api"`` (REST stop) or ``"hangup"``; None while live.
        parameters: the ``ParameterN.Name``/``Value`` pairs, in order.
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


class CompatMediaDialer(Protocol):
    """The seam for the Twilio-dialect media peer (not implemented here, see above)."""

    async def start(self, stream: FakeCompatStream) -> None:
        """Dial ``stream.url`` as SignalWire would (``connected``, ``start``, ``media``)."""
        ...

    async def stop(self, stream: FakeCompatStream) -> None:
        """Send ``stop`` and close the socket of ``stream``."""
        ...


def _error(status: int, code: int, message: str) -> web.Response:
    body = {"code": code, "message": message, "more_info": _MORE_INFO, "status": status}
    return web.json_response(body, status=status)


class FakeSignalWire:
    """SignalWire's compat streams API on ``127.0.0.1``. ``async with FakeSignalWire()``.

    Args:
        project_id, api_token: the credentials it accepts (random when not given).
        signing_key: signs its status callbacks (``X-SignalWire-Signature``).
        media: the media seam (see the module docstring); None: nothing dials.
        callback_retry_delay: first delay between status-callback retries.
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
    ) -> None:
        self.project_id = project_id or str(uuid.uuid4())
        self.api_token = api_token or "PT" + secrets.token_hex(16)
        self.signing_key = signing_key or "PSK" + secrets.token_hex(12)
        self.media = media
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
        """Finish pending callbacks (5 s at most), stop serving."""
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
        from_number: str = "+15550000001",
        to_number: str = "+15550000002",
    ) -> FakeCompatCall:
        """A new live call to start streams on."""
        call = FakeCompatCall(call_sid or str(uuid.uuid4()), from_number, to_number)
        self.calls[call.call_sid] = call
        return call

    async def hangup(self, call_sid: str) -> None:
        """End a call: its live streams stop (``stream-stopped`` posted if configured)."""
        call = self.calls.get(call_sid)
        if call is None or not call.live:
            return
        call.live = False
        for stream in list(self.streams.values()):
            if stream.call_sid == call_sid and stream.status != "stopped":
                self._stop(stream, "hangup")

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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        )
        self.streams[sid] = stream
        if self.media is not None:
            self._spawn(self.media.start(stream))
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

    def _stop(self, stream: FakeCompatStream, reason: str) -> None:
        stream.status = "stopped"
        stream.stop_reason = reason
        stream.date_updated = datetime.now(UTC).replace(microsecond=0)
        if self.media is not None:
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
