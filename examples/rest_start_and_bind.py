"""Start a stream on a live call by REST, then await its media session by stream_id."""

from __future__ import annotations

import asyncio

from vobiz_async import AudioReceived, MediaServer, StreamSession, VobizClient, serve
from vobiz_async.testing import FakeVobiz


async def idle(session: StreamSession) -> None:
    """The server-side handler does nothing; the REST caller drives the session."""
    await session.wait_closed()


async def fork_call(client: VobizClient, server: MediaServer, call_uuid: str) -> None:
    """Attach a stream mid-call and use its session once Vobiz connects."""
    started = await client.streams.start(
        call_uuid, server.url, bidirectional=True, content_type="audio/x-mulaw;rate=8000"
    )
    session = await started.session(server, timeout=10)  # start may beat the REST answer
    frames = 0
    async for event in session:
        if isinstance(event, AudioReceived):
            frames += 1
            if frames == 25:  # half a second heard: stop the fork, keep the call
                await client.streams.stop(call_uuid, started.stream_id)
    print(f"stream {started.stream_id}: {frames} frames, stopped by REST")


async def main() -> None:
    # Against real Vobiz: VobizClient() reads VOBIZ_AUTH_ID / VOBIZ_AUTH_TOKEN.
    async with FakeVobiz() as fake, serve(idle, "127.0.0.1", 0) as server:
        call = fake.call(seconds=5.0)
        async with fake.client() as client:
            await fork_call(client, server, call.call_uuid)


if __name__ == "__main__":
    asyncio.run(main())
