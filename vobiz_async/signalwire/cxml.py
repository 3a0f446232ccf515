"""Build SignalWire cXML (Twilio-compatible TwiML) documents for media streams.

``<Connect><Stream>`` is a bidirectional stream that blocks the call script until our
server closes the socket; ``<Start><Stream>`` forks audio and the script goes on at
once (with no next verb the call ends); ``<Stop><Stream name>`` stops a named fork
(``signalwire-compat-streams.md`` 3.1). The URL is an *attribute* (unlike Vobiz, where
it is the element text), ``wss://`` only, without a query string (3.5). Attributes are
written in lower camel case, sorted and XML-escaped, as twilio-python does (3.4), so
the same inputs give byte-identical documents. Rules checked before anything is served:

* ``codec`` is one of ``PCMU@8000h``, ``L16@16000h``, ``L16@24000h`` (3.2);
* a bidirectional (``<Connect>``) stream carries ``inbound_track`` only (3.2);
* ``statusCallbackMethod`` is GET or POST; at most 99 ``<Parameter>`` children.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ValidationError
from ._rules import (
    Codec,
    StreamTrack,
    check_callback_method,
    check_callback_url,
    check_name,
    check_parameters,
    check_stream_url,
    check_track,
)

__all__ = ["ResponseBuilder"]


@dataclass(frozen=True)
class _Verb:
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: tuple[_Verb, ...] = ()

    def element(self) -> ET.Element:
        el = ET.Element(self.name)
        for key in sorted(self.attrs):
            el.set(key, self.attrs[key])
        for child in self.children:
            el.append(child.element())
        return el


def _stream(
    url: str,
    *,
    name: str | None,
    track: StreamTrack | str | None,
    codec: Codec | str | None,
    status_callback: str | None,
    status_callback_method: str | None,
    parameters: Mapping[str, str] | None,
    auth_bearer_token: str | None,
) -> _Verb:
    attrs = {"url": check_stream_url(url)}
    if name is not None:
        attrs["name"] = check_name(name)
    if track is not None:
        attrs["track"] = check_track(track).value
    if codec is not None:
        try:
            attrs["codec"] = Codec(codec).value
        except ValueError:
            allowed = ", ".join(c.value for c in Codec)
            raise ValidationError("codec", f"must be one of {allowed}, got {codec!r}") from None
    if status_callback is not None:
        attrs["statusCallback"] = check_callback_url(status_callback)
    if status_callback_method is not None:
        attrs["statusCallbackMethod"] = check_callback_method(status_callback_method)
    if auth_bearer_token is not None:
        if not isinstance(auth_bearer_token, str) or not auth_bearer_token.strip():
            raise ValidationError("auth_bearer_token", "must be a non-empty string")
        attrs["authBearerToken"] = auth_bearer_token
    children = tuple(
        _Verb("Parameter", {"name": k, "value": v}) for k, v in check_parameters(parameters)
    )
    return _Verb("Stream", attrs, children)


class ResponseBuilder:
    """A ``<Response>`` document, built verb by verb (each method returns the builder).

    ``ResponseBuilder().connect_stream("wss://agent.example.net/media/7d1e4c",
    codec="L16@16000h").hangup().to_xml()``
    """

    def __init__(self) -> None:
        self._verbs: list[_Verb] = []

    def connect_stream(
        self,
        url: str,
        *,
        name: str | None = None,
        track: StreamTrack | str | None = None,
        codec: Codec | str | None = None,
        status_callback: str | None = None,
        status_callback_method: str | None = None,
        parameters: Mapping[str, str] | None = None,
        auth_bearer_token: str | None = None,
    ) -> ResponseBuilder:
        """``<Connect><Stream …/></Connect>``: a bidirectional stream (spec 3.1).

        Raises:
            ValidationError: a bad URL, codec or method, a track other than
                ``inbound_track``, more than 99 parameters.
        """
        if track is not None and check_track(track) is not StreamTrack.INBOUND:
            raise ValidationError(
                "track", "a bidirectional <Connect><Stream> carries inbound_track only (spec 3.2)"
            )
        stream = _stream(
            url,
            name=name,
            track=track,
            codec=codec,
            status_callback=status_callback,
            status_callback_method=status_callback_method,
            parameters=parameters,
            auth_bearer_token=auth_bearer_token,
        )
        self._verbs.append(_Verb("Connect", children=(stream,)))
        return self

    def start_stream(
        self,
        url: str,
        *,
        name: str | None = None,
        track: StreamTrack | str | None = None,
        codec: Codec | str | None = None,
        status_callback: str | None = None,
        status_callback_method: str | None = None,
        parameters: Mapping[str, str] | None = None,
        auth_bearer_token: str | None = None,
    ) -> ResponseBuilder:
        """``<Start><Stream …/></Start>``: a one-way fork; the script goes on at once,
        so follow it with a verb that keeps the call up (spec 3.1). Give it a ``name``
        to stop it later with :meth:`stop_stream`.

        Raises:
            ValidationError: a bad URL, track, codec or method, more than 99 parameters.
        """
        stream = _stream(
            url,
            name=name,
            track=track,
            codec=codec,
            status_callback=status_callback,
            status_callback_method=status_callback_method,
            parameters=parameters,
            auth_bearer_token=auth_bearer_token,
        )
        self._verbs.append(_Verb("Start", children=(stream,)))
        return self

    def stop_stream(self, name: str) -> ResponseBuilder:
        """``<Stop><Stream name="…"/></Stop>``: stop the named fork (spec 3.1).

        Raises:
            ValidationError: an empty name.
        """
        self._verbs.append(_Verb("Stop", children=(_Verb("Stream", {"name": check_name(name)}),)))
        return self

    def pause(self, seconds: int) -> ResponseBuilder:
        """``<Pause length="N"/>``: keep the call up for ``seconds`` (a positive integer).

        Raises:
            ValidationError: not a positive integer.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise ValidationError("seconds", "must be a positive integer")
        self._verbs.append(_Verb("Pause", {"length": str(seconds)}))
        return self

    def hangup(self) -> ResponseBuilder:
        """``<Hangup/>``."""
        self._verbs.append(_Verb("Hangup"))
        return self

    def to_xml(self) -> str:
        """The document, with the XML declaration, on one line."""
        root = _Verb("Response", children=tuple(self._verbs)).element()
        body = ET.tostring(root, encoding="utf-8").decode("utf-8")
        return f'<?xml version="1.0" encoding="UTF-8"?>{body}'
