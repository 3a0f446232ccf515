"""Calls per host with ``vobiz-async serve --workers N``: 2 workers against 1, in one run.

Run: ``.venv/bin/python benchmarks/bench_workers.py [--workers 1 2] [--step 300]
[--stage-seconds 1.5] [--budget 15] [--max-calls 3000]``. For each worker count the real
CLI server runs (``python -m vobiz_async serve --workers N``; its handler reads every
event of every call). A load generator in this process connects up to ``--max-calls``
calls on 127.0.0.1 (idle, after their ``start``), then switches them on ``--step`` at a
time: a live call sends 20 ms mu-law ``media`` frames at the real rate (five every
100 ms, pre-built and masked, all written by one timer task). After each stage the
workers' ``/metrics`` say how many frames they read and how many their handlers had to
drop. A stage holds when the handlers dropped at most 0.5 % of the frames offered and
the workers read at least 95 % of them (past capacity, frames pile up in the sockets or
the handlers drop them); ``calls/host`` is the last stage that held. The generator
shares the machine's cores with the workers, so the ratio is what this host really
gets. Prints a table, writes ``benchmarks/results/bench_workers.json``; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
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
BLOCK_FRAMES = 5  # frames per write: 100 ms of audio
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


class Caller:
    """One real-time call: five frames every 100 ms, written by the shared :func:`tick`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.transport: asyncio.WriteTransport | None = None

    async def connect(self) -> None:
        stream_id = str(uuid.uuid4())
        self.block = media_block(stream_id)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(start_frame(stream_id))
        self.streams = (reader, writer)  # a collected StreamWriter closes its socket
        self.transport = writer.transport


