"""The serving commands of the ``vobiz-async`` CLI: ``serve`` (also ``--workers N``) and
``app``, with what they share with the other long-running commands (waiting for a
signal, JSON lines on stdout, a ``Cluster`` from ``--cluster``). :mod:`vobiz_async.cli`
registers them; the output conventions are that module's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._loops import loop_name
from .errors import TransportError, ValidationError, VobizError

if TYPE_CHECKING:
    from .cluster import Cluster
    from .session import StreamSession

log = logging.getLogger("vobiz_async.server")


async def _wait_for_signal() -> None:
    """Until Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _server_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--certfile``/``--keyfile`` (both or neither), or None."""
    if args.certfile is None and args.keyfile is None:
        return None
    if args.certfile is None or args.keyfile is None:
        raise ValidationError("--certfile", "give both --certfile and --keyfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError("--certfile", f"cannot load the certificate: {exc}") from None
    return context


class _TextFormatter(logging.Formatter):
    """Plain log lines, with the call's ids when the record is about a call."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        stream_id = getattr(record, "stream_id", None)
        if stream_id is not None:
            line += f" [stream_id={stream_id} call_id={getattr(record, 'call_id', None)}]"
        return line


def _configure_logging(args: argparse.Namespace, worker: str) -> None:
    """Log records to stderr as text or one JSON object a line (``--log-format``)."""
    from ._logcontext import JsonFormatter, install

    install()
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter(worker) if args.log_format == "json" else _TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    level = getattr(logging, args.log_level.upper())
    root.setLevel(level)
    # websockets' per-connection lines ("connection open") only at debug.
    logging.getLogger("vobiz_async.server.websocket").setLevel(max(level, logging.WARNING))


def _call_handler(
    args: argparse.Namespace, worker: str | None = None
) -> Callable[[StreamSession], Awaitable[None]]:
    """The handler ``serve`` and ``app`` run per stream: echo (``--echo``), record
    (``--record DIR``), and print one JSON summary line when the call ends (with
    ``worker``, default the pid)."""
    worker = worker or str(os.getpid())
    from .errors import StreamClosedError
    from .events import AudioReceived
    from .recording import save_recording

    record_dir = Path(args.record) if args.record else None
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)  # the operator's directory, not a peer's

    async def echo(session: StreamSession, event: AudioReceived) -> None:
        if session.closed:  # the peer hung up with audio still queued: nothing to echo to
            return
        try:
            if session.outbound_format == session.inbound_format and event.payload:
                await session.play_encoded(event.payload)  # straight back, as is
            else:
                await session.play(event.pcm, event.sample_rate)
        except StreamClosedError:
            return  # closed between frames; the summary below reports it

    async def handler(session: StreamSession) -> None:
        recorder = session.recorder  # attached at start by serve(record=True)
        try:
            async for event in session:
                if args.echo and type(event) is AudioReceived and event.track == "inbound":
                    await echo(session, event)
        finally:
            summary: dict[str, Any] = {
                "worker": worker,
                "stream_id": session.stream_id,
                "call_id": session.call_id,
                "provider": session.provider,
                "format": session.inbound_format.content_type,
                "close_code": session.close_code,
                "stats": asdict(session.stats),
            }
            if recorder is not None and record_dir is not None:
                # Named by us inside record_dir (the peer's ids go in the WAV's metadata),
                # written off the event loop so other calls do not stall.
                try:
                    path = await asyncio.to_thread(
                        save_recording,
                        recorder,
                        record_dir,
                        stream_id=session.stream_id,
                        call_id=session.call_id,
                    )
                    summary["recording"] = str(path)
                    summary["recording_truncated_ms"] = recorder.truncated_ms
                except (OSError, VobizError) as exc:
                    summary["recording_error"] = f"{type(exc).__name__}: {exc}"
            _print_json_line(summary)

    return handler


