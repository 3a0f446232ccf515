"""The pure Vobiz dialect (vobiz_async._wire.vobiz): text in, typed messages out, and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vobiz_async._wire import vobiz as wire
from vobiz_async.codec import AudioEncoding, AudioFormat
from vobiz_async.events import (
    AudioCleared,
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

FIXTURES = Path(__file__).parent / "fixtures"
SID = "4f23e5e8-6fdb-45ad-bfaf-b694111cf476"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text().strip()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("start_nested.json", StreamStarted),
        ("start_flat.json", StreamStarted),
        ("media_nested.json", wire.Media),
        ("media_flat.json", wire.Media),
        ("played_stream.json", PlaybackCheckpointReached),
        ("played_stream_with_stream_id.json", PlaybackCheckpointReached),
        ("cleared_audio.json", AudioCleared),
        ("dtmf.json", DtmfReceived),
        ("stop.json", StreamStopped),
        ("stop_with_reason.json", StreamStopped),
    ],
)
def test_every_inbound_fixture_has_its_type(name: str, kind: type) -> None:
    """Each documented inbound shape parses to its own type, with no state needed."""
    parsed, _ = wire.parse_inbound(fixture(f"inbound/{name}"))
    assert type(parsed) is kind


def test_parse_is_stateless_and_reports_the_sequence_number() -> None:
    """The same frame parses the same way twice; the integer sequenceNumber comes back."""
    text = fixture("inbound/media_nested.json")
    first, seq1 = wire.parse_inbound(text)
    second, seq2 = wire.parse_inbound(text)
    assert first == second and seq1 == seq2 == json.loads(text)["sequenceNumber"]


def test_hot_media_decoder_and_tolerant_path_agree() -> None:
    """The typed one-pass decoder and the tolerant parser read a media frame alike."""
    text = fixture("inbound/media_nested.json")
    fast = wire.decode_media(text)
    slow, _ = wire.parse_inbound(text)
    assert fast is not None and isinstance(slow, wire.Media)
    assert fast.media.payload == slow.media.payload and fast.streamId == slow.streamId


def test_decode_media_declines_everything_that_is_not_clean_media() -> None:
    """Anything but a well-typed media frame falls through to the tolerant parser."""
    assert wire.decode_media('{"event":"dtmf","dtmf":{"digit":"1"}}') is None
    assert wire.decode_media('{"event":"media","media":{"payload":"@@"}}') is None
    assert wire.decode_media("{") is None


def test_utf8_bytes_are_text_and_binary_frames_are_refused() -> None:
    """Text still in UTF-8 parses without a decode; a binary frame is malformed."""
    text = fixture("inbound/start_nested.json")
    parsed, _ = wire.parse_inbound(text.encode())
    assert isinstance(parsed, StreamStarted)
    binary, _ = wire.parse_inbound(text.encode(), binary=True)
    assert isinstance(binary, MalformedFrame) and binary.reason == "binary-frame"
    invalid, _ = wire.parse_inbound(b'{"event":"x","y":"\xff"}')
    assert isinstance(invalid, MalformedFrame) and invalid.reason == "invalid-json"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "invalid-json"),
        ("[1]", "not-an-object"),
        ('{"event":"media","media":[]}', "missing-field"),
        ('{"event":"media","media":{"payload":"@@@@"}}', "bad-base64"),
        ('{"event":"media","media":{"payload":"AAAA","sampleRate":[8000]}}', "bad-field"),
        ('{"event":"start","start":{"callId":1,"streamId":"s"}}', "bad-start"),
        ('{"event":"start","start":{"callId":"","streamId":""}}', "bad-start"),
        ('{"event":"playedStream","name":3}', "missing-field"),
        ('{"event":"dtmf","dtmf":{"digit":"<b>"}}', "bad-field"),
    ],
)
def test_malformed_frames_carry_a_reason_and_a_bounded_raw_copy(text: str, reason: str) -> None:
    """Bad frames become MalformedFrame values with a reason, never exceptions."""
    parsed, _ = wire.parse_inbound(text + " " * 2000)
    assert isinstance(parsed, MalformedFrame) and parsed.reason == reason
    assert len(parsed.raw) <= wire.RAW_LIMIT


def test_unknown_events_keep_their_payload() -> None:
    """A well-formed frame with an unknown event keeps everything it carried."""
    parsed, _ = wire.parse_inbound('{"event":"mediaError","detail":{"x":1}}')
    assert parsed == UnknownEvent("mediaError", {"event": "mediaError", "detail": {"x": 1}})


def test_start_coerces_string_rates_and_keeps_extra_headers() -> None:
    """A string sampleRate is coerced; extra_headers are kept raw and parsed."""
    frame = json.dumps(
        {
            "event": "start",
            "start": {
                "callId": "c",
                "streamId": "s",
                "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": "16000"},
            },
            "extra_headers": "a=1;b=2",
        }
    )
    parsed, _ = wire.parse_inbound(frame)
    assert isinstance(parsed, StreamStarted)
    assert parsed.media_format == AudioFormat(AudioEncoding.L16, 16000)
    assert parsed.extra_headers == {"a": "1", "b": "2"} and parsed.extra_headers_raw == "a=1;b=2"


@pytest.mark.parametrize(
    ("name", "command"),
    [
        (
            "play_audio_l16_24k.json",
            PlayAudio(SID, AudioEncoding.L16, 24000, b"\x00\x00\x01\x00\x02\x00"),
        ),
        ("play_audio_mulaw.json", PlayAudio(SID, AudioEncoding.MULAW, 8000, b"\xff\xff\x7f\x7f")),
        ("checkpoint.json", Checkpoint(SID, "turn-3")),
        ("clear_audio.json", ClearAudio(SID)),
        ("stop.json", Stop(SID)),
    ],
)
def test_commands_serialise_and_parse_back_byte_for_byte(
    name: str, command: PlayAudio | Checkpoint | ClearAudio | Stop
) -> None:
    """serialize() writes each golden frame exactly; parse_command() reads it back."""
    text = fixture(f"outbound/{name}")
    assert wire.serialize(command) == text
    assert wire.parse_command(text) == (command, None)


def test_commands_without_a_stream_id_are_marked_empty() -> None:
    """The provider side sees that streamId was missing instead of a guess."""
    parsed, _ = wire.parse_command('{"event":"clearAudio"}')
    assert parsed == ClearAudio("")


def test_provider_frames_are_understood_by_the_application_side() -> None:
    """start/media/playedStream/clearedAudio/dtmf built here parse back to their events."""
    fmt = AudioFormat(AudioEncoding.MULAW, 8000)
    start = wire.start_frame(
        sequence_number=0,
        call_id="c",
        stream_id="s",
        media_format=fmt,
        account_id="1",
        tracks=("inbound",),
        shape="nested",
        extra_headers="{}",
        from_number="1",
        to_number="2",
    )
    started, seq = wire.parse_inbound(start)
    assert isinstance(started, StreamStarted) and started.media_format == fmt and seq == 0
    media = wire.decode_media(
        wire.media_frame(
            sequence_number=1,
            stream_id="s",
            track="inbound",
            timestamp=20,
            chunk=1,
            payload=b"\xff",
        )
    )
    assert media is not None and media.media.payload == b"\xff" and media.media.timestamp == "20"
    assert wire.parse_inbound(wire.played_frame("x"))[0] == PlaybackCheckpointReached("x")
    cleared, _ = wire.parse_inbound(wire.cleared_frame(sequence_number=2, stream_id="s"))
    assert cleared == AudioCleared("s", 2)
    dtmf, _ = wire.parse_inbound(
        wire.dtmf_frame(sequence_number=3, stream_id="s", digit="#", timestamp=5)
    )
    assert dtmf == DtmfReceived("#", "inbound", 5, "s")
