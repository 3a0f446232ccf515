"""Record both sides of a call to a stereo WAV (caller left, agent as heard right)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from vobiz_async import StreamSession, serve
from vobiz_async.testing import FakeVobiz, tone

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "vobiz-call.wav"


async def agent(session: StreamSession) -> None:
    """Greet the caller, then listen until they hang up, recording everything."""
    recorder = session.record()
    await session.play(tone(440, 0.5, 16000), 16000)
    await session.checkpoint("greeting")
    await session.wait_closed()
    await asyncio.to_thread(
        recorder.write, OUT / f"{session.stream_id}.wav" if OUT.is_dir() else OUT
    )


async def main() -> None:
    async with FakeVobiz() as fake, serve(agent, "127.0.0.1", 0) as server:
        call = fake.call(seconds=2.0)
        async with fake.client() as client:
            await client.streams.start(
                call.call_uuid,
                server.url,
                bidirectional=True,
                content_type="audio/x-l16;rate=16000",
            )
        await call.wait_done()
        await asyncio.sleep(0.1)  # let the handler write the file
    print(f"recorded {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
