"""vobiz_async: hear and speak on live phone calls through Vobiz Audio Streams, with asyncio."""

from __future__ import annotations

from .codec import (
    AudioEncoding,
    AudioFormat,
    Framer,
    Resampler,
    pcm16_to_ulaw,
    read_wav,
    ulaw_to_pcm16,
    write_wav,
)
from .errors import (
    APIError,
    AuthenticationError,
    CodecError,
    ForbiddenError,
    InvalidRequestError,
    LocalProtocolError,
    NotFoundError,
    PaymentRequiredError,
    ProtocolError,
    RateLimitError,
    RemoteProtocolError,
    RequestTimeoutError,
    ServerError,
    SignatureError,
    StreamClosedError,
    TransportError,
    ValidationError,
    VobizError,
)

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AudioEncoding",
    "AudioFormat",
    "AuthenticationError",
    "CodecError",
    "ForbiddenError",
    "Framer",
    "InvalidRequestError",
    "LocalProtocolError",
    "NotFoundError",
    "PaymentRequiredError",
    "ProtocolError",
    "RateLimitError",
    "RemoteProtocolError",
    "RequestTimeoutError",
    "Resampler",
    "ServerError",
    "SignatureError",
    "StreamClosedError",
    "TransportError",
    "ValidationError",
    "VobizError",
    "pcm16_to_ulaw",
    "read_wav",
    "ulaw_to_pcm16",
    "write_wav",
]
