"""Media server under load: N concurrent real-time calls against one server process.

Run: ``.venv/bin/python benchmarks/bench_server.py [--calls 1000] [--echo-calls 500]
[--seconds 10]``. For each scenario the server runs in its own process (pinned to one
core when the OS allows) and a raw load generator in this process sends 20 ms mu-law
frames at real time on every connection. Once a second per call a frame carries a
fresh timestamp and a unique payload marker: the server records frame-sent to
handler-receipt latency, and in echo mode the generator times the round trip. The same
generator drives a bare ``websockets`` echo server (no library around it) for the
ratio, and a floor: a bare ``asyncio.Protocol`` that unmasks each frame and writes it
back (no JSON, no WebSocket library, no task per call), the event loop and the socket
syscalls alone. ``--servers`` picks among them. Prints a table and writes JSON;
asserts nothing. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, cast

from _common import print_table, write_json
from websockets.frames import Frame, Opcode

SID = "4f23e5e8-6fdb-45ad-bfaf-b694111cf476"
GC_FREEZE = True  # both servers gc.freeze() once started (--no-gc-freeze: not)
PHASES = 10
SERVERS = {  # --mode: the name in the tables
    "lib": "vobiz_async",
    "bare": "bare websockets",
    "floor": "floor (asyncio.Protocol)",
}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------------------- server side
def run_server(
    mode: str, echo: bool, use_uvloop: bool, profile: str | None = None, gc_freeze: bool = True
) -> None:
    """Child process: serve, then print a JSON report when stdin says 'report'.

    With ``profile``, the whole run is profiled (cProfile) and the stats written there
    (``python -m pstats FILE`` to read them)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    if use_uvloop:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.install()
    if profile is None:
        asyncio.run(_server_main(mode, echo, gc_freeze))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_server_main(mode, echo, gc_freeze))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


