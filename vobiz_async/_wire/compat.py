"""The Twilio-compatible dialect (SignalWire's compatibility API and Twilio Media Streams).

Pure and stateless, msgspec only, like :mod:`vobiz_async._wire.vobiz`; the facts are in
``docs/signalwire-spec.md`` ("compat spec" below). What differs from Vobiz, and is
handled here or by the protocol:

* a ``connected`` frame comes before ``start`` (compat spec 4.3.1); it is not the
  stream's start and not an oddity;
* every counter is a JSON *string* (``"sequenceNumber": "42"``); an integer is read
  too; ``media.timestamp`` is milliseconds since the stream started (4.3.3);
* ``start`` carries ``customParameters`` (kept on :class:`StreamStarted`) and a
  ``mediaFormat`` whose encoding is compared case-insensitively (``audio/x-L16``);
* the stream id is ``start.streamSid``; a top-level ``streamSid`` exists on Twilio
  only; SignalWire's older docs wrap messages in a ``rawEvent`` envelope (4.4),
  which is unwrapped;
* checkpoints are ``mark`` messages, echoed both when their audio played *and* when a
  ``clear`` flushed it (4.6): the protocol, not this module, tells the two apart;
* outbound ``media`` carries the payload only (the format is fixed by the stream),
  ``clear`` has no acknowledgement, and there is no outbound ``stop`` (4.7).

Which provider: a ``connected`` frame with version ``1.0.0`` or a top-level
``streamSid``/``AC…`` account on ``start`` is Twilio; otherwise SignalWire (its
``connected`` says ``0.2.0``). [UNCERTAIN] in the spec; only ``StreamStarted.provider``
depends on it.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ..codec import AudioEncoding, AudioFormat
from ..errors import CodecError
from ..events import (
    Checkpoint,
    ClearAudio,
    Command,
    DtmfReceived,
    MalformedFrame,
    PlayAudio,
    PlaybackCheckpointReached,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    json_string,
)
from .vobiz import (
    Media,
    MediaBody,
    as_int,
    decode_object,
    dtmf_digit,
    malformed,
    media_payload,
    opt_str,
)

__all__ = [
    "MEDIA_SUFFIX",
    "Connected",
    "Inbound",
    "clear_frame",
    "connected_frame",
    "decode_media",
    "dtmf_frame",
    "echo_mark_frame",
    "looks_like_compat",
    "mark_frame",
    "media_frame",
    "media_prefix",
    "parse_command",
    "parse_inbound",
    "platform_media_frame",
    "serialize",
    "start_frame",
    "stop_frame",
]


class Connected(msgspec.Struct, frozen=True):
    """The ``connected`` frame: the socket is up, ``start`` follows (compat spec 4.3.1)."""

    protocol: str | None = None
    version: str | None = None


def _count(value: object) -> int | None:
    """A counter: a JSON string of digits (the compat wire) or an integer."""
    return as_int(value)


# ----------------------------------------------------------------------------- media


class _CompatMediaBody(msgspec.Struct):
    payload: bytes
    track: str = "inbound"
    chunk: str | int | None = None
    timestamp: str | int | None = None


class _CompatMedia(msgspec.Struct):
    event: str
    media: _CompatMediaBody
    sequenceNumber: str | int | None = None
    streamSid: str | None = None


_decode_media_typed = msgspec.json.Decoder(_CompatMedia).decode


def _as_media(wire: _CompatMedia) -> Media:
    body = wire.media
    return Media(
        event="media",
        media=MediaBody(
            payload=body.payload,
            track=body.track,
            timestamp=body.timestamp,
            chunk=_count(body.chunk),
        ),
        sequenceNumber=_count(wire.sequenceNumber),
        streamId=wire.streamSid,
    )


def decode_media(frame: str | bytes) -> Media | None:
    """The hot path: a well-formed compat ``media`` frame as a :class:`Media`, or None."""
    try:
        wire = _decode_media_typed(frame)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    return _as_media(wire) if wire.event == "media" else None


def _media_tolerant(msg: dict[str, Any], frame: str | bytes, sid: str | None) -> Inbound:
    found = media_payload(msg, frame)
    if isinstance(found, MalformedFrame):
        return found
    media, raw = found
    timestamp = media.get("timestamp")
    return Media(
        event="media",
        media=MediaBody(
            payload=raw,
            track=opt_str(media.get("track")) or "inbound",
            timestamp=timestamp if type(timestamp) in (int, str) else None,
            chunk=_count(media.get("chunk")),
        ),
        sequenceNumber=_count(msg.get("sequenceNumber")),
        streamId=sid,
    )


# ----------------------------------------------------------------------------- start


class _MediaFormat(msgspec.Struct):
    encoding: str
    sampleRate: int = 8000
    channels: int = 1


class _Start(msgspec.Struct):
    streamSid: str
    callSid: str
    accountSid: str | None = None
    tracks: list[str] = msgspec.field(default_factory=lambda: ["inbound"])
    customParameters: dict[str, str] | None = None
    mediaFormat: _MediaFormat | None = None


def _provider(start: _Start, top_level_sid: bool) -> str:
    account = start.accountSid or ""
    if top_level_sid or (account.startswith("AC") and len(account) == 34):
        return "twilio"
    return "signalwire"


def _start(msg: dict[str, Any], sid: str | None) -> StreamStarted:
    """Raises msgspec.ValidationError or CodecError for an unusable ``start``."""
    inner = msg.get("start")
    if not isinstance(inner, dict):
        raise CodecError("start frame without a start object")
    start = msgspec.convert(inner, _Start, strict=False)
    if not start.streamSid or not start.callSid:
        raise CodecError("empty streamSid or callSid")
    if start.mediaFormat is None:
        fmt = AudioFormat(AudioEncoding.MULAW, 8000)  # Twilio's only format (compat 5.1)
    else:
        fmt = AudioFormat.parse(start.mediaFormat.encoding.lower(), start.mediaFormat.sampleRate)
    return StreamStarted(
        stream_id=start.streamSid,
        call_id=start.callSid,
        media_format=fmt,
        account_id=start.accountSid,
        tracks=tuple(start.tracks),
        shape="compat",
        sequence_number=_count(msg.get("sequenceNumber")),
        custom_parameters=dict(start.customParameters or {}),
        provider=_provider(start, isinstance(sid, str) and sid == msg.get("streamSid")),
    )


# ----------------------------------------------------------------------------- others

Inbound = (
    StreamStarted
    | Media
    | Connected
    | PlaybackCheckpointReached
    | DtmfReceived
    | StreamStopped
    | UnknownEvent
    | MalformedFrame
)
"""What :func:`parse_inbound` returns."""


def _mark(msg: dict[str, Any], frame: str | bytes, sid: str | None) -> Inbound:
    body = msg.get("mark")
    name = body.get("name") if isinstance(body, dict) else None
    if type(name) is not str:
        return malformed("missing-field", frame, "mark.name")
    return PlaybackCheckpointReached(name, True, sid, _count(msg.get("sequenceNumber")))


def _dtmf(msg: dict[str, Any], frame: str | bytes, sid: str | None) -> Inbound:
    """Twilio ``{track, digit}``, SignalWire ``{digit, duration}`` (compat 4.3.4)."""
    body = msg.get("dtmf")
    body = body if isinstance(body, dict) else {}
    digit = dtmf_digit(body.get("digit"))
    if digit is None:
        return malformed("bad-field", frame, "dtmf.digit")
    track = opt_str(body.get("track"))
    if track is not None and track.endswith("_track"):
        track = track[: -len("_track")]
    return DtmfReceived(digit, track or "inbound", None, sid, as_int(body.get("duration")))


def _stop(msg: dict[str, Any], frame: str | bytes, sid: str | None) -> Inbound:
    return StreamStopped(sid, None)


def _start_or_malformed(msg: dict[str, Any], frame: str | bytes, sid: str | None) -> Inbound:
    try:
        return _start(msg, sid)
    except (msgspec.ValidationError, CodecError) as exc:
        return malformed("bad-start", frame, str(exc).splitlines()[0] if str(exc) else "")


def _connected(msg: dict[str, Any], frame: str | bytes, sid: str | None) -> Inbound:
    return Connected(opt_str(msg.get("protocol")), opt_str(msg.get("version")))


_INBOUND: dict[str, Callable[[dict[str, Any], str | bytes, str | None], Inbound]] = {
    "connected": _connected,
    "start": _start_or_malformed,
    "media": _media_tolerant,
    "mark": _mark,
    "dtmf": _dtmf,
    "stop": _stop,
}


def _unwrap(msg: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The message itself, or the one inside a ``rawEvent`` envelope (compat 4.4), and
    the best stream id: the message's own, else the envelope's, else ``start``'s."""
    envelope_sid = None
    if "event" not in msg and isinstance(msg.get("rawEvent"), dict):
        envelope_sid = opt_str(msg.get("streamSid"))
        msg = msg["rawEvent"]
    sid = opt_str(msg.get("streamSid")) or envelope_sid
    if sid is None and isinstance(msg.get("start"), dict):
        sid = opt_str(msg["start"].get("streamSid"))
    return msg, sid


