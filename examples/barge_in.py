"""Barge-in with checkpoints: stop talking the moment the caller speaks over the agent."""

from __future__ import annotations

import asyncio
import math
import struct

from vobiz_async import AudioReceived, CheckpointOutcome, StreamSession, serve
from vobiz_async.testing import FakeVobiz, speech_like


def loud(pcm: bytes) -> bool:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples))) > 500


async def agent(session: StreamSession) -> None:
    """Talk for 3 s; if the caller talks for 200 ms meanwhile, clear and listen."""

    async def answer() -> CheckpointOutcome:
        await session.play(speech_like(3.0, 24000, seed=3), 24000)
        return await session.checkpoint("answer")

    talking = asyncio.create_task(answer())
    speech_ms = 0
    async for event in session:
        if isinstance(event, AudioReceived) and not talking.done():
            speech_ms = speech_ms + 20 if loud(event.pcm) else 0
            if speech_ms >= 200:
                summary = await session.clear()
                print(
                    f"barge-in after {summary.utterance_sent_ms:.0f} ms sent;",
                    f"caller heard about {summary.estimated_heard_ms or 0:.0f} ms",
                )
                await talking  # play() stops early; its checkpoint comes back cleared
    print(f"answer checkpoint: {(await talking).value}")


async def main() -> None:
    caller = bytes(16000 * 2) + speech_like(1.5, 16000)  # silent 1 s, then speaks over it
    async with FakeVobiz() as fake, serve(agent, "127.0.0.1", 0) as server:
        call = fake.call(audio=caller, audio_rate=16000, seconds=4.0)
        async with fake.client() as client:
            await client.streams.start(call.call_uuid, server.url, bidirectional=True)
        await call.wait_done()


if __name__ == "__main__":
    asyncio.run(main())