async def tick(slots: list[list[Caller]], counts: list[int]) -> None:
    """Every 10 ms write the next slot's calls their 100 ms of frames: ten slots, so
    each call sends five frames every 100 ms. One task, no per-call timers, so the
    generator stays cheap. A call whose socket is backed up (the server fell behind)
    skips its turn, counted in ``counts[1]``; frames written are ``counts[0]``."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    slot = 0
    while True:
        for caller in slots[slot]:
            transport = caller.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > 64 * 1024:
                counts[1] += BLOCK_FRAMES
                continue
            transport.write(caller.block)
            counts[0] += BLOCK_FRAMES
        slot = (slot + 1) % len(slots)
        due += 0.01
        await asyncio.sleep(max(0.0, due - loop.time()))


async def scrape(port: int, workers: int) -> dict[str, dict[str, float]]:
    """frames_in / dropped_frames per worker, scraping /metrics until every worker
    answered (each connection lands on one worker)."""
    from prometheus_client.parser import text_string_to_metric_families

    seen: dict[str, dict[str, float]] = {}
    for _ in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = await reader.read()
        writer.close()
        body = data.partition(b"\r\n\r\n")[2].decode()
        values: dict[str, float] = {}
        worker = ""
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name in ("vobiz_frames_in_total", "vobiz_dropped_frames_total"):
                    values[sample.name] = sample.value
                    worker = sample.labels["worker"]
        seen[worker] = values
        if len(seen) == workers:
            return seen
    raise RuntimeError(f"only {len(seen)} of {workers} workers answered /metrics")


def totals(snapshot: dict[str, dict[str, float]]) -> tuple[float, float]:
    frames = sum(v["vobiz_frames_in_total"] for v in snapshot.values())
    dropped = sum(v["vobiz_dropped_frames_total"] for v in snapshot.values())
    return frames, dropped


async def run(
    workers: int, step: int, stage_seconds: float, max_calls: int, budget: float
) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)  # others' load on this machine skews it
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
    callers: list[Caller] = []
    counts = [0, 0]  # frames written, frames skipped (socket backed up)
    slots: list[list[Caller]] = [[] for _ in range(10)]
    ticker: asyncio.Task[None] | None = None
    stages: list[dict[str, Any]] = []
    idle: list[Caller] = []
    drain = None
    try:
        line = (await proc.stdout.readline()).decode()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        drain = asyncio.create_task(_discard(proc.stdout))  # summary lines: not needed
        # Every call connects (and sends its start) first, while the server is idle;
        # the stages then only switch calls on. max_sessions is 2000 per worker.
        limit = min(max_calls, 1900 * workers)
        idle = [Caller(port) for _ in range(limit)]
        for i in range(0, len(idle), 48):  # under Limits.max_pending_handshakes (64)
            await asyncio.gather(*(c.connect() for c in idle[i : i + 48]))
        began = time.perf_counter()
        for target in range(step, limit + 1, step):
            if time.perf_counter() - began > budget:
                break  # reported as "budget": capacity is at least the last stage
            for caller in idle[len(callers) : target]:
                slots[len(callers) % len(slots)].append(caller)
                callers.append(caller)
            await asyncio.sleep(0.3)  # let the new calls settle
            if ticker is None:
                ticker = asyncio.create_task(tick(slots, counts))
            before, sent0, t0 = await scrape(port, workers), counts[0], time.perf_counter()
            await asyncio.sleep(stage_seconds)
            after, sent1, t1 = await scrape(port, workers), counts[0], time.perf_counter()
            (f0, d0), (f1, d1) = totals(before), totals(after)
            seconds = t1 - t0
            offered = target * FRAMES_PER_CALL_SECOND
            handled = (f1 - f0 - (d1 - d0)) / seconds
            stage = {
                "calls": target,
                "offered_fps": offered,
                "sent_fps": round((sent1 - sent0) / seconds),
                "read_fps": round((f1 - f0) / seconds),
                "dropped_fps": round((d1 - d0) / seconds),
                "handled": round(handled / offered, 3),
                "at_s": round(t1 - began, 1),
            }
            stages.append(stage)
            stage["held"] = ok = (
                stage["dropped_fps"] <= 0.005 * offered and stage["read_fps"] >= 0.95 * offered
            )
            if not ok:
                break
    finally:
        if ticker is not None:
            ticker.cancel()
        for caller in idle:
            if caller.transport is not None:
                caller.transport.write(CLOSE)
                caller.transport.abort()  # the benchmark is over: no close handshake
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        if drain is not None:
            drain.cancel()
    held = [s for s in stages if s["held"]]
    return {
        "workers": workers,
        "calls_per_host": held[-1]["calls"] if held else 0,
        "first_failed_stage": (
            stages[-1]["calls"] if stages and stages[-1] not in held else "budget"
        ),
        "load_before": load_before,
        "stages": stages,
    }


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--step", type=int, default=300, help="calls added per stage")
    parser.add_argument("--stage-seconds", type=float, default=1.5)
    parser.add_argument("--max-calls", type=int, default=3000)
    parser.add_argument(
        "--budget", type=float, default=15.0, help="seconds of ramp per worker count"
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for workers in args.workers:
        if results:
            await asyncio.sleep(2.0)  # let the previous server's sockets and CPU settle
        results.append(
            await run(workers, args.step, args.stage_seconds, args.max_calls, args.budget)
        )
    base = results[0]["calls_per_host"]
    rows = []
    for result in results:
        last = result["stages"][-1] if result["stages"] else {}
        rows.append(
            {
                "workers": result["workers"],
                "calls_per_host": result["calls_per_host"],
                "ratio": round(result["calls_per_host"] / base, 2) if base else None,
                "failed_at": result["first_failed_stage"],
                "failed_stage_handled": last.get("handled"),
                "stages": len(result["stages"]),
                "load_before": result["load_before"],
            }
        )
    for result in results:
        print_table(
            f"{result['workers']} worker(s): stages (frames per second)",
            result["stages"],
            [
                "calls",
                "offered_fps",
                "sent_fps",
                "read_fps",
                "dropped_fps",
                "handled",
                "held",
                "at_s",
            ],
        )
    print_table(
        f"real-time calls per host, step {args.step}: the last stage that held "
        "(<= 0.5 % dropped, >= 95 % read)",
        rows,
        [
            "workers",
            "calls_per_host",
            "ratio",
            "failed_at",
            "failed_stage_handled",
            "stages",
            "load_before",
        ],
    )
    print(f"\ncores: {os.cpu_count()}; 1-minute load average now: {os.getloadavg()[0]:.2f}")
    write_json(
        "bench_workers",
        {"rows": rows, "runs": results, "args": vars(args), "cores": os.cpu_count()},
    )


if __name__ == "__main__":
    asyncio.run(main())
