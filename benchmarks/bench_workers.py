"""Calls per host with ``vobiz-async serve --workers N``: 2 workers against 1, in one run.

Run: ``.venv/bin/python benchmarks/bench_workers.py [--workers 1 2] [--connections 32]
[--seconds 10]``. For each worker count the real CLI server runs (``python -m
vobiz_async serve --workers N``, its handler reading every event of every call), and a
load generator in this process opens ``--connections`` streams on 127.0.0.1 and sends
pre-built, masked 20 ms mu-law ``media`` frames as fast as the server takes them (TCP
backpressure paces it) for ``--seconds``, then closes each stream and waits for the
server's close. Throughput is the frames the server read (the sum of the workers'
per-call summary lines, ``frames_in``) over the time from the first frame to the last
close; ``calls/host`` is that divided by 50 frames a second, the real-time calls the
host could carry at full load. The generator shares the machine's cores with the
workers, so the ratio is what this host really gets. Prints a table, writes
``benchmarks/results/bench_workers.json``; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
import uuid
from typing import Any

from _common import print_table, write_json
from websockets.frames import Close, Frame, Opcode

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
BLOCK_FRAMES = 100  # frames per write: 2 s of audio
FRAMES_PER_CALL_SECOND = 50  # 20 ms frames


def masked(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])


def start_frame(stream_id: str) -> bytes:
    return masked(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": 0,
                "start": {
                    "callId": str(uuid.uuid4()),
                    "streamId": stream_id,
                    "accountId": "731002",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": "{}",
            }
        )
    )


def media_block(stream_id: str) -> bytes:
    payload = base64.b64encode(bytes(range(160))).decode()
    frames = [
        masked(
            json.dumps(
                {
                    "sequenceNumber": seq,
                    "streamId": stream_id,
                    "event": "media",
                    "media": {
                        "track": "inbound",
                        "timestamp": str(1_700_000_000_000 + seq * 20),
                        "chunk": seq,
                        "payload": payload,
                    },
                    "extra_headers": "{}",
                }
            )
        )
        for seq in range(1, BLOCK_FRAMES + 1)
    ]
    return b"".join(frames)


CLOSE = Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=True, extensions=[])


async def one_stream(port: int, seconds: float, started: float) -> int:
    """Stream as fast as the server reads for ``seconds``; returns frames sent."""
    stream_id = str(uuid.uuid4())
    block = media_block(stream_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(UPGRADE)
    await reader.readuntil(b"\r\n\r\n")
    writer.write(start_frame(stream_id))
    sent = 0
    while time.perf_counter() - started < seconds:
        writer.write(block)
        sent += BLOCK_FRAMES
        await writer.drain()
    writer.write(CLOSE)
    await writer.drain()
    await reader.read()  # the server's close frame, then its end of the socket
    writer.close()
    return sent


async def run(workers: int, connections: int, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vobiz_async",
        "serve",
        "--port",
        "0",
        "--workers",
        str(workers),
        "--log-level",
        "error",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await proc.stdout.readline()).decode()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        began = time.perf_counter()
        sent = await asyncio.gather(*(one_stream(port, seconds, began) for _ in range(connections)))
        elapsed = time.perf_counter() - began
        summaries = []
        async with asyncio.timeout(60):
            for _ in range(connections):
                summaries.append(json.loads(await proc.stdout.readline()))
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    frames = sum(s["stats"]["frames_in"] for s in summaries)
    per_worker: dict[str, int] = {}
    for s in summaries:
        per_worker[s["worker"]] = per_worker.get(s["worker"], 0) + s["stats"]["frames_in"]
    rate = frames / elapsed
    return {
        "workers": workers,
        "connections": connections,
        "seconds": round(elapsed, 2),
        "frames_sent": sum(sent),
        "frames_read": frames,
        "dropped_by_app": sum(s["stats"]["dropped_frames"] for s in summaries),
        "frames_per_s": round(rate),
        "calls_per_host": round(rate / FRAMES_PER_CALL_SECOND),
        "streams_per_worker": sorted(
            sum(1 for s in summaries if s["worker"] == w) for w in per_worker
        ),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = [await run(w, args.connections, args.seconds) for w in args.workers]
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["ratio"] = round(row["frames_per_s"] / base, 2) if base else None
    print_table(
        "serve --workers N: media frames read per second, all streams (as fast as accepted)",
        rows,
        [
            "workers",
            "connections",
            "seconds",
            "frames_read",
            "dropped_by_app",
            "frames_per_s",
            "calls_per_host",
            "ratio",
            "streams_per_worker",
        ],
    )
    write_json("bench_workers", {"rows": rows, "args": vars(args)})


if __name__ == "__main__":
    asyncio.run(main())
