"""The one-port app (answer URL, status callbacks, media WebSocket) against FakeVobiz."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vobiz_async.app import MEDIA, create_app
from vobiz_async.errors import ValidationError
from vobiz_async.events import CheckpointOutcome
from vobiz_async.server import StreamSession
from vobiz_async.testing import FakeVobiz
from vobiz_async.testing._audio import tone
from vobiz_async.testing._media import MediaPeer


@contextlib.asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1, port 0; yields ``http://127.0.0.1:PORT``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"  # type: ignore[attr-defined]
    finally:
        await runner.cleanup()


async def test_a_call_streams_through_the_answer_url_with_signed_media_and_callbacks() -> None:
    """FakeVobiz fetches the answer URL, dials the signed media URL, the agent's
    checkpoint plays, and signed callbacks reach the session."""
    outcomes: list[CheckpointOutcome] = []
    sessions: list[StreamSession] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        await session.play(tone(440, 0.4, 8000))
        outcomes.append(await session.checkpoint("hello"))
        await session.stop()

    async with FakeVobiz() as fake:
        app = create_app(agent, token="s3cret", auth_token=fake.auth_token)
        async with running(app) as base:
            call = fake.call(answer_url=base + "/answer", seconds=10.0, hangup_when_done=False)
            [report] = await call.wait_done(timeout=15)
            server = app[MEDIA].server
            await fake.close()  # delivers the pending callbacks
            await asyncio.sleep(0.05)
            stats = server.stats
            callbacks = app[MEDIA].callbacks
            assert callbacks is not None
            refused = callbacks.stats.refused_signature
    assert outcomes == [CheckpointOutcome.PLAYED] and report.played_checkpoints == ["hello"]
    assert report.frames_sent > 0 and report.stopped and app[MEDIA].answers == 1
    [peer] = call.peers
    assert "token=" in peer.url and peer.url.startswith("ws://127.0.0.1:")
    assert stats.sessions == 1 and stats.rejected_auth == 0
    events = {record.event: record.status for record in fake.callbacks}
    assert events.get("StartStream") == 200 and events.get("PlayedStream") == 200
    assert "StartStream" in [c.fields.get("Event") for c in sessions[0].status_callbacks]
    assert refused == 0


async def test_unsigned_callbacks_and_unsigned_media_are_refused() -> None:
    """With auth_token, an unsigned callback is 401; with token, a bare media URL is 401."""

    async def agent(session: StreamSession) -> None:
        await session.stop()

    app = create_app(agent, token="s3cret", auth_token="vobiz-token")
    async with running(app) as base, aiohttp.ClientSession() as http:
        async with http.post(
            base + "/vobiz/stream-status", data={"Event": "StartStream", "StreamID": "s"}
        ) as resp:
            callback_status = resp.status
        async with http.post(base + "/answer", data={"Event": "StartApp"}) as resp:
            no_call_status = resp.status
        report = await MediaPeer(base.replace("http", "ws") + "/media", seconds=0.2).wait_closed()
    assert callback_status == 401 and no_call_status == 400
    assert report.rejected_status == 401 and app[MEDIA].refused_answers == 1


async def test_custom_answer_xml_gets_the_fields_and_the_media_url() -> None:
    """answer_xml (sync or async) is given the call's form fields and its media URL."""
    seen: list[tuple[str, str]] = []

    async def agent(session: StreamSession) -> None:
        await session.stop()

    async def answer(fields: Mapping[str, str], media_url: str) -> str:
        seen.append((fields["CallUUID"], media_url))
        stream = f'<Stream bidirectional="true" keepCallAlive="true">{media_url}</Stream>'
        return f"<Response>{stream}</Response>"

    app = create_app(agent, answer_xml=answer, callbacks=False)
    async with running(app) as base, FakeVobiz() as fake:
        call = fake.call("call-7", answer_url=base + "/answer", hangup_when_done=False)
        [report] = await call.wait_done(timeout=15)
        async with aiohttp.ClientSession() as http, http.get(base + "/vobiz/stream-status") as r:
            callbacks_route = r.status
    assert seen == [("call-7", base.replace("http", "ws") + "/media")]
    assert report.stopped and callbacks_route == 404


async def test_shutdown_closes_open_streams_with_1001() -> None:
    """Stopping the application closes its media streams with 1001, within the grace."""
    started = asyncio.Event()

    async def agent(session: StreamSession) -> None:
        started.set()
        await session.wait_closed()

    app = create_app(agent, shutdown_grace=0.1)
    with pytest.raises(RuntimeError):
        _ = app[MEDIA].server  # not running yet
    async with running(app) as base:
        peer = MediaPeer(base.replace("http", "ws") + "/media", seconds=30.0)
        peer.start()
        await asyncio.wait_for(started.wait(), 5)
    report = await peer.wait_closed()
    assert report.close_code == 1001


def test_bad_options_are_refused() -> None:
    """A public URL that is not http(s)/ws(s), or a root path, is a ValidationError."""

    async def agent(session: StreamSession) -> None:
        await session.stop()

    with pytest.raises(ValidationError):
        create_app(agent, public_url="ftp://x")
    with pytest.raises(ValidationError):
        create_app(agent, media_path="/")


def test_cli_app_echoes_a_call_and_prints_its_summary(tmp_path: Any) -> None:
    """`vobiz-async app --echo` prints where it listens, answers a call from FakeVobiz,
    echoes it, and prints one JSON summary line when the call ends."""
    with subprocess.Popen(
        [sys.executable, "-m", "vobiz_async", "app", "--echo", "--port", "0", "--token", "t"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as proc:
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("listening on http://127.0.0.1:"), first
            base = first.split()[-1]

            async def call() -> list[Any]:
                async with FakeVobiz() as fake:
                    c = fake.call(answer_url=base + "/answer", seconds=1.0)
                    return await c.wait_done(timeout=15)

            [report] = asyncio.run(call())
            summary = proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)
    assert report.play_frames > 0 and report.heard_ms > 0
    assert '"close_code": 1000' in summary and report.call_id in summary
    assert proc.returncode == 0


async def test_the_one_port_app_answers_probes_and_metrics() -> None:
    """/healthz says ok with the server's figures; /metrics is Prometheus text."""

    async def agent(session: StreamSession) -> None:
        await session.wait_closed()

    app = create_app(agent, token="s3cret")
    async with running(app) as base, aiohttp.ClientSession() as http:
        async with http.get(base + "/healthz") as resp:
            health = await resp.json()
            assert resp.status == 200
        async with http.get(base + "/metrics") as resp:
            text = await resp.text()
            assert resp.status == 200
    assert health["status"] == "ok" and health["sessions"] == 0 and health["max_sessions"] > 0
    assert "vobiz" in text and "# TYPE" in text
