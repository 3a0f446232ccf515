"""SignalWire compat REST client against FakeSignalWire on loopback, and its CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from vobiz_async.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    RequestTimeoutError,
    ServerError,
    ValidationError,
)
from vobiz_async.signalwire import CompatStream, SignalWireClient, default_stream_name
from vobiz_async.signalwire._client import parse_rfc2822
from vobiz_async.testing import FakeSignalWire

URL = "wss://agent.example.net/media/7d1e4c"


async def test_start_sends_the_documented_form_and_returns_a_typed_stream() -> None:
    """Basic auth, a form body to …/Streams.json, Track always sent, ParameterN numbered."""
    async with FakeSignalWire() as fake, fake.client() as client:
        call = fake.call()
        stream = await client.streams.start(
            call.call_sid,
            URL,
            name="agent-1",
            status_callback="https://hooks.example.com/sw/status",
            status_callback_method="post",
            parameters={"corr": "c-2f9e41", "tenant": "42"},
            bearer_token="tok_5d1a90c7",
        )
        [request] = fake.requests
    assert isinstance(stream, CompatStream) and stream.name == "agent-1"
    assert (stream.account_sid, stream.call_sid, stream.status) == (
        fake.project_id,
        call.call_sid,
        "in-progress",
    )
    assert stream.date_updated is not None and stream.date_updated.tzinfo is not None
    assert stream.uri is not None and stream.uri.endswith(f"/Streams/{stream.sid}.json")
    assert request.path == (
        f"/api/laml/2010-04-01/Accounts/{fake.project_id}/Calls/{call.call_sid}/Streams.json"
    )
    assert request.body == [
        ("Url", URL),
        ("Name", "agent-1"),
        ("Track", "inbound_track"),
        ("StatusCallback", "https://hooks.example.com/sw/status"),
        ("StatusCallbackMethod", "POST"),
        ("Parameter1.Name", "corr"),
        ("Parameter1.Value", "c-2f9e41"),
        ("Parameter2.Name", "tenant"),
        ("Parameter2.Value", "42"),
        ("AuthorizationBearerToken", "tok_5d1a90c7"),
    ]
    assert "Authorization" not in request.headers  # the fake never keeps credentials
    record = fake.streams[stream.sid]
    assert record.parameters == {"corr": "c-2f9e41", "tenant": "42"}
    assert record.bearer_token == "tok_5d1a90c7" and record.track == "inbound_track"


async def test_stop_is_idempotent() -> None:
    """Stop by SID or name: True the first time, False when already stopped or unknown."""
    async with FakeSignalWire() as fake, fake.client() as client:
        call = fake.call()
        first = await client.streams.start(call.call_sid, URL, name="fork-a")
        second = await client.streams.start(call.call_sid, URL + "/2")
        assert await client.streams.stop(call.call_sid, first.sid) is True
        assert await client.streams.stop(call.call_sid, first.sid) is False
        assert await client.streams.stop(call.call_sid, second.name or "") is True
        assert await client.streams.stop(call.call_sid, "no-such-stream") is False
        bodies = [r.body for r in fake.requests[2:]]
    assert second.name == default_stream_name(call.call_sid, URL + "/2", "inbound_track")
    assert all(body == [("Status", "stopped")] for body in bodies)
    assert fake.live_streams(call.call_sid) == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ws://agent.example.net/media"}, "url"),
        ({"url": "wss://agent.example.net/media?token=x"}, "url"),
        ({"parameters": {f"p{i}": "v" for i in range(100)}}, "parameters"),
        ({"track": "inbound"}, "track"),
        ({"status_callback_method": "PUT"}, "status_callback_method"),
        ({"status_callback": "ftp://x.example/cb"}, "status_callback"),
        ({"bearer_token": " "}, "bearer_token"),
        ({"name": ""}, "name"),
    ],
)
async def test_local_refusals_send_no_request(kwargs: dict[str, object], field: str) -> None:
    """ws://, a query string, >99 parameters and bad values fail locally, before any I/O."""
    async with FakeSignalWire() as fake, fake.client() as client:
        call = fake.call()
        args = {"url": URL, **kwargs}
        url = args.pop("url")
        with pytest.raises(ValidationError) as info:
            await client.streams.start(call.call_sid, url, **args)  # type: ignore[arg-type]
        assert fake.requests == []
    assert info.value.field == field


