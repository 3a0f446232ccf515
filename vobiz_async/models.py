"""Typed REST models for the Audio Streams API (spec section 2).

Request models are strict (``extra="forbid"``) and check Vobiz's rules locally, so a
bad combination fails before any request. Response models are tolerant: every field is
optional, every documented variant of a field is accepted, and unknown fields are kept
(``model_extra``), because four generations of Vobiz docs disagree (spec section 7).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .codec import AudioFormat
from .errors import CodecError, ValidationError
from .events import Track

if TYPE_CHECKING:  # the server imports nothing from here; no cycle at run time
    from .cluster import Cluster, RemoteSession
    from .server import MediaServer, StreamSession

__all__ = [
    "EXTRA_HEADERS_MAX_BYTES",
    "StartStreamRequest",
    "StartedStream",
    "Stream",
    "StreamPage",
    "StreamStatus",
    "format_extra_headers",
    "parse_timestamp",
    "validate_service_url",
]

EXTRA_HEADERS_MAX_BYTES = 512
# Documented: [A-Za-z0-9] only. Vobiz's own examples use "_" in keys, so it is allowed
# too (a documented contradiction, spec 3.1 / 7.15). Anything else is refused locally.
_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9_]+$")
INBOUND_CONTENT_TYPES = (
    "audio/x-l16;rate=8000",
    "audio/x-l16;rate=16000",
    "audio/x-mulaw;rate=8000",
)


class StreamStatus(enum.StrEnum):
    """A stream's ``status`` (spec 2.2). Unknown values are kept as plain strings."""

    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"


def parse_timestamp(value: object) -> datetime | None:
    """Parse ISO 8601 (``2026-04-24T09:25:00Z``) or ``2025-11-14 08:14:29+05:30``.

    Returns None for None/empty; raises ValueError for anything unparseable.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def validate_service_url(url: str) -> str:
    """Check a WebSocket URL Vobiz can dial: ``ws://`` or ``wss://`` with a host.

    Raises:
        ValidationError: anything else (http URLs, missing host, spaces).
    """
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ValidationError("service_url", "must be a ws:// or wss:// URL without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValidationError("service_url", f"must be a ws:// or wss:// URL, got {url!r}")
    return url


def format_extra_headers(headers: Mapping[str, str] | str, *, separator: str = ":") -> str:
    """Validate extra headers and render them as Vobiz expects.

    Args:
        headers: a mapping, or an already formatted ``k=v,k=v`` / ``k:v,k:v`` string.
        separator: ``":"`` for the REST API (``header:value``), ``"="`` for XML.

    Raises:
        ValidationError: over 512 bytes, or keys/values outside ``[A-Za-z0-9_]``.
    """
    if isinstance(headers, str):
        pairs: list[tuple[str, str]] = []
        for part in headers.split(","):
            key, sep, value = part.partition("=" if "=" in part else ":")
            if not sep:
                raise ValidationError("extra_headers", f"{part!r} is not a key=value pair")
            pairs.append((key.strip(), value.strip()))
    else:
        pairs = [(str(k), str(v)) for k, v in headers.items()]
    for key, value in pairs:
        if not _HEADER_TOKEN.match(key) or not _HEADER_TOKEN.match(value):
            raise ValidationError(
                "extra_headers", f"{key!r}={value!r}: only letters, digits and '_' are allowed"
            )
    text = ",".join(f"{k}{separator}{v}" for k, v in pairs)
    if len(text.encode()) > EXTRA_HEADERS_MAX_BYTES:
        raise ValidationError("extra_headers", f"{len(text.encode())} bytes, the limit is 512")
    return text


def _validate_inbound_content_type(value: str) -> str:
    try:
        fmt = AudioFormat.parse(value)
    except CodecError as exc:
        raise ValidationError("content_type", str(exc)) from None
    if fmt.content_type not in INBOUND_CONTENT_TYPES:
        raise ValidationError(
            "content_type",
            f"{value!r} cannot be streamed inbound; use one of {', '.join(INBOUND_CONTENT_TYPES)}"
            " (24 kHz is outbound-only, spec 4.5)",
        )
    return fmt.content_type


class StartStreamRequest(BaseModel):
    """The body of ``POST .../Stream/`` (spec 2.3), validated before sending.

    ``audio_track`` is always sent: its REST default is disputed (``both`` vs
    ``inbound``, spec 7.6), so we send ``inbound`` unless told otherwise.
    ``bidirectional`` goes on the wire as the *string* ``"true"``/``"false"``: a JSON
    boolean silently gives a one-way stream (spec 2.3, live-verified).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_url: str
    bidirectional: bool = False
    audio_track: Track = Track.INBOUND
    content_type: str | None = None
    stream_timeout: int | None = None
    status_callback_url: str | None = None
    status_callback_method: Literal["GET", "POST"] | None = None
    extra_headers: str | None = None

    @classmethod
    def create(cls, **params: Any) -> StartStreamRequest:
        """Validate and build; raises :class:`~vobiz_async.errors.ValidationError`.

        (Constructing the model directly runs the same checks, but pydantic then wraps
        the error in its own ``ValidationError``.)
        """
        return cls.model_validate(_check_start(params))

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        return _check_start(data) if isinstance(data, dict) else data

    def to_wire(self) -> dict[str, Any]:
        """The JSON body exactly as Vobiz should receive it."""
        body: dict[str, Any] = {
            "service_url": self.service_url,
            "bidirectional": "true" if self.bidirectional else "false",
            "audio_track": self.audio_track.value,
        }
        for key in (
            "content_type",
            "stream_timeout",
            "status_callback_url",
            "status_callback_method",
            "extra_headers",
        ):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


