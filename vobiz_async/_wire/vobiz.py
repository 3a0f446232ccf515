"""The Vobiz dialect of the media WebSocket (spec 4): JSON text <-> events and commands.

Pure and stateless: no counters, no stream state, no I/O. Every frame is parsed with
msgspec (one library): a typed decoder for the hot ``media`` frame (JSON and base64 in
one C pass), a generic decode plus typed structs (``msgspec.convert``) for the rest.
Anything unusable becomes a :class:`~vobiz_async.events.MalformedFrame` with a reason;
a well-formed frame with an unknown ``event`` becomes an
:class:`~vobiz_async.events.UnknownEvent`. Nothing here raises for peer input.

Tolerance for the four generations of Vobiz docs (spec 7): nested (newest) and flat
(oldest) ``start``; per-frame ``contentType``/``sampleRate`` on old ``media``; string or
integer counters and timestamps; ``playedStream`` with or without ``streamId``; ``dtmf``
digits under ``dtmf`` or at the top level; an inbound ``stop`` (older docs only).

Outbound frames follow the newest docs (spec 4.4): ``streamId`` always present,
``sampleRate`` an integer, ``contentType`` without ``;rate=``; keys in a fixed order
with compact separators, so a frame is reproducible byte for byte.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from ..codec import AudioEncoding, AudioFormat
from ..errors import CodecError
from ..events import (
    AudioCleared,
    Checkpoint,
    ClearAudio,
    Command,
    DtmfReceived,
    MalformedFrame,
    PlayAudio,
    PlaybackCheckpointReached,
    Stop,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    json_string,
)

__all__ = [
    "DEFAULT_FORMAT",
    "PLAY_AUDIO_SUFFIX",
    "RAW_LIMIT",
    "Inbound",
    "Media",
    "MediaBody",
    "as_int",
    "cleared_frame",
    "decode_media",
    "decode_object",
    "dtmf_digit",
    "dtmf_frame",
    "malformed",
    "media_frame",
    "opt_str",
    "parse_command",
    "parse_extra_headers",
    "parse_inbound",
    "play_audio_prefix",
    "played_frame",
    "serialize",
    "start_frame",
]

RAW_LIMIT = 512
"""Characters of an offending frame kept in a ``MalformedFrame``."""
DEFAULT_FORMAT = AudioFormat(AudioEncoding.L16, 8000)
"""Vobiz's default content type (spec 2.3, 3.1)."""

_loads: Callable[[str | bytes], Any] = msgspec.json.Decoder().decode
_DTMF_DIGITS = frozenset("0123456789*#ABCD")


def malformed(reason: str, raw: str | bytes, detail: str = "") -> MalformedFrame:
    """A :class:`MalformedFrame` keeping at most :data:`RAW_LIMIT` characters of ``raw``."""
    return MalformedFrame(reason, raw[:RAW_LIMIT], detail)


def as_int(value: object) -> int | None:
    """An int from an int or a decimal string (the wire uses both); None otherwise."""
    if type(value) is int:
        return value
    if type(value) is str and len(value) < 20 and value.isdigit():
        return int(value)
    return None


def opt_str(value: object) -> str | None:
    """``value`` if it is a string, else None (fields are read defensively)."""
    return value if isinstance(value, str) else None


def dtmf_digit(value: object) -> str | None:
    """A DTMF digit (``0-9``, ``*``, ``#``, ``A-D``; an int 0-9 is taken), or None."""
    if type(value) is int and 0 <= value <= 9:
        value = str(value)
    if not isinstance(value, str) or len(value) != 1 or value.upper() not in _DTMF_DIGITS:
        return None
    return value.upper()


# ------------------------------------------------------------------------ inbound: media


class MediaBody(msgspec.Struct):
    """The ``media`` object of a ``media`` frame (spec 4.3.3; old shape: 4.3.3 note)."""

    payload: bytes  # base64 decoded in the same C pass as the JSON
    track: str = "inbound"
    timestamp: str | int | None = None
    chunk: int | None = None
    contentType: str | None = None
    sampleRate: int | str | None = None


