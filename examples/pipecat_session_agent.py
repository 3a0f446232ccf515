"""A pipecat bot as a vobiz_async handler (SessionTransport): the server's guards, pacing
and checkpoints; an echo in place of STT/LLM/TTS, tested against the emulator."""

import asyncio

from pipecat.frames import frames as f
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from vobiz_async import StreamSession, serve
from vobiz_async.integrations.pipecat import SessionTransport, VobizCheckpointOutcomeFrame
from vobiz_async.testing import FakeVobiz, speech_like


class Echo(FrameProcessor):
    """Says back each second the caller says, as a TTS would; a key press interrupts it."""

    heard = b""  # what the caller said since the last echo

    async def process_frame(self, frame: f.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, f.InputAudioRawFrame):
            self.heard += frame.audio
            if len(self.heard) >= 2 * frame.sample_rate:  # one second
                speech, self.heard = f.TTSAudioRawFrame(self.heard, frame.sample_rate, 1), b""
                for out in f.TTSStartedFrame(), speech, f.TTSStoppedFrame():  # + a checkpoint
                    await self.push_frame(out)
        elif isinstance(frame, f.InputDTMFFrame):
            await self.broadcast_interruption()  # type: ignore[no-untyped-call]
        elif isinstance(frame, VobizCheckpointOutcomeFrame):
            print(f"checkpoint {frame.checkpoint}: {frame.outcome}")
        else:
            await self.push_frame(frame, direction)


async def bot(session: StreamSession) -> None:
    """One pipecat pipeline per call; it ends when the call does."""
    transport = SessionTransport(session)
    worker = PipelineWorker(Pipeline([transport.input(), Echo(), transport.output()]))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


async def main() -> None:
    # In production: serve(bot, "0.0.0.0", 8765, token=...) behind TLS, or mounted in
    # FastAPI/aiohttp with vobiz_async.adapters. Here the emulator dials it.
    async with FakeVobiz() as fake, serve(bot, "127.0.0.1", 0, token="s3cret") as server:
        call = fake.call(audio=speech_like(3.0), seconds=5)
        async with fake.client() as client, asyncio.timeout(30):
            url = server.url_for(call.call_uuid)  # signed: admits this call only
            await client.streams.start(call.call_uuid, url, bidirectional=True)
            session = await server.wait_for_call(call.call_uuid)
            peer = await call.next_peer()
            while "utterance-2" not in peer.report.played_checkpoints:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.4)  # the third echo is playing: the caller presses 1
            await peer.send_dtmf("1")
            await call.wait_done()
    said, heard = (memoryview(pcm).cast("h") for pcm in (peer.caller_pcm, peer.heard_pcm))
    level = [round((sum(s * s for s in pcm) / max(1, len(pcm))) ** 0.5) for pcm in (said, heard)]
    print(f"caller said RMS {level[0]}, heard {peer.report.heard_ms:.0f} ms, RMS {level[1]}")
    acks = len(session.stats.clear_round_trip_ms)
    print(f"clearAudio: {peer.report.clears}, clearedAudio: {acks}")


if __name__ == "__main__":
    asyncio.run(main())
