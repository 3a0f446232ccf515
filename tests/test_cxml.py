"""SignalWire cXML builder (signalwire spec 3): documents, validation, twilio-python parity."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET

import pytest

from vobiz_async.errors import ValidationError
from vobiz_async.signalwire.cxml import ResponseBuilder

DECL = '<?xml version="1.0" encoding="UTF-8"?>'


def test_voice_agent_document_of_the_spec() -> None:
    """Spec 3.6's bidirectional document: sorted, escaped attributes and Parameter children."""
    xml = (
        ResponseBuilder()
        .connect_stream(
            "wss://agent.example.net/media/7d1e4c",
            codec="L16@16000h",
            auth_bearer_token="tok_5d1a90c7",
            status_callback="https://hooks.example.com/sw/stream-status",
            status_callback_method="post",
            parameters={"corr": "c-2f9e41", "tenant": "42"},
        )
        .hangup()
        .to_xml()
    )
    assert xml == (
        DECL + '<Response><Connect><Stream authBearerToken="tok_5d1a90c7" codec="L16@16000h" '
        'statusCallback="https://hooks.example.com/sw/stream-status" statusCallbackMethod="POST" '
        'url="wss://agent.example.net/media/7d1e4c"><Parameter name="corr" value="c-2f9e41" />'
        '<Parameter name="tenant" value="42" /></Stream></Connect><Hangup /></Response>'
    )


def test_fork_pause_stop_and_escaping() -> None:
    """Start/Stop/Pause verbs; '&' and '<' in values are escaped and parse back intact."""
    xml = (
        ResponseBuilder()
        .start_stream("wss://tap.example.net/fork/3b7e", name="tap&<9>", track="both_tracks")
        .pause(30)
        .stop_stream("tap&<9>")
        .to_xml()
    )
    root = ET.fromstring(xml.removeprefix(DECL))
    assert [v.tag for v in root] == ["Start", "Pause", "Stop"]
    assert root[0][0].attrib == {
        "name": "tap&<9>",
        "track": "both_tracks",
        "url": "wss://tap.example.net/fork/3b7e",
    }
    assert root[1].attrib == {"length": "30"} and root[2][0].attrib == {"name": "tap&<9>"}
    assert "&amp;&lt;9&gt;" in xml


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda b: b.connect_stream("ws://a.example/m"), "url"),
        (lambda b: b.connect_stream("wss://a.example/m?token=x"), "url"),
        (lambda b: b.connect_stream("https://a.example/m"), "url"),
        (lambda b: b.connect_stream("wss://a.example/m", codec="PCMA"), "codec"),
        (lambda b: b.connect_stream("wss://a.example/m", track="both_tracks"), "track"),
        (lambda b: b.start_stream("wss://a.example/m", track="inbound"), "track"),
        (
            lambda b: b.start_stream("wss://a.example/m", status_callback_method="PUT"),
            "status_callback_method",
        ),
        (
            lambda b: b.start_stream("wss://a.example/m", status_callback="/relative"),
            "status_callback",
        ),
        (
            lambda b: b.start_stream(
                "wss://a.example/m", parameters={str(i): "v" for i in range(100)}
            ),
            "parameters",
        ),
        (
            lambda b: b.connect_stream("wss://a.example/m", auth_bearer_token=""),
            "auth_bearer_token",
        ),
        (lambda b: b.stop_stream(""), "name"),
        (lambda b: b.pause(0), "seconds"),
    ],
)
def test_invalid_input_is_refused_with_the_field(call: object, field: str) -> None:
    """Every rule of spec 3.2/3.5 raises a ValidationError naming the parameter."""
    with pytest.raises(ValidationError) as info:
        call(ResponseBuilder())  # type: ignore[operator]
    assert info.value.field == field


@pytest.mark.skipif(
    importlib.util.find_spec("twilio") is None,
    reason="twilio-python is not installed (pip install -e '.[dev]'): no parity check",
)
def test_byte_identical_to_twilio_python() -> None:
    """For Twilio-compatible input our document equals twilio-python's VoiceResponse."""
    from twilio.twiml.voice_response import Connect, Start, Stop, VoiceResponse

    url, cb = "wss://a.example/m/x&y", "https://h.example/s?a=1&b=2"
    ours = (
        ResponseBuilder()
        .connect_stream(url, name="n", status_callback=cb, parameters={"corr": "c<1>"})
        .start_stream("wss://t.example/f", name="tap", track="both_tracks")
        .stop_stream("tap")
        .pause(5)
        .hangup()
        .to_xml()
    )
    theirs = VoiceResponse()
    connect = Connect()
    connect.stream(url=url, name="n", status_callback=cb).parameter(name="corr", value="c<1>")
    theirs.append(connect)
    start = Start()
    start.stream(url="wss://t.example/f", name="tap", track="both_tracks")
    theirs.append(start)
    stop = Stop()
    stop.stream(name="tap")
    theirs.append(stop)
    theirs.pause(length=5)
    theirs.hangup()
    assert ours == theirs.to_xml()
