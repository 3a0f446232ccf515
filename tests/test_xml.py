"""The <Stream> builder: escaping, every attribute, and each rule of spec 3.1."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vobiz_async.errors import ValidationError
from vobiz_async.models import StartStreamRequest
from vobiz_async.tokens import verify_stream_token
from vobiz_async.xml import ResponseBuilder, StreamElement, response_xml, stream_xml

WS = "wss://agent.example.net/media?tenant=42&sess=9f1c"


def test_voice_agent_document_matches_the_spec_shape() -> None:
    """The canonical agent document: escaped URL as text, every attribute, a Hangup."""
    doc = (
        ResponseBuilder()
        .stream(
            WS,
            bidirectional=True,
            audio_track="inbound",
            keep_call_alive=True,
            content_type="audio/x-l16;rate=16000",
            max_retries=2,
            status_callback_url="https://agent.example.net/vobiz/stream-status",
            status_callback_method="post",
            stream_timeout=3600,
            extra_headers={"session": "abc123", "user_id": "john"},
        )
        .hangup()
        .to_xml()
    )
    assert "?tenant=42&amp;sess=9f1c</Stream>" in doc and "&sess" not in doc.replace("&amp;", "")
    root = ET.fromstring(doc)
    stream = root.find("Stream")
    assert stream is not None and (stream.text or "") == WS
    assert stream.attrib == {
        "bidirectional": "true",
        "audioTrack": "inbound",
        "keepCallAlive": "true",
        "contentType": "audio/x-l16;rate=16000",
        "streamTimeout": "3600",
        "maxRetries": "2",
        "statusCallbackUrl": "https://agent.example.net/vobiz/stream-status",
        "statusCallbackMethod": "POST",
        "extraHeaders": "session=abc123,user_id=john",
    }
    assert [child.tag for child in root] == ["Stream", "Hangup"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bidirectional": True, "audio_track": "both"}, "audioTrack"),
        ({"content_type": "audio/x-l16;rate=24000"}, "contentType"),
        ({"keep_call_alive": True}, "keepCallAlive"),
        ({"extra_headers": {"k": "x" * 600}}, "extraHeaders"),
        ({"extra_headers": "a=b c"}, "extraHeaders"),
        ({"stream_timeout": 0}, "streamTimeout"),
        ({"max_retries": 11}, "maxRetries"),
        ({"status_callback_method": "PUT"}, "statusCallbackMethod"),
        ({"status_callback_url": "ftp://x"}, "statusCallbackUrl"),
    ],
)
def test_each_rule_is_checked_before_serving(kwargs: dict[str, object], field: str) -> None:
    """A broken rule raises ValidationError naming the attribute."""
    with pytest.raises(ValidationError) as info:
        stream_xml(WS, **kwargs)
    assert info.value.field == field


def test_bad_urls_are_refused() -> None:
    """Only ws:// or wss:// URLs can be streamed to."""
    with pytest.raises(ValidationError):
        stream_xml("https://not-a-websocket.example/")


def test_signed_per_call_url_composes() -> None:
    """sign_secret + call_uuid put a token for that call in the (escaped) URL."""
    element = StreamElement.create(WS, bidirectional=True, sign_secret="s", call_uuid="call-1")
    text = ET.fromstring(response_xml(element)).find("Stream")
    assert text is not None and text.text is not None
    token = text.text.split("token=")[1]
    check = verify_stream_token(token, "s")
    assert check.ok and check.call_id == "call-1" and "tenant=42" in text.text
    with pytest.raises(ValidationError):
        StreamElement.create(WS, sign_secret="s")


def test_minimal_element_omits_defaults_and_escapes_speak() -> None:
    """Unset attributes are left out; other elements escape their text too."""
    assert stream_xml("ws://127.0.0.1:9/x") == "<Stream>ws://127.0.0.1:9/x</Stream>"
    doc = ResponseBuilder().speak("A & B <ok>").wait(2).to_xml()
    assert "<Speak>A &amp; B &lt;ok&gt;</Speak>" in doc and '<Wait length="2"/>' in doc


@pytest.mark.parametrize(
    ("rest", "xml", "field_pair"),
    [
        (
            {"bidirectional": True, "audio_track": "both"},
            {"bidirectional": True, "audio_track": "both"},
            ("audio_track", "audioTrack"),
        ),
        ({"stream_timeout": 0}, {"stream_timeout": 0}, ("stream_timeout", "streamTimeout")),
        (
            {"status_callback_url": "http://a b/"},
            {"status_callback_url": "http://a b/"},
            ("status_callback_url", "statusCallbackUrl"),
        ),
        (
            {"content_type": "audio/x-l16;rate=24000"},
            {"content_type": "audio/x-l16;rate=24000"},
            ("content_type", "contentType"),
        ),
    ],
)
def test_rest_and_xml_share_one_set_of_rules(
    rest: dict[str, object], xml: dict[str, object], field_pair: tuple[str, str]
) -> None:
    """The REST start and <Stream> refuse the same things, each naming its own field."""
    with pytest.raises(ValidationError) as rest_error:
        StartStreamRequest.create(service_url=WS, **rest)
    with pytest.raises(ValidationError) as xml_error:
        StreamElement.create(WS, **xml)  # type: ignore[arg-type]
    assert (rest_error.value.field, xml_error.value.field) == field_pair
