"""SignalWireClient reads every answer bounded by RestLimits.max_body_bytes, as VobizClient
does: oversized, compression-bomb and endless chunked bodies from a raw aiohttp server on
loopback are typed ``ResponseTooLargeError`` and never inflate past the bound."""

from __future__ import annotations

import asyncio
import functools
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vobiz_async import RestLimits, RetryPolicy
from vobiz_async.errors import ResponseTooLargeError, TransportError
from vobiz_async.signalwire import SignalWireClient
from vobiz_async.testing import FakeSignalWire

URL = "wss://agent.example.net/media/7d1e4c"
PROJECT = "b8f3c1d2-0000-4000-8000-00000000abcd"
CALL = "CA-limits-1"
MIB = 1 << 20

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _stream_json(status: str) -> bytes:
    return json.dumps(
        {"sid": "MZ-1", "account_sid": PROJECT, "call_sid": CALL, "status": status}
    ).encode()


@functools.cache
def _bomb(encoding: str, mib: int = 100) -> bytes:
    """A few hundred KB of gzip (or zlib, for ``deflate``) inflating to ``mib`` MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    block = b" " * MIB
    return b"".join(packer.compress(block) for _ in range(mib)) + packer.flush()


def gzip_of(data: bytes) -> bytes:
    """``data`` gzip-compressed."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def _body(data: bytes, encoding: str | None = None) -> Reply:
    """An answer with a Content-Length, sent as is (``encoding`` only labels it)."""

    async def reply(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Encoding": encoding} if encoding else {}
        return web.Response(body=data, content_type="application/json", headers=headers)

    return reply


class RawCompat:
    """A bare compat endpoint: start and stop answer whatever the test sets."""

    def __init__(self) -> None:
        self.start_reply: Reply = _body(_stream_json("in-progress"))
        self.stop_reply: Reply = _body(_stream_json("stopped"))
        self.starts = 0
        self.stops = 0
        self.chunked_sent = 0
        self.chunked_done = asyncio.Event()
        self.base_url = ""

    async def _start(self, request: web.Request) -> web.StreamResponse:
        self.starts += 1
        return await self.start_reply(request)

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        self.stops += 1
        return await self.stop_reply(request)

    async def endless_chunks(self, request: web.Request) -> web.StreamResponse:
        """Up to 64 MiB of JSON-ish bytes, chunked, no Content-Length; stops when cut off."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(1024):
                await response.write(b" " * (64 * 1024))
                self.chunked_sent += 64 * 1024
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self.chunked_done.set()
        return response

    def client(self, **kwargs: Any) -> SignalWireClient:
        kwargs.setdefault("retry", RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02))
        return SignalWireClient(PROJECT, "token", base_url=self.base_url, **kwargs)


@asynccontextmanager
async def raw_compat() -> AsyncIterator[RawCompat]:
    """Serve a :class:`RawCompat` on 127.0.0.1, port 0."""
    server = RawCompat()
    calls = "/api/laml/2010-04-01/Accounts/{project}/Calls/{call}"
    app = web.Application()
    app.router.add_post(calls + "/Streams.json", server._start)
    app.router.add_post(calls + "/Streams/{sid}.json", server._stop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_a_body_over_the_default_limit_is_refused_and_not_resent() -> None:
    """A 2 MiB start answer: ResponseTooLargeError at 1 MiB, stopped by name, not resent."""
    async with raw_compat() as server, server.client() as client:
        server.start_reply = _body(b" " * (2 * MIB))
        with pytest.raises(ResponseTooLargeError) as info:
            await client.streams.start(CALL, URL)
    error = info.value
    assert (error.limit, error.reason, error.method) == (MIB, "too-large", "POST")
    assert error.url.endswith(f"/Calls/{CALL}/Streams.json")
    assert (server.starts, server.stops) == (1, 1)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compression_bomb_never_inflates_past_the_bound(encoding: str) -> None:
    """A 100 MiB gzip/deflate bomb is cut at 1 MiB: typed error, peak memory near the cap."""
    bomb = _bomb(encoding)
    assert len(bomb) < MIB  # small compressed, huge inflated
    async with raw_compat() as server, server.client() as client:
        server.start_reply = _body(bomb, encoding)
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError) as info:
                await client.streams.start(CALL, URL)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert info.value.limit == MIB
    assert peak < 16 * MIB, peak
    assert (server.starts, server.stops) == (1, 1)


async def test_a_chunked_body_without_length_is_cut_at_the_limit() -> None:
    """An endless chunked stop answer raises at the limit and the client stops reading."""
    async with (
        raw_compat() as server,
        server.client(limits=RestLimits(max_body_bytes=MIB)) as client,
    ):
        server.stop_reply = server.endless_chunks
        with pytest.raises(ResponseTooLargeError) as info:
            await client.streams.stop(CALL, "MZ-1")
        await asyncio.wait_for(server.chunked_done.wait(), 10)
    assert info.value.limit == MIB
    assert server.stops == 1  # a too-large answer is not retried
    assert server.chunked_sent < 64 * MIB  # the connection was cut, not read to the end


async def test_a_small_compressed_answer_inflates_with_the_own_session() -> None:
    """The client's own session (auto_decompress off) still inflates a normal gzip answer."""
    async with raw_compat() as server, server.client() as client:
        server.start_reply = _body(gzip_of(_stream_json("in-progress")), "gzip")
        stream = await client.streams.start(CALL, URL)
    assert (stream.sid, stream.status) == ("MZ-1", "in-progress")


async def test_a_caller_session_decodes_and_is_bounded_the_same() -> None:
    """With the caller's session aiohttp inflates, the same cap applies, the session stays open."""
    async with raw_compat() as server, aiohttp.ClientSession() as session:
        async with server.client(session=session) as client:
            server.start_reply = _body(gzip_of(_stream_json("in-progress")), "gzip")
            stream = await client.streams.start(CALL, URL)
            server.start_reply = _body(gzip_of(b" " * (4 * MIB)), "gzip")
            with pytest.raises(ResponseTooLargeError) as info:
                await client.streams.start(CALL, URL)
        assert not session.closed
    assert stream.sid == "MZ-1"
    assert info.value.limit == MIB


async def test_deeply_nested_json_within_the_limit_is_a_typed_error() -> None:
    """JSON nested too deep to parse is not a stream object: TransportError, not RecursionError."""
    async with raw_compat() as server, server.client() as client:
        server.start_reply = _body(b"[" * 100_000 + b"]" * 100_000)
        with pytest.raises(TransportError, match="without a stream object"):
            await client.streams.start(CALL, URL)


async def test_start_and_stop_work_within_a_small_custom_limit() -> None:
    """Against FakeSignalWire a 4 KiB limit fits start and stop; 64 bytes does not."""
    async with FakeSignalWire() as fake:
        call = fake.call()
        async with fake.client(limits=RestLimits(max_body_bytes=4096)) as client:
            assert client.limits.max_body_bytes == 4096
            stream = await client.streams.start(call.call_sid, URL, name="small-limit")
            assert await client.streams.stop(call.call_sid, stream.sid) is True
        async with fake.client(limits=RestLimits(max_body_bytes=64)) as tight:
            with pytest.raises(ResponseTooLargeError) as info:
                await tight.streams.start(call.call_sid, URL + "/2", name="tight-limit")
    assert stream.name == "small-limit"
    assert info.value.limit == 64