async def test_lost_response_is_stopped_by_name_before_the_retry() -> None:
    """A start whose 500 came after the stream was created leaves exactly one live stream."""
    async with FakeSignalWire() as fake, fake.client() as client:
        call = fake.call()
        fake.inject(500, after=True, path_contains="/Streams.json")
        stream = await client.streams.start(call.call_sid, URL)
        paths = [r.path.rsplit("/", 1)[1] for r in fake.requests]
        live = fake.live_streams(call.call_sid)
    name = default_stream_name(call.call_sid, URL, "inbound_track")
    assert paths == ["Streams.json", f"{name}.json", "Streams.json"]
    assert [s.sid for s in live] == [stream.sid] and stream.name == name
    assert len(fake.streams) == 2  # the lost one was stopped, the retry is the live one


async def test_a_timeout_then_a_failed_stop_is_not_retried() -> None:
    """When the stop by name cannot be confirmed, the start's own error is raised, unrepeated."""
    async with FakeSignalWire() as fake, fake.client(timeout=0.5, retry=3) as client:
        call = fake.call()
        fake.inject(delay=2.0, after=True, path_contains="/Streams.json")
        fake.inject(403, path_contains=".json", method="POST", count=1)
        with pytest.raises(RequestTimeoutError):
            await client.streams.start(call.call_sid, URL, name="once")
        await asyncio.sleep(0)
        starts = [r for r in fake.requests if r.path.endswith("/Streams.json")]
    assert len(starts) == 1


async def test_retries_exhausted_leave_nothing_live() -> None:
    """Three lost responses in a row: each created stream is stopped, the error is raised."""
    async with FakeSignalWire() as fake, fake.client(retry=3) as client:
        call = fake.call()
        fake.inject(503, after=True, path_contains="/Streams.json", count=3)
        with pytest.raises(ServerError) as info:
            await client.streams.start(call.call_sid, URL)
        live = fake.live_streams(call.call_sid)
    assert live == [] and len(fake.streams) == 3 and info.value.code == "10503"


async def test_compat_error_bodies_map_onto_the_error_tree() -> None:
    """401/404/400 carry status, code, message and more_info; both errors[] shapes parse."""
    async with FakeSignalWire() as fake:
        async with SignalWireClient(fake.project_id, "wrong", base_url=fake.base_url) as bad:
            with pytest.raises(AuthenticationError) as auth:
                await bad.streams.start("c", URL)
        async with fake.client() as client:
            with pytest.raises(NotFoundError) as missing:
                await client.streams.start("no-such-call", URL)
            call = fake.call()
            fake.inject(422, body=b'{"errors": ["Validation error message"]}')
            with pytest.raises(InvalidRequestError) as strings:
                await client.streams.start(call.call_sid, URL)
            body = b'{"errors": [{"code": "30010", "message": "nope", "more_info": "https://x"}]}'
            fake.inject(400, body=body)
            with pytest.raises(InvalidRequestError) as objects:
                await client.streams.start(call.call_sid, URL)
            fake.inject(400, body=b"<html>bad gateway</html>")
            with pytest.raises(InvalidRequestError) as html:
                await client.streams.start(call.call_sid, URL)
    assert (auth.value.status_code, auth.value.code, auth.value.message) == (
        401,
        "20003",
        "Authentication failed",
    )
    assert auth.value.more_info == "https://signalwire.com/docs/compatibility-api/reference/errors"
    assert (missing.value.status_code, missing.value.code) == (404, "20404")
    assert strings.value.message == "Validation error message" and strings.value.code is None
    assert (objects.value.code, objects.value.message, objects.value.more_info) == (
        "30010",
        "nope",
        "https://x",
    )
    assert html.value.message == "<html>bad gateway</html>"


