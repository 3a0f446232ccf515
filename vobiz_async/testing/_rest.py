"""The emulator's REST half: Vobiz's Audio Streams API, in memory, on aiohttp."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .._rules import check_callback_method, check_callback_url, format_extra_headers
from ..codec import AudioFormat
from ..errors import CodecError, ValidationError

__all__ = ["FakeStreamRecord", "Fault", "RecordedRequest", "RestState"]

_PATH = re.compile(r"^/api/v1/Account/([^/]+)/Call/([^/]+)/Stream/(?:([^/]+)/)?$")
_PATH_LOOSE = re.compile(r"^/api/v1/account/[^/]+/call/[^/]+/stream(/[^/]+)?/?$", re.IGNORECASE)


@dataclass
class RecordedRequest:
    """One request the fake received, as Vobiz would see it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_body: bytes


@dataclass
class Fault:
    """An injected failure for the next ``count`` matching requests.

    Attributes:
        status: answer with this status instead (with a Vobiz-shaped error body).
        delay: wait this long (seconds) before answering (to trigger client timeouts).
        retry_after: send a ``Retry-After`` header with this value.
        body: a raw body to answer with instead of the default error body.
        drop: close the connection without answering.
        after: perform the request's real effect first (e.g. create the stream), then
            fail: a lost response.
        hold: wait this long (seconds), then perform the request's real effect and
            answer normally: a slow creation that outlives the client's timeout
            (aiohttp keeps running the handler after the client has gone).
        fresh_pages: answer a stream list with a full page (``limit`` items) of newly
            invented, completed streams: a server that pages forever.
        gzip: send ``body`` gzip-compressed with ``Content-Encoding: gzip``.
        content_encoding: ``body`` is already encoded this way (``"gzip"``): send it
            as is with that ``Content-Encoding`` (for compression bombs).
        method, path_contains: which requests it applies to (None: any).
        count: how many matching requests it affects.
    """

    status: int | None = None
    delay: float = 0.0
    retry_after: str | None = None
    body: str | bytes | None = None
    drop: bool = False
    after: bool = False
    hold: float = 0.0
    fresh_pages: bool = False
    gzip: bool = False
    content_encoding: str | None = None
    method: str | None = None
    path_contains: str | None = None
    count: int = 1

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request."""
        return (self.method is None or self.method.upper() == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class FakeStreamRecord:
    """A stream as the fake Vobiz knows it."""

    stream_id: str
    call_uuid: str
    service_url: str
    bidirectional: bool
    audio_track: str
    content_type: str
    stream_timeout: int
    status_callback_url: str | None
    status_callback_method: str
    extra_headers: str | None
    status: str = "in-progress"
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_time: datetime | None = None
    origin: str = "rest"

    def to_wire(self, auth_id: str) -> dict[str, Any]:
        """The stream object, newest shape (spec 2.2)."""
        return {
            "stream_id": self.stream_id,
            "call_uuid": self.call_uuid,
            "service_url": self.service_url,
            "status_callback_url": self.status_callback_url,
            "status_callback_method": self.status_callback_method,
            "bidirectional": self.bidirectional,
            "audio_track": self.audio_track,
            "content_type": self.content_type,
            "stream_timeout": self.stream_timeout,
            "status": self.status,
            "start_time": self.start_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_time": self.end_time.strftime("%Y-%m-%dT%H:%M:%SZ") if self.end_time else None,
            "resource_uri": (
                f"/v1/Account/{auth_id}/Call/{self.call_uuid}/Stream/{self.stream_id}/"
            ),
        }


def _bounded_int(text: str, default: int | None) -> int | None:
    """``int(text)`` for at most 9 digits (and a sign), else ``default``."""
    text = text.strip()
    if re.fullmatch(r"-?[0-9]{1,9}", text) is None:
        return default
    return int(text)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"api_id": str(uuid.uuid4()), "error": message}, status=status)


class RestState:
    """In-memory REST behaviour of Vobiz, with request recording and fault injection.

    Args:
        auth_id, auth_token: the credentials the fake accepts.
        list_envelope: ``"page"`` (documented), ``"meta"`` (Plivo) or ``"bare"``.
        default_audio_track: used when a start omits ``audio_track`` (disputed, spec 7.6).
        is_live: tells whether a call exists and is in progress.
        on_started / on_stopped: hooks the media half uses to dial and hang up.
    """

    def __init__(
        self,
        *,
        auth_id: str,
        auth_token: str,
        list_envelope: str = "page",
        default_audio_track: str = "inbound",
        is_live: Callable[[str], bool],
        on_started: Callable[[FakeStreamRecord], Awaitable[None]] | None = None,
        on_stopped: Callable[[FakeStreamRecord, str], Awaitable[None]] | None = None,
    ) -> None:
        self.auth_id = auth_id
        self.auth_token = auth_token
        self.list_envelope = list_envelope
        self.default_audio_track = default_audio_track
        self.requests: list[RecordedRequest] = []
        self.streams: dict[str, FakeStreamRecord] = {}
        self.faults: list[Fault] = []
        self.in_flight = 0
        """Requests being handled now (a held, slow creation counts until it answers)."""
        self._is_live = is_live
        self._on_started = on_started
        self._on_stopped = on_stopped

    def app(self) -> web.Application:
        """The aiohttp application serving the five stream endpoints."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def inject(self, fault: Fault) -> None:
        """Queue a fault for the next matching requests."""
        self.faults.append(fault)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._handle_one(request)
        finally:
            self.in_flight -= 1

    async def _handle_one(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                raw,
            )
        )
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.hold:
            await asyncio.sleep(fault.hold)
            return await self._route(request, body)
        if fault is not None and fault.fresh_pages:
            return self._fresh_page(request)
        if fault is not None and not fault.after:
            return await self._apply(request, fault)
        response = await self._route(request, body)
        if fault is not None:
            return await self._apply(request, fault)
        return response

    def _fresh_page(self, request: web.Request) -> web.Response:
        limit = _bounded_int(request.query.get("limit", "20"), 20) or 20
        page = [
            {"stream_id": str(uuid.uuid4()), "status": "completed", "service_url": "wss://x/"}
            for _ in range(min(limit, 1000))
        ]
        return web.json_response({"page": 1, "per_page": limit, "total": 10**9, "objects": page})

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
            data = fault.body.encode() if isinstance(fault.body, str) else fault.body
            if fault.gzip:
                data = gzip.compress(data)
                headers["Content-Encoding"] = "gzip"
            elif fault.content_encoding is not None:
                headers["Content-Encoding"] = fault.content_encoding
            headers["Content-Type"] = "application/json"
            return web.Response(status=status, body=data, headers=headers)
        response = _error(status, f"injected {status}")
        response.headers.update(headers)
        return response

    async def _route(self, request: web.Request, body: Any) -> web.Response:
        if (
            request.headers.get("X-Auth-ID") != self.auth_id
            or request.headers.get("X-Auth-Token") != self.auth_token
        ):
            return _error(401, "Authentication failed")
        match = _PATH.match(request.path)
        if match is None:
            if _PATH_LOOSE.match(request.path):
                return _error(401, "Authentication failed")  # what Vobiz does (spec 1.1)
            return _error(404, "Not found")
        account, call_uuid, stream_id = match.groups()
        if account != self.auth_id:
            return _error(401, "Authentication failed")
        method = request.method
        if stream_id is None and method == "POST":
            return await self._start(call_uuid, body)
        if stream_id is None and method == "GET":
            return self._list(call_uuid, request)
        if stream_id is None and method == "DELETE":
            for record in list(self.streams.values()):
                if record.call_uuid == call_uuid and record.status == "in-progress":
                    await self.stop(record, "api")
            return web.Response(status=204)
        found = self.streams.get(stream_id) if stream_id is not None else None
        if found is not None and found.call_uuid != call_uuid:
            found = None
        if stream_id is not None and method == "GET":
            if found is None:
                return _error(404, "Stream not found")
            return web.json_response(found.to_wire(self.auth_id))
        if stream_id is not None and method == "DELETE":
            if found is None or found.status != "in-progress":
                return _error(404, "Stream not found")
            await self.stop(found, "api")
            return web.Response(status=204)
        return _error(405, "Method not allowed")

    async def _start(self, call_uuid: str, body: Any) -> web.Response:
        if not self._is_live(call_uuid):
            return _error(404, "Call not found or not in progress")
        if not isinstance(body, dict):
            return _error(400, "Invalid JSON body")
        url = body.get("service_url")
        if not isinstance(url, str) or not re.match(r"^wss?://[^\s/]+", url):
            return _error(400, "Invalid service_url")
        bidi_raw = body.get("bidirectional", "false")
        # Live-verified quirk: only the string "true" makes a bidirectional stream; a
        # JSON boolean is accepted and silently gives a one-way stream (spec 2.3).
        bidirectional = isinstance(bidi_raw, str) and bidi_raw.lower() == "true"
        track = body.get("audio_track", self.default_audio_track)
        if track not in ("inbound", "outbound", "both"):
            return _error(400, "Invalid audio_track")
        if bidirectional and track != "inbound":
            return _error(400, "bidirectional streams support the inbound track only")
        content_type = body.get("content_type", "audio/x-l16;rate=8000")
        try:
            content_type = AudioFormat.parse(str(content_type)).content_type
        except CodecError:
            return _error(400, "Invalid content_type")
        timeout = body.get("stream_timeout", 86400)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            return _error(400, "Invalid stream_timeout")
        try:  # the rules our client applies (spec 2.3), so the fake refuses what it would
            method = check_callback_method(
                body.get("status_callback_method", "POST"), "status_callback_method"
            )
            callback_url = check_callback_url(
                body.get("status_callback_url"), "status_callback_url"
            )
            headers = body.get("extra_headers")
            if headers is not None:
                if not isinstance(headers, str):
                    raise ValidationError("extra_headers", "must be a header:value,... string")
                headers = format_extra_headers(headers, separator=":")
        except ValidationError as exc:
            return _error(400, f"Invalid {exc.field}: {exc.reason}")
        record = FakeStreamRecord(
            stream_id=str(uuid.uuid4()),
            call_uuid=call_uuid,
            service_url=url,
            bidirectional=bidirectional,
            audio_track=track,
            content_type=content_type,
            stream_timeout=timeout,
            status_callback_url=callback_url,
            status_callback_method=method or "POST",
            extra_headers=headers,
        )
        self.streams[record.stream_id] = record
        if self._on_started is not None:
            await self._on_started(record)
        return web.json_response(
            {
                "api_id": str(uuid.uuid4()),
                "message": "audio streaming started",
                "stream_id": record.stream_id,
            },
            status=202,
        )

    def _list(self, call_uuid: str, request: web.Request) -> web.Response:
        limit = _bounded_int(request.query.get("limit", "20"), None)
        offset = _bounded_int(request.query.get("offset", "0"), None)
        if limit is None or offset is None or limit < 1 or offset < 0:
            return _error(400, "Invalid limit or offset")
        records = [r for r in self.streams.values() if r.call_uuid == call_uuid]
        page = [r.to_wire(self.auth_id) for r in records[offset : offset + limit]]
        if self.list_envelope == "meta":
            return web.json_response(
                {
                    "api_id": str(uuid.uuid4()),
                    "meta": {
                        "limit": limit,
                        "offset": offset,
                        "total_count": len(records),
                        "next": None,
                        "previous": None,
                    },
                    "objects": page,
                }
            )
        if self.list_envelope == "bare":
            return web.json_response(page[0] if page else {})
        return web.json_response(
            {"page": offset // limit + 1, "per_page": limit, "total": len(records), "objects": page}
        )

    def add(self, record: FakeStreamRecord) -> None:
        """Register a stream started another way (an answer XML's ``<Stream>``)."""
        self.streams[record.stream_id] = record

    async def stop(self, record: FakeStreamRecord, reason: str, status: str = "completed") -> None:
        """Mark a stream ended and run the media half's hook.

        Args:
            reason: ``"api"`` (REST DELETE: Vobiz sends ``StopStream``), ``"hangup"``
                (the call ended) or ``"ended"`` (the socket already closed).
            status: ``"completed"``, or ``"failed"`` when the socket never opened
                (handshake refused, unreachable).
        """
        if record.status != "in-progress":
            return
        record.status = status
        record.end_time = datetime.now(UTC)
        if self._on_stopped is not None:
            await self._on_stopped(record, reason)
