"""A real ``redis-server`` on 127.0.0.1 for the cluster tests, in a temporary directory."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SKIP_REASON = (
    "redis-server is not installed: the cluster tests need a real one "
    "(apt-get install redis-server; .ci/run installs it)"
)


def have_redis_server() -> bool:
    """Whether a ``redis-server`` binary is on PATH."""
    return shutil.which("redis-server") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Start ``redis-server`` (no persistence) on a free loopback port; yield its URL.

    Skips the calling test when ``redis-server`` is not installed.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip(SKIP_REASON)
    for _attempt in range(5):  # a free port can be taken between the probe and the bind
        port = _free_port()
        args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        args += ["no", "--dir", str(directory), "--protected-mode", "yes"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):  # up to ~10 s for the server to accept connections
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            time.sleep(0.05)
        if proc.poll() is None:
            break
    else:
        pytest.fail("redis-server did not start")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