async def _serve(args: argparse.Namespace) -> None:
    if args.workers > 1:
        await _serve_workers(args)
        return
    from .server import serve

    server_ssl = _server_ssl(args)
    cluster = _cluster(args.cluster) if args.cluster else None
    worker = cluster.worker_id if cluster is not None else str(os.getpid())
    _configure_logging(args, worker)
    handler = _call_handler(args, worker)
    async with (
        contextlib.AsyncExitStack() as stack,
        serve(
            handler,
            args.host,
            args.port,
            path=args.path,
            token=args.token,
            l16_byte_order=args.l16_byte_order,
            provider=args.provider,
            cluster=cluster,
            record=bool(args.record),
            ssl=server_ssl,
            reuse_port=args.worker_child,
            worker=worker,
        ) as server,
    ):
        if cluster is not None:
            stack.push_async_callback(cluster.close)
        sys.stdout.write(f"listening on {server.url}\n")
        sys.stdout.flush()
        log.info(
            "serving %s on the %s event loop; %d startup objects frozen out of the GC",
            server.url,
            loop_name(asyncio.get_running_loop()),
            _freeze_startup_objects(),
        )
        await _wait_for_signal()
        await server.close(grace=args.grace)


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) ``host``:``port`` with ``SO_REUSEPORT``: it picks the
    port for port 0 and holds it while the workers bind it too; a socket that does not
    listen gets no connections."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _worker_argv(args: argparse.Namespace, port: int) -> list[str]:
    """The command line of one worker: this ``serve`` on a fixed port, as a child."""
    argv = [sys.executable, "-m", "vobiz_async", "--loop", args.loop, "serve", "--worker-child"]
    argv += ["--host", args.host, "--port", str(port), "--path", args.path]
    argv += ["--l16-byte-order", args.l16_byte_order, "--grace", str(args.grace)]
    argv += ["--log-format", args.log_format, "--log-level", args.log_level]
    argv += ["--provider", args.provider]
    for flag, value in (
        ("--token", args.token),
        ("--record", args.record),
        ("--cluster", args.cluster),
        ("--certfile", args.certfile),
        ("--keyfile", args.keyfile),
    ):
        if value:
            argv += [flag, value]
    if args.echo:
        argv.append("--echo")
    return argv


async def _relay(stream: asyncio.StreamReader) -> None:
    """Copy a worker's stdout (its summary lines) to ours, a whole line at a time."""
    while line := await stream.readline():
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()


async def _serve_workers(args: argparse.Namespace) -> None:
    """``serve --workers N``: N worker processes on one port (``SO_REUSEPORT``), each
    its own event loop. SIGTERM/SIGINT go to every worker as SIGTERM, which drains it
    (stop accepting, calls run up to ``--grace``, then 1001); exit 0 when all exit 0.
    A worker that dies unasked stops the others and exits 1 (restart the service)."""
    _server_ssl(args)  # a bad certificate is a usage error here, not N times over
    try:
        reserved = _reserve_port(args.host, args.port)
    except OSError as exc:
        raise TransportError(f"cannot bind {args.host}:{args.port}: {exc}") from None
    port = reserved.getsockname()[1]
    workers: list[asyncio.subprocess.Process] = []
    relays: list[asyncio.Task[None]] = []
    try:
        for _ in range(args.workers):
            workers.append(
                await asyncio.create_subprocess_exec(
                    *_worker_argv(args, port),
                    stdout=asyncio.subprocess.PIPE,
                    start_new_session=True,  # Ctrl-C reaches us; we forward it once
                )
            )
        url = ""
        for proc in workers:
            assert proc.stdout is not None
            async with asyncio.timeout(60):
                line = (await proc.stdout.readline()).decode()
            if not line.startswith("listening on "):
                raise VobizError(f"worker {proc.pid} did not start (status {proc.returncode})")
            url = line.removeprefix("listening on ").strip()
            relays.append(asyncio.create_task(_relay(proc.stdout)))
        sys.stdout.write(f"listening on {url}\n")
        sys.stdout.flush()
        signalled = asyncio.create_task(_wait_for_signal())
        exits = [asyncio.create_task(proc.wait()) for proc in workers]
        await asyncio.wait([signalled, *exits], return_when=asyncio.FIRST_COMPLETED)
        unasked = not signalled.done()
        signalled.cancel()
        await _stop_workers(workers, args.grace)
        await asyncio.gather(*relays, return_exceptions=True)
        if unasked:
            codes = [proc.returncode for proc in workers]
            raise VobizError(f"a worker exited unexpectedly (statuses {codes})")
        failed = [proc.returncode for proc in workers if proc.returncode != 0]
        if failed:
            raise VobizError(f"workers exited with statuses {failed}")
    finally:
        await _stop_workers(workers, args.grace)
        for task in relays:
            task.cancel()
        reserved.close()