def _check_start(data: dict[str, Any]) -> dict[str, Any]:
    """Vobiz's rules for a stream start (spec 2.3), checked before any request."""
    data = {k: v for k, v in data.items() if v is not None}
    validate_service_url(data.get("service_url", ""))
    track = data.get("audio_track") or Track.INBOUND
    try:
        track = Track(track)
    except ValueError:
        raise ValidationError("audio_track", "must be inbound, outbound or both") from None
    data["audio_track"] = track
    if data.get("bidirectional") and track is not Track.INBOUND:
        raise ValidationError(
            "audio_track", "a bidirectional stream must use the inbound track (spec 2.3)"
        )
    if data.get("content_type") is not None:
        data["content_type"] = _validate_inbound_content_type(data["content_type"])
    timeout = data.get("stream_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0
    ):
        raise ValidationError("stream_timeout", "must be a positive integer of seconds")
    method = data.get("status_callback_method")
    if method is not None:
        if str(method).upper() not in ("GET", "POST"):
            raise ValidationError("status_callback_method", "must be GET or POST")
        data["status_callback_method"] = str(method).upper()
    callback = data.get("status_callback_url")
    if callback is not None:
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("status_callback_url", "must be an http(s) URL")
    headers = data.get("extra_headers")
    if headers is not None:
        data["extra_headers"] = format_extra_headers(headers, separator=":")
    return data


