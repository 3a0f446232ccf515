"""The pure Twilio-compatible dialect (vobiz_async._wire.compat): every message of the spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vobiz_async._wire import compat
from vobiz_async._wire.vobiz import Media
from vobiz_async.codec import AudioEncoding, AudioFormat
from vobiz_async.events import (
    Checkpoint,
    ClearAudio,
    DtmfReceived,
    MalformedFrame,
    PlayAudio,
    PlaybackCheckpointReached,
    Stop,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)

FIXTURES = Path(__file__).parent / "fixtures" / "compat"
TW_SID = "MZ8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
SW_SID = "5b0e1f2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
MULAW = AudioFormat(AudioEncoding.MULAW, 8000)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text().strip()


def test_connected_is_recognised_with_its_version() -> None:
    """``connected`` comes first; it is neither a start nor an oddity."""
    parsed, seq = compat.parse_inbound(fixture("connected_twilio.json"))
    assert parsed == compat.Connected("Call", "1.0.0") and seq is None
    assert compat.parse_inbound(fixture("connected_signalwire.json"))[0] == compat.Connected(
        "Call", "0.2.0"
    )


def test_twilio_start_keeps_custom_parameters_and_string_counters() -> None:
    """Twilio's start: ids, customParameters, mu-law 8 kHz, the counter read as an int."""
    parsed, seq = compat.parse_inbound(fixture("start_twilio.json"))
    assert isinstance(parsed, StreamStarted) and seq == 1
    assert parsed.stream_id == TW_SID and parsed.call_id.startswith("CA")
    assert parsed.custom_parameters == {"corr": "c-2f9e41", "tenant": "42"}
    assert parsed.media_format == MULAW and parsed.provider == "twilio" and parsed.shape == "compat"


def test_signalwire_start_reads_capital_l16_and_has_no_top_level_sid() -> None:
    """SignalWire's start: ``audio/x-L16`` at 16 kHz, stream id from ``start.streamSid``."""
    parsed, _ = compat.parse_inbound(fixture("start_signalwire.json"))
    assert isinstance(parsed, StreamStarted) and parsed.stream_id == SW_SID
    assert parsed.media_format == AudioFormat(AudioEncoding.L16, 16000)
    assert parsed.provider == "signalwire" and parsed.custom_parameters == {"corr": "c-2f9e41"}


def test_raw_event_envelope_is_unwrapped() -> None:
    """The older SignalWire envelope is parsed as the message it wraps."""
    parsed, seq = compat.parse_inbound(fixture("raw_event_start.json"))
    assert isinstance(parsed, StreamStarted) and seq == 1
    assert parsed.media_format == AudioFormat(AudioEncoding.L16, 24000)


@pytest.mark.parametrize(
    ("name", "track", "chunk", "timestamp", "sid"),
    [
        ("media_twilio_outbound_track.json", "outbound", 1, "5", TW_SID),
        ("media_twilio_inbound_track.json", "inbound", 2, "5", TW_SID),
        ("media_signalwire.json", "inbound", 1001, "20041", None),
    ],
)
def test_media_frames_both_ways_agree(
    name: str, track: str, chunk: int, timestamp: str, sid: str | None
) -> None:
    """The typed hot path and the tolerant parser read media identically."""
    text = fixture(name)
    fast = compat.decode_media(text)
    slow, seq = compat.parse_inbound(text)
    assert isinstance(fast, Media) and isinstance(slow, Media)
    assert fast == slow
    assert fast.media.track == track and fast.media.chunk == chunk
    assert fast.media.timestamp == timestamp and fast.streamId == sid
    assert seq == int(json.loads(text)["sequenceNumber"])


def test_dtmf_in_both_shapes() -> None:
    """Twilio's track is normalised to ``inbound``; SignalWire's duration is kept."""
    twilio, _ = compat.parse_inbound(fixture("dtmf_twilio.json"))
    signalwire, _ = compat.parse_inbound(fixture("dtmf_signalwire.json"))
    assert twilio == DtmfReceived("1", "inbound", None, TW_SID, None)
    assert signalwire == DtmfReceived("5", "inbound", None, SW_SID, 2000)


def test_marks_with_and_without_a_sequence_number() -> None:
    """A mark echo carries its exact name; SignalWire's omits the counter."""
    twilio, seq = compat.parse_inbound(fixture("mark_twilio.json"))
    assert twilio == PlaybackCheckpointReached("turn-3:g1:m7", True, TW_SID, 4) and seq == 4
    signalwire, seq = compat.parse_inbound(fixture("mark_signalwire.json"))
    assert isinstance(signalwire, PlaybackCheckpointReached) and seq is None


