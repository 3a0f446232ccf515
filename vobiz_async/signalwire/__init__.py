"""SignalWire's compatibility API (Twilio-compatible): REST streams, cXML, signatures,
stream status callbacks (``docs/signalwire-spec.md``).

The media WebSocket in the Twilio dialect is not here yet: it plugs into the media
server as a provider dialect (issue 14, "Media"), after the media-plane renovation.
"""

from __future__ import annotations

from ._client import CompatStream, CompatStreamsAPI, SignalWireClient, default_stream_name
from ._rules import MAX_PARAMETERS, Codec, StreamTrack
from ._signatures import compute_signature, validate_json, validate_request
from .callbacks import (
    CompatCallbackHandler,
    CompatStreamCallback,
    StreamEvent,
    callback_handler,
    parse_callback,
)
from .cxml import ResponseBuilder

__all__ = [
    "MAX_PARAMETERS",
    "Codec",
    "CompatCallbackHandler",
    "CompatStream",
    "CompatStreamCallback",
    "CompatStreamsAPI",
    "ResponseBuilder",
    "SignalWireClient",
    "StreamEvent",
    "StreamTrack",
    "callback_handler",
    "compute_signature",
    "default_stream_name",
    "parse_callback",
    "validate_json",
    "validate_request",
]