class Media(msgspec.Struct):
    """A ``media`` frame, audio still encoded as on the wire (decoded by the protocol,
    which knows the stream's format and byte order)."""

    event: str
    media: MediaBody
    sequenceNumber: int | None = None
    streamId: str | None = None


_decode_media_typed = msgspec.json.Decoder(Media).decode


def decode_media(frame: str | bytes) -> Media | None:
    """The hot path: a well-formed ``media`` frame, or None (then use :func:`parse_inbound`)."""
    try:
        wire = _decode_media_typed(frame)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    return wire if wire.event == "media" else None


def media_payload(
    msg: dict[str, Any], frame: str | bytes
) -> tuple[dict[str, Any], bytes] | MalformedFrame:
    """The ``media`` object of a frame the typed decoder refused, and its payload decoded
    (strict base64); what is missing or broken as a :class:`MalformedFrame`. Both
    dialects carry audio this way (spec 4.3.3, compat 4.3.3)."""
    media = msg.get("media")
    if type(media) is not dict:
        return malformed("missing-field", frame, "media")
    payload = media.get("payload")
    if type(payload) is not str:
        return malformed("missing-field", frame, "media.payload")
    try:
        return media, binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        return malformed("bad-base64", frame, str(exc))


def _media_tolerant(msg: dict[str, Any], frame: str | bytes) -> Media | MalformedFrame:
    """A ``media`` frame the typed decoder refused: find out what is wrong, or take it."""
    found = media_payload(msg, frame)
    if isinstance(found, MalformedFrame):
        return found
    media, raw = found
    rate = media.get("sampleRate")
    if type(rate) is float and rate.is_integer():
        rate = int(rate)
    if rate is not None and type(rate) not in (int, str):
        return malformed("bad-field", frame, f"media.sampleRate {rate!r}")
    timestamp = media.get("timestamp")
    return Media(
        event="media",
        media=MediaBody(
            payload=raw,
            track=opt_str(media.get("track")) or "inbound",
            timestamp=timestamp if type(timestamp) in (int, str) else None,
            chunk=as_int(media.get("chunk")),
            contentType=opt_str(media.get("contentType")),
            sampleRate=rate,
        ),
        sequenceNumber=as_int(msg.get("sequenceNumber")),
        streamId=opt_str(msg.get("streamId")),
    )


# ------------------------------------------------------------------------ inbound: start


class _MediaFormat(msgspec.Struct):
    encoding: str
    sampleRate: int = 8000


class _StartNested(msgspec.Struct):
    callId: str
    streamId: str
    accountId: str | int | None = None
    tracks: list[str] = msgspec.field(default_factory=lambda: ["inbound"])
    mediaFormat: _MediaFormat | None = None


class _StartFlat(msgspec.Struct):
    callId: str
    streamId: str
    accountId: str | int | None = None
    contentType: str = DEFAULT_FORMAT.content_type
    audioTrack: str = "inbound"
    sampleRate: int | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    direction: str | None = None


def parse_extra_headers(raw: object) -> tuple[str | None, dict[str, str]]:
    """Keep the raw string; parse JSON or ``k=v`` pairs split on ``;`` or ``,`` (4.3.1)."""
    if raw is None:
        return None, {}
    if isinstance(raw, dict):
        return json.dumps(raw), {str(k): str(v) for k, v in raw.items()}
    text = str(raw)
    try:
        parsed = _loads(text)
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        parsed = None
    if isinstance(parsed, dict):
        return text, {str(k): str(v) for k, v in parsed.items()}
    pairs: dict[str, str] = {}
    for part in text.replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if not sep:
            key, sep, value = part.partition(":")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return text, pairs