def test_stop_in_both_shapes() -> None:
    """Compat platforms do send an inbound stop (unlike newest Vobiz)."""
    assert compat.parse_inbound(fixture("stop_twilio.json"))[0] == StreamStopped(TW_SID, None)
    assert compat.parse_inbound(fixture("stop_signalwire.json")) == (StreamStopped(None, None), 999)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "invalid-json"),
        ('"x"', "not-an-object"),
        ('{"event":"start","start":{"streamSid":"s"}}', "bad-start"),
        (
            '{"event":"start","start":{"streamSid":"s","callSid":"c","mediaFormat":{"encoding":"audio/x-alaw"}}}',
            "bad-start",
        ),
        ('{"event":"media","media":{"payload":"@@"}}', "bad-base64"),
        ('{"event":"mark","mark":{}}', "missing-field"),
        ('{"event":"dtmf","dtmf":{"digit":"xx"}}', "bad-field"),
    ],
)
def test_malformed_compat_frames_are_refused_with_a_reason(text: str, reason: str) -> None:
    """A bad compat frame is a MalformedFrame with a reason, never an exception."""
    parsed, _ = compat.parse_inbound(text)
    assert isinstance(parsed, MalformedFrame) and parsed.reason == reason


def test_unknown_and_platform_clear_are_kept_as_unknown() -> None:
    """An inbound ``clear`` (older SignalWire docs) or anything else is unknown, kept whole."""
    parsed, _ = compat.parse_inbound('{"event":"clear","streamSid":"s"}')
    assert parsed == UnknownEvent("clear", {"event": "clear", "streamSid": "s"})


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("out_media.json", PlayAudio(TW_SID, AudioEncoding.MULAW, 8000, b"~~\xfe\xfe\xff\x7f")),
        ("out_mark.json", Checkpoint(TW_SID, "turn-3:g1:m7")),
        ("out_clear.json", ClearAudio(TW_SID)),
    ],
)
def test_outbound_golden_frames_round_trip(
    name: str, command: PlayAudio | Checkpoint | ClearAudio
) -> None:
    """Our media/mark/clear serialise byte for byte and parse back on the platform side."""
    text = fixture(name)
    assert compat.serialize(command) == text
    assert compat.parse_command(text, MULAW) == (command, None)


def test_there_is_no_outbound_stop() -> None:
    """Stop has no wire form in this dialect: the session closes the socket instead."""
    with pytest.raises(ValueError, match="no outbound stop"):
        compat.serialize(Stop(TW_SID))
    parsed, _ = compat.parse_command('{"event":"stop","streamSid":"s"}', MULAW)
    assert isinstance(parsed, UnknownEvent)


def test_dialect_detection_on_the_first_frame() -> None:
    """connected, a start with streamSid, or an envelope is compat; Vobiz's start is not."""
    assert compat.looks_like_compat(fixture("connected_twilio.json"))
    assert compat.looks_like_compat(fixture("start_signalwire.json"))
    assert compat.looks_like_compat(fixture("raw_event_start.json"))
    vobiz_start = (Path(__file__).parent / "fixtures" / "inbound" / "start_nested.json").read_text()
    assert not compat.looks_like_compat(vobiz_start)
    assert not compat.looks_like_compat("{")


def test_platform_frames_are_understood_by_the_application_side() -> None:
    """Frames built for the emulator parse back to the events they stand for."""
    for twilio in (True, False):
        start = compat.start_frame(
            sequence_number=1,
            stream_sid="S",
            call_sid="C",
            account_sid="A",
            media_format=MULAW,
            custom_parameters={"k": "v"},
            twilio=twilio,
        )
        started, _ = compat.parse_inbound(start)
        assert isinstance(started, StreamStarted) and started.custom_parameters == {"k": "v"}
        media = compat.decode_media(
            compat.platform_media_frame(
                sequence_number=2,
                stream_sid="S" if twilio else None,
                track="inbound",
                chunk=1,
                timestamp=20,
                payload=b"\xff",
            )
        )
        assert media is not None and media.media.payload == b"\xff" and media.sequenceNumber == 2
        mark, _ = compat.parse_inbound(
            compat.echo_mark_frame(sequence_number=3, stream_sid="S", name="m")
        )
        assert mark == PlaybackCheckpointReached("m", True, "S", 3)
        dtmf, _ = compat.parse_inbound(
            compat.dtmf_frame(sequence_number=4, stream_sid="S", digit="9", twilio=twilio)
        )
        assert isinstance(dtmf, DtmfReceived) and dtmf.digit == "9"
        stop, _ = compat.parse_inbound(
            compat.stop_frame(
                sequence_number=5, stream_sid="S", account_sid="A", call_sid="C", twilio=twilio
            )
        )
        assert isinstance(stop, StreamStopped)
