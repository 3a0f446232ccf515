"""A FastAPI voice agent: answer URL and media WebSocket on one port, run against FakeVobiz."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, Request, Response, WebSocket

from vobiz_async import MediaServer, StreamSession
from vobiz_async.adapters.starlette import handle
from vobiz_async.testing import FakeVobiz, tone
from vobiz_async.xml import ResponseBuilder


async def agent(session: StreamSession) -> None:
    await session.play(tone(440, 0.5, 8000))
    print(f"checkpoint greeting: {(await session.checkpoint('greeting')).value}")
    await session.stop()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with MediaServer(agent, path="/media", token="change-me") as app.state.media:
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/answer")
async def answer(request: Request) -> Response:
    call_uuid = parse_qs((await request.body()).decode())["CallUUID"][0]
    url = app.state.media.url_for(call_uuid, base_url=f"ws://{request.url.netloc}/media")
    xml = ResponseBuilder().stream(url, bidirectional=True, keep_call_alive=True).hangup()
    return Response(xml.to_xml(), media_type="application/xml")


@app.websocket("/media")
async def media(websocket: WebSocket) -> None:
    await handle(websocket, app.state.media)


async def main() -> None:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (until uvicorn has bound its port)
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/answer"
    async with FakeVobiz() as fake:  # fetches the answer URL and dials <Stream> like Vobiz
        [report] = await fake.call(answer_url=url, hangup_when_done=False).wait_done(timeout=30)
    print(f"streamed: {report.frames_sent} frames sent, {report.heard_ms:.0f} ms heard")
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