def _start(msg: dict[str, Any]) -> StreamStarted:
    """Both ``start`` shapes (spec 4.3.1 nested, 4.3.2 flat).

    Raises:
        msgspec.ValidationError, CodecError: the frame is not a usable ``start``.
    """
    raw_headers, headers = parse_extra_headers(msg.get("extra_headers"))
    seq = as_int(msg.get("sequenceNumber"))
    inner = msg.get("start")
    if isinstance(inner, dict):
        nested = msgspec.convert(inner, _StartNested, strict=False)
        if nested.mediaFormat is not None:
            fmt = AudioFormat.parse(nested.mediaFormat.encoding, nested.mediaFormat.sampleRate)
        else:
            content_type = msg.get("contentType", DEFAULT_FORMAT.content_type)
            fmt = AudioFormat.parse(str(content_type))
        if not nested.streamId or not nested.callId:
            raise CodecError("empty streamId or callId")
        return StreamStarted(
            stream_id=nested.streamId,
            call_id=nested.callId,
            media_format=fmt,
            account_id=None if nested.accountId is None else str(nested.accountId),
            tracks=tuple(nested.tracks),
            extra_headers=headers,
            extra_headers_raw=raw_headers,
            shape="nested",
            sequence_number=seq,
        )
    flat = msgspec.convert(msg, _StartFlat, strict=False)
    if not flat.streamId or not flat.callId:
        raise CodecError("empty streamId or callId")
    return StreamStarted(
        stream_id=flat.streamId,
        call_id=flat.callId,
        media_format=AudioFormat.parse(flat.contentType, flat.sampleRate),
        account_id=None if flat.accountId is None else str(flat.accountId),
        tracks=(flat.audioTrack,),
        extra_headers=headers,
        extra_headers_raw=raw_headers,
        shape="flat",
        from_number=flat.from_,
        to_number=flat.to,
        direction=flat.direction,
        sequence_number=seq,
    )


# ---------------------------------------------------------------------- inbound: others

Inbound = (
    StreamStarted
    | Media
    | PlaybackCheckpointReached
    | AudioCleared
    | DtmfReceived
    | StreamStopped
    | UnknownEvent
    | MalformedFrame
)
"""What :func:`parse_inbound` returns: events, or a ``Media`` frame still encoded."""


def _played(msg: dict[str, Any], frame: str | bytes) -> Inbound:
    name = msg.get("name")
    if type(name) is not str:
        return malformed("missing-field", frame, "name")
    return PlaybackCheckpointReached(
        name, True, opt_str(msg.get("streamId")), as_int(msg.get("sequenceNumber"))
    )


def _cleared(msg: dict[str, Any], frame: str | bytes) -> Inbound:
    return AudioCleared(opt_str(msg.get("streamId")), as_int(msg.get("sequenceNumber")))


def _dtmf(msg: dict[str, Any], frame: str | bytes) -> Inbound:
    """Body presumed Plivo-identical; the digit is read defensively (spec 4.3.6)."""
    body = msg.get("dtmf")
    body = body if isinstance(body, dict) else {}
    digit = dtmf_digit(body.get("digit", msg.get("digit")))
    if digit is None:
        return malformed("bad-field", frame, "dtmf.digit")
    return DtmfReceived(
        digit,
        opt_str(body.get("track")),
        as_int(body.get("timestamp", msg.get("timestamp"))),
        opt_str(msg.get("streamId")),
    )


def _stop(msg: dict[str, Any], frame: str | bytes) -> Inbound:
    """An inbound ``stop``: older docs only (spec 4.3.7); the close is the real end."""
    inner = msg.get("stop")
    reason = msg.get("reason")
    if reason is None and isinstance(inner, dict):
        reason = inner.get("reason")
    return StreamStopped(opt_str(msg.get("streamId")), opt_str(reason))


def _start_or_malformed(msg: dict[str, Any], frame: str | bytes) -> Inbound:
    try:
        return _start(msg)
    except (msgspec.ValidationError, CodecError) as exc:
        return malformed("bad-start", frame, str(exc).splitlines()[0] if str(exc) else "")


_INBOUND: dict[str, Callable[[dict[str, Any], str | bytes], Inbound]] = {
    "start": _start_or_malformed,
    "media": _media_tolerant,
    "playedStream": _played,
    "clearedAudio": _cleared,
    "dtmf": _dtmf,
    "stop": _stop,
}


