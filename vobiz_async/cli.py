"""The ``vobiz-async`` command line (also ``python -m vobiz_async``).

Every command prints JSON on stdout. Exit status: 0 on success (stopping an
already-stopped stream is success), 1 with a one-line message on stderr for an API or
network error, 2 for a usage error (including a parameter Vobiz would refuse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .client import VobizClient
from .errors import APIError, TransportError, ValidationError, VobizError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, Any]]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def _client(args: argparse.Namespace) -> VobizClient:
    return VobizClient(args.auth_id, args.auth_token, base_url=args.base_url)


async def _streams_start(args: argparse.Namespace) -> Any:
    async with _client(args) as client:
        started = await client.streams.start(
            args.call_uuid,
            args.service_url,
            bidirectional=args.bidirectional,
            audio_track=args.audio_track,
            content_type=args.content_type,
            stream_timeout=args.stream_timeout,
            status_callback_url=args.status_callback_url,
            status_callback_method=args.status_callback_method,
            extra_headers=args.extra_headers,  # validated as k=v pairs by the client
        )
        return started.to_json_dict()


async def _streams_get(args: argparse.Namespace) -> Any:
    async with _client(args) as client:
        stream = await client.streams.get(args.call_uuid, args.stream_id)
        return stream.model_dump(mode="json")


async def _streams_list(args: argparse.Namespace) -> Any:
    async with _client(args) as client:
        if args.all:
            return [s.model_dump(mode="json") async for s in client.streams.iterate(args.call_uuid)]
        page = await client.streams.list(args.call_uuid, limit=args.limit, offset=args.offset)
        return [s.model_dump(mode="json") for s in page.streams]


async def _streams_stop(args: argparse.Namespace) -> Any:
    async with _client(args) as client:
        stopped = await client.streams.stop(args.call_uuid, args.stream_id)
        return {"stream_id": args.stream_id, "stopped": stopped}


async def _streams_stop_all(args: argparse.Namespace) -> Any:
    async with _client(args) as client:
        count = await client.streams.stop_all(args.call_uuid)
        return {"call_uuid": args.call_uuid, "stopped": True, "streams_stopped": count}


def _add_streams(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    streams = sub.add_parser("streams", help="start, inspect and stop streams on a live call")
    actions = streams.add_subparsers(dest="action", required=True)

    start = actions.add_parser("start", help="start a stream on a live call")
    start.add_argument("call_uuid")
    start.add_argument("service_url", help="ws:// or wss:// URL Vobiz will dial")
    start.add_argument("--bidirectional", action="store_true", help="allow playAudio back")
    start.add_argument("--audio-track", choices=["inbound", "outbound", "both"])
    start.add_argument(
        "--content-type", help="audio/x-l16;rate=8000|16000, audio/x-mulaw;rate=8000"
    )
    start.add_argument("--stream-timeout", type=int, help="seconds before Vobiz stops it")
    start.add_argument("--status-callback-url")
    start.add_argument("--status-callback-method", choices=["GET", "POST"])
    start.add_argument("--extra-headers", help="k=v,k=v")
    start.set_defaults(handler=_streams_start)

    get = actions.add_parser("get", help="retrieve one stream")
    get.add_argument("call_uuid")
    get.add_argument("stream_id")
    get.set_defaults(handler=_streams_get)

    lst = actions.add_parser("list", help="list a call's streams (a JSON array)")
    lst.add_argument("call_uuid")
    lst.add_argument("--limit", type=int, default=20)
    lst.add_argument("--offset", type=int, default=0)
    lst.add_argument("--all", action="store_true", help="follow every page")
    lst.set_defaults(handler=_streams_list)

    stop = actions.add_parser("stop", help="stop one stream (idempotent)")
    stop.add_argument("call_uuid")
    stop.add_argument("stream_id")
    stop.set_defaults(handler=_streams_stop)

    stop_all = actions.add_parser("stop-all", help="stop every stream on a call")
    stop_all.add_argument("call_uuid")
    stop_all.set_defaults(handler=_streams_stop_all)


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


async def _serve(args: argparse.Namespace) -> None:
    from .errors import StreamClosedError
    from .events import AudioReceived
    from .recording import save_recording
    from .server import StreamSession, serve

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
                "stream_id": session.stream_id,
                "call_id": session.call_id,
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

    async with serve(
        handler,
        args.host,
        args.port,
        path=args.path,
        token=args.token,
        l16_byte_order=args.l16_byte_order,
        record=record_dir is not None,
    ) as server:
        sys.stdout.write(f"listening on {server.url}\n")
        sys.stdout.flush()
        await _wait_for_signal()
        await server.close(grace=args.grace)


def _print_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    srv = sub.add_parser("serve", help="run a media server for Vobiz to dial")
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
    srv.add_argument("--grace", type=float, default=5.0, help="shutdown grace in seconds")
    srv.set_defaults(handler=_serve)


async def _emulate(args: argparse.Namespace) -> Any:
    from .codec import read_wav, write_wav
    from .testing import MediaPeer, speech_like

    if args.audio:
        wav = read_wav(args.audio)
        audio, rate = wav.mono(), wav.sample_rate
    else:
        rate = 16000
        audio = speech_like(args.seconds or 10.0, rate)
    peer = MediaPeer(
        args.ws_url,
        audio=audio,
        audio_rate=rate,
        content_type=args.content_type,
        shape=args.shape,
        l16_byte_order=args.l16_byte_order,
        seconds=args.seconds,
        speed=args.speed,
    )
    report = await peer.wait_closed()
    result: dict[str, Any] = asdict(report)
    if args.record:
        from .codec import interleave_stereo

        write_wav(
            args.record,
            interleave_stereo(peer.caller_pcm, peer.heard_pcm),
            peer.format.sample_rate,
            2,
        )
        result["recording"] = args.record
    if report.rejected_status is not None:
        raise TransportError(f"the server refused the WebSocket with HTTP {report.rejected_status}")
    return result


async def _demo(args: argparse.Namespace) -> None:
    from ._demo import format_report, run_demo

    report = await run_demo(Path(args.out), speed=args.speed)
    sys.stdout.write(format_report(report) + "\n")


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    emu = sub.add_parser("emulate", help="dial WS_URL as Vobiz would, with a caller's audio")
    emu.add_argument("ws_url")
    emu.add_argument("--audio", help="16-bit WAV of what the caller says (default: speech-like)")
    emu.add_argument("--content-type", default="audio/x-mulaw;rate=8000")
    emu.add_argument("--seconds", type=float, help="call length (default: the audio's)")
    emu.add_argument("--shape", choices=["nested", "flat"], default="nested")
    emu.add_argument("--l16-byte-order", choices=["little", "big"], default="little")
    emu.add_argument("--speed", type=float, default=1.0, help="1.0 is real time")
    emu.add_argument("--record", metavar="OUT.wav", help="caller and agent-as-heard, stereo")
    emu.set_defaults(handler=_emulate)
    demo = sub.add_parser("demo", help="an emulated call against an example agent, on loopback")
    demo.add_argument("--out", default="demo-output", help="where call.wav and report.json go")
    demo.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_demo)


async def _callbacks_serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from .callbacks import StreamStatusCallback, callback_handler

    def show(callback: StreamStatusCallback) -> None:
        _print_json_line(callback.model_dump(mode="json"))

    mode = args.mode or ("require" if args.auth_token else "off")
    app = web.Application()
    handler = callback_handler(
        show, auth_token=args.auth_token, mode=mode, public_base_url=args.public_url
    )
    app.router.add_route("*", args.path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else args.port
    sys.stderr.write(f"listening on http://{args.host}:{port}{args.path} (signatures: {mode})\n")
    sys.stderr.flush()
    try:
        await _wait_for_signal()
    finally:
        await runner.cleanup()


def _add_callbacks(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cbs = sub.add_parser("callbacks", help="receive stream status callbacks")
    actions = cbs.add_subparsers(dest="action", required=True)
    srv = actions.add_parser("serve", help="print each verified callback as a JSON line")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    srv.add_argument("--path", default="/", help="the route (default /)")
    srv.add_argument("--auth-token", default=argparse.SUPPRESS, help="verify signatures with it")
    srv.add_argument("--public-url", help="public scheme://host[:port] behind a proxy")
    srv.add_argument(
        "--mode",
        choices=["off", "if-present", "require"],
        help="default: require with --auth-token, else off",
    )
    srv.set_defaults(handler=_callbacks_serve)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="vobiz-async",
        description="Vobiz Audio Streams from the command line. Prints JSON.",
    )
    parser.add_argument("--auth-id", help="default: $VOBIZ_AUTH_ID")
    parser.add_argument("--auth-token", help="default: $VOBIZ_AUTH_TOKEN")
    parser.add_argument("--base-url", help="default: $VOBIZ_BASE_URL or https://api.vobiz.ai")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_streams(sub)
    _add_serve(sub)
    _add_emulator(sub)
    _add_callbacks(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        result = asyncio.run(handler(args))
    except ValidationError as exc:
        sys.stderr.write(f"vobiz-async: error: {exc}\n")
        return 2
    except (APIError, TransportError, VobizError) as exc:
        sys.stderr.write(f"vobiz-async: {type(exc).__name__}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    if result is not None:
        _print_json(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
