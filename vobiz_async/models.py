"""Typed REST models for the Audio Streams API (spec section 2).

Request models are strict (``extra="forbid"``) and check Vobiz's rules locally, so a
bad combination fails before any request. Response models are tolerant: every field is
optional, every documented variant of a field is accepted, and unknown fields are kept
(``model_extra``), because four generations of Vobiz docs disagree (spec section 7).
"""

from __future__ import annotations

import email.utils
import enum
import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import _rules
from ._rules import (
    EXTRA_HEADERS_MAX_BYTES,
    INBOUND_CONTENT_TYPES,
    format_extra_headers,
    validate_service_url,
)
from .codec import AudioFormat
from .errors import CodecError
from .events import Track

if TYPE_CHECKING:  # the server imports nothing from here; no cycle at run time
    from .cluster import Cluster, RemoteSession
    from .server import MediaServer, StreamSession

__all__ = [
    "EXTRA_HEADERS_MAX_BYTES",
    "INBOUND_CONTENT_TYPES",
    "StartStreamRequest",
    "StartedStream",
    "Stream",
    "StreamPage",
    "StreamStatus",
    "format_extra_headers",
    "parse_timestamp",
    "validate_service_url",
]


class StreamStatus(enum.StrEnum):
    """A stream's ``status`` (spec 2.2). Unknown values are kept as plain strings."""

    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"


def parse_timestamp(value: object) -> datetime | None:
    """Parse the timestamp shapes Vobiz uses (spec 2.2) and RFC 2822 dates.

    Accepts ISO 8601 (``2026-04-24T09:25:00Z``), Plivo style
    (``2025-11-14 08:14:29+05:30``) and RFC 2822 (``Mon, 04 May 2026 10:02:11 +0000``,
    also with the ``Sept`` abbreviation some servers print).

    Returns:
        None for None/empty.

    Raises:
        ValueError: anything unparseable (the :class:`Stream` model keeps such a value
            raw instead of failing).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}"[:100])
    text = value.strip()
    iso = text[:-1] + "+00:00" if text.endswith("Z") else text
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(_SEPT.sub("Sep", text))
    except (TypeError, ValueError, IndexError, OverflowError):
        raise ValueError(f"not a timestamp: {value!r}"[:100]) from None


_SEPT = re.compile(r"\bSept\b", re.IGNORECASE)


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
    """Vobiz's rules for a stream start (spec 2.3, :mod:`vobiz_async._rules`)."""
    data = {k: v for k, v in data.items() if v is not None}
    validate_service_url(data.get("service_url", ""))
    data["audio_track"] = _rules.check_track(
        data.get("audio_track"), data.get("bidirectional"), "audio_track", default=Track.INBOUND
    )
    if data.get("content_type") is not None:
        data["content_type"] = _rules.validate_inbound_content_type(data["content_type"])
    _rules.check_stream_timeout(data.get("stream_timeout"), "stream_timeout")
    method = _rules.check_callback_method(
        data.get("status_callback_method"), "status_callback_method"
    )
    if method is not None:
        data["status_callback_method"] = method
    _rules.check_callback_url(data.get("status_callback_url"), "status_callback_url")
    headers = data.get("extra_headers")
    if headers is not None:
        data["extra_headers"] = format_extra_headers(headers, separator=":")
    return data


class Stream(BaseModel):
    """A stream as Vobiz reports it (spec 2.2). Tolerant of every documented shape.

    ``content_type`` is normalised to the ``;rate=`` form when a rate is known (from
    the content type itself or ``sampling_rate``); older field names ``status_url`` /
    ``status_method`` fill ``status_callback_url`` / ``status_callback_method``.
    A timestamp in no known format is kept as text in ``start_time_raw`` /
    ``end_time_raw`` (the datetime field is then None). Unknown fields
    (billing, ``api_id``...) are kept in ``model_extra``.
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
    start_time_raw: str | None = None
    end_time_raw: str | None = None
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
        for name in ("start_time", "end_time"):
            try:
                data[name] = parse_timestamp(data.get(name))
            except ValueError:
                # Unparseable is not fatal: keep what Vobiz said, raw (spec 2.2 lists
                # several formats; a new one must not break listing streams).
                data[f"{name}_raw"] = str(data[name])[:200]
                data[name] = None
        return data

    @field_validator("bidirectional", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Vobiz types it as a JSON boolean, but requests send a string (spec 2.3):
            # read "false"/"0"/"no"/"" as False, not as a truthy string.
            return value.strip().lower() in ("true", "1", "yes")
        if isinstance(value, int) and not isinstance(value, bool):
            return value != 0
        return value

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
        ``Cluster``, its ``RemoteSession`` on whichever worker Vobiz dialed.

        Raises:
            SessionTimeoutError: the stream did not connect within ``timeout`` (also a
                ``TimeoutError``; it names the stream). A stream that already ended is
                answered at once with its closed session.
        """
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
        elif body is None or body == {}:
            objects, total = [], 0  # a bare-shape list with nothing in it (spec 2.5)
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