class Stream(BaseModel):
    """A stream as Vobiz reports it (spec 2.2). Tolerant of every documented shape.

    ``content_type`` is normalised to the ``;rate=`` form when a rate is known (from
    the content type itself or ``sampling_rate``); older field names ``status_url`` /
    ``status_method`` fill ``status_callback_url`` / ``status_callback_method``.
    Unknown fields (billing, ``api_id``...) are kept in ``model_extra``.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    stream_id: str | None = None
    call_uuid: str | None = None
    service_url: str | None = None
    audio_track: str | None = None
    bidirectional: bool | None = None
    content_type: str | None = None
    sampling_rate: int | None = None
    stream_timeout: int | None = None
    status_callback_url: str | None = None
    status_callback_method: str | None = None
    status: StreamStatus | str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    resource_uri: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("status_callback_url") is None and "status_url" in data:
            data["status_callback_url"] = data["status_url"]
        if data.get("status_callback_method") is None and "status_method" in data:
            data["status_callback_method"] = data["status_method"]
        return data

    @field_validator("bidirectional", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return value

    @field_validator("start_time", "end_time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return parse_timestamp(value)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return StreamStatus(value)
            except ValueError:
                return value
        return value

    @field_validator("sampling_rate", "stream_timeout", mode="before")
    @classmethod
    def _int(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @model_validator(mode="after")
    def _normalise_format(self) -> Stream:
        if self.content_type:
            try:
                fmt = AudioFormat.parse(self.content_type, self.sampling_rate)
            except CodecError:
                return self  # keep what Vobiz said, unparsed
            self.content_type = fmt.content_type
            if self.sampling_rate is None:
                self.sampling_rate = fmt.sample_rate
        return self

    @property
    def in_progress(self) -> bool:
        """Whether Vobiz reports the stream as running."""
        return self.status == StreamStatus.IN_PROGRESS


class StartedStream(BaseModel):
    """The result of starting a stream: its id plus the parameters used.

    Attributes:
        stream_id: the new stream's id (a UUID on live Vobiz).
        call_uuid: the call it is attached to.
        request: the validated parameters that were sent.
        message: Vobiz's message (``audio streaming started``).
        api_id: Vobiz's request id, when given.
        reconciled: True when the start response was lost (timeout/5xx) and the
            stream was found by listing the call's streams instead of re-posting.
    """

    model_config = ConfigDict(extra="allow")

    stream_id: str
    call_uuid: str
    request: StartStreamRequest
    message: str | None = None
    api_id: str | None = None
    reconciled: bool = False

    @overload
    async def session(
        self, server: MediaServer, *, timeout: float | None = 10.0
    ) -> StreamSession: ...
    @overload
    async def session(self, server: Cluster, *, timeout: float | None = 10.0) -> RemoteSession: ...
    async def session(
        self, server: MediaServer | Cluster, *, timeout: float | None = 10.0
    ) -> StreamSession | RemoteSession:
        """This stream's media session on ``server``, whether Vobiz's ``start`` arrived
        before or after the REST answer (see ``MediaServer.wait_for_session``); with a
        ``Cluster``, its ``RemoteSession`` on whichever worker Vobiz dialed."""
        return await server.wait_for_session(self.stream_id, timeout=timeout)

    def to_json_dict(self) -> dict[str, Any]:
        """A flat JSON-able dict: ids, the parameters used, and Vobiz's message."""
        return {
            "stream_id": self.stream_id,
            "call_uuid": self.call_uuid,
            **self.request.to_wire(),
            "bidirectional": self.request.bidirectional,
            "message": self.message,
            "api_id": self.api_id,
            "reconciled": self.reconciled,
        }


class StreamPage(BaseModel):
    """One page of ``GET .../Stream/``, whichever of the three envelopes came back.

    Attributes:
        streams: the streams on this page.
        total: the total Vobiz reported (``total`` or ``meta.total_count``), else the
            number on this page.
        limit, offset: the paging used for the request.
    """

    streams: list[Stream] = Field(default_factory=list)
    total: int = 0
    limit: int = 20
    offset: int = 0

    @classmethod
    def from_body(cls, body: Any, *, limit: int, offset: int) -> StreamPage:
        """Parse ``{page, per_page, total, objects}``, Plivo's ``{meta, objects}``, a
        bare Stream object, or a JSON array (spec 2.5)."""
        if isinstance(body, dict) and isinstance(body.get("objects"), list):
            objects = body["objects"]
            meta_raw = body.get("meta")
            meta: dict[str, Any] = meta_raw if isinstance(meta_raw, dict) else {}
            total = body.get("total", meta.get("total_count"))
        elif isinstance(body, dict) and "stream_id" in body:
            objects, total = [body], 1
        elif isinstance(body, list):
            objects, total = body, None
        else:
            raise ValueError("not a stream list")
        streams = [Stream.model_validate(o) for o in objects if isinstance(o, dict)]
        if not isinstance(total, int) or isinstance(total, bool):
            total = len(streams)
        return cls(streams=streams, total=total, limit=limit, offset=offset)

    def __iter__(self) -> Iterator[Stream]:  # type: ignore[override]
        return iter(self.streams)

    def __len__(self) -> int:
        return len(self.streams)

    def __getitem__(self, index: int) -> Stream:
        return self.streams[index]
