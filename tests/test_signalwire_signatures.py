"""Compat webhook signatures (signalwire spec 7): every vector of 7.8, and twilio-python."""

from __future__ import annotations

import importlib.util

import pytest

from vobiz_async.signalwire import compute_signature, validate_json, validate_request
from vobiz_async.signalwire._signatures import url_variants

V1_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
V1_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
V3_PARAMS = [
    ("Sid", "CA123"),
    ("SidAccount", "AC123"),
    ("Digits", "5678"),
    ("Digits", "1234"),
    ("Digits", "1234"),
]
V2_BODY = '{"property": "value", "boolean": true}'
V2_URL = V1_URL + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
SW_KEY = "PSKexample0123456789abcdef"
V4_URL = "https://hooks.example.com/sw/stream-status"
V4_PARAMS = {
    "AccountSid": "3f1c2b7a-8d4e-4f60-9a1b-2c3d4e5f6a7b",
    "CallSid": "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4",
    "StreamSid": "5b0e1f2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "StreamName": "agent-9e8d7c6b",
    "StreamEvent": "stream-started",
    "Timestamp": "2026-05-04T10:02:11.000Z",
}
TW_KEY = "example-twilio-auth-token"
V6_PARAMS = {
    "AccountSid": "AC00000000000000000000000000000001",
    "CallSid": "CA00000000000000000000000000000002",
    "StreamSid": "MZ00000000000000000000000000000003",
    "StreamName": "agent-CA02",
    "StreamEvent": "stream-stopped",
    "Timestamp": "2026-05-04T10:05:42.512Z",
}
V8_URL = "https://hooks.example.com/sw/json-hook"
V8_BODY = '{"event":"stream-started","stream_sid":"5b0e1f2a"}'
V9_URL = V8_URL + "?bodySHA256=ea5af088206d473abdef0de3276bf3852e13c419c72c4cb9fd7a48a2c6182ce6"
VA_BODY = '{"event":"call.state","params":{"call_id":"abc-123","state":"answered"}}'
VC_URL = (
    "https://example.ngrok.io/webhook"
    "?bodySHA256=69f3cbfc18e386ef8236cb7008cd5a54b7fed637a8cb3373b5a1591d7f0fd5f4"
)
V5_PARAMS = {**V4_PARAMS, "StreamEvent": "stream-error", "StreamError": "connection_refused"}

