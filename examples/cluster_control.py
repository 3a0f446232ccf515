"""Two worker processes, the emulator dialing one, and this third process driving the call."""

from __future__ import annotations

import asyncio
import os
import sys

from vobiz_async.cluster import Cluster
from vobiz_async.testing import MediaPeer, tone

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


async def worker() -> tuple[asyncio.subprocess.Process, str]:
    """Start ``vobiz-async serve --cluster`` on a free port; returns it and its ws:// URL."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "vobiz_async", "serve", "--port", "0", "--cluster", REDIS_URL),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)  # "listening on ws://..."
    return proc, line.decode().split()[-1]


async def main() -> None:
    workers = [await worker(), await worker()]
    try:
        # Vobiz (here the emulator) dials whichever worker the load balancer picked.
        peer = MediaPeer(workers[1][1], seconds=30)
        peer.start()
        async with Cluster(REDIS_URL) as cluster:  # from any process on any host
            session = await cluster.session(peer.stream_id, timeout=10)
            print(f"stream {session.stream_id} is on worker {session.worker}")
            sent = await session.play(tone(440, 0.5, 8000), 8000)
            outcome = await session.checkpoint("greeting", timeout=10)
            print(f"played {sent:.0f} ms, checkpoint greeting: {outcome}")
            await session.stop()
        report = await peer.wait_closed()
        print(f"caller heard {report.play_frames} frames; close code {report.close_code}")
    finally:
        for proc, _url in workers:
            proc.terminate()
            await proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
