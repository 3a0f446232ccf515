"""Soak: many bidirectional emulated calls with barge-ins against one server process.

Run: ``.venv/bin/python benchmarks/soak.py [--calls 300] [--seconds 60]``. The server
runs in its own process (so its RSS, file descriptors and tasks are its own); this
process runs one emulator media peer per call, all on 127.0.0.1. Each agent speaks
every ~2 s, every third utterance is barged in on (``clear()``), and each turn ends
with a checkpoint. Reports frames lost (must be 0), inbound p99, the server's RSS at
start, after warm-up and at the end, and the file descriptors and tasks left once every
call has ended (must be back to the idle baseline). Prints a table, writes JSON
(``--json`` prints it on stdout instead); it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from _common import print_table, write_json

from vobiz_async.testing import MediaPeer, speech_like


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _percentile_from(histogram: list[int], q: float) -> float | None:
    """The q-quantile (upper bucket edge, ms) of a 0.5 ms-bucket histogram."""
    total = sum(histogram)
    if not total:
        return None
    rank, seen = q * total, 0
    for bucket, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return (bucket + 1) / 2
    return len(histogram) / 2


# ----------------------------------------------------------------------------- server side
async def _server_main() -> None:
    from vobiz_async.events import AudioReceived
    from vobiz_async.server import Limits, StreamSession, serve

    reply = speech_like(1.0, 24000, seed=11)
    # A fixed histogram (0.5 ms buckets up to 5 s), so measuring does not grow memory.
    histogram = [0] * 10_001
    totals: dict[str, Any] = {"frames": 0, "outcomes": {}, "dropped": 0, "malformed": 0}

    async def agent(session: StreamSession) -> None:
        turn = 0
        next_turn = time.monotonic() + 1.0
        talking: asyncio.Task[None] | None = None

        async def speak(n: int) -> None:
            await session.play(reply, 24000)
            outcome = await session.checkpoint(f"turn-{n}")
            totals["outcomes"][outcome.value] = totals["outcomes"].get(outcome.value, 0) + 1

        async for event in session:
            if type(event) is not AudioReceived:
                continue
            assert isinstance(event, AudioReceived)
            totals["frames"] += 1
            if event.timestamp and event.sequence_number and event.sequence_number % 25 == 0:
                latency_ms = max(0.0, time.time() * 1000 - event.timestamp)
                histogram[min(10_000, int(latency_ms * 2))] += 1
            now = time.monotonic()
            if now >= next_turn and (talking is None or talking.done()):
                turn += 1
                talking = asyncio.create_task(speak(turn))
                next_turn = now + 2.0
                if turn % 3 == 0:
                    barge_at = now + 0.3
                    asyncio.get_running_loop().call_at(
                        barge_at, lambda: asyncio.ensure_future(_barge(session))
                    )
        if talking is not None:
            await talking
        stats = session.stats
        totals["dropped"] += stats.dropped_frames
        totals["malformed"] += stats.malformed

    async def _barge(session: StreamSession) -> None:
        if not session.closed:
            await session.clear(wait=False)

    limits = Limits(max_sessions=10_000, idle_timeout=30)
    async with serve(agent, "127.0.0.1", 0, limits=limits) as server:
        print(json.dumps({"port": server.port, "rss_kb": _rss_kb(), "fds": _fds()}), flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "rss":
                print(json.dumps({"rss_kb": _rss_kb()}), flush=True)
            elif line == "report":
                await asyncio.sleep(0.5)
                p99 = _percentile_from(histogram, 0.99)
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                print(
                    json.dumps(
                        {
                            "frames_received": totals["frames"],
                            "p99_ms": p99,
                            "outcomes": totals["outcomes"],
                            "dropped_frames": totals["dropped"],
                            "malformed": totals["malformed"],
                            "rss_kb": _rss_kb(),
                            "cpu_s": time.process_time(),
                            "fds": _fds(),
                            "tasks": len(tasks),
                            "open_sessions": len(server.sessions),
                            "connections": server.stats.active_connections,
                        }
                    ),
                    flush=True,
                )
            elif line in ("quit", ""):
                return


# --------------------------------------------------------------------------- driver side
async def soak(calls: int, seconds: float, ramp: float) -> dict[str, Any]:
    """Run the soak; returns the report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        "server",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        limit=1 << 24,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None

    async def ask(command: str) -> dict[str, Any]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(command.encode() + b"\n")
        await proc.stdin.drain()
        result: dict[str, Any] = json.loads(await proc.stdout.readline())
        return result

    try:
        hello = json.loads(await proc.stdout.readline())
        idle = await ask("report")
        url = f"ws://127.0.0.1:{hello['port']}/"
        audio = speech_like(min(seconds, 20.0), 16000, seed=5)
        peers = [
            MediaPeer(
                url,
                audio=audio,
                audio_rate=16000,
                content_type="audio/x-l16;rate=16000",
                seconds=seconds,
                call_id=f"soak-{i}",
                record=False,
            )
            for i in range(calls)
        ]
        started = time.monotonic()
        rss: list[tuple[float, int]] = [(0.0, hello["rss_kb"])]
        for peer in peers:
            peer.start()
            await asyncio.sleep(ramp / max(1, calls))
        while not all(p._task is not None and p._task.done() for p in peers):
            await asyncio.sleep(min(5.0, max(1.0, seconds / 10)))
            rss.append((time.monotonic() - started, (await ask("rss"))["rss_kb"]))
        reports = [await p.wait_closed() for p in peers]
        await asyncio.sleep(1.0)
        final = await ask("report")
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30)
    sent = sum(r.frames_sent for r in reports)
    warm = next((kb for t, kb in rss if t >= min(10.0, seconds / 3)), rss[-1][1])
    peak = max(kb for _, kb in rss)
    return {
        "calls": calls,
        "seconds": seconds,
        "frames_sent": sent,
        "frames_received": final["frames_received"],
        "frames_lost": sent - final["frames_received"],
        "p99_ms": final["p99_ms"],
        "checkpoints": final["outcomes"],
        "clears_seen_by_callers": sum(r.clears for r in reports),
        "dropped_frames": final["dropped_frames"],
        "malformed": final["malformed"],
        "server_cpu_%": round(
            (final["cpu_s"] - idle["cpu_s"]) / (time.monotonic() - started) * 100, 1
        ),
        "rss_start_kb": hello["rss_kb"],
        "rss_warm_kb": warm,
        "rss_peak_kb": peak,
        "rss_end_kb": final["rss_kb"],
        "rss_samples": rss,
        "fds_idle": idle["fds"],
        "fds_after": final["fds"],
        "tasks_idle": idle["tasks"],
        "tasks_after": final["tasks"],
        "open_sessions_after": final["open_sessions"],
        "connections_after": final["connections"],
        "peers_closed_normally": sum(1 for r in reports if r.close_code == 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", default="driver", choices=["driver", "server"])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to start all calls")
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(_server_main())
        return
    report = asyncio.run(soak(args.calls, args.seconds, args.ramp))
    if args.json:
        print(json.dumps(report))
        return
    rows = [{"metric": k, "value": v} for k, v in report.items() if k != "rss_samples"]
    print_table(f"soak: {args.calls} calls x {args.seconds:g} s", rows, ["metric", "value"])
    write_json("soak", report)


if __name__ == "__main__":
    main()
