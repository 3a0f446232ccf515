"""One agent, one server: a Vobiz call and a SignalWire call served at the same time."""

from __future__ import annotations

import asyncio

from vobiz_async import StreamSession, serve
from vobiz_async.signalwire.cxml import ResponseBuilder
from vobiz_async.testing import FakeSignalWire, FakeVobiz, speech_like


async def agent(session: StreamSession) -> None:
    """Greet the caller, whoever carries the call; the session API is the same."""
    await session.play(speech_like(1.0, 24000, seed=5), 24000)  # resampled to the stream
    outcome = await session.checkpoint("greeting")
    print(f"{session.provider}: checkpoint greeting: {outcome.value}")
    await session.stop()  # Vobiz: a stop message; SignalWire: the socket closes with 1000


async def vobiz_call(fake: FakeVobiz, url: str) -> None:
    call = fake.call(seconds=5.0)
    async with fake.client() as client:
        await client.streams.start(call.call_uuid, url, bidirectional=True)
    await call.wait_done()


async def signalwire_call(fake: FakeSignalWire, url: str) -> None:
    # SignalWire dials wss:// only; the emulator dials a loopback wss:// URL as ws://.
    wss = url.replace("ws://", "wss://", 1)
    xml = ResponseBuilder().connect_stream(wss, codec="L16@16000h").hangup().to_xml()
    call = fake.call(seconds=5.0, answer_xml=xml)
    await call.wait_done()
    print(f"signalwire: call ended ({call.hangup_cause})")


async def main() -> None:
    async with (
        serve(agent, "127.0.0.1", 0) as server,
        FakeVobiz() as vobiz,
        FakeSignalWire() as signalwire,
    ):
        await asyncio.gather(vobiz_call(vobiz, server.url), signalwire_call(signalwire, server.url))


if __name__ == "__main__":
    asyncio.run(main())