def decode_object(frame: str | bytes, binary: bool) -> dict[str, Any] | MalformedFrame:
    """One frame as a JSON object, or why it is not one (any dialect: every provider
    sends one JSON object per text frame)."""
    if binary:
        return malformed("binary-frame", frame, "providers send text frames only")
    try:
        msg = _loads(frame)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
        return malformed("invalid-json", frame, str(exc)[:200])
    if type(msg) is not dict:
        return malformed("not-an-object", frame, "expected a JSON object")
    return msg


def parse_inbound(frame: str | bytes, *, binary: bool = False) -> tuple[Inbound, int | None]:
    """Parse one frame Vobiz sent the application.

    Args:
        frame: a text frame, as ``str`` or still UTF-8 ``bytes``.
        binary: the frame was a binary WebSocket frame, which Vobiz never sends
            (reported as malformed).

    Returns:
        The parsed message and the frame's integer ``sequenceNumber`` (None when absent
        or not an integer), which the protocol uses to count gaps.
    """
    msg = decode_object(frame, binary)
    if type(msg) is MalformedFrame:
        return msg, None
    assert isinstance(msg, dict)
    seq = msg.get("sequenceNumber")
    event = msg.get("event")
    handler = _INBOUND.get(event) if isinstance(event, str) else None
    parsed = (
        handler(msg, frame)
        if handler is not None
        else UnknownEvent(event if isinstance(event, str) else None, msg)
    )
    return parsed, seq if type(seq) is int else None


# ------------------------------------------------------------------ outbound: commands


def play_audio_prefix(stream_id: str, fmt: AudioFormat) -> str:
    """Everything of a ``playAudio`` frame before the base64 payload; the frame is
    ``prefix + base64 + PLAY_AUDIO_SUFFIX`` (a template: no JSON encoder per frame)."""
    return (
        '{"event":"playAudio","streamId":'
        + json_string(stream_id)
        + ',"media":{"contentType":"'
        + fmt.encoding.value
        + '","sampleRate":'
        + str(int(fmt.sample_rate))
        + ',"payload":"'
    )


PLAY_AUDIO_SUFFIX = '"}}'


def serialize(command: Command) -> str:
    """The Vobiz wire frame of a command (spec 4.4)."""
    if type(command) is PlayAudio:
        fmt = AudioFormat(command.encoding, command.sample_rate)
        payload = binascii.b2a_base64(command.payload, newline=False).decode("ascii")
        return play_audio_prefix(command.stream_id, fmt) + payload + PLAY_AUDIO_SUFFIX
    if type(command) is Checkpoint:
        return (
            '{"event":"checkpoint","streamId":'
            + json_string(command.stream_id)
            + ',"name":'
            + json_string(command.name)
            + "}"
        )
    if type(command) is ClearAudio:
        return '{"event":"clearAudio","streamId":' + json_string(command.stream_id) + "}"
    assert type(command) is Stop
    return '{"event":"stop","streamId":' + json_string(command.stream_id) + "}"


# ------------------------------------------------ provider side: parsing our commands


