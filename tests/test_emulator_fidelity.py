"""The emulator is as strict as Vobiz (issue 12): stops, hangups, commands, tracks, limits."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from vobiz_async.events import AudioReceived
from vobiz_async.server import StreamSession, serve
from vobiz_async.testing import FakeVobiz, MediaPeer, tone


@pytest.fixture
async def fake() -> AsyncIterator[FakeVobiz]:
    async with FakeVobiz(callback_retry_delay=0.01) as fake:
        yield fake


class RawAgent:
    """A bare WebSocket agent: records every frame and sends scripted commands."""

    def __init__(self, script: list[dict[str, Any]] | None = None) -> None:
        self.script = script or []
        self.frames: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, ws: ServerConnection) -> None:
        start = json.loads(await ws.recv())
        self.frames.append(start)
        sid = start.get("start", {}).get("streamId") or start.get("streamId")
        for command in self.script:
            text = json.dumps(command).replace('"$SID"', json.dumps(sid))
            await ws.send(text)
        async for message in ws:
            self.frames.append(json.loads(message))

    def media(self, track: str | None = None) -> list[dict[str, Any]]:
        return [
            f
            for f in self.frames
            if f.get("event") == "media" and (track is None or f["media"].get("track") == track)
        ]


async def _sessions_server() -> tuple[Any, list[StreamSession]]:
    sessions: list[StreamSession] = []

    async def agent(session: StreamSession) -> None:
        sessions.append(session)
        async for _ in session:
            pass

    return serve(agent, "127.0.0.1", 0), sessions


# ------------------------------------------------------------------ stops and hangups


async def test_rest_stop_before_the_socket_opens_means_no_media(fake: FakeVobiz) -> None:
    """A REST stop issued right after the start: the agent never gets a session."""
    server_cm, sessions = await _sessions_server()
    async with server_cm as server:
        call = fake.call(seconds=3)
        async with fake.client() as client:
            started = await client.streams.start(call.call_uuid, server.url)
            await client.streams.stop(call.call_uuid, started.stream_id)
        reports = await call.wait_done(timeout=10)
    assert sessions == [] and all(r.frames_sent == 0 for r in reports)
    assert fake.streams[started.stream_id].status == "completed"


@pytest.mark.parametrize("how", ["hangup", "close"])
async def test_hangup_or_close_before_the_socket_opens_dials_nothing(how: str) -> None:
    """hangup() or close() right after a start: nothing streams for the ended call."""
    server_cm, sessions = await _sessions_server()
    async with server_cm as server, FakeVobiz() as fake:
        call = fake.call(seconds=3)
        async with fake.client() as client:
            await client.streams.start(call.call_uuid, server.url)
        if how == "hangup":
            await fake.hangup(call.call_uuid)
        else:
            await fake.close()
        reports = await call.wait_done(timeout=10)
    assert sessions == [] and sum(r.frames_sent for r in reports) == 0
    assert call.hangup_cause in ("hangup", "closed")


async def test_a_peer_hung_up_before_it_runs_never_dials() -> None:
    """MediaPeer.hangup() before start(): the report says not dialed, no socket opened."""
    agent = RawAgent()
    async with ws_serve(agent.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        peer = MediaPeer(f"ws://127.0.0.1:{port}/", seconds=1)
        await peer.hangup()
        report = await peer.wait_closed()
    assert report.not_dialed and agent.frames == []


async def test_lone_stream_without_keep_call_alive_ends_the_call(fake: FakeVobiz) -> None:
    """<Stream> with nothing after it and no keepCallAlive: the call ends, no media (3.2)."""
    server_cm, sessions = await _sessions_server()
    async with server_cm as server:
        xml = f'<Response><Stream bidirectional="true">{server.url}</Stream></Response>'
        call = fake.call(seconds=3, answer_xml=xml)
        reports = await call.wait_done(timeout=10)
    assert sessions == [] and sum(r.frames_sent for r in reports) == 0
    assert call.hangup_cause == "end-of-xml" and not call.live


# ------------------------------------------------------------------ strict commands

BAD_COMMANDS: list[dict[str, Any]] = [
    {"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000}},
    {"event": "playAudio", "streamId": "someone-else", "media": {"sampleRate": 8000}},
    {"event": "playAudio", "streamId": "$SID", "media": {"contentType": "audio/x-mulaw"}},
    {"event": "playAudio", "streamId": "$SID", "media": {"sampleRate": "8000"}},
    {
        "event": "playAudio",
        "streamId": "$SID",
        "media": {"contentType": "audio/x-l16;rate=16000", "sampleRate": 8000},
    },
    {"event": "checkpoint", "name": "no-id"},
    {"event": "clearAudio", "streamId": "stale-id"},
    {"event": "stop"},
]
PAYLOAD = base64.b64encode(b"\xff" * 160).decode()


def _with_payload(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for command in commands:
        command = json.loads(json.dumps(command))
        if command["event"] == "playAudio":
            command["media"].setdefault("contentType", "audio/x-mulaw")
            command["media"]["payload"] = PAYLOAD
        out.append(command)
    return out


async def _run_script(strict: bool) -> Any:
    good = [
        {"event": "checkpoint", "streamId": "$SID", "name": "ok"},
        {"event": "stop", "streamId": "$SID"},
    ]
    agent = RawAgent(_with_payload(BAD_COMMANDS) + good)
    async with ws_serve(agent.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        peer = MediaPeer(f"ws://127.0.0.1:{port}/", seconds=3, strict=strict)
        return await peer.wait_closed()


async def test_commands_vobiz_would_not_obey_are_dropped_and_reported() -> None:
    """Strict by default: missing/foreign streamId, bad sampleRate, ;rate= are refused."""
    report = await _run_script(strict=True)
    assert report.refused == {
        "missing-stream-id": 3,
        "foreign-stream-id": 2,
        "missing-sample-rate": 1,
        "string-sample-rate": 1,
        "rate-in-content-type": 1,
    }
    assert report.play_frames == 0 and report.clears == 0
    assert report.played_checkpoints == ["ok"] and report.stopped


async def test_lenient_mode_obeys_them() -> None:
    """strict=False keeps the older, lenient behaviour: the first stop ends the stream."""
    report = await _run_script(strict=False)
    assert report.refused == {} and report.stopped and report.play_frames >= 1


# ---------------------------------------------------------------- tracks and frames


async def test_both_tracks_carry_caller_and_agent_audio_on_a_media_clock() -> None:
    """audio_track=both: start lists both tracks; timestamps step 20 ms; chunk = seq."""
    play = {
        "event": "playAudio",
        "streamId": "$SID",
        "media": {
            "contentType": "audio/x-mulaw",
            "sampleRate": 8000,
            "payload": base64.b64encode(b"\x10" * 1600).decode(),
        },
    }
    agent = RawAgent([play])
    async with ws_serve(agent.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        peer = MediaPeer(
            f"ws://127.0.0.1:{port}/",
            seconds=0.4,
            speed=4.0,
            audio_track="both",
            bidirectional=False,
        )
        await peer.wait_closed()
    assert agent.frames[0]["start"]["tracks"] == ["inbound", "outbound"]
    inbound, outbound = agent.media("inbound"), agent.media("outbound")
    assert len(inbound) == len(outbound) == 20
    stamps = [int(f["media"]["timestamp"]) for f in inbound]
    assert {b - a for a, b in itertools.pairwise(stamps)} == {20}
    assert all(f["media"]["chunk"] == f["sequenceNumber"] for f in agent.media())


async def test_outbound_track_is_what_the_caller_hears(fake: FakeVobiz) -> None:
    """A REST stream with audio_track=outbound carries the agent's playback only."""
    agent = RawAgent()
    async with ws_serve(agent.handle, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        call = fake.call(seconds=0.2, speed=2.0)
        async with fake.client() as client:
            await client.streams.start(
                call.call_uuid, f"ws://127.0.0.1:{port}/", audio_track="outbound"
            )
        await call.wait_done(timeout=10)
    assert agent.frames[0]["start"]["tracks"] == ["outbound"]
    assert agent.media() and agent.media("inbound") == []


async def test_stream_timeout_stops_the_stream_completed(fake: FakeVobiz) -> None:
    """stream_timeout=1 stops the stream after 1 s of call time; status completed."""
    server_cm, _ = await _sessions_server()
    async with server_cm as server:
        call = fake.call(seconds=10, speed=5.0)
        async with fake.client() as client:
            started = await client.streams.start(call.call_uuid, server.url, stream_timeout=1)
        [report] = await call.wait_done(timeout=20)
    assert report.stream_timed_out and report.frames_sent == 50
    assert fake.streams[started.stream_id].status == "completed" and call.live


async def test_flat_start_then_old_media_reaches_the_agent(fake: FakeVobiz) -> None:
    """The G1 flat start and G1 media (format per frame, int timestamp) work end to end."""
    got: list[AudioReceived] = []

    async def agent(session: StreamSession) -> None:
        async for event in session:
            if isinstance(event, AudioReceived):
                got.append(event)

    raw = RawAgent()
    async with ws_serve(raw.handle, "127.0.0.1", 0) as wire:
        port = wire.sockets[0].getsockname()[1]
        peer = MediaPeer(f"ws://127.0.0.1:{port}/", seconds=0.1, shape="flat", speed=2.0)
        await peer.wait_closed()
    media = raw.media()
    assert media and all(isinstance(f["media"]["timestamp"], int) for f in media)
    assert all("sequenceNumber" not in f and "sampleRate" in f["media"] for f in media)
    async with serve(agent, "127.0.0.1", 0) as server:
        call = fake.call(seconds=0.2, speed=2.0, shape="flat")
        async with fake.client() as client:
            await client.streams.start(call.call_uuid, server.url)
        await call.wait_done(timeout=10)
        for _ in range(100):
            if len(got) >= 10:
                break
            await asyncio.sleep(0.01)
    assert len(got) == 10 and got[0].pcm


# ------------------------------------------------------------------ callbacks


async def test_a_slow_callback_handler_is_retried_after_the_deadline() -> None:
    """An attempt that does not answer within the deadline counts as failed and is retried."""
    hits: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(asyncio.get_running_loop().time())
        if len(hits) == 1:
            await asyncio.sleep(2)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/status", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server_cm, _ = await _sessions_server()
    try:
        async with (
            server_cm as server,
            FakeVobiz(callback_deadline=0.2, callback_retry_delay=0.01) as fake,
        ):
            call = fake.call(seconds=0.3)
            async with fake.client() as client:
                await client.streams.start(
                    call.call_uuid,
                    server.url,
                    status_callback_url=f"http://127.0.0.1:{port}/status",
                )
            await call.wait_done(timeout=10)
    finally:
        await runner.cleanup()
    start = next(c for c in fake.callbacks if c.event == "StartStream")
    assert start.attempts == 2 and start.status == 200


# ------------------------------------------------------------------ REST and XML checks


async def test_rest_refuses_what_vobiz_refuses(fake: FakeVobiz) -> None:
    """Bad callback method/URL, extra headers, limit=0 or negative paging: 400, not 500."""
    call = fake.call(seconds=1)
    base = f"{fake.base_url}/api/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/Stream/"
    headers = {"X-Auth-ID": fake.auth_id, "X-Auth-Token": fake.auth_token}
    good = {"service_url": "wss://agent.example.net/x"}
    bodies = [
        {**good, "status_callback_method": "PUT"},
        {**good, "status_callback_url": "ftp://x/"},
        {**good, "extra_headers": "a b:c"},
        {**good, "extra_headers": {"a": "b"}},
    ]
    statuses = []
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(base, json=body, headers=headers) as resp:
                statuses.append(resp.status)
        for query in ("limit=0", "limit=-1", "offset=-5", "limit=99999999999999"):
            async with http.get(f"{base}?{query}", headers=headers) as resp:
                statuses.append(resp.status)
    assert statuses == [400] * 8 and fake.streams == {}


async def test_a_refused_handshake_ends_the_stream_failed(fake: FakeVobiz) -> None:
    """A stream whose WebSocket handshake was refused ends 'failed', not 'completed'."""

    async def agent(session: StreamSession) -> None:
        await session.stop()

    async with serve(agent, "127.0.0.1", 0, token="right") as server:
        call = fake.call(seconds=1)
        async with fake.client() as client:
            started = await client.streams.start(call.call_uuid, f"{server.url}?token=wrong")
        [report] = await call.wait_done(timeout=10)
    assert report.rejected_status == 403
    assert fake.streams[started.stream_id].status == "failed"


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        ('<Stream contentType="audio/wav">ws://127.0.0.1:9/x</Stream>', "contentType"),
        ('<Stream streamTimeout="1h">ws://127.0.0.1:9/x</Stream><Wait length="5"/>', "1h"),
        ("<Connect><Stream>ws://127.0.0.1:9/x</Stream></Connect>", "Connect"),
        ('<Stream statusCallbackMethod="PUT">ws://127.0.0.1:9/x</Stream>', "Method"),
        ('<Stream>ws://127.0.0.1:9/x</Stream><Wait length="soon"/>', "soon"),
    ],
)
async def test_answer_xml_vobiz_cannot_run_drops_the_call(
    fake: FakeVobiz, stream: str, why: str
) -> None:
    """Invalid <Stream> attributes or a Twilio <Connect>: the call is dropped, logged."""
    call = fake.call(seconds=1, answer_xml=f"<Response>{stream}</Response>")
    reports = await call.wait_done(timeout=10)
    assert reports == [] and not call.live
    assert call.hangup_cause is not None and call.hangup_cause.startswith("invalid-answer-xml")
    assert why in call.hangup_cause