async def test_credentials_from_the_environment_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGNALWIRE_* fill missing arguments; the token is in no repr and no log line."""
    caplog.set_level(logging.DEBUG, logger="vobiz_async")
    async with FakeSignalWire() as fake:
        monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", fake.project_id)
        monkeypatch.setenv("SIGNALWIRE_API_TOKEN", fake.api_token)
        monkeypatch.setenv("SIGNALWIRE_SPACE_URL", "example.signalwire.com")
        from_env = SignalWireClient()
        assert from_env.base_url == "https://example.signalwire.com/api/laml/2010-04-01"
        await from_env.close()
        async with SignalWireClient(base_url=fake.base_url) as client:
            call = fake.call()
            fake.inject(500, path_contains="/Streams/")
            await client.streams.start(call.call_sid, URL)
            assert await client.streams.stop(call.call_sid, "gone") is False
            text = repr(client)
    assert fake.api_token not in text and fake.project_id in text
    assert caplog.records and all(fake.api_token not in r.getMessage() for r in caplog.records)
    token = base64.b64encode(f"{fake.project_id}:{fake.api_token}".encode()).decode()
    assert all(token not in r.getMessage() for r in caplog.records)
    monkeypatch.delenv("SIGNALWIRE_API_TOKEN")
    with pytest.raises(ValidationError) as missing:
        SignalWireClient(base_url="http://127.0.0.1:1")
    assert missing.value.field == "api_token"


def test_rfc2822_dates_with_sept_and_a_raw_fallback() -> None:
    """date_updated is aware; 'Sept' is read as Sep; an unparsable date keeps its raw string."""
    stream = CompatStream.from_wire(
        {"sid": "s", "date_updated": "Tue, 25 Sept 2018 20:00:00 +0000", "api_version": "x"}
    )
    assert stream.date_updated == datetime(2018, 9, 25, 20, 0, tzinfo=UTC)
    assert stream.model_extra == {"api_version": "x"}
    odd = CompatStream.from_wire({"sid": "s", "date_updated": "yesterday", "name": None})
    assert odd.date_updated is None and odd.date_updated_raw == "yesterday" and odd.name is None
    assert parse_rfc2822("Mon, 04 May 2026 10:02:11 -0000") == datetime(
        2026, 5, 4, 10, 2, 11, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="sid"):
        CompatStream.from_wire({"name": "x"})


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m vobiz_async`` with args; returns (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_start_and_stop_with_exit_codes() -> None:
    """`signalwire streams start/stop` print JSON; API errors exit 1, bad input exits 2."""
    async with FakeSignalWire() as fake:
        call = fake.call()
        creds = [
            "signalwire",
            "--project-id",
            fake.project_id,
            "--api-token",
            fake.api_token,
            "--base-url",
            fake.base_url,
            "streams",
        ]
        code, out, _ = await run_cli(
            *creds, "start", call.call_sid, URL, "--name", "cli-1", "--parameter", "corr=c=1"
        )
        started = json.loads(out)
        assert code == 0 and started["name"] == "cli-1" and started["status"] == "in-progress"
        assert dict(parse_qsl(fake.requests[-1].raw_body.decode()))["Parameter1.Value"] == "c=1"
        code, out, _ = await run_cli(*creds, "stop", call.call_sid, "cli-1")
        assert (code, json.loads(out)) == (0, {"sid": "cli-1", "stopped": True})
        code, out, _ = await run_cli(*creds, "stop", call.call_sid, "cli-1")
        assert (code, json.loads(out)) == (0, {"sid": "cli-1", "stopped": False})
        code, out, err = await run_cli(*creds, "start", "no-such-call", URL)
        assert (code, out) == (1, "") and err.count("\n") == 1 and "NotFoundError" in err
        code, _, err = await run_cli(*creds, "start", call.call_sid, "ws://agent.example.net/m")
        assert code == 2 and "url" in err
        code, _, err = await run_cli(*creds, "start", call.call_sid, URL, "--parameter", "novalue")
        assert code == 2 and "parameter" in err


def test_signalwire_names_live_in_their_own_namespace() -> None:
    """vobiz_async.signalwire.__all__ resolves, is sorted, and adds nothing to vobiz_async."""
    import vobiz_async
    from vobiz_async import signalwire

    for name in signalwire.__all__:
        assert getattr(signalwire, name) is not getattr(vobiz_async, name, None)
    assert "SignalWireClient" not in vobiz_async.__all__
    assert signalwire.__all__ == sorted(
        signalwire.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
