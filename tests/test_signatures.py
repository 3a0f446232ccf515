"""Webhook signatures (spec 5.4): the test vector, headers, modes, replays."""

from __future__ import annotations

import pytest

from vobiz_async.errors import SignatureError
from vobiz_async.signatures import (
    NonceCache,
    base_url,
    compute_signature,
    sign_headers,
    validate_v2,
    validate_v3,
    verify_request,
)

URL = "https://hooks.example.com/vobiz/stream-status?tenant=42"
NONCE = "73920481736450192837"
TOKEN = "example-auth-token"
V2 = "ClemcTWBGdG3pqds6vJvmSXlexiF8c29s86UE+URZug="
V3 = "s0viQt00WnliwlcmcZnIwtTm8DvA7lVkiWyeRVh+kj8="


def test_spec_test_vector() -> None:
    """The spec's vector: query stripped, V2 = URL+nonce, V3 = URL.nonce."""
    assert base_url(URL) == "https://hooks.example.com/vobiz/stream-status"
    assert validate_v2(URL, NONCE, V2, TOKEN) and validate_v3(URL, NONCE, V3, TOKEN)
    assert not validate_v3(URL, NONCE, V2, TOKEN) and not validate_v2(URL, NONCE, V3, "other")


def test_several_signatures_in_one_header_and_userinfo_dropped() -> None:
    """Any of comma-separated signatures may match; URL userinfo and fragment are ignored."""
    assert validate_v3(URL, NONCE, f"bogus, {V3}", TOKEN)
    assert validate_v3("https://u:p@hooks.example.com/vobiz/stream-status#frag", NONCE, V3, TOKEN)
    assert compute_signature("https://h.example:8443/p", "1", "t") != compute_signature(
        "https://h.example/p", "1", "t"
    )


def test_verify_request_modes_and_replay() -> None:
    """if-present accepts unsigned; require refuses it; a reused nonce is a replay."""
    headers = sign_headers(URL, TOKEN, NONCE)
    nonces = NonceCache(ttl=300)
    result = verify_request(URL, headers, TOKEN, mode="require", nonces=nonces)
    assert result.verified and result.scheme == "v3"
    with pytest.raises(SignatureError) as replay:
        verify_request(URL, headers, TOKEN, mode="require", nonces=nonces)
    assert replay.value.reason == "replayed"
    assert not verify_request(URL, {}, TOKEN, mode="if-present").verified
    with pytest.raises(SignatureError) as missing:
        verify_request(URL, {}, TOKEN, mode="require")
    assert missing.value.reason == "missing"
    with pytest.raises(SignatureError) as wrong:
        verify_request(URL, sign_headers(URL, "wrong-token", NONCE), TOKEN, mode="if-present")
    assert wrong.value.reason == "mismatch"
    assert verify_request(URL, {"X-Vobiz-Signature-V3": "junk"}, TOKEN, mode="off").scheme is None


def test_v2_only_ma_headers_and_public_base_url() -> None:
    """V2-only requests verify; MA headers use the parent token; a proxy's URL is rebuilt."""
    v2_only = {"X-Vobiz-Signature-V2": V2, "X-Vobiz-Signature-V2-Nonce": NONCE}
    assert verify_request(URL, v2_only, TOKEN).scheme == "v2"
    ma = {
        k: v
        for k, v in sign_headers(URL, "sub-token", NONCE, parent_token="parent").items()
        if "MA" in k or "Nonce" in k
    }
    assert verify_request(URL, ma, "sub-token", parent_auth_token="parent").scheme == "ma-v3"
    internal = "http://10.0.0.5:8080/vobiz/stream-status?tenant=42"
    signed = sign_headers(URL, TOKEN, NONCE)
    assert verify_request(
        internal, signed, TOKEN, public_base_url="https://hooks.example.com"
    ).verified


def test_nonce_cache_forgets_after_ttl() -> None:
    """Nonces are remembered for the window only, and the cache is bounded."""
    cache = NonceCache(ttl=10, max_size=3)
    assert cache.check_and_add("a", now=0) and not cache.check_and_add("a", now=5)
    assert cache.check_and_add("a", now=20)
    for n in "bcdef":
        cache.check_and_add(n, now=21)
    assert len(cache._seen) <= 3


def test_replay_protection_is_keyed_on_the_nonce_alone() -> None:
    """A V2+V3 request replayed with its V3 headers removed is a replay; so is V3's nonce reused."""
    nonces = NonceCache(ttl=300)
    signed = sign_headers(URL, TOKEN, NONCE)
    assert verify_request(URL, signed, TOKEN, mode="require", nonces=nonces).nonces == (NONCE,)
    v2_only = {k: v for k, v in signed.items() if "V3" not in k}
    with pytest.raises(SignatureError) as replay:
        verify_request(URL, v2_only, TOKEN, mode="require", nonces=nonces)
    assert replay.value.reason == "replayed"
    two = {
        "X-Vobiz-Signature-V3": compute_signature(URL, "a" * 20, TOKEN, version=3),
        "X-Vobiz-Signature-V3-Nonce": "a" * 20,
        "X-Vobiz-Signature-V2": compute_signature(URL, "b" * 20, TOKEN, version=2),
        "X-Vobiz-Signature-V2-Nonce": "b" * 20,
    }
    assert verify_request(URL, two, TOKEN, nonces=nonces).nonces == ("a" * 20, "b" * 20)
    with pytest.raises(SignatureError):
        verify_request(URL, {k: v for k, v in two.items() if "V3" not in k}, TOKEN, nonces=nonces)


def test_nonce_cache_tells_a_retry_from_a_replay() -> None:
    """The same nonce with the same content digest is a duplicate; with another, a replay."""
    cache = NonceCache(ttl=10)
    assert cache.lookup(["n1", "n2"], "d1", now=0) == "new"
    cache.add(["n1", "n2"], "d1", now=0)
    assert cache.lookup(["n2"], "d1", now=1) == "duplicate"
    assert cache.lookup(["n2"], "other", now=1) == "replayed"
    assert cache.lookup(["n1"], "", now=1) == "replayed"
    assert cache.lookup(["n1"], "d1", now=20) == "new"