async def _stop_workers(workers: list[asyncio.subprocess.Process], grace: float) -> None:
    """SIGTERM every running worker; SIGKILL those still running past the grace."""
    for proc in workers:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace + 15):
            await asyncio.gather(*(proc.wait() for proc in workers))
    except TimeoutError:
        for proc in workers:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(proc.wait() for proc in workers))


def _print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    srv = sub.add_parser("serve", help="run a media server for Vobiz (or SignalWire, Twilio)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    srv.add_argument("--path", default="/")
    srv.add_argument("--token", help="secret the URL must carry (?token= or last segment)")
    srv.add_argument("--echo", action="store_true", help="play inbound audio straight back")
    srv.add_argument(
        "--record",
        metavar="DIR",
        help="write one stereo WAV per call in DIR (named by time and a safe form of the "
        "stream id; the ids are in the WAV's metadata and the summary line)",
    )
    srv.add_argument("--l16-byte-order", choices=["little", "big", "auto"], default="little")
    srv.add_argument(
        "--provider",
        choices=["auto", "vobiz", "signalwire", "twilio"],
        default="auto",
        help="the media dialect; auto (default) tells Vobiz from SignalWire/Twilio per stream",
    )
    srv.add_argument("--grace", type=float, default=5.0, help="shutdown grace in seconds")
    srv.add_argument("--cluster", metavar="REDIS_URL", help="register sessions in this Redis")
    srv.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss://")
    srv.add_argument("--keyfile", help="the certificate's private key (PEM)")
    srv.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="worker processes on the one port (SO_REUSEPORT), each its own event loop",
    )
    srv.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log records on stderr: text, or one JSON object a line (with stream_id, "
        "call_id, worker)",
    )
    srv.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    # Internal: this process is one worker of `serve --workers N` (binds SO_REUSEPORT).
    srv.add_argument("--worker-child", action="store_true", help=argparse.SUPPRESS)
    srv.set_defaults(handler=_serve)


def _freeze_startup_objects() -> int:
    """Move everything alive after start-up (imported modules, the server) out of the
    cyclic GC's reach (``gc.freeze()``), so a full collection scans only what calls
    create. On a busy server a full collection otherwise paused the loop for 14-40 ms
    every few seconds (4-5 ms after; echo round-trip p99 at 250 calls 56 -> 11 ms, see
    the README's Performance section). Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


async def _app(args: argparse.Namespace) -> None:
    from aiohttp import web

    from .app import create_app

    app = create_app(
        _call_handler(args),
        token=args.token,
        auth_token=args.app_auth_token or args.auth_token,
        public_url=args.public_url,
        record=bool(args.record),
        l16_byte_order=args.l16_byte_order,
        shutdown_grace=args.grace,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        server = site._server
        port = server.sockets[0].getsockname()[1] if server is not None else args.port  # type: ignore[attr-defined]
        host = f"[{args.host}]" if ":" in args.host else args.host
        sys.stdout.write(f"listening on http://{host}:{port}\n")
        sys.stdout.flush()
        _freeze_startup_objects()
        await _wait_for_signal()
    finally:
        await runner.cleanup()


def _add_app(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    app = sub.add_parser(
        "app",
        help="run a one-port agent app: answer URL (/answer), status callbacks "
        "(/vobiz/stream-status) and the media WebSocket (/media)",
    )
    app.add_argument("--host", default="127.0.0.1")
    app.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    app.add_argument("--token", help="media secret: the answer URL hands out signed URLs")
    app.add_argument(
        "--auth-token",
        dest="app_auth_token",
        help="Vobiz Auth Token: callbacks must be signed with it",
    )
    app.add_argument("--public-url", help="public https://host[:port] Vobiz reaches")
    app.add_argument("--echo", action="store_true", help="play inbound audio straight back")
    app.add_argument("--record", metavar="DIR", help="write one stereo WAV per call in DIR")
    app.add_argument("--l16-byte-order", choices=["little", "big", "auto"], default="little")
    app.add_argument("--grace", type=float, default=5.0, help="shutdown grace in seconds")
    app.set_defaults(handler=_app)


def _cluster(url: str) -> Cluster:
    """A Cluster on ``url`` (needs the ``vobiz-async[cluster]`` extra)."""
    try:
        from .cluster import Cluster
    except ImportError as exc:
        raise ValidationError("--cluster", str(exc)) from None
    return Cluster(url)
