"""Tests for the sans-I/O StreamProtocol: JSON in, events and frames out."""

from __future__ import annotations

import array
import base64
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._strategies import json_values
from vobiz_async.codec import AudioEncoding, AudioFormat, pcm16_to_ulaw, ulaw_to_pcm16
from vobiz_async.errors import LocalProtocolError, ValidationError
from vobiz_async.events import (
    AudioCleared,
    AudioReceived,
    ByteOrderDetected,
    Checkpoint,
    CheckpointOutcome,
    CheckpointVoided,
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
from vobiz_async.protocol import State, StreamProtocol
from vobiz_async.testing._peer import PeerProtocol

FIXTURES = Path(__file__).parent / "fixtures"
SID = "4f23e5e8-6fdb-45ad-bfaf-b694111cf476"
CALL = "cc17957f-b076-4ba8-a49d-31f632801096"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def start_frame(encoding: str = "audio/x-mulaw", rate: int = 8000, sid: str = SID) -> str:
    return json.dumps(
        {
            "sequenceNumber": 0,
            "event": "start",
            "start": {
                "callId": CALL,
                "streamId": sid,
                "accountId": "731002",
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": encoding, "sampleRate": rate},
            },
            "extra_headers": "{}",
        }
    )


def media_frame(payload: bytes, seq: int = 1, **media: Any) -> str:
    body = {"track": "inbound", "timestamp": "1777888931440", "chunk": seq}
    body.update(media)
    body["payload"] = base64.b64encode(payload).decode()
    return json.dumps({"sequenceNumber": seq, "streamId": SID, "event": "media", "media": body})


def started(encoding: str = "audio/x-mulaw", rate: int = 8000, **kwargs: Any) -> StreamProtocol:
    proto = StreamProtocol(**kwargs)
    proto.receive(start_frame(encoding, rate))
    return proto


def tone(rate: int, ms: int, freq: float = 440.0, amp: float = 8000.0) -> bytes:
    n = rate * ms // 1000
    return struct.pack(
        f"<{n}h", *(round(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


def payload_of(frame: str) -> bytes:
    return base64.b64decode(json.loads(frame)["media"]["payload"])


# ---- inbound shapes -------------------------------------------------------------------------


def test_nested_start_is_parsed() -> None:
    """The newest nested start gives ids, tracks, format and the raw extra headers."""
    proto = StreamProtocol()
    [event] = proto.receive(fixture("inbound/start_nested.json"))
    assert isinstance(event, StreamStarted)
    assert (event.stream_id, event.call_id, event.account_id) == (SID, CALL, "731002")
    assert event.media_format == AudioFormat(AudioEncoding.L16, 16000)
    assert event.tracks == ("inbound",) and event.shape == "nested"
    assert event.extra_headers_raw == "{}" and event.extra_headers == {}
    assert proto.state is State.STREAMING and proto.stream_id == SID


def test_flat_start_is_parsed() -> None:
    """The oldest flat start gives ids, from/to and the format from contentType."""
    [event] = StreamProtocol().receive(fixture("inbound/start_flat.json"))
    assert isinstance(event, StreamStarted)
    assert event.shape == "flat" and event.stream_id == SID and event.call_id == CALL
    assert event.media_format == AudioFormat(AudioEncoding.L16, 8000)
    assert (event.from_number, event.to_number, event.direction) == (
        "+919800000001",
        "+918000000002",
        "inbound",
    )


def test_start_coerces_string_rate_and_parses_kv_extra_headers() -> None:
    """A string sampleRate is coerced; Plivo-style k=v extra headers are parsed."""
    msg = json.loads(start_frame("audio/x-l16", 16000))
    msg["start"]["mediaFormat"]["sampleRate"] = "16000"
    msg["extra_headers"] = "userId=12345;sessionId=abc-xyz"
    [event] = StreamProtocol().receive(json.dumps(msg))
    assert isinstance(event, StreamStarted)
    assert event.media_format.sample_rate == 16000
    assert event.extra_headers == {"userId": "12345", "sessionId": "abc-xyz"}


def test_nested_media_l16_little_endian_by_default() -> None:
    """The spec's captured L16 payload decodes little-endian to -8, -8, 8, 8... (spec 4.6)."""
    proto = started("audio/x-l16", 8000)
    [event] = proto.receive(fixture("inbound/media_nested.json"))
    assert isinstance(event, AudioReceived)
    assert list(struct.unpack("<9h", event.pcm)) == [-8, -8, 8, 8, 8, 8, -8, -24, -8]
    assert (event.track, event.sequence_number, event.chunk) == ("inbound", 57, 57)
    assert event.timestamp == 1777888931440 and event.stream_id == SID
    assert event.sample_rate == 8000


def test_media_mulaw_decodes_to_pcm() -> None:
    """mu-law media frames come out as PCM16 via the codec."""
    proto = started()
    codes = bytes(range(0, 256, 2))
    [event] = proto.receive(media_frame(codes))
    assert isinstance(event, AudioReceived) and event.pcm == ulaw_to_pcm16(codes)
    assert proto.stats.media_in == 1 and proto.stats.audio_ms_in == pytest.approx(16.0)


def test_mulaw_audio_is_decoded_on_first_read_and_behaves_like_eager() -> None:
    """mu-law is decoded when ``pcm`` is first read (an echo never pays for it); the
    event then equals, prints and matches like one built with its PCM."""
    proto = started()
    codes = bytes(range(256))[:160]
    [event] = proto.receive(media_frame(codes))
    assert isinstance(event, AudioReceived)
    assert event._pcm is None and event.payload == codes  # nothing decoded yet
    assert event.duration_ms == 20.0  # known from the payload alone
    eager = AudioReceived(
        ulaw_to_pcm16(codes),
        8000,
        event.track,
        event.sequence_number,
        event.chunk,
        event.timestamp,
        event.stream_id,
        codes,
    )
    assert event == eager and repr(event) == repr(eager)
    assert event.pcm is event.pcm == ulaw_to_pcm16(codes)  # decoded once, kept
    assert eager.duration_ms == 20.0 and event != AudioReceived(b"", 8000)
    match event:
        case AudioReceived(pcm, 8000, "inbound"):
            assert pcm == eager.pcm
        case _:
            pytest.fail("AudioReceived does not match positionally")


def test_flat_media_per_frame_format_overrides_start() -> None:
    """The oldest media shape repeats its format per frame; that format wins."""
    proto = started("audio/x-mulaw", 8000)
    [event] = proto.receive(fixture("inbound/media_flat.json"))
    assert isinstance(event, AudioReceived)
    assert event.pcm == b"\x00\x00\x01\x00\x02\x00" and event.timestamp == 1634567890123


def test_big_endian_inbound_when_configured() -> None:
    """l16_byte_order='big' swaps each inbound sample."""
    proto = started("audio/x-l16", 8000, l16_byte_order="big")
    [event] = proto.receive(media_frame(struct.pack(">2h", 1, -2)))
    assert isinstance(event, AudioReceived) and struct.unpack("<2h", event.pcm) == (1, -2)


@pytest.mark.parametrize("order", ["little", "big"])
def test_auto_byte_order_detects_from_smoothness(order: str) -> None:
    """'auto' decides from ~0.5 s of audio, reports it once, and decodes with it."""
    proto = started("audio/x-l16", 16000, l16_byte_order="auto")
    pcm = tone(16000, 1000)
    fmt = "<" if order == "little" else ">"
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    wire = struct.pack(f"{fmt}{len(samples)}h", *samples)
    detections: list[ByteOrderDetected] = []
    audio: list[AudioReceived] = []
    for i, k in enumerate(range(0, len(wire), 640)):
        for event in proto.receive(media_frame(wire[k : k + 640], seq=i + 1)):
            if isinstance(event, ByteOrderDetected):
                detections.append(event)
            elif isinstance(event, AudioReceived):
                audio.append(event)
    assert [d.order for d in detections] == [order]
    assert audio[-1].pcm == pcm[-640:]


def test_played_cleared_dtmf_and_stop_shapes() -> None:
    """Each rare inbound event parses in every documented shape."""
    proto = started()
    [played] = proto.receive(fixture("inbound/played_stream.json"))
    assert played == PlaybackCheckpointReached("turn-3", matched=False)
    [played2] = proto.receive(fixture("inbound/played_stream_with_stream_id.json"))
    assert isinstance(played2, PlaybackCheckpointReached) and played2.stream_id == SID
    [cleared] = proto.receive(fixture("inbound/cleared_audio.json"))
    assert cleared == AudioCleared(SID, 112)
    [dtmf] = proto.receive(fixture("inbound/dtmf.json"))
    assert dtmf == DtmfReceived("5", "inbound", 1777888935100, SID)
    [stop] = proto.receive(fixture("inbound/stop.json"))
    assert stop == StreamStopped(SID, None)
    [stop2] = proto.receive(fixture("inbound/stop_with_reason.json"))
    assert stop2 == StreamStopped(SID, "call_ended")


def test_dtmf_digit_read_defensively() -> None:
    """A top-level digit and an integer digit are accepted; a junk digit is malformed."""
    proto = started()
    [top] = proto.receive('{"event":"dtmf","digit":"#"}')
    assert isinstance(top, DtmfReceived) and top.digit == "#"
    [num] = proto.receive('{"event":"dtmf","dtmf":{"digit":7}}')
    assert isinstance(num, DtmfReceived) and num.digit == "7"
    [bad] = proto.receive('{"event":"dtmf","dtmf":{"digit":"77"}}')
    assert isinstance(bad, MalformedFrame) and bad.reason == "bad-field"


def test_unknown_events_and_echoed_commands_are_kept_raw() -> None:
    """Unknown events, and our own commands echoed back, become UnknownEvent."""
    proto = started()
    [unknown] = proto.receive('{"event":"mediaError","detail":1}')
    assert unknown == UnknownEvent("mediaError", {"event": "mediaError", "detail": 1})
    [echo] = proto.receive(fixture("outbound/clear_audio.json"))
    assert isinstance(echo, UnknownEvent) and echo.event == "clearAudio"
    assert proto.stats.unknown_events == 2


def test_sequence_gaps_are_counted() -> None:
    """Missing sequence numbers are counted as gaps."""
    proto = started()
    for seq in (1, 2, 5, 6, 10):
        proto.receive(media_frame(b"\xff" * 160, seq=seq))
    assert proto.stats.sequence_gaps == 5


# ---- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "invalid-json"),
        (b"\x00\x01binary", "binary-frame"),
        ("[1, 2, 3]", "not-an-object"),
        ('{"event":"media"}', "missing-field"),
        ('{"event":"media","media":{"payload":"@@@@"}}', "bad-base64"),
        ('{"event":"media","media":{"payload":"AAAA"}}', "odd-length"),
        ('{"event":"start","start":{"streamId":"x"}}', "bad-start"),
        ('{"event":"playedStream"}', "missing-field"),
        # Python 3.11 runs out of recursion depth (invalid-json); 3.12+ parse it as a
        # list (not-an-object). Either way it is refused and counted.
        ("[" * 5000 + "]" * 5000, "invalid-json|not-an-object"),
    ],
)
def test_malformed_frames_are_events_not_exceptions(frame: str | bytes, reason: str) -> None:
    """Each kind of bad frame yields a MalformedFrame, is counted, and the stream goes on."""
    proto = started("audio/x-l16", 8000)
    [event] = proto.receive(frame)
    assert isinstance(event, MalformedFrame) and event.reason in reason.split("|")
    assert proto.stats.malformed == 1 and proto.stats.malformed_reasons[event.reason] == 1
    assert proto.state is State.STREAMING
    [ok] = proto.receive(media_frame(b"\x00\x00"))
    assert isinstance(ok, AudioReceived)


def test_media_before_start_is_malformed_and_start_still_works() -> None:
    """Media before start is counted; a later start is accepted normally."""
    proto = StreamProtocol()
    [early] = proto.receive(media_frame(b"\xff"))
    assert isinstance(early, MalformedFrame) and early.reason == "before-start"
    [event] = proto.receive(start_frame())
    assert isinstance(event, StreamStarted)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_yields_only_documented_events(frame: str | bytes) -> None:
    """Whatever arrives, receive() returns documented event types and never raises."""
    allowed = (
        StreamStarted,
        AudioReceived,
        PlaybackCheckpointReached,
        AudioCleared,
        DtmfReceived,
        StreamStopped,
        UnknownEvent,
        MalformedFrame,
    )
    for proto in (StreamProtocol(), started()):
        for event in proto.receive(frame):
            assert isinstance(event, allowed)


@settings(max_examples=200)
@given(
    json_values(),
    st.sampled_from(
        ["media", "start", "playedStream", "clearedAudio", "dtmf", "stop", "playAudio"]
    ),
)
def test_wrong_types_in_every_field_never_raise(value: object, event: str) -> None:
    """Any JSON value in any field of any event is handled without an exception."""
    frames = [
        json.dumps({"event": event, "media": value, "start": value, "name": value, "dtmf": value}),
        json.dumps({"event": event, "media": {"payload": value, "sampleRate": value}}),
        json.dumps({"event": event, "sequenceNumber": value, "streamId": value}),
    ]
    app = StreamProtocol()
    app.receive(start_frame())
    peer = PeerProtocol()
    for frame in frames:
        assert isinstance(app.receive(frame), list)
        assert isinstance(peer.receive(frame), list)


# ---- outbound -------------------------------------------------------------------------------


def test_commands_before_start_or_after_close_raise() -> None:
    """Our commands need a stream id, and an open stream."""
    proto = StreamProtocol()
    with pytest.raises(LocalProtocolError):
        proto.play(b"\x00\x00")
    proto.receive(start_frame())
    proto.stop()
    assert proto.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        proto.checkpoint("x")


def test_play_cuts_exact_frames_and_carries_the_remainder() -> None:
    """50 ms of 8 kHz PCM gives two 20 ms mu-law frames now and the rest later."""
    proto = started()
    pcm = tone(8000, 50)
    assert proto.play(pcm, 8000) == 2
    assert proto.playout.sent_ms == 0.0  # queued, not sent
    frames = proto.frames_due(0.0)
    assert len(frames) == 2
    assert [len(payload_of(f)) for f in frames] == [160, 160]
    assert b"".join(payload_of(f) for f in frames) == pcm16_to_ulaw(pcm)[:320]
    assert json.loads(frames[0])["media"]["sampleRate"] == 8000
    proto.checkpoint("t1")
    flushed = proto.frames_due(0.0)
    assert len(flushed) == 2 and json.loads(flushed[1])["event"] == "checkpoint"
    assert payload_of(flushed[0]) == pcm16_to_ulaw(pcm)[320:] + b"\xff" * 80
    assert proto.playout.sent_ms == 60.0


@pytest.mark.parametrize(("encoding", "rate"), [("audio/x-mulaw", 8000), ("audio/x-l16", 16000)])
def test_play_queues_the_same_frames_whatever_the_chunking(encoding: str, rate: int) -> None:
    """Whole 20 ms frames (play's fast path), one long chunk and ragged chunks queue the
    same frames, with and without a partial frame held back."""
    pcm = tone(rate, 210, amp=20000.0)
    frame = rate // 50 * 2
    plans = [
        [pcm[i : i + frame] for i in range(0, len(pcm), frame)],
        [pcm],
        [pcm[i : i + 2 * 37] for i in range(0, len(pcm), 2 * 37)],
        [pcm[:6], *(pcm[i : i + frame] for i in range(6, len(pcm), frame))],
    ]
    results = []
    for plan in plans:
        proto = started(encoding, rate)
        queued = sum(proto.play(chunk, rate if i % 2 else None) for i, chunk in enumerate(plan))
        queued += proto.flush_audio()
        frames = proto.frames_due(math.inf)
        assert len(frames) == queued == 11
        results.append(frames)
    assert all(frames == results[0] for frames in results)


def test_play_resamples_24k_tts_to_the_outbound_format() -> None:
    """24 kHz PCM played on a mu-law 8 kHz stream comes out as 8 kHz frames."""
    proto = started()
    proto.play(tone(24000, 200), 24000)
    proto.flush_audio()
    frames = proto.frames_due(math.inf)
    assert len(frames) == 10
    assert all(len(payload_of(f)) == 160 for f in frames)


def test_outbound_l16_24k_big_endian_when_configured() -> None:
    """The outbound format and byte order are independent of the inbound ones."""
    proto = started(
        "audio/x-l16",
        16000,
        outbound_format=AudioFormat(AudioEncoding.L16, 24000),
        outbound_byte_order="big",
    )
    pcm = tone(24000, 20)
    proto.play(pcm, 24000)
    [frame] = proto.frames_due(0.0)
    assert json.loads(frame)["media"]["sampleRate"] == 24000
    assert payload_of(frame) == struct.pack(
        f">{len(pcm) // 2}h", *struct.unpack(f"<{len(pcm) // 2}h", pcm)
    )


def test_played_checkpoint_resolves_and_accounts_playout() -> None:
    """playedStream with a pending name is matched and moves played_ms forward."""
    proto = started()
    proto.play(tone(8000, 100), 8000)
    proto.checkpoint("greet")
    assert proto.pending_checkpoints == ("greet",)
    assert len(proto.frames_due(math.inf)) == 6
    [event] = proto.receive('{"event":"playedStream","name":"greet"}')
    assert event == PlaybackCheckpointReached("greet", matched=True)
    assert proto.playout.played_ms == 100.0
    assert not proto.pending_checkpoints


def test_clear_voids_checkpoints_and_summarises_the_interruption() -> None:
    """clear() voids pending checkpoints as cleared and says what was interrupted."""
    proto = started()
    proto.play(tone(8000, 200), 8000, now=10.0)
    proto.checkpoint("a", now=10.0)
    assert len(proto.frames_due(10.0)) == 11  # 200 ms inside the lead, then the checkpoint
    proto.play(tone(8000, 300), 8000, now=10.3)
    assert len(proto.frames_due(10.3)) == 11  # the lead again: 220 ms out, 80 ms queued
    frame = proto.clear(now=10.35)
    assert frame == ClearAudio(SID).to_json()
    assert proto.take_events() == [CheckpointVoided("a", CheckpointOutcome.CLEARED)]
    summary = proto.last_clear
    assert summary is not None
    assert summary.utterance_sent_ms == 220.0 and summary.voided == ("a",)
    assert summary.estimated_heard_ms == pytest.approx(50.0)
    assert summary.unconfirmed_ms == 420.0
    assert proto.stats.dropped_outbound == 4 and not proto.has_queued
    [late] = proto.receive('{"event":"playedStream","name":"a"}')
    assert isinstance(late, PlaybackCheckpointReached) and not late.matched


def test_close_resolves_pending_checkpoints_as_closed() -> None:
    """When the socket closes, every pending checkpoint ends as closed."""
    proto = started()
    proto.checkpoint("a")
    proto.checkpoint("b")
    assert proto.connection_closed() == [
        CheckpointVoided("a", CheckpointOutcome.CLOSED),
        CheckpointVoided("b", CheckpointOutcome.CLOSED),
    ]
    assert proto.state is State.CLOSED


def test_duplicate_or_empty_checkpoint_names_are_refused() -> None:
    """Names must be unique among pending checkpoints and non-empty."""
    proto = started()
    proto.checkpoint("a")
    with pytest.raises(LocalProtocolError):
        proto.checkpoint("a")
    with pytest.raises(ValidationError):
        proto.checkpoint("")


def test_second_start_switches_stream_and_closes_old_checkpoints() -> None:
    """A reconnect's new start is taken: new stream id, old checkpoints closed."""
    proto = started()
    proto.checkpoint("old")
    events = proto.receive(start_frame(sid="new-stream"))
    assert events[0] == CheckpointVoided("old", CheckpointOutcome.CLOSED)
    assert isinstance(events[1], StreamStarted) and proto.stream_id == "new-stream"
    stop = proto.stop()
    assert stop is not None and json.loads(stop)["streamId"] == "new-stream"
    assert proto.stats.restarts == 1


# ---- golden frames --------------------------------------------------------------------------


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
def test_outbound_golden_frames_round_trip_byte_for_byte(
    name: str, command: PlayAudio | Checkpoint | ClearAudio | Stop
) -> None:
    """Each outbound fixture parses (Vobiz role) to the command and re-serialises exactly."""
    text = fixture(f"outbound/{name}").strip()
    vobiz = PeerProtocol()
    assert vobiz.receive(text) == [command]
    assert command.to_json() == text


def test_play_encoded_counts_bytes_of_a_wide_memoryview_on_every_call() -> None:
    """A memoryview of 16-bit samples is framed by its bytes on the first call and on
    later ones alike (the one-frame fast path only takes ``bytes``)."""
    samples = array.array("h", range(320))  # 640 bytes: two 20 ms L16 8 kHz frames
    fresh = started("audio/x-l16", 8000)
    warm = started("audio/x-l16", 8000)
    warm.play_encoded(bytes(320))  # the framer exists from here on
    warm.frames_due(1e9)
    results = []
    for proto in (fresh, warm):
        view = memoryview(samples)  # typed bytes, but any buffer is framed by its bytes
        assert proto.play_encoded(view) == 2  # type: ignore[arg-type]
        frames = [json.loads(f) for f in proto.frames_due(2e9)]
        results.append([base64.b64decode(f["media"]["payload"]) for f in frames])
    assert results[0] == results[1] and [len(p) for p in results[0]] == [320, 320]


def test_protocol_play_frames_equal_play_audio_serialisation() -> None:
    """The fast template used by play() produces exactly PlayAudio.to_json()."""
    proto = started()
    proto.play(tone(8000, 20), 8000)
    [frame] = proto.frames_due(0.0)
    assert frame == PlayAudio(SID, AudioEncoding.MULAW, 8000, payload_of(frame)).to_json()


def test_every_inbound_fixture_parses_without_malformed_events() -> None:
    """Every documented inbound shape is understood."""
    for path in sorted((FIXTURES / "inbound").glob("*.json")):
        proto = started("audio/x-l16", 8000)
        events = proto.receive(path.read_text())
        assert events and not any(isinstance(e, (MalformedFrame, UnknownEvent)) for e in events)


# ---- the Vobiz role -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_vobiz_role_frames_are_understood_by_the_app_role(shape: str) -> None:
    """The emulator's side produces frames our side parses back to the same facts."""
    vobiz = PeerProtocol()
    app = StreamProtocol()
    fmt = AudioFormat(AudioEncoding.L16, 16000)
    [start] = app.receive(
        vobiz.send_start(call_id=CALL, stream_id=SID, media_format=fmt, shape=shape)  # type: ignore[arg-type]
    )
    assert isinstance(start, StreamStarted) and start.shape == shape and start.media_format == fmt
    pcm = tone(16000, 20)
    [audio] = app.receive(vobiz.send_media(pcm, timestamp=1000))
    assert isinstance(audio, AudioReceived) and audio.pcm == pcm and audio.timestamp == 1000
    app.checkpoint("x")
    assert app.receive(vobiz.send_played("x")) == [PlaybackCheckpointReached("x", True)]
    [cleared] = app.receive(vobiz.send_cleared())
    assert isinstance(cleared, AudioCleared)
    [dtmf] = app.receive(vobiz.send_dtmf("9", timestamp=5))
    assert isinstance(dtmf, DtmfReceived) and dtmf.digit == "9"


def test_vobiz_role_parses_app_commands() -> None:
    """Our play/checkpoint/clear/stop frames parse into commands on the Vobiz side."""
    app = started()
    vobiz = PeerProtocol()
    pcm = tone(8000, 20)
    app.play(pcm, 8000)
    app.checkpoint("c")
    frames = [*app.frames_due(math.inf), app.clear()]
    stop = app.stop()
    assert stop is not None
    frames.append(stop)
    parsed = [e for f in frames for e in vobiz.receive(f)]
    assert isinstance(parsed[0], PlayAudio) and parsed[0].pcm() == ulaw_to_pcm16(pcm16_to_ulaw(pcm))
    assert parsed[1:] == [Checkpoint(SID, "c"), ClearAudio(SID), Stop(SID)]
    assert vobiz.stats.missing_stream_id == 0


# ---- the outbound queue ------------------------------------------------------------------


def test_frames_due_keeps_the_lead_then_one_frame_per_20_ms() -> None:
    """The first lead_ms of an utterance goes out at once, then one frame per 20 ms."""
    proto = started(lead_ms=100.0)
    assert proto.play(tone(8000, 400), 8000, now=5.0) == 20
    assert len(proto.frames_due(5.0)) == 6  # 100 ms ahead of the playout point, plus one
    assert proto.frames_due(5.0) == []
    assert proto.next_due(5.0) == pytest.approx(5.02)
    assert len(proto.frames_due(5.02)) == 1 and len(proto.frames_due(5.06)) == 2
    assert proto.queued_ms == 220.0 and proto.playout.sent_ms == 180.0
    assert proto.stats.frames_out == 9


def test_coalesce_tops_up_each_due_frame_with_those_due_soon_after() -> None:
    """With coalesce_ms=40 each due frame brings the next two: a third of the calls
    (writes), the same audio rate, and never more than lead + coalesce ahead."""
    plain, coalesced = started(lead_ms=100.0), started(lead_ms=100.0, coalesce_ms=40.0)
    batches: dict[str, list[int]] = {"plain": [], "coalesced": []}
    for name, proto in (("plain", plain), ("coalesced", coalesced)):
        proto.play(tone(8000, 2000), 8000, now=0.0)
        now = 0.0
        for _ in range(200):  # bounded: 100 frames go out over ~2 s
            frames = proto.frames_due(now)
            if frames:
                batches[name].append(len(frames))
                assert proto.playout_end - now <= 0.1 + 0.04 + 0.02 + 1e-9
            due = proto.next_due(now)
            if due is None:
                break
            now = due + 1e-6  # as the pacer does (it takes what is due within 1 ms)
    assert sum(batches["plain"]) == sum(batches["coalesced"]) == 100
    assert batches["plain"][0] == 6 and set(batches["plain"][1:]) == {1}
    assert batches["coalesced"][0] == 8 and set(batches["coalesced"][1:-1]) == {3}
    assert plain.playout_end == pytest.approx(coalesced.playout_end)


def test_next_due_is_none_when_nothing_is_queued_and_now_for_a_checkpoint() -> None:
    """A lone checkpoint is due at once; an empty queue has nothing due."""
    proto = started()
    assert proto.next_due(1.0) is None
    proto.checkpoint("x", now=1.0)
    assert proto.next_due(1.0) == 1.0
    [frame] = proto.frames_due(1.0)
    assert json.loads(frame) == {"event": "checkpoint", "streamId": SID, "name": "x"}


def test_frames_due_hands_out_at_most_max_frames() -> None:
    """A shell under backpressure can take one frame at a time."""
    proto = started()
    proto.play(tone(8000, 100), 8000)
    assert len(proto.frames_due(0.0, 1)) == 1
    assert len(proto.frames_due(0.0, 2)) == 2 and proto.queued_ms == 40.0


def test_clear_drops_queued_frames_and_voids_queued_checkpoints() -> None:
    """A clear drops what was never sent (counted) and voids a checkpoint still queued."""
    proto = started()
    proto.play(tone(8000, 1000), 8000, now=0.0)
    proto.checkpoint("never-sent", now=0.0)
    sent = proto.frames_due(0.0)
    assert len(sent) == 11 and proto.has_queued
    proto.clear(now=0.1)
    assert proto.take_events() == [CheckpointVoided("never-sent", CheckpointOutcome.CLEARED)]
    assert proto.stats.dropped_outbound == 39 and not proto.has_queued
    assert proto.frames_due(10.0) == []


def test_close_and_restart_drop_the_queue() -> None:
    """Frames queued when the socket closes, or a new start arrives, are dropped."""
    proto = started()
    proto.play(tone(8000, 100), 8000)
    proto.receive(start_frame(sid="again"))
    assert not proto.has_queued and proto.stats.dropped_outbound == 5
    proto.play(tone(8000, 60), 8000)
    proto.connection_closed()
    assert not proto.has_queued and proto.stats.dropped_outbound == 8


def test_acknowledgement_latencies_are_measured_with_now() -> None:
    """The checkpoint's lateness and the clear round trip come from the times given."""
    proto = started()
    proto.play(tone(8000, 100), 8000, now=1.0)
    proto.checkpoint("a", now=1.0)
    proto.frames_due(1.0)  # its audio ends playing at 1.1
    proto.receive('{"event":"playedStream","name":"a"}', now=1.15)
    assert list(proto.playout.checkpoint_latency_ms) == [pytest.approx(50.0)]
    proto.clear(now=2.0)
    proto.receive('{"event":"clearedAudio","streamId":"x"}', now=2.004)
    assert list(proto.playout.clear_round_trip_ms) == [pytest.approx(4.0)]


# ---- the Twilio-compatible dialect ---------------------------------------------------------

COMPAT_FIXTURES = FIXTURES / "compat"


def compat_started(name: str = "start_twilio.json", **kwargs: Any) -> StreamProtocol:
    proto = StreamProtocol(**kwargs)
    assert proto.receive((COMPAT_FIXTURES / "connected_twilio.json").read_text()) == []
    [event] = proto.receive((COMPAT_FIXTURES / name).read_text())
    assert isinstance(event, StreamStarted)
    return proto


def test_auto_detects_the_compat_dialect_from_connected() -> None:
    """``connected`` is no event and no oddity; the start that follows is compat."""
    proto = compat_started()
    assert proto.provider == "twilio" and proto.connected is not None
    assert proto.stats.malformed == 0 and proto.stats.unknown_events == 0
    assert not proto.clear_acknowledged
    media = (COMPAT_FIXTURES / "media_twilio_inbound_track.json").read_text()
    [audio] = proto.receive(media)
    assert isinstance(audio, AudioReceived) and audio.chunk == 2 and audio.timestamp == 5


def test_auto_detects_vobiz_from_its_start() -> None:
    """A Vobiz start fixes the Vobiz dialect; compat-looking frames are then unknown."""
    proto = started()
    assert proto.provider == "vobiz" and proto.clear_acknowledged
    [event] = proto.receive((COMPAT_FIXTURES / "mark_twilio.json").read_text())
    assert isinstance(event, UnknownEvent)


def test_compat_audio_goes_out_as_media_in_the_streams_own_format() -> None:
    """Outbound audio is ``media`` with a payload only, in the stream's format."""
    proto = compat_started(outbound_format=AudioFormat(AudioEncoding.L16, 24000))
    assert proto.outbound_format == AudioFormat(AudioEncoding.MULAW, 8000)
    proto.play(tone(16000, 100), 16000)
    frame, *_ = proto.frames_due(math.inf)
    body = json.loads(frame)
    assert body["event"] == "media" and set(body["media"]) == {"payload"}
    assert len(base64.b64decode(body["media"]["payload"])) == 160


def test_compat_checkpoint_is_a_mark_and_its_echo_means_played() -> None:
    """checkpoint() sends a uniquely named mark; its echo resolves the checkpoint."""
    proto = compat_started()
    proto.play(tone(8000, 40), 8000)
    proto.checkpoint("greet")
    *_, mark = proto.frames_due(math.inf)
    wire_name = json.loads(mark)["mark"]["name"]
    assert json.loads(mark)["event"] == "mark" and wire_name.startswith("greet:")
    echo = json.dumps({"event": "mark", "streamSid": "x", "mark": {"name": wire_name}})
    [event] = proto.receive(echo)
    assert event == PlaybackCheckpointReached("greet", True, "x", None)
    assert proto.playout.played_ms == 40.0


def test_a_mark_echoed_after_clear_is_cleared_not_played() -> None:
    """The platform returns flushed marks: the checkpoint stays cleared, no event."""
    proto = compat_started()
    proto.play(tone(8000, 40), 8000)
    proto.checkpoint("a")
    *_, mark = proto.frames_due(math.inf)
    frame = proto.clear(now=1.0)
    assert json.loads(frame) == {"event": "clear", "streamSid": json.loads(mark)["streamSid"]}
    assert proto.take_events() == [CheckpointVoided("a", CheckpointOutcome.CLEARED)]
    echo = json.dumps({"event": "mark", "mark": {"name": json.loads(mark)["mark"]["name"]}})
    assert proto.receive(echo) == []
    assert proto.stats.marks_after_clear == 1
    proto.checkpoint("a")  # the same name again is a new, distinct mark on the wire
    [again] = proto.frames_due(math.inf)
    assert json.loads(again)["mark"]["name"] != json.loads(mark)["mark"]["name"]


def test_an_unknown_mark_is_counted_not_fatal() -> None:
    """A mark for a name we never sent is reported unmatched and counted."""
    proto = compat_started()
    [event] = proto.receive('{"event":"mark","mark":{"name":"nope"}}')
    assert isinstance(event, PlaybackCheckpointReached) and not event.matched
    assert proto.stats.unknown_marks == 1 and proto.stats.malformed == 0


def test_compat_stop_has_no_frame() -> None:
    """There is no outbound stop on compat streams: stop() returns None, state closes."""
    proto = compat_started("start_signalwire.json")
    assert proto.provider == "signalwire"
    assert proto.stop() is None and proto.state is State.CLOSED


def test_a_configured_provider_is_not_second_guessed() -> None:
    """provider='vobiz' reads a compat start as a malformed Vobiz start."""
    proto = StreamProtocol(provider="vobiz")
    [event] = proto.receive((COMPAT_FIXTURES / "start_twilio.json").read_text())
    assert isinstance(event, MalformedFrame)
    with pytest.raises(ValidationError):
        StreamProtocol(provider="plivo")  # type: ignore[arg-type]