def _play_audio(msg: dict[str, Any], frame: str | bytes) -> Command | MalformedFrame:
    media = msg.get("media")
    if type(media) is not dict or type(media.get("payload")) is not str:
        return malformed("missing-field", frame, "media.payload")
    try:
        fmt = AudioFormat.parse(str(media.get("contentType", "")), as_int(media.get("sampleRate")))
    except CodecError as exc:
        return malformed("bad-field", frame, str(exc))
    try:
        payload = binascii.a2b_base64(media["payload"], strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        return malformed("bad-base64", frame, str(exc))
    if fmt.encoding is AudioEncoding.L16 and len(payload) & 1:
        return malformed("odd-length", frame, f"{len(payload)} bytes of L16")
    return PlayAudio(_stream_id(msg), fmt.encoding, fmt.sample_rate, payload)


def _stream_id(msg: dict[str, Any]) -> str:
    stream_id = msg.get("streamId")
    return stream_id if type(stream_id) is str else ""


def _checkpoint(msg: dict[str, Any], frame: str | bytes) -> Command | MalformedFrame:
    name = msg.get("name")
    if type(name) is not str or not name:
        return malformed("missing-field", frame, "name")
    return Checkpoint(_stream_id(msg), name)


_COMMANDS: dict[str, Callable[[dict[str, Any], str | bytes], Command | MalformedFrame]] = {
    "playAudio": _play_audio,
    "checkpoint": _checkpoint,
    "clearAudio": lambda msg, frame: ClearAudio(_stream_id(msg)),
    "stop": lambda msg, frame: Stop(_stream_id(msg)),
}


def parse_command(
    frame: str | bytes, *, binary: bool = False
) -> tuple[Command | MalformedFrame | UnknownEvent, int | None]:
    """Parse one frame the application sent (the provider's side, used by the emulator).

    A command without a string ``streamId`` gets ``stream_id == ""``: older docs omitted
    it, the newest require it (spec 4.4); the caller decides what that means.

    Returns:
        The command (or what went wrong) and the frame's integer ``sequenceNumber``.
    """
    msg = decode_object(frame, binary)
    if type(msg) is MalformedFrame:
        return msg, None
    assert isinstance(msg, dict)
    seq = msg.get("sequenceNumber")
    event = msg.get("event")
    handler = _COMMANDS.get(event) if isinstance(event, str) else None
    parsed: Command | MalformedFrame | UnknownEvent = (
        handler(msg, frame)
        if handler is not None
        else UnknownEvent(event if isinstance(event, str) else None, msg)
    )
    return parsed, seq if type(seq) is int else None


# --------------------------------------------------------- provider side: our events


def _compact(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def start_frame(
    *,
    sequence_number: int,
    call_id: str,
    stream_id: str,
    media_format: AudioFormat,
    account_id: str,
    tracks: tuple[str, ...],
    shape: Literal["nested", "flat"],
    extra_headers: str,
    from_number: str,
    to_number: str,
) -> str:
    """A ``start`` frame in the newest nested shape (4.3.1) or the oldest flat one (4.3.2)."""
    if shape == "nested":
        return _compact(
            {
                "sequenceNumber": sequence_number,
                "event": "start",
                "start": {
                    "callId": call_id,
                    "streamId": stream_id,
                    "accountId": account_id,
                    "tracks": list(tracks),
                    "mediaFormat": {
                        "encoding": media_format.encoding.value,
                        "sampleRate": media_format.sample_rate,
                    },
                },
                "extra_headers": extra_headers,
            }
        )
    return _compact(
        {
            "event": "start",
            "streamId": stream_id,
            "accountId": account_id,
            "callId": call_id,
            "from": from_number,
            "to": to_number,
            "direction": "inbound",
            "contentType": media_format.content_type,
            "audioTrack": tracks[0] if tracks else "inbound",
        }
    )


def media_frame(
    *, sequence_number: int, stream_id: str, track: str, timestamp: int, chunk: int, payload: bytes
) -> str:
    """A ``media`` frame in the newest shape (spec 4.3.3); ``payload`` already encoded."""
    return (
        '{"sequenceNumber":'
        + str(sequence_number)
        + ',"streamId":'
        + json_string(stream_id)
        + ',"event":"media","media":{"track":'
        + json_string(track)
        + ',"timestamp":"'
        + str(int(timestamp))
        + '","chunk":'
        + str(chunk)
        + ',"payload":"'
        + binascii.b2a_base64(payload, newline=False).decode("ascii")
        + '"},"extra_headers":"{}"}'
    )


def played_frame(name: str) -> str:
    """``playedStream`` in the newest shape: event and name only (spec 4.3.4)."""
    return _compact({"event": "playedStream", "name": name})


def cleared_frame(*, sequence_number: int, stream_id: str) -> str:
    """``clearedAudio`` (spec 4.3.5)."""
    return _compact(
        {"sequenceNumber": sequence_number, "event": "clearedAudio", "streamId": stream_id}
    )


def dtmf_frame(*, sequence_number: int, stream_id: str, digit: str, timestamp: int) -> str:
    """``dtmf`` in the presumed Plivo-identical body (spec 4.3.6)."""
    return _compact(
        {
            "sequenceNumber": sequence_number,
            "event": "dtmf",
            "streamId": stream_id,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(int(timestamp))},
        }
    )