FORM_VECTORS = [
    ("V1", "12345", V1_URL, V1_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ("V1a", "12345", V1_URL, V1_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w="),
    (
        "V1b",
        "12345",
        "http://mycompany.com/myapp.php?foo=1&bar=2",
        V1_PARAMS,
        "0ZXoZLH/DfblKGATFgpif+LLRf4=",
    ),
    ("V3", "12345", V1_URL, V3_PARAMS, "IK+Dwps556ElfBT0I3Rgjkr1wJU="),
    ("V3b", "12345", V1_URL, V3_PARAMS, "eMV0TTCyejiqoUSkV7IwWuk0CRc="),
    ("V4", SW_KEY, V4_URL, V4_PARAMS, "iI0D1/n763YTDmooAJSaFYll1nw="),
    ("V4a", SW_KEY, V4_URL, V4_PARAMS, "kYcIxaCL8QvIl6mnjSfaoY8EZd0="),
    ("V5", SW_KEY, V4_URL, V5_PARAMS, "MeZZzgtSXovb5ta4D+oQbRpmSj8="),
    (
        "V6",
        TW_KEY,
        "https://hooks.example.com/tw/stream-status",
        V6_PARAMS,
        "DyR+Ng7C2yISGIT3BbBVh8Eu1Gs=",
    ),
    ("V7", TW_KEY, "wss://agent.example.net/media/7d1e4c", {}, "Xh+GThYa4c5cizoA3kvEKCCr8oY="),
]
JSON_VECTORS = [
    ("V2", "12345", V2_URL, V2_BODY, "a9nBmqA0ju/hNViExpshrM61xv4="),
    (
        "VA",
        "PSKtest1234567890abcdef",
        "https://example.ngrok.io/webhook",
        VA_BODY,
        "c3c08c1fefaf9ee198a100d5906765a6f394bf0f",
    ),
    (
        "VC",
        "PSKtest1234567890abcdef",
        VC_URL,
        '{"event":"call.state"}',
        "dfO9ek8mxyFtn2nMz24plPmPfIY=",
    ),
    ("V8", SW_KEY, V8_URL, V8_BODY, "08e2c696583c8e908876811def3e0a91b4abb880"),
    ("V9", SW_KEY, V9_URL, V8_BODY, "0OiKNZJBTdo8ehj+ylJHBY04Ves="),
]


@pytest.mark.parametrize(("vector", "key", "url", "params", "expected"), FORM_VECTORS)
def test_form_vectors_validate(
    vector: str, key: str, url: str, params: object, expected: str
) -> None:
    """Every form vector of spec 7.8 validates (V1a/V1b/V4a through the port variants)."""
    assert validate_request(url, params, expected, key), vector  # type: ignore[arg-type]


@pytest.mark.parametrize(("vector", "key", "url", "body", "expected"), JSON_VECTORS)
def test_json_vectors_validate(vector: str, key: str, url: str, body: str, expected: str) -> None:
    """Every JSON vector (bodySHA256 and Scheme A) validates, from str or bytes bodies."""
    assert validate_json(url, body, expected, key), vector
    assert validate_json(url, body.encode(), expected, key), vector


def test_signed_strings_and_repeated_name_rules() -> None:
    """V4's exact signature; repeated names: SignalWire keeps all (V3b), Twilio dedupes (V3)."""
    assert compute_signature(V4_URL, V4_PARAMS, SW_KEY) == "iI0D1/n763YTDmooAJSaFYll1nw="
    assert compute_signature(V1_URL, V3_PARAMS, "12345") == "eMV0TTCyejiqoUSkV7IwWuk0CRc="
    twilio_rule = compute_signature(V1_URL, V3_PARAMS, "12345", dedupe_repeated=True)
    assert twilio_rule == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_tampered_wrong_key_wrong_port_or_missing_fail() -> None:
    """A changed value, another key, a non-default port, or no signature never validate."""
    good = "iI0D1/n763YTDmooAJSaFYll1nw="
    assert not validate_request(
        V4_URL, {**V4_PARAMS, "StreamEvent": "stream-stopped"}, good, SW_KEY
    )
    assert not validate_request(V4_URL, V4_PARAMS, good, "another-key")
    assert not validate_request(V4_URL.replace(".com/", ".com:8443/"), V4_PARAMS, good, SW_KEY)
    assert not validate_request(V4_URL, V4_PARAMS, "", SW_KEY)
    assert not validate_request(V4_URL, V4_PARAMS, good, "")
    assert not validate_request(V4_URL, V4_PARAMS, "ü" * 28, SW_KEY)
    assert not validate_json(V9_URL, V8_BODY + " ", "0OiKNZJBTdo8ehj+ylJHBY04Ves=", SW_KEY)
    assert not validate_json(V8_URL, V8_BODY, "08e2c696583c8e908876811def3e0a91b4abb881", SW_KEY)
    assert not validate_json(V8_URL, V8_BODY, "", SW_KEY)


def test_url_variants_toggle_only_the_default_port() -> None:
    """Default ports are added when absent and removed when present; others are kept."""
    assert url_variants("https://h.example/p?q=1") == [
        "https://h.example/p?q=1",
        "https://h.example:443/p?q=1",
    ]
    assert url_variants("http://h.example:80/p") == ["http://h.example:80/p", "http://h.example/p"]
    assert url_variants("wss://h.example:8765/m") == ["wss://h.example:8765/m"]
    assert url_variants("https://h.example:bad/p") == ["https://h.example:bad/p"]


needs_twilio = pytest.mark.skipif(
    importlib.util.find_spec("twilio") is None,
    reason="twilio-python is not installed (pip install -e '.[dev]'): no cross-check",
)


@needs_twilio
@pytest.mark.parametrize(("vector", "key", "url", "params", "expected"), FORM_VECTORS)
def test_twilio_python_agrees_on_form_vectors(
    vector: str, key: str, url: str, params: object, expected: str
) -> None:
    """twilio-python's RequestValidator gives the same verdict as ours on every form vector."""
    from twilio.request_validator import RequestValidator

    ours = validate_request(url, params, expected, key)  # type: ignore[arg-type]
    if vector == "V3b":  # SignalWire's repeated-name rule, which twilio-python does not use
        assert ours and not RequestValidator(key).validate(url, _multidict(params), expected)
        return
    theirs = RequestValidator(key).validate(url, _multidict(params), expected)
    assert ours is True and theirs is True
    tampered = expected[:-2] + ("A=" if expected[-2] != "A" else "B=")
    assert validate_request(url, params, tampered, key) is False  # type: ignore[arg-type]
    assert RequestValidator(key).validate(url, _multidict(params), tampered) is False


@needs_twilio
def test_twilio_python_agrees_on_body_sha256() -> None:
    """twilio-python validates V2 and V9 (bodySHA256) as we do, and refuses a changed body."""
    from twilio.request_validator import RequestValidator

    for key, url, body, sig in [
        ("12345", V2_URL, V2_BODY, "a9nBmqA0ju/hNViExpshrM61xv4="),
        (SW_KEY, V9_URL, V8_BODY, "0OiKNZJBTdo8ehj+ylJHBY04Ves="),
    ]:
        assert RequestValidator(key).validate(url, body, sig) and validate_json(url, body, sig, key)
        assert not RequestValidator(key).validate(url, body + "x", sig)
        assert not validate_json(url, body + "x", sig, key)


def _multidict(params: object) -> object:
    """twilio-python takes a dict, or a MultiDict-like object with getall() for repeats."""
    if isinstance(params, dict):
        return params

    class Multi(dict[str, str]):
        def __init__(self, pairs: list[tuple[str, str]]) -> None:
            super().__init__(pairs)
            self.pairs = pairs

        def getall(self, key: str) -> list[str]:
            return [v for k, v in self.pairs if k == key]

    assert isinstance(params, list)
    return Multi(params)