def parse_inbound(frame: str | bytes, *, binary: bool = False) -> tuple[Inbound, int | None]:
    """Parse one frame the platform sent the application.

    Returns:
        The parsed message and its ``sequenceNumber`` as an integer (None if absent).
    """
    decoded = decode_object(frame, binary)
    if type(decoded) is MalformedFrame:
        return decoded, None
    assert isinstance(decoded, dict)
    msg, sid = _unwrap(decoded)
    seq = _count(msg.get("sequenceNumber"))
    event = msg.get("event")
    handler = _INBOUND.get(event) if isinstance(event, str) else None
    if handler is None:
        return UnknownEvent(event if isinstance(event, str) else None, decoded), seq
    return handler(msg, frame, sid), seq


def looks_like_compat(frame: str | bytes) -> bool:
    """Whether a first frame is in this dialect: ``connected``, a ``start`` carrying a
    ``streamSid``, or a ``rawEvent`` envelope (the Vobiz ``start`` has ``streamId``)."""
    msg = decode_object(frame, False)
    if type(msg) is not dict:
        return False
    if "event" not in msg and isinstance(msg.get("rawEvent"), dict):
        return True
    event = msg.get("event")
    if event == "connected":
        return True
    inner = msg.get("start")
    return event == "start" and isinstance(inner, dict) and "streamSid" in inner


