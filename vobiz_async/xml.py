"""Build ``<Stream>`` elements and ``<Response>`` documents (spec section 3).

The WebSocket URL is the element's *text*, XML-escaped: a raw ``&`` makes Vobiz
answer the call and drop it a second later ("Invalid Answer XML", spec 1.3). Every
rule of spec 3.1 is checked before anything is served (the rules shared with the REST
start live in :mod:`vobiz_async._rules`):

* ``bidirectional`` needs the ``inbound`` track (``both`` makes the media server reject
  the stream and hang up the call);
* no 24 kHz inbound ``contentType`` (accepted, but no media ever arrives);
* ``keepCallAlive`` needs ``bidirectional`` (documented by the initiate page; the XML
  reference table omits it, spec 7.16: we follow the stricter page);
* ``extraHeaders``: ``key=value`` pairs within 512 bytes, ``[A-Za-z0-9_]``;
* ``streamTimeout`` a positive integer; ``maxRetries`` an integer 0-10 (Vobiz clamps,
  we refuse instead, so a typo does not silently mean something else).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from . import _rules
from ._rules import format_extra_headers, validate_service_url
from .errors import ValidationError
from .events import Track
from .tokens import sign_stream_url

__all__ = ["ResponseBuilder", "StreamElement", "response_xml", "stream_xml"]


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class StreamElement:
    """A validated ``<Stream>`` element. Build with :meth:`create` (or :func:`stream_xml`).

    Attributes mirror spec 3.1; None means "leave the attribute out" (Vobiz's default).
    """

    url: str
    bidirectional: bool | None = None
    audio_track: Track | None = None
    stream_timeout: int | None = None
    status_callback_url: str | None = None
    status_callback_method: str | None = None
    content_type: str | None = None
    extra_headers: str | None = None
    max_retries: int | None = None
    keep_call_alive: bool | None = None

    @classmethod
    def create(
        cls,
        url: str,
        *,
        bidirectional: bool | None = None,
        audio_track: Track | str | None = None,
        stream_timeout: int | None = None,
        status_callback_url: str | None = None,
        status_callback_method: str | None = None,
        content_type: str | None = None,
        extra_headers: Mapping[str, str] | str | None = None,
        max_retries: int | None = None,
        keep_call_alive: bool | None = None,
        sign_secret: str | None = None,
        call_uuid: str | None = None,
        sign_ttl: float = 3600.0,
    ) -> StreamElement:
        """Validate and build.

        Args:
            sign_secret, call_uuid: when given, ``url`` gets a signed per-call token
                (``sign_stream_url``) that a server started with ``token=sign_secret``
                accepts for this call only.

        Raises:
            ValidationError: any rule of spec 3.1 broken.
        """
        validate_service_url(url, "url")
        if sign_secret is not None:
            if not call_uuid:
                raise ValidationError("call_uuid", "signing a stream URL needs the call's UUID")
            url = sign_stream_url(url, sign_secret, call_uuid, ttl=sign_ttl)
        track = _rules.check_track(audio_track, bidirectional, "audioTrack", default=None)
        if keep_call_alive and not bidirectional:
            raise ValidationError("keepCallAlive", 'needs bidirectional="true"')
        _rules.check_stream_timeout(stream_timeout, "streamTimeout")
        _rules.check_max_retries(max_retries, "maxRetries")
        method = _rules.check_callback_method(status_callback_method, "statusCallbackMethod")
        _rules.check_callback_url(status_callback_url, "statusCallbackUrl")
        fmt = None
        if content_type is not None:
            fmt = _rules.validate_inbound_content_type(content_type, "contentType")
        headers = None
        if extra_headers is not None:
            headers = format_extra_headers(extra_headers, separator="=", field="extraHeaders")
        return cls(
            url=url,
            bidirectional=bidirectional,
            audio_track=track,
            stream_timeout=stream_timeout,
            status_callback_url=status_callback_url,
            status_callback_method=method,
            content_type=fmt,
            extra_headers=headers,
            max_retries=max_retries,
            keep_call_alive=keep_call_alive,
        )

    def to_xml(self) -> str:
        """The element, attributes in a fixed order, URL escaped as element text."""
        attrs: list[tuple[str, str]] = []
        if self.bidirectional is not None:
            attrs.append(("bidirectional", _bool(self.bidirectional)))
        if self.audio_track is not None:
            attrs.append(("audioTrack", self.audio_track.value))
        if self.keep_call_alive is not None:
            attrs.append(("keepCallAlive", _bool(self.keep_call_alive)))
        if self.content_type is not None:
            attrs.append(("contentType", self.content_type))
        if self.stream_timeout is not None:
            attrs.append(("streamTimeout", str(self.stream_timeout)))
        if self.max_retries is not None:
            attrs.append(("maxRetries", str(self.max_retries)))
        if self.status_callback_url is not None:
            attrs.append(("statusCallbackUrl", self.status_callback_url))
        if self.status_callback_method is not None:
            attrs.append(("statusCallbackMethod", self.status_callback_method))
        if self.extra_headers is not None:
            attrs.append(("extraHeaders", self.extra_headers))
        rendered = "".join(f" {name}={quoteattr(value)}" for name, value in attrs)
        return f"<Stream{rendered}>{escape(self.url)}</Stream>"


def stream_xml(url: str, **kwargs: object) -> str:
    """A validated ``<Stream>`` element as text (arguments of :meth:`StreamElement.create`)."""
    return StreamElement.create(url, **kwargs).to_xml()  # type: ignore[arg-type]


@dataclass
class ResponseBuilder:
    """A ``<Response>`` document: ``ResponseBuilder().stream(...).hangup().to_xml()``."""

    elements: list[str] = field(default_factory=list)

    def stream(self, url: str, **kwargs: object) -> ResponseBuilder:
        """Add a validated ``<Stream>``."""
        self.elements.append(stream_xml(url, **kwargs))
        return self

    def add(self, element: StreamElement) -> ResponseBuilder:
        """Add an already built ``<Stream>``."""
        self.elements.append(element.to_xml())
        return self

    def speak(self, text: str) -> ResponseBuilder:
        """Add ``<Speak>`` with escaped text."""
        self.elements.append(f"<Speak>{escape(text)}</Speak>")
        return self

    def wait(self, length: int) -> ResponseBuilder:
        """Add ``<Wait length="N"/>``."""
        if length <= 0:
            raise ValidationError("length", "must be positive")
        self.elements.append(f'<Wait length="{int(length)}"/>')
        return self

    def hangup(self) -> ResponseBuilder:
        """Add ``<Hangup/>``."""
        self.elements.append("<Hangup/>")
        return self

    def to_xml(self) -> str:
        """The whole document with its XML declaration."""
        body = "".join(f"\n  {element}" for element in self.elements)
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>{body}\n</Response>\n'


def response_xml(*elements: StreamElement | str) -> str:
    """A ``<Response>`` from built elements (or pre-rendered, trusted XML strings)."""
    builder = ResponseBuilder()
    for element in elements:
        if isinstance(element, StreamElement):
            builder.add(element)
        else:
            builder.elements.append(element)
    return builder.to_xml()
