"""A pipecat bot on a Vobiz call: FastAPI, VobizSerializer, an echo in place of STT/LLM/TTS."""

import asyncio
import socket

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket
from pipecat.frames import frames as f
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.websocket import fastapi as ws
from pipecat.workers.runner import WorkerRunner

from vobiz_async.integrations import pipecat as vobiz
from vobiz_async.testing import FakeVobiz, speech_like
from vobiz_async.xml import ResponseBuilder

app = FastAPI()


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
        elif isinstance(frame, vobiz.VobizCheckpointOutcomeFrame):
            print(f"checkpoint {frame.checkpoint}: {frame.outcome}")
        else:
            await self.push_frame(frame, direction)


@app.post("/answer")
async def answer(request: Request) -> Response:
    url = str(request.url_for("media")).replace("http", "ws", 1)
    stream = ResponseBuilder().stream(url, bidirectional=True, keep_call_alive=True)
    return Response(stream.to_xml(), media_type="application/xml")


@app.websocket("/media")
async def media(websocket: WebSocket) -> None:
    await websocket.accept()
    serializer = vobiz.VobizSerializer(await vobiz.parse_start(websocket))
    on = ws.FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True)
    io = ws.FastAPIWebsocketTransport(websocket, on.model_copy(update={"serializer": serializer}))
    bot = PipelineWorker(Pipeline([io.input(), Echo(), serializer.checkpoints(), io.output()]))

    @io.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]
    async def hung_up(*_: object) -> None:
        await bot.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(bot)
    await runner.run()


async def main() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve([sock]))
    answer_url = f"http://127.0.0.1:{sock.getsockname()[1]}/answer"
    async with FakeVobiz() as fake, asyncio.timeout(30):
        call = fake.call(audio=speech_like(3.0), seconds=5, answer_url=answer_url)
        peer = await call.next_peer()
        while "utterance-2" not in peer.report.played_checkpoints:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.4)  # the third echo is playing: the caller presses 1
        await peer.send_dtmf("1")
        await call.wait_done()
    said, heard = (memoryview(pcm).cast("h") for pcm in (peer.caller_pcm, peer.heard_pcm))
    level = [round((sum(s * s for s in pcm) / max(1, len(pcm))) ** 0.5) for pcm in (said, heard)]
    print(f"caller said RMS {level[0]}, heard {peer.report.heard_ms:.0f} ms, RMS {level[1]}")
    print(f"clearAudio received: {peer.report.clears}")
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
