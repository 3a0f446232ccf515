"""How cluster messages look in Redis: events as stream fields, replies, raw values (pure).

Used by :mod:`vobiz_async.cluster` on both sides (the worker publishing a session's
events and command replies, the controlling process reading them). Standard library
and the redis package's types only; no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from redis.typing import EncodableT, FieldT

from .errors import CodecError, SessionGoneError, ValidationError, VobizError
from .events import (
    AudioCleared,
    AudioReceived,
    CheckpointOutcome,
    CheckpointVoided,
    DtmfReceived,
    InboundEvent,
    PlaybackCheckpointReached,
    StreamStopped,
)

__all__: list[str] = []

Fields = dict[FieldT, EncodableT]
Entry = tuple[str, dict[bytes, bytes]]


def raw(value: EncodableT) -> bytes:
    """A value from redis-py (bytes here, since responses are not decoded) as bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def text(value: EncodableT | None) -> str:
    """A value from redis-py as text."""
    return "" if value is None else raw(value).decode()


def entries(reply: Any) -> list[Entry]:
    """XREAD's answer (one stream) as ``[(id, fields)]``."""
    if not reply:
        return []
    items = reply.values() if isinstance(reply, dict) else (pair[1] for pair in reply)
    out: list[Entry] = []
    for entries in items:
        for entry_id, data in entries:
            out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, data))
    return out


def reply(stream_id: str, data: bytes) -> Any:
    """A worker's reply, or the typed error it stands for."""
    answer = json.loads(data)
    error = answer.get("error")
    if error is None:
        return answer["ok"]
    if error == "gone":
        raise SessionGoneError(stream_id, "ended")
    if error == "invalid":
        raise ValidationError(answer["field"], answer["reason"])
    if error == "codec":
        raise CodecError(answer["message"])
    raise VobizError(f"cluster command failed on the worker: {answer.get('message')}")


def encode_event(event: InboundEvent) -> Fields | None:
    """An event as stream fields (``type``, JSON ``data``, raw ``audio``), or None for
    kinds that are not forwarded."""
    kind = type(event)
    data: dict[str, Any]
    extra: Fields = {}
    if kind is DtmfReceived:
        assert isinstance(event, DtmfReceived)
        name, data = "dtmf", {"digit": event.digit, "track": event.track, "ts": event.timestamp}
    elif kind is PlaybackCheckpointReached:
        assert isinstance(event, PlaybackCheckpointReached)
        name, data = "checkpoint", {"name": event.name, "matched": event.matched}
    elif kind is CheckpointVoided:
        assert isinstance(event, CheckpointVoided)
        name, data = "voided", {"name": event.name, "outcome": event.outcome.value}
    elif kind is AudioCleared:
        name, data = "cleared", {}
    elif kind is StreamStopped:
        assert isinstance(event, StreamStopped)
        name, data = "stopped", {"reason": event.reason}
    elif kind is AudioReceived:
        assert isinstance(event, AudioReceived)
        name = "audio"
        data = {"rate": event.sample_rate, "track": event.track, "ts": event.timestamp}
        extra = {"audio": event.pcm}
    else:
        return None
    return {"type": name, "data": json.dumps(data), **extra}


def decode_event(fields_: dict[bytes, bytes]) -> InboundEvent | None:
    """The inverse of :func:`encode_event` (None for an unknown kind from a newer peer)."""
    kind = fields_.get(b"type", b"").decode()
    data = json.loads(fields_.get(b"data", b"{}"))
    if kind == "dtmf":
        return DtmfReceived(data["digit"], data["track"], data["ts"])
    if kind == "checkpoint":
        return PlaybackCheckpointReached(data["name"], data["matched"])
    if kind == "voided":
        return CheckpointVoided(data["name"], CheckpointOutcome(data["outcome"]))
    if kind == "cleared":
        return AudioCleared()
    if kind == "stopped":
        return StreamStopped(reason=data["reason"])
    if kind == "audio":
        pcm = fields_.get(b"audio", b"")
        return AudioReceived(pcm, data["rate"], data["track"], timestamp=data["ts"])
    return None
