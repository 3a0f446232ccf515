"""The REST client against the emulator on loopback, and aioresponses for odd fault shapes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aioresponses import aioresponses

from tests._aioresponses_compat import CompatResponse
from vobiz_async.client import RestLimits, RetryPolicy, Timeouts, VobizClient
from vobiz_async.errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    PaginationLimitError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    RestError,
    ServerError,
    StartOutcomeUnknownError,
    StreamClosedError,
    TransportError,
    ValidationError,
)
from vobiz_async.models import Stream, StreamPage, StreamStatus
from vobiz_async.testing import FakeVobiz

WS = "wss://agent.example.net/media?tenant=42&sess=9f1c"


@pytest.fixture
async def fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz() as fake:
        yield fake


async def test_start_sends_the_exact_wire_request(fake: FakeVobiz) -> None:
    """PascalCase path with trailing slash, both auth headers, string 'true', track sent."""
    call = fake.call()
    async with fake.client() as client:
        started = await client.streams.start(
            call.call_uuid, WS, bidirectional=True, content_type="audio/x-mulaw;rate=8000"
        )
    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == f"/api/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/Stream/"
    assert req.headers["X-Auth-ID"] == fake.auth_id
    assert req.headers["X-Auth-Token"] == fake.auth_token
    assert req.body == {
        "service_url": WS,
        "bidirectional": "true",
        "audio_track": "inbound",
        "content_type": "audio/x-mulaw;rate=8000",
    }
    assert started.stream_id in fake.streams and not started.reconciled
    assert fake.streams[started.stream_id].bidirectional is True
    assert started.request.bidirectional and started.message == "audio streaming started"


async def test_emulator_turns_a_json_boolean_into_a_one_way_stream(fake: FakeVobiz) -> None:
    """The fake reproduces Vobiz's quirk: bidirectional=true (a boolean) is one-way."""
    call = fake.call()
    url = f"{fake.base_url}/api/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/Stream/"
    headers = {"X-Auth-ID": fake.auth_id, "X-Auth-Token": fake.auth_token}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={"service_url": WS, "bidirectional": True}, headers=headers) as resp,
    ):
        assert resp.status == 202
        stream_id = (await resp.json())["stream_id"]
    assert fake.streams[stream_id].bidirectional is False


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bidirectional": True, "audio_track": "both"}, "audio_track"),
        ({"bidirectional": True, "audio_track": "outbound"}, "audio_track"),
        ({"content_type": "audio/x-l16;rate=24000"}, "content_type"),
        ({"service_url": "https://not-a-websocket.example"}, "service_url"),
        ({"extra_headers": {"k": "v" * 600}}, "extra_headers"),
        ({"extra_headers": {"user id": "x"}}, "extra_headers"),
        ({"stream_timeout": 0}, "stream_timeout"),
        ({"status_callback_method": "PUT"}, "status_callback_method"),
    ],
)
async def test_invalid_start_fails_locally_before_any_request(
    fake: FakeVobiz, kwargs: dict[str, object], field: str
) -> None:
    """Combinations Vobiz rejects or mishandles raise ValidationError and send nothing."""
    call = fake.call()
    url = kwargs.pop("service_url", WS)
    async with fake.client() as client:
        with pytest.raises(ValidationError) as info:
            await client.streams.start(call.call_uuid, str(url), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert fake.requests == []


async def test_get_list_stop_lifecycle(fake: FakeVobiz) -> None:
    """get returns a typed Stream; stop is True once, then False (404 is success)."""
    call = fake.call()
    async with fake.client() as client:
        started = await client.streams.start(call.call_uuid, WS, stream_timeout=3600)
        stream = await client.streams.get(call.call_uuid, started.stream_id)
        assert stream.stream_id == started.stream_id and stream.status is StreamStatus.IN_PROGRESS
        assert stream.content_type == "audio/x-l16;rate=8000" and stream.sampling_rate == 8000
        assert stream.stream_timeout == 3600 and stream.start_time is not None
        page = await client.streams.list(call.call_uuid)
        assert [s.stream_id for s in page] == [started.stream_id] and page.total == 1
        assert await client.streams.stop(call.call_uuid, started.stream_id) is True
        assert await client.streams.stop(call.call_uuid, started.stream_id) is False
        stopped = await client.streams.get(call.call_uuid, started.stream_id)
        assert stopped.status is StreamStatus.COMPLETED and stopped.end_time is not None
        assert await client.streams.stop_all(call.call_uuid) is None
    assert [r.method for r in fake.requests][-3:] == ["DELETE", "GET", "DELETE"]


async def test_unknown_stream_is_a_typed_not_found(fake: FakeVobiz) -> None:
    """A 404 carries status, api_id and the parsed body."""
    call = fake.call()
    async with fake.client() as client:
        with pytest.raises(NotFoundError) as info:
            await client.streams.get(call.call_uuid, "no-such-stream")
    err = info.value
    assert err.status_code == 404 and err.message == "Stream not found"
    assert err.api_id and err.body["error"] == "Stream not found" and not err.retryable


@pytest.mark.parametrize("envelope", ["page", "meta"])
async def test_iterate_follows_pages_in_both_envelopes(envelope: str) -> None:
    """iterate() walks offset pages to the end, whichever envelope Vobiz uses."""
    async with FakeVobiz(list_envelope=envelope) as fake:
        call = fake.call()
        async with fake.client() as client:
            ids = {
                (await client.streams.start(call.call_uuid, f"{WS}&n={i}")).stream_id
                for i in range(45)
            }
            seen = [s.stream_id async for s in client.streams.iterate(call.call_uuid)]
            page = await client.streams.list(call.call_uuid, limit=20, offset=40)
    assert set(seen) == ids and len(seen) == 45
    assert len(page) == 5 and page.total == 45 and page[0].stream_id in ids


async def test_bare_object_list_envelope_is_a_list_of_one() -> None:
    """The oldest docs return a single stream object for list; it becomes one item."""
    async with FakeVobiz(list_envelope="bare") as fake:
        call = fake.call()
        async with fake.client() as client:
            started = await client.streams.start(call.call_uuid, WS)
            streams = [s async for s in client.streams.iterate(call.call_uuid)]
    assert [s.stream_id for s in streams] == [started.stream_id]


async def test_wrong_credentials_and_wrong_path_case_are_401(fake: FakeVobiz) -> None:
    """Bad credentials give AuthenticationError; the fake answers 401 for a lowercase path."""
    call = fake.call()
    async with VobizClient(fake.auth_id, "wrong", base_url=fake.base_url) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.streams.get(call.call_uuid, "x")
    assert "trailing slash" in str(info.value)
    headers = {"X-Auth-ID": fake.auth_id, "X-Auth-Token": fake.auth_token}
    url = f"{fake.base_url}/api/v1/account/{fake.auth_id}/call/{call.call_uuid}/stream"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 401


async def test_get_is_retried_on_5xx_then_succeeds(fake: FakeVobiz) -> None:
    """Two 503s then success: three requests, one result."""
    call = fake.call()
    async with fake.client() as client:
        started = await client.streams.start(call.call_uuid, WS)
        fake.inject(503, count=2, method="GET")
        stream = await client.streams.get(call.call_uuid, started.stream_id)
    assert stream.stream_id == started.stream_id
    assert [r.method for r in fake.requests] == ["POST", "GET", "GET", "GET"]


async def test_retry_statuses_decide_what_is_retried(fake: FakeVobiz) -> None:
    """A status outside RetryPolicy.retry_statuses is raised at once, not retryable."""
    call = fake.call()
    fake.inject(503, count=5, method="GET")
    retry = RetryPolicy(base_delay=0.001, retry_statuses=frozenset({429}))
    async with fake.client(retry=retry) as client:
        with pytest.raises(ServerError) as info:
            await client.streams.get(call.call_uuid, "x")
    assert not info.value.retryable and len(fake.requests) == 1


async def test_429_honours_retry_after_even_on_post(fake: FakeVobiz) -> None:
    """A rate-limited start created nothing, so it is retried after Retry-After."""
    call = fake.call()
    fake.inject(429, retry_after="0", method="POST")
    async with fake.client() as client:
        started = await client.streams.start(call.call_uuid, WS)
    assert [r.method for r in fake.requests] == ["POST", "POST"]
    assert list(fake.streams) == [started.stream_id]


async def test_5xx_storm_gives_up_with_a_retryable_server_error(fake: FakeVobiz) -> None:
    """After the policy's attempts, the last ServerError is raised, marked retryable."""
    call = fake.call()
    fake.inject(502, count=10, method="GET")
    async with fake.client(retry=RetryPolicy(attempts=3, base_delay=0.001)) as client:
        with pytest.raises(ServerError) as info:
            await client.streams.get(call.call_uuid, "x")
    assert info.value.retryable and info.value.status_code == 502
    assert len(fake.requests) == 3


async def test_start_with_lost_response_is_reconciled_not_duplicated(fake: FakeVobiz) -> None:
    """The stream was created but the answer was a 502: the client finds it by listing."""
    call = fake.call()
    fake.inject(502, method="POST", after=True)
    async with fake.client() as client:
        started = await client.streams.start(call.call_uuid, WS, bidirectional=True)
    assert started.reconciled and list(fake.streams) == [started.stream_id]
    assert [r.method for r in fake.requests] == ["POST", "GET"]


async def test_start_timeout_lists_twice_and_never_reposts_blind(fake: FakeVobiz) -> None:
    """A timed-out start may still be in flight: list, wait, list, then a typed error."""
    call = fake.call()
    fake.inject(delay=0.5, method="POST")
    retry = RetryPolicy(base_delay=0.01, reconcile_delay=0.05)
    async with fake.client(timeout=Timeouts(connect=1.0, total=0.2), retry=retry) as client:
        with pytest.raises(StartOutcomeUnknownError) as info:
            await client.streams.start(call.call_uuid, WS)
    err = info.value
    assert (err.call_uuid, err.service_url, err.reason) == (call.call_uuid, WS, "not-listed")
    assert isinstance(err.cause, RequestTimeoutError)
    assert [r.method for r in fake.requests] == ["POST", "GET", "GET"]


async def test_start_5xx_without_effect_lists_then_reposts_once(fake: FakeVobiz) -> None:
    """A 500 means Vobiz finished and failed: after two empty lists, one re-post."""
    call = fake.call()
    fake.inject(500, method="POST")
    async with fake.client(retry=RetryPolicy(base_delay=0.01, reconcile_delay=0.01)) as client:
        started = await client.streams.start(call.call_uuid, WS)
    assert not started.reconciled and list(fake.streams) == [started.stream_id]
    assert [r.method for r in fake.requests] == ["POST", "GET", "GET", "POST"]


async def test_timeout_error_is_also_a_timeout_error(fake: FakeVobiz) -> None:
    """RequestTimeoutError subclasses TimeoutError and is raised after the attempts."""
    call = fake.call()
    fake.inject(delay=0.5, count=2, method="GET")
    retry = RetryPolicy(attempts=2, base_delay=0.001)
    async with fake.client(timeout=Timeouts(total=0.1), retry=retry) as client:
        with pytest.raises(TimeoutError) as info:
            await client.streams.get(call.call_uuid, "x")
    assert isinstance(info.value, RequestTimeoutError) and info.value.retryable


async def test_connection_reset_is_retried_for_get(fake: FakeVobiz) -> None:
    """A dropped connection is a TransportError; GET retries it and succeeds."""
    call = fake.call()
    async with fake.client() as client:
        started = await client.streams.start(call.call_uuid, WS)
        fake.inject(drop=True, method="GET")
        stream = await client.streams.get(call.call_uuid, started.stream_id)
    assert stream.stream_id == started.stream_id


async def test_client_lifecycle_repr_and_environment(
    fake: FakeVobiz, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials come from the environment, repr hides the token, closed means closed."""
    monkeypatch.setenv("VOBIZ_AUTH_ID", fake.auth_id)
    monkeypatch.setenv("VOBIZ_AUTH_TOKEN", fake.auth_token)
    monkeypatch.setenv("VOBIZ_BASE_URL", fake.base_url + "/api/v1/")
    client = VobizClient()
    assert fake.auth_token not in repr(client) and client.base_url == fake.base_url + "/api/v1"
    call = fake.call()
    async with client:
        await client.streams.start(call.call_uuid, WS)
    with pytest.raises(StreamClosedError):
        await client.streams.list(call.call_uuid)
    monkeypatch.delenv("VOBIZ_AUTH_TOKEN")
    with pytest.raises(ValidationError):
        VobizClient()
    plain = VobizClient("MA_X", "t", timeout=2.5, retry=1)
    assert plain.timeout == Timeouts(connect=2.5, total=2.5) and plain.retry.attempts == 1
    with pytest.raises(ValidationError):
        VobizClient("MA_X", "t", timeout=0)


async def test_a_callers_session_is_used_and_left_open(fake: FakeVobiz) -> None:
    """A session passed in is used for requests and not closed by the client."""
    call = fake.call()
    async with aiohttp.ClientSession() as http:
        async with fake.client(session=http) as client:
            await client.streams.start(call.call_uuid, WS)
        assert not http.closed


# ---- fault shapes that are easier to produce with aioresponses ---------------------------

BASE = "https://api.vobiz.ai/api/v1"
ANY_STREAM = re.compile(r"^https://api\.vobiz\.ai/api/v1/Account/MA_X/Call/c1/Stream/.*$")


async def test_envelope_error_body_is_parsed() -> None:
    """The G4 envelope gives code, message, requestId and details.retryAfter."""
    body = {
        "status": "error",
        "error": {
            "code": "RATE_LIMIT_EXCEEDED",
            "message": "Too many",
            "details": {"retryAfter": 7},
        },
        "timestamp": "2026-01-01T00:00:00Z",
        "requestId": "req_123",
    }
    with aioresponses() as mocked:
        mocked.get(ANY_STREAM, status=429, payload=body, response_class=CompatResponse)
        async with VobizClient("MA_X", "t", retry=RetryPolicy(attempts=1)) as client:
            with pytest.raises(RateLimitError) as info:
                await client.streams.get("c1", "s1")
    err = info.value
    assert (err.code, err.message, err.request_id, err.retry_after) == (
        "RATE_LIMIT_EXCEEDED",
        "Too many",
        "req_123",
        7.0,
    )


@pytest.mark.parametrize(
    "body", ['{"stream_id": "abc", "status": "in-prog', "<html>oops</html>", "[1, 2]"]
)
async def test_garbage_success_bodies_are_transport_errors(body: str) -> None:
    """Truncated JSON, HTML or a wrong JSON type on a 200 is a clear TransportError."""
    with aioresponses() as mocked:
        mocked.get(
            ANY_STREAM,
            status=200,
            body=body,
            content_type="text/html",
            response_class=CompatResponse,
        )
        async with VobizClient("MA_X", "t") as client:
            with pytest.raises(TransportError):
                await client.streams.get("c1", "s1")


async def test_start_without_stream_id_in_a_2xx_is_refused() -> None:
    """A 2xx without a stream_id and an unreachable list: outcome unknown, not a None id."""
    with aioresponses() as mocked:
        mocked.post(
            ANY_STREAM,
            status=200,
            payload={"message": "Stream started"},
            response_class=CompatResponse,
        )
        async with VobizClient("MA_X", "t") as client:
            with pytest.raises(StartOutcomeUnknownError) as info:
                await client.streams.start("c1", WS)
    assert info.value.reason == "list-failed" and info.value.status_code == 200


async def test_openapi_200_start_shape_is_accepted() -> None:
    """The OpenAPI variant (200, 'Stream started') is success too."""
    with aioresponses() as mocked:
        mocked.post(
            ANY_STREAM,
            status=200,
            payload={"stream_id": "str_1", "message": "Stream started"},
            response_class=CompatResponse,
        )
        async with VobizClient("MA_X", "t") as client:
            started = await client.streams.start("c1", WS)
    assert started.stream_id == "str_1"


@pytest.mark.parametrize(
    "bad", [".", "..", "%2e%2e", "a?b", "a#b", "a/b", "a b", "", "\t", "x" * 129, "é"]
)
async def test_unsafe_ids_are_refused_before_any_request(fake: FakeVobiz, bad: str) -> None:
    """A stream or call id outside [A-Za-z0-9_-]{1,128} never reaches a path."""
    call = fake.call(audio=b"")
    async with fake.client() as client:
        with pytest.raises(ValidationError) as info:
            await client.streams.stop(call.call_uuid, bad)
        assert info.value.field == "stream_id"
        with pytest.raises(ValidationError) as info:
            await client.streams.stop_all(bad)
        assert info.value.field == "call_uuid"
    assert fake.requests == []


async def test_rfc2822_and_unparseable_timestamps_are_read_not_fatal() -> None:
    """RFC 2822 dates (also 'Sept') parse; an unknown format is kept raw, not an error."""
    stream = Stream.model_validate(
        {
            "start_time": "Mon, 04 May 2026 10:02:11 +0000",
            "end_time": "Fri, 04 Sept 2026 10:02:11 +0000",
        }
    )
    assert stream.start_time == datetime(2026, 5, 4, 10, 2, 11, tzinfo=UTC)
    assert stream.end_time is not None and stream.end_time.month == 9
    odd = Stream.model_validate({"start_time": "yesterday", "end_time": 17})
    assert (odd.start_time, odd.start_time_raw, odd.end_time_raw) == (None, "yesterday", "17")


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("FALSE", False), ("true", True)])
def test_bidirectional_strings_in_responses(raw: str, expected: bool) -> None:
    """The string "false" for bidirectional is read as False."""
    assert Stream.model_validate({"bidirectional": raw}).bidirectional is expected


def test_empty_object_list_body_is_an_empty_page() -> None:
    """The bare list shape with nothing in it, {}, is an empty page."""
    page = StreamPage.from_body({}, limit=20, offset=0)
    assert (len(page), page.total) == (0, 0)


async def test_iterate_is_bounded_by_rest_limits(fake: FakeVobiz) -> None:
    """Fresh full pages forever stop at RestLimits.max_pages with a typed error."""
    call = fake.call(audio=b"")
    fake.inject(fresh_pages=True, count=1000, method="GET")
    async with fake.client(limits=RestLimits(max_pages=3)) as client:
        with pytest.raises(PaginationLimitError) as info:
            async for _ in client.streams.iterate(call.call_uuid, page_size=5):
                pass
    assert (info.value.pages, info.value.items) == (3, 15)
    assert len(fake.requests) == 3


def test_rest_errors_share_a_root() -> None:
    """APIError, TransportError and the start/list errors are all RestError."""
    for cls in (
        APIError,
        TransportError,
        StartOutcomeUnknownError,
        PaginationLimitError,
        ResponseTooLargeError,
    ):
        assert issubclass(cls, RestError)
    with pytest.raises(ValidationError):
        RestLimits(max_pages=0)


def test_positional_path_segments_are_checked_too() -> None:
    """call_path() holds every segment to the safe-id pattern, not only the named ids."""
    client = VobizClient("MA_X", "t")
    assert (
        client.call_path("c-1", "Stream", stream_id="s_1") == "/Account/MA_X/Call/c-1/Stream/s_1/"
    )
    with pytest.raises(ValidationError):
        client.call_path("c-1", "Stream", "..")