# ----------------------------------------------------------------- outbound: commands


def media_prefix(stream_sid: str) -> str:
    """Everything of an outbound ``media`` frame before the base64 payload; the frame
    is ``prefix + base64 + MEDIA_SUFFIX`` (compat 4.5.1: payload only)."""
    return '{"event":"media","streamSid":' + json_string(stream_sid) + ',"media":{"payload":"'


MEDIA_SUFFIX = '"}}'


def mark_frame(stream_sid: str, name: str) -> str:
    """An outbound (or echoed) ``mark`` (compat 4.5.2)."""
    return (
        '{"event":"mark","streamSid":'
        + json_string(stream_sid)
        + ',"mark":{"name":'
        + json_string(name)
        + "}}"
    )


def clear_frame(stream_sid: str) -> str:
    """``clear``: flush the platform's playback queue; no acknowledgement (compat 4.5.3)."""
    return '{"event":"clear","streamSid":' + json_string(stream_sid) + "}"


def serialize(command: Command) -> str:
    """The compat wire frame of a command.

    Raises:
        ValueError: ``Stop`` has no wire form in this dialect: close the socket.
    """
    if type(command) is PlayAudio:
        payload = binascii.b2a_base64(command.payload, newline=False).decode("ascii")
        return media_prefix(command.stream_id) + payload + MEDIA_SUFFIX
    if type(command) is Checkpoint:
        return mark_frame(command.stream_id, command.name)
    if type(command) is ClearAudio:
        return clear_frame(command.stream_id)
    raise ValueError("the compat dialect has no outbound stop: close the socket (compat 4.7)")


# ----------------------------------------------- platform side: parsing our commands