async def test_record_beside_stream_holds_the_call_while_streaming(fake: FakeVobiz) -> None:
    """<Stream> then <Record maxLength>: the stream runs while the call records."""
    server_cm, sessions = await _sessions_server()
    async with server_cm as server:
        xml = f'<Response><Stream>{server.url}</Stream><Record maxLength="1"/></Response>'
        call = fake.call(seconds=5, speed=5.0, answer_xml=xml)
        [report] = await call.wait_done(timeout=10)
    assert report.frames_sent > 0 and len(sessions) == 1
    assert call.hangup_cause == "end-of-xml"


async def test_wait_done_waits_for_the_answer_documents_streams(fake: FakeVobiz) -> None:
    """fake.call(answer_xml=...) then wait_done(): the stream's report, not [] at once."""

    async def agent(session: StreamSession) -> None:
        await session.play(tone(300, 0.1, 8000))
        await session.checkpoint("done")
        await session.stop()

    async with serve(agent, "127.0.0.1", 0) as server:
        xml = (
            '<Response><Stream bidirectional="true" keepCallAlive="true">'
            f"{server.url}</Stream><Hangup/></Response>"
        )
        call = fake.call(seconds=3, answer_xml=xml)
        reports = await call.wait_done(timeout=10)
    assert len(reports) == 1 and reports[0].played_checkpoints == ["done"]
    assert call.hangup_cause == "hangup-verb"