async def _server_main(mode: str, echo: bool, gc_freeze: bool) -> None:
    latencies: list[float] = []
    counts = {"frames": 0, "sessions": 0}
    server_stats: Any = None  # the library's ServerStats (lib mode)
    loop = asyncio.get_running_loop()

    if mode == "lib":
        from vobiz_async.events import AudioReceived
        from vobiz_async.server import Limits, StreamSession, serve

        async def handler(session: StreamSession) -> None:
            counts["sessions"] += 1
            async for event in session:
                if type(event) is AudioReceived:
                    counts["frames"] += 1
                    if event.timestamp:
                        latencies.append(time.time() * 1000 - event.timestamp)
                    if echo:  # what `vobiz-async serve --echo` does: straight back, as is
                        await session.play_encoded(event.payload)

        server = serve(
            handler,
            "127.0.0.1",
            0,
            # The generator opens all its calls back to back, a burst no provider sends:
            # let every one of them wait for its upgrade (the default 64 pending would
            # evict the oldest, which a capacity probe then counts as dropped calls).
            limits=Limits(max_sessions=10_000, max_pending_handshakes=4096, idle_timeout=None),
            allow_from=["127.0.0.1/32"],
        )
        await server.start()
        port = server.port
        server_stats = server.stats
    elif mode == "floor":
        port = await _floor_server(counts, latencies, echo)
    else:
        from websockets.asyncio.server import ServerConnection
        from websockets.asyncio.server import serve as ws_serve

        async def bare(ws: ServerConnection) -> None:
            counts["sessions"] += 1
            async for message in ws:
                if isinstance(message, str) and '"media"' in message:
                    counts["frames"] += 1
                    if '"timestamp":"0"' not in message:
                        latencies.append(
                            time.time() * 1000 - int(json.loads(message)["media"]["timestamp"])
                        )
                    if echo:
                        await ws.send(message)

        bare_server = await ws_serve(bare, "127.0.0.1", 0, max_size=2**20, ping_interval=None)
        port = bare_server.sockets[0].getsockname()[1]
    if gc_freeze:  # what `vobiz-async serve` does once started, for both servers alike
        gc.collect()
        gc.freeze()
    print(json.dumps({"port": port}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cpu_start = time.process_time()
    frames_start = 0
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "mark":
            cpu_start = time.process_time()
            frames_start = counts["frames"]
            latencies.clear()
        elif line == "report" or not line:
            cpu = time.process_time() - cpu_start
            frames = counts["frames"] - frames_start
            print(
                json.dumps(
                    {
                        "cpu_s": cpu,
                        "frames": frames,
                        "frames_total": counts["frames"],
                        "sessions": counts["sessions"],
                        "latencies": latencies,
                        # what the library refused or shed, by counter (none expected)
                        "refused": {
                            name: value
                            for name, value in dataclasses.asdict(server_stats).items()
                            if value
                            and name
                            not in ("connections", "active_connections", "sessions", "probes")
                        }
                        if server_stats is not None
                        else {},
                    }
                ),
                flush=True,
            )
            return


async def _floor_server(counts: dict[str, int], latencies: list[float], echo: bool) -> int:
    """The floor: a bare ``asyncio.Protocol`` that answers the upgrade, unmasks each
    whole frame and writes it back unmasked (one write per frame), with no JSON, no
    WebSocket library and no task per call. What it costs per frame is the event
    loop and the socket syscalls alone: no media server on this loop can go below it."""
    import hashlib

    from websockets.speedups import apply_mask  # type: ignore[import-not-found,unused-ignore]

    from vobiz_async._wsframes import text_frame

    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"

    class Floor(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = b""
            self.upgraded = False
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer + data if self.buffer else data
            transport = self.transport
            assert transport is not None
            if not self.upgraded:
                request, sep, buffer = buffer.partition(b"\r\n\r\n")
                if not sep:
                    self.buffer = request
                    return
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in request.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                accept = base64.b64encode(hashlib.sha1(key + guid).digest())
                transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                self.upgraded = True
                counts["sessions"] += 1
            pos = 0
            size = len(buffer)
            while size - pos >= 6:  # masked frames under 64 KiB: all the generator sends
                length = buffer[pos + 1] & 0x7F
                head = pos + 2
                if length == 126:
                    length = int.from_bytes(buffer[head : head + 2], "big")
                    head += 2
                end = head + 4 + length
                if end > size:
                    break
                payload: bytes = apply_mask(buffer[head + 4 : end], buffer[head : head + 4])
                if b'"media"' in payload:
                    counts["frames"] += 1
                    if b'"timestamp":"0"' not in payload:
                        stamp = int(json.loads(payload)["media"]["timestamp"])
                        latencies.append(time.time() * 1000 - stamp)
                    if echo:
                        transport.write(text_frame(payload))
                pos = end
            self.buffer = buffer[pos:]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", 0)
    return cast(int, server.sockets[0].getsockname()[1])


# --------------------------------------------------------------------------- load side
class _Client(asyncio.Protocol):
    def __init__(self, gen: _Generator, index: int) -> None:
        self.gen = gen
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.open = asyncio.get_running_loop().create_future()
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.gen.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.open.done():
            self.buffer += data
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(RuntimeError(head[:60].decode(errors="replace")))
                return
            self.open.set_result(None)
            # `start` at once, as Vobiz does: a socket without one counts against the
            # server's pending-handshake bound (Limits.max_pending_handshakes).
            assert self.transport is not None
            self.transport.write(self.gen.start_frame(self.index))
            data, self.buffer = rest, b""
        if self.gen.echo:
            self.gen.on_echo(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost += 1


class _Generator:
    def __init__(self, port: int, calls: int, echo: bool) -> None:
        self.port = port
        self.calls = calls
        self.echo = echo
        self.clients: list[_Client] = []
        self.sent = 0
        self.lost = 0
        self.marks: dict[bytes, float] = {}
        self.round_trips: list[float] = []
        payload = base64.b64encode(b"\x10\x20\x30" + b"\xfe" * 157).decode()
        self.plain = self._frame(payload, 0)

    @staticmethod
    def _frame(payload: str, timestamp: int) -> bytes:
        body = (
            '{"sequenceNumber":1,"streamId":"'
            + SID
            + '","event":"media","media":{"track":"inbound",'
            f'"timestamp":"{timestamp}","chunk":1,"payload":"{payload}"}},"extra_headers":"{{}}"}}'
        )
        return Frame(Opcode.TEXT, body.encode()).serialize(mask=True, extensions=[])

    def on_echo(self, data: bytes) -> None:
        start = 0
        while True:
            at = data.find(b'"payload":"', start)
            if at < 0:
                return
            marker = data[at + 11 : at + 15]
            sent = self.marks.pop(marker, None)
            if sent is not None:
                self.round_trips.append((time.perf_counter() - sent) * 1000)
            start = at + 15

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for i in range(self.calls):
            _, client = await loop.create_connection(
                functools.partial(_Client, self, i), "127.0.0.1", self.port
            )
            self.clients.append(client)
        await asyncio.gather(*(c.open for c in self.clients))

    @staticmethod
    def start_frame(i: int) -> bytes:
        body = json.dumps(
            {
                "sequenceNumber": 0,
                "event": "start",
                "start": {
                    "callId": f"call-{i}",
                    "streamId": f"stream-{i}",
                    "accountId": "1",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": "{}",
            }
        )
        return Frame(Opcode.TEXT, body.encode()).serialize(mask=True, extensions=[])

    async def run(self, seconds: float) -> None:
        """Send at real time. Calls are spread over the 20 ms tick in ``PHASES`` groups,
        as real calls start at random moments (all at once would measure the burst)."""
        ticks = int(seconds * 50)
        start = time.perf_counter()
        groups = [self.clients[g::PHASES] for g in range(PHASES)]
        for tick in range(ticks):
            for phase, clients in enumerate(groups):
                delay = start + tick * 0.02 + phase * 0.02 / PHASES - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                for client in clients:
                    self._send(client, tick)

    def _send(self, client: _Client, tick: int) -> None:
        transport = client.transport
        if transport is None or transport.is_closing():
            return
        index = client.index
        if (index + tick) % 50 == 0:  # each call sends one timestamped frame a second
            marker = (index * 50 + tick) % (1 << 21)
            raw = bytes([(marker >> 14) & 0x7E | 1, (marker >> 7) & 0x7E | 1, marker & 0x7E | 1])
            payload = base64.b64encode(raw + b"\xfe" * 157).decode()
            self.marks[payload[:4].encode()] = time.perf_counter()
            transport.write(self._frame(payload, int(time.time() * 1000)))
        else:
            transport.write(self.plain)
        self.sent += 1

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()


async def scenario(
    mode: str,
    calls: int,
    echo: bool,
    seconds: float,
    use_uvloop: bool,
    profile: str | None = None,
) -> dict[str, Any]:
    """Run one scenario; returns its row."""
    args = [__file__, "--role", "server", "--mode", mode]
    if echo:
        args.append("--echo")
    if use_uvloop:
        args.append("--uvloop")
    if profile is not None:
        args += ["--profile", profile]
    if not GC_FREEZE:
        args.append("--no-gc-freeze")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, limit=1 << 24
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        port = json.loads(await proc.stdout.readline())["port"]
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        gen = _Generator(port, calls, echo)
        await gen.connect()
        await gen.run(1.0)  # warm-up
        proc.stdin.write(b"mark\n")
        await proc.stdin.drain()
        sent_before = gen.sent
        gen.round_trips.clear()
        await gen.run(seconds)
        sent = gen.sent - sent_before
        await asyncio.sleep(0.5)  # let the last frames land
        # Connections the server closed during the run, counted before it is told to
        # report: it exits right after, and those closes must not count as dropped.
        calls_dropped = gen.lost
        proc.stdin.write(b"report\n")
        await proc.stdin.drain()
        report = json.loads(await proc.stdout.readline())
        gen.close()
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    latencies = report["latencies"]
    frames = report["frames"]
    return {
        "server": SERVERS[mode],
        "loop": "uvloop" if use_uvloop else "asyncio",
        "scenario": f"{'echo' if echo else 'receive'} x{calls}",
        "calls": calls,
        "seconds": seconds,
        "calls_dropped": calls_dropped,
        "server_refused": report["refused"],
        "frames_sent": sent,
        "frames_received": frames,
        # Loss compares totals since connect (the measured window's edges race the
        # 'mark' message by up to one tick, so windowed counts would not be exact).
        "frames_lost": max(0, gen.sent - report["frames_total"]),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "echo_rtt_p50_ms": percentile(gen.round_trips, 0.50) if echo else None,
        "echo_rtt_p99_ms": percentile(gen.round_trips, 0.99) if echo else None,
        "cpu_us_per_frame": report["cpu_s"] / frames * 1e6 if frames else None,
        "server_cpu_%": report["cpu_s"] / seconds * 100,
        "latency_samples": len(latencies),
        "median_latency_ms": statistics.median(latencies) if latencies else None,
    }


def _passes(row: dict[str, Any], p99_target: float) -> bool:
    """An echo run meets the capacity target: nothing lost, round trip p99 in bounds."""
    p99 = row["echo_rtt_p99_ms"]
    return (
        row["calls_dropped"] == 0
        and row["frames_lost"] == 0
        and p99 is not None
        and p99 <= p99_target
    )


def capacity(
    mode: str, use_uvloop: bool, seconds: float, p99_target: float, step: int, ceiling: int
) -> dict[str, Any]:
    """Most real-time echo calls one core carries with p99 round trip <= ``p99_target``
    and 0 frames lost: a ladder of ``step``-call rungs up to the first failure, then a
    bisection to ``step // 4`` calls; a rung fails when two runs in a row miss. Returns
    the row of the best passing run."""
    tried: dict[int, dict[str, Any]] = {}

    def probe(calls: int) -> bool:
        # A run over the target is repeated once: one stall of this shared VM should
        # not decide a rung (both runs must fail).
        for attempt in (1, 2):
            row = asyncio.run(scenario(mode, calls, True, seconds, use_uvloop))
            tried[calls] = row
            verdict = "ok" if _passes(row, p99_target) else "over"
            p99 = row["echo_rtt_p99_ms"]
            print(
                f"  capacity {row['server']} ({row['loop']}): {calls} calls -> p99 "
                f"{'-' if p99 is None else f'{p99:.1f}'} ms, lost {row['frames_lost']}, "
                f"dropped {row['calls_dropped']}"
                + (f" (server: {row['server_refused']})" if row["server_refused"] else "")
                + f": {verdict} (run {attempt})",
                flush=True,
            )
            if verdict == "ok":
                return True
        return False

    good, bad = 0, ceiling + step
    calls = step
    while calls <= ceiling:
        if not probe(calls):
            bad = calls
            break
        good = calls
        calls += step
    resolution = max(1, step // 4)
    while bad - good > resolution and good < ceiling:
        middle = (good + bad) // 2
        if probe(middle):
            good = middle
        else:
            bad = middle
    best: dict[str, Any] = (
        dict(tried[good])
        if good
        else {
            "server": SERVERS[mode],
            "loop": "uvloop" if use_uvloop else "asyncio",
        }
    )
    best["calls_per_core"] = good
    best["p99_target_ms"] = p99_target
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", default="bench", choices=["bench", "server"])
    parser.add_argument("--mode", default="lib", choices=list(SERVERS))
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--uvloop", action="store_true", help="(server role) run on uvloop")
    parser.add_argument(
        "--loops",
        default=None,
        help="comma-separated event loops to measure: asyncio,uvloop "
        "(default: both when uvloop is installed)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to measure: lib (vobiz_async), bare (a bare "
        "websockets loop, the ratio's base), floor (a bare asyncio.Protocol echo: the "
        "loop and the syscalls alone); default all",
    )
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--echo-calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="also find the echo calls per core at the p99 target for each server and loop",
    )
    parser.add_argument("--p99-target", type=float, default=20.0, help="ms (default 20)")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--capacity-step", type=int, default=100)
    parser.add_argument("--capacity-ceiling", type=int, default=1500)
    parser.add_argument(
        "--profile",
        default=None,
        help="(server role: a file) profile the server with cProfile; "
        "(bench: a directory) one .prof per scenario",
    )
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave start-up objects in the cyclic GC (both servers gc.freeze() by default, "
        "as `vobiz-async serve` does)",
    )
    parser.add_argument("--out", default="bench_server", help="results file name")
    args = parser.parse_args()
    if args.role == "server":
        run_server(args.mode, args.echo, args.uvloop, args.profile, not args.no_gc_freeze)
        return
    global GC_FREEZE
    GC_FREEZE = not args.no_gc_freeze
    modes = [mode.strip() for mode in args.servers.split(",") if mode.strip()]
    unknown = sorted(set(modes) - set(SERVERS))
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)} (choose from {', '.join(SERVERS)})")
    if "bare" not in modes:
        modes.append("bare")  # the ratios' base
    if args.loops is None:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            loops = ["asyncio"]
        else:
            loops = ["asyncio", "uvloop"]
    else:
        loops = [loop.strip() for loop in args.loops.split(",") if loop.strip()]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    def profile_path(mode: str, echo: bool, loop: str) -> str | None:
        if not args.profile:
            return None
        name = f"{mode}-{'echo' if echo else 'receive'}-{loop}.prof"
        return os.path.join(args.profile, name)

    rows = []
    for loop in loops:
        uv = loop == "uvloop"
        for mode in modes:
            for echo, calls in ((False, args.calls), (True, args.echo_calls)):
                if calls <= 0:
                    continue
                rows.append(
                    asyncio.run(
                        scenario(
                            mode, calls, echo, args.seconds, uv, profile_path(mode, echo, loop)
                        )
                    )
                )
    for row in rows:
        bare = next(
            r
            for r in rows
            if r["server"] == "bare websockets"
            and r["scenario"] == row["scenario"]
            and r["loop"] == row["loop"]
        )
        if row["cpu_us_per_frame"] and bare["cpu_us_per_frame"]:
            row["cpu_vs_bare"] = row["cpu_us_per_frame"] / bare["cpu_us_per_frame"]
    if rows:
        print_table(
            f"media server, {args.seconds:g} s at real time, server on one core, "
            f"gc.freeze() {'on' if GC_FREEZE else 'off'}",
            rows,
            [
                "server",
                "loop",
                "scenario",
                "calls_dropped",
                "frames_sent",
                "frames_lost",
                "p50_ms",
                "p99_ms",
                "echo_rtt_p99_ms",
                "cpu_us_per_frame",
                "server_cpu_%",
                "cpu_vs_bare",
            ],
        )
    capacity_rows: list[dict[str, Any]] = []
    if args.capacity:
        for loop in loops:
            for mode in modes:
                capacity_rows.append(
                    capacity(
                        mode,
                        loop == "uvloop",
                        args.capacity_seconds,
                        args.p99_target,
                        args.capacity_step,
                        args.capacity_ceiling,
                    )
                )
        for row in capacity_rows:
            bare = next(
                r
                for r in capacity_rows
                if r["server"] == "bare websockets" and r["loop"] == row["loop"]
            )
            if bare["calls_per_core"]:
                row["capacity_vs_bare"] = row["calls_per_core"] / bare["calls_per_core"]
        print_table(
            f"echo calls per core at p99 round trip <= {args.p99_target:g} ms, 0 lost "
            f"({args.capacity_seconds:g} s runs)",
            capacity_rows,
            [
                "server",
                "loop",
                "calls_per_core",
                "echo_rtt_p99_ms",
                "cpu_us_per_frame",
                "server_cpu_%",
                "capacity_vs_bare",
            ],
        )
    write_json(
        args.out,
        {"loops": loops, "gc_freeze": GC_FREEZE, "rows": rows, "capacity": capacity_rows},
    )


if __name__ == "__main__":
    main()
