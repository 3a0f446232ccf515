"""A local Vobiz for tests, demos and your own agent's tests (``FakeVobiz``).

Everything runs on 127.0.0.1 with real sockets: the REST API (aiohttp), and a media
peer per stream that dials your WebSocket server and behaves like Vobiz (see
``docs`` in the README, "Test your agent"). ``FakeSignalWire`` and ``CompatMediaPeer``
do the same for SignalWire's compatibility API and Twilio Media Streams.
"""

from __future__ import annotations

from ._audio import speech_like, tone
from ._compat_media import CompatMediaPeer
from ._fake import CallbackRecord, FakeCall, FakeVobiz
from ._media import MediaPeer, PeerReport
from ._rest import FakeStreamRecord, Fault, RecordedRequest
from ._signalwire import FakeCompatCall, FakeSignalWire

__all__ = [
    "CallbackRecord",
    "CompatMediaPeer",
    "FakeCall",
    "FakeCompatCall",
    "FakeSignalWire",
    "FakeStreamRecord",
    "FakeVobiz",
    "Fault",
    "MediaPeer",
    "PeerReport",
    "RecordedRequest",
    "speech_like",
    "tone",
]
