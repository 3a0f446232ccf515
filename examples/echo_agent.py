"""An echo agent: every caller frame is played straight back, tested against the emulator."""

from __future__ import annotations

import asyncio

from vobiz_async import AudioReceived, StreamSession, serve
from vobiz_async.testing import FakeVobiz


async def echo(session: StreamSession) -> None:
    """Play each inbound frame back in the stream's own format, without re-encoding."""
    async for event in session:
        if isinstance(event, AudioReceived) and event.track == "inbound":
            await session.play_encoded(event.payload)


async def main() -> None:
    # In production: serve(echo, "0.0.0.0", 8765) behind TLS, and point Vobiz's
    # <Stream> or a REST start at wss://your-host/... . Here the emulator dials it.
    async with FakeVobiz() as fake, serve(echo, "127.0.0.1", 0) as server:
        call = fake.call(seconds=2.0)
        async with fake.client() as client:
            await client.streams.start(call.call_uuid, server.url, bidirectional=True)
        report = (await call.wait_done())[0]
    print(f"caller sent {report.sent_ms:.0f} ms and heard {report.heard_ms:.0f} ms back")


if __name__ == "__main__":
    asyncio.run(main())
