"""Hostile input at every layer: the protocol, the server, callbacks, REST parsing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from tests._strategies import json_values
from vobiz_async.callbacks import callback_handler
from vobiz_async.events import (
    AudioCleared,
    AudioReceived,
    DtmfReceived,
    MalformedFrame,
    PlaybackCheckpointReached,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)
from vobiz_async.models import Stream, StreamPage
from vobiz_async.protocol import State, StreamProtocol
from vobiz_async.server import StreamSession, serve
from vobiz_async.testing import MediaPeer, speech_like

CORPUS: list[dict[str, str]] = json.loads(
    (Path(__file__).parent / "fixtures" / "hostile" / "frames.json").read_text()
)
START = json.dumps(
    {
        "event": "start",
        "start": {
            "callId": "c",
            "streamId": "s",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
    }
)
MEDIA = json.dumps(
    {
        "sequenceNumber": 5,
        "streamId": "s",
        "event": "media",
        "media": {"track": "inbound", "timestamp": "1", "chunk": 5, "payload": "//////////8="},
    }
)
TYPED = (
    StreamStarted,
    AudioReceived,
    PlaybackCheckpointReached,
    AudioCleared,
    DtmfReceived,
    StreamStopped,
)


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus_case_is_classified(case: dict[str, str]) -> None:
    """Each nasty frame is rejected (counted), kept as unknown, or taken, as documented."""
    proto = StreamProtocol()
    proto.receive(START)
    events = proto.receive(case["frame"])
    assert len(events) == 1
    [event] = events
    expect = case["expect"]
    if expect == "malformed":
        assert isinstance(event, MalformedFrame) and proto.stats.malformed == 1
    elif expect == "unknown":
        assert isinstance(event, UnknownEvent) and proto.stats.unknown_events == 1
    elif expect == "event":
        assert isinstance(event, TYPED) and proto.stats.malformed == 0
    assert proto.state is State.STREAMING
    assert isinstance(proto.receive(MEDIA)[-1], AudioReceived)  # the stream goes on


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, pos, value in ops:
        if not out:
            break
        pos %= len(out)
        if kind == 0:
            out[pos] = value
        elif kind == 1:
            del out[pos : pos + 1 + value % 8]
        else:
            out[pos:pos] = bytes([value]) * (1 + value % 4)
    return bytes(out)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
)
def test_mutated_frames_never_raise_or_end_the_stream(ops: list[tuple[int, int, int]]) -> None:
    """Byte flips, deletions and insertions in real frames never raise or end the stream."""
    for base in (
        MEDIA,
        START,
        '{"event":"dtmf","dtmf":{"digit":"5"}}',
        '{"event":"playedStream","name":"a"}',
    ):
        proto = StreamProtocol()
        proto.receive(START)
        frame = mutate(base.encode(), ops).decode("utf-8", "surrogateescape")
        for event in proto.receive(frame):
            assert isinstance(event, (*TYPED, UnknownEvent, MalformedFrame))
        assert proto.state is State.STREAMING
        assert proto.stats.malformed == sum(proto.stats.malformed_reasons.values())


async def test_hostile_client_beside_a_healthy_call() -> None:
    """The whole corpus, invalid UTF-8 and binary frames, before and after start: the
    hostile session survives, every rejection is counted, the healthy call is untouched."""
    audio_counts: dict[str, int] = {}

    async def handler(session: StreamSession) -> None:
        count = 0
        async for event in session:
            if isinstance(event, AudioReceived):
                count += 1
        audio_counts[session.call_id] = count

    async with serve(handler, "127.0.0.1", 0) as server:
        healthy = MediaPeer(server.url, call_id="healthy", audio=speech_like(1.0), seconds=1.0)
        healthy.start()
        async with connect(server.url, max_size=None) as ws:
            for case in CORPUS:
                await ws.send(case["frame"])  # before start
            await ws.send(START)
            for case in CORPUS:
                await ws.send(case["frame"])
            await ws.send(b"\x00\x01binary")
            await ws.send(MEDIA)
            raw = Frame(Opcode.TEXT, b'{"event":"media","media":{"payload":"\xff\xfe"}}')
            assert ws.transport is not None
            ws.transport.write(raw.serialize(mask=True, extensions=[]))
            await ws.send(MEDIA)
            session = await server.wait_for_call("c", timeout=5)
            await asyncio.sleep(0.2)
            assert not session.closed
            stats = session.stats
            assert stats.malformed == sum(stats.malformed_reasons.values()) >= 2 * 25
            assert stats.malformed_reasons["binary-frame"] == 1
            assert (
                stats.malformed_reasons["invalid-json"] >= 1
                and stats.malformed_reasons["before-start"] >= 1
            )
        report = await healthy.wait_closed()
        await asyncio.sleep(0.1)
    assert report.close_code == 1000 and report.malformed == 0
    assert audio_counts["healthy"] == 50
    assert audio_counts["c"] >= 2  # the valid media after all the garbage was delivered
    assert server.stats.handler_errors == 0 and server.stats.events_before_start >= 1


async def test_callback_endpoint_survives_random_bodies() -> None:
    """Random bodies and content types never produce a 5xx, and nothing bad is dispatched."""
    taken: list[object] = []
    app = web.Application()
    app.router.add_route("*", "/cb", callback_handler(taken.append, mode="off"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/cb"  # type: ignore[union-attr]
    bodies: list[bytes] = [
        b"",
        b"\xff" * 100,
        b"Event=StartStream&&&&",
        b"Event",
        urlencode({"Event": "x" * 10_000}).encode(),
        json.dumps({"Event": "StartStream"}).encode(),
        b"=" * 50,
        b"Event=%ZZ",
        bytes(range(256)),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                for ctype in (
                    "application/x-www-form-urlencoded",
                    "application/json",
                    "text/plain",
                ):
                    async with http.post(url, data=body, headers={"Content-Type": ctype}) as resp:
                        assert resp.status < 500
            async with http.put(url, data=b"Event=StartStream") as resp:
                assert resp.status == 405
    finally:
        await runner.cleanup()
    assert all(getattr(cb, "event", None) for cb in taken)


@settings(max_examples=300)
@given(
    json_values(
        st.sampled_from(
            [
                "stream_id",
                "objects",
                "meta",
                "total",
                "status",
                "start_time",
                "content_type",
                "sampling_rate",
                "bidirectional",
                "error",
                "x",
            ]
        ),
        max_leaves=25,
    )
)
def test_rest_response_parsing_fails_only_with_value_errors(body: Any) -> None:
    """Garbage response bodies give a parsed page/stream or a ValueError, nothing else."""
    with contextlib.suppress(ValueError):
        StreamPage.from_body(body, limit=20, offset=0)
    if isinstance(body, dict):
        with contextlib.suppress(ValueError):
            Stream.model_validate(body)