def parse_command(
    frame: str | bytes, media_format: AudioFormat, *, binary: bool = False
) -> tuple[Command | MalformedFrame | UnknownEvent, int | None]:
    """Parse one frame the application sent (the platform's side, used by the emulator).

    Args:
        media_format: the stream's format; compat ``media`` does not carry one.

    Returns:
        The command (or what went wrong; anything but ``media``/``mark``/``clear`` is
        an :class:`UnknownEvent`, Twilio's protocol error 31924) and its sequence number.
    """
    decoded = decode_object(frame, binary)
    if type(decoded) is MalformedFrame:
        return decoded, None
    assert isinstance(decoded, dict)
    msg = decoded
    sid = opt_str(msg.get("streamSid")) or ""
    event = msg.get("event")
    seq = _count(msg.get("sequenceNumber"))
    if event == "media":
        media = msg.get("media")
        if type(media) is not dict or type(media.get("payload")) is not str:
            return malformed("missing-field", frame, "media.payload"), seq
        try:
            payload = binascii.a2b_base64(media["payload"], strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            return malformed("bad-base64", frame, str(exc)), seq
        if media_format.encoding is AudioEncoding.L16 and len(payload) & 1:
            return malformed("odd-length", frame, f"{len(payload)} bytes of L16"), seq
        return PlayAudio(sid, media_format.encoding, media_format.sample_rate, payload), seq
    if event == "mark":
        body = msg.get("mark")
        name = body.get("name") if isinstance(body, dict) else None
        if type(name) is not str or not name:
            return malformed("missing-field", frame, "mark.name"), seq
        return Checkpoint(sid, name), seq
    if event == "clear":
        return ClearAudio(sid), seq
    return UnknownEvent(event if isinstance(event, str) else None, msg), seq


# ------------------------------------------------------- platform side: its frames


def _compact(body: Mapping[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def connected_frame(*, twilio: bool) -> str:
    """``connected`` as Twilio (``1.0.0``) or SignalWire (``0.2.0``) sends it."""
    return _compact(
        {"event": "connected", "protocol": "Call", "version": "1.0.0" if twilio else "0.2.0"}
    )


def start_frame(
    *,
    sequence_number: int,
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    media_format: AudioFormat,
    tracks: tuple[str, ...] = ("inbound",),
    custom_parameters: Mapping[str, str] | None = None,
    twilio: bool,
) -> str:
    """``start`` (compat 4.3.2): string counters; a top-level ``streamSid`` on Twilio;
    SignalWire's capital ``audio/x-L16``."""
    encoding = "audio/x-mulaw" if media_format.encoding is AudioEncoding.MULAW else "audio/x-L16"
    body: dict[str, Any] = {
        "event": "start",
        "sequenceNumber": str(sequence_number),
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": list(tracks),
            "customParameters": dict(custom_parameters or {}),
            "mediaFormat": {
                "encoding": encoding,
                "sampleRate": media_format.sample_rate,
                "channels": 1,
            },
        },
    }
    if twilio:
        body["streamSid"] = stream_sid
    return _compact(body)


def platform_media_frame(
    *,
    sequence_number: int,
    stream_sid: str | None,
    track: str,
    chunk: int,
    timestamp: int,
    payload: bytes,
) -> str:
    """A platform ``media`` frame (compat 4.3.3): string counters, the timestamp in ms
    since the stream started, ``streamSid`` only when given (Twilio)."""
    head = '{"event":"media","sequenceNumber":"' + str(sequence_number) + '","media":{"track":'
    tail = "}" if stream_sid is None else ',"streamSid":' + json_string(stream_sid) + "}"
    return (
        head
        + json_string(track)
        + ',"chunk":"'
        + str(chunk)
        + '","timestamp":"'
        + str(int(timestamp))
        + '","payload":"'
        + binascii.b2a_base64(payload, newline=False).decode("ascii")
        + '"}'
        + tail
    )


def media_frame(stream_sid: str, payload: bytes) -> str:
    """Our outbound ``media`` for ``payload`` already in the stream's format."""
    encoded = binascii.b2a_base64(payload, newline=False).decode("ascii")
    return media_prefix(stream_sid) + encoded + MEDIA_SUFFIX


def echo_mark_frame(*, sequence_number: int, stream_sid: str, name: str) -> str:
    """The platform's echo of a ``mark`` (compat 4.3.5)."""
    return _compact(
        {
            "event": "mark",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    )


def dtmf_frame(*, sequence_number: int, stream_sid: str, digit: str, twilio: bool) -> str:
    """A key press: Twilio ``{track, digit}``, SignalWire ``{digit, duration}``."""
    dtmf: dict[str, Any] = (
        {"track": "inbound_track", "digit": digit} if twilio else {"digit": digit, "duration": 250}
    )
    return _compact(
        {
            "event": "dtmf",
            "sequenceNumber": str(sequence_number),
            "streamSid": stream_sid,
            "dtmf": dtmf,
        }
    )


def stop_frame(
    *, sequence_number: int, stream_sid: str, account_sid: str, call_sid: str, twilio: bool
) -> str:
    """``stop`` (compat 4.3.6): Twilio names the call and stream; SignalWire sends only
    the event and its counter."""
    if not twilio:
        return _compact({"event": "stop", "sequenceNumber": str(sequence_number)})
    return _compact(
        {
            "event": "stop",
            "sequenceNumber": str(sequence_number),
            "stop": {"accountSid": account_sid, "callSid": call_sid},
            "streamSid": stream_sid,
        }
    )
