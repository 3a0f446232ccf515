"""The ``vobiz-async`` command line (also ``python -m vobiz_async``).

Every command prints JSON on stdout. Exit status: 0 on success (stopping an
already-stopped stream is success), 1 with a one-line message on stderr for an API or
network error, 2 for a usage error (including a parameter Vobiz would refuse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_serve import _add_app, _add_serve, _cluster, _print_json_line, _wait_for_signal
from ._loops import loop_factory
from .client import VobizClient
from .errors import APIError, TransportError, ValidationError, VobizError

if TYPE_CHECKING:
    from .cluster import Cluster

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


async def _redis_call(url: str, work: Callable[[Cluster], Awaitable[None]]) -> None:
    """Run ``work`` with a Cluster on ``url``; Redis failures become a VobizError (exit 1)."""
    from redis.exceptions import RedisError

    async with _cluster(url) as cluster:
        try:
            await work(cluster)
        except (RedisError, OSError) as exc:
            raise VobizError(f"redis at {url}: {exc}") from None


async def _sessions_list(args: argparse.Namespace) -> None:
    async def show(cluster: Cluster) -> None:
        for info in sorted(await cluster.sessions(), key=lambda i: i.started_at):
            _print_json_line(asdict(info))

    await _redis_call(args.cluster, show)


async def _sessions_stop(args: argparse.Namespace) -> None:
    async def stop(cluster: Cluster) -> None:
        stopped = await cluster.stop_session(args.stream_id)
        _print_json_line({"stream_id": args.stream_id, "stopped": stopped})

    await _redis_call(args.cluster, stop)


def _add_sessions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = sub.add_parser("sessions", help="live sessions of a cluster of servers (Redis)")
    actions = sessions.add_subparsers(dest="action", required=True)
    lst = actions.add_parser("list", help="print each live session as a JSON line")
    lst.add_argument("--cluster", metavar="REDIS_URL", required=True)
    lst.set_defaults(handler=_sessions_list)
    stop = actions.add_parser("stop", help="stop a session on whichever server holds it")
    stop.add_argument("stream_id")
    stop.add_argument("--cluster", metavar="REDIS_URL", required=True)
    stop.set_defaults(handler=_sessions_stop)


async def _emulate(args: argparse.Namespace) -> Any:
    if args.rest_only:
        return await _emulate_rest(args)
    if not args.ws_url:
        raise ValidationError("ws_url", "give the WebSocket URL to dial (or --rest-only)")
    from .codec import read_wav, write_wav
    from .testing import CompatMediaPeer, MediaPeer, speech_like

    if args.audio:
        wav = read_wav(args.audio)
        audio, rate = wav.mono(), wav.sample_rate
    else:
        rate = 16000
        audio = speech_like(args.seconds or 10.0, rate)
    peer: MediaPeer | CompatMediaPeer
    if args.provider == "vobiz":
        if args.codec is not None or args.bearer_token is not None:
            option = "codec" if args.codec is not None else "bearer_token"
            raise ValidationError(option, "is for --provider signalwire or twilio")
        peer = MediaPeer(
            args.ws_url,
            audio=audio,
            audio_rate=rate,
            content_type=args.content_type,
            shape=args.shape,
            l16_byte_order=args.l16_byte_order,
            seconds=args.seconds,
            speed=args.speed,
            strict=not args.lenient,
        )
    else:
        peer = CompatMediaPeer(
            args.ws_url,
            audio=audio,
            audio_rate=rate,
            codec=args.codec or "PCMU@8000h",
            twilio=args.provider == "twilio",
            seconds=args.seconds,
            speed=args.speed,
            bearer_token=args.bearer_token,
            strict=not args.lenient,
        )
    report = await peer.wait_closed()
    if report.connect_error is not None:
        raise TransportError(f"could not connect to {args.ws_url}: {report.connect_error}")
    result: dict[str, Any] = {"provider": args.provider, **asdict(report)}
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


async def _emulate_rest(args: argparse.Namespace) -> None:
    """The fake REST API alone on 127.0.0.1, until Ctrl-C or SIGTERM."""
    from .testing import FakeVobiz

    async with FakeVobiz(port=args.port, strict=not args.lenient) as fake:
        _print_json_line(
            {"base_url": fake.base_url, "auth_id": fake.auth_id, "auth_token": fake.auth_token}
        )
        await _wait_for_signal()


async def _demo(args: argparse.Namespace) -> None:
    from ._demo import format_report, run_demo

    report = await run_demo(Path(args.out), speed=args.speed, provider=args.provider)
    sys.stdout.write(format_report(report) + "\n")


def _add_emulator(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    emu = sub.add_parser(
        "emulate",
        help="dial WS_URL as Vobiz (or SignalWire, Twilio) would, with a caller's audio;"
        " or --rest-only",
    )
    emu.add_argument("ws_url", nargs="?")
    emu.add_argument(
        "--provider",
        choices=["vobiz", "signalwire", "twilio"],
        default="vobiz",
        help="whose media stream to emulate (default vobiz)",
    )
    emu.add_argument(
        "--codec",
        choices=["PCMU@8000h", "L16@16000h", "L16@24000h"],
        help="signalwire/twilio: the stream's format (default PCMU@8000h; Twilio: PCMU only)",
    )
    emu.add_argument(
        "--bearer-token",
        help="signalwire/twilio: sent as 'Authorization: Bearer' on the upgrade",
    )
    emu.add_argument(
        "--rest-only",
        action="store_true",
        help="run the fake REST API alone on 127.0.0.1 and print its base URL and"
        " credentials as one JSON line, until Ctrl-C",
    )
    emu.add_argument("--port", type=int, default=0, help="--rest-only: port (0: any free one)")
    emu.add_argument(
        "--lenient",
        action="store_true",
        help="obey commands the live platform would refuse (no streamId, string sampleRate...)",
    )
    emu.add_argument("--audio", help="16-bit WAV of what the caller says (default: speech-like)")
    emu.add_argument("--content-type", default="audio/x-mulaw;rate=8000", help="vobiz only")
    emu.add_argument("--seconds", type=float, help="call length (default: the audio's)")
    emu.add_argument("--shape", choices=["nested", "flat"], default="nested")
    emu.add_argument("--l16-byte-order", choices=["little", "big"], default="little")
    emu.add_argument("--speed", type=float, default=1.0, help="1.0 is real time")
    emu.add_argument("--record", metavar="OUT.wav", help="caller and agent-as-heard, stereo")
    emu.set_defaults(handler=_emulate)
    demo = sub.add_parser("demo", help="an emulated call against an example agent, on loopback")
    demo.add_argument("--out", default="demo-output", help="where call.wav and report.json go")
    demo.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    demo.add_argument(
        "--provider",
        choices=["vobiz", "signalwire"],
        default="vobiz",
        help="signalwire: the same agent on an emulated <Connect><Stream> call (L16 16 kHz)",
    )
    demo.set_defaults(handler=_demo)


async def _callbacks_serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from .callbacks import StreamStatusCallback, callback_handler

    def show(callback: StreamStatusCallback) -> None:
        _print_json_line(callback.model_dump(mode="json"))

    app = web.Application()
    handler = callback_handler(
        show, auth_token=args.auth_token, mode=args.mode, public_base_url=args.public_url
    )
    handler.add_to(app, args.path)
    mode = handler.mode.value
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


def _signalwire_client(args: argparse.Namespace) -> Any:
    from .signalwire import SignalWireClient

    return SignalWireClient(
        args.project_id, args.api_token, space_url=args.space_url, base_url=args.sw_base_url
    )


def _parameters(pairs: list[str] | None) -> dict[str, str] | None:
    """``--parameter k=v`` values as a mapping (a repeated name keeps the last value)."""
    if not pairs:
        return None
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("parameter", f"{pair!r} is not a name=value pair")
        result[key] = value
    return result


async def _signalwire_streams_start(args: argparse.Namespace) -> Any:
    parameters = _parameters(args.parameter)
    async with _signalwire_client(args) as client:
        stream = await client.streams.start(
            args.call_sid,
            args.url,
            name=args.name,
            track=args.track,
            status_callback=args.status_callback,
            status_callback_method=args.status_callback_method,
            parameters=parameters,
            bearer_token=args.bearer_token,
        )
        return stream.model_dump(mode="json")


async def _signalwire_streams_stop(args: argparse.Namespace) -> Any:
    async with _signalwire_client(args) as client:
        stopped = await client.streams.stop(args.call_sid, args.sid_or_name)
        return {"sid": args.sid_or_name, "stopped": stopped}


def _add_signalwire(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sw = sub.add_parser("signalwire", help="SignalWire compat API: start and stop streams")
    sw.add_argument("--project-id", help="default: $SIGNALWIRE_PROJECT_ID")
    sw.add_argument("--api-token", help="default: $SIGNALWIRE_API_TOKEN")
    sw.add_argument("--space-url", help="default: $SIGNALWIRE_SPACE_URL (example.signalwire.com)")
    sw.add_argument("--base-url", dest="sw_base_url", help="full origin, overrides the Space")
    groups = sw.add_subparsers(dest="group", required=True)
    streams = groups.add_parser("streams", help="start and stop streams on a live call")
    actions = streams.add_subparsers(dest="action", required=True)

    start = actions.add_parser("start", help="fork a live call's audio to a wss:// URL")
    start.add_argument("call_sid")
    start.add_argument("url", help="wss:// URL without a query string")
    start.add_argument("--name", help="default: derived from the call, URL and track")
    start.add_argument(
        "--track",
        choices=["inbound_track", "outbound_track", "both_tracks"],
        default="inbound_track",
    )
    start.add_argument("--status-callback")
    start.add_argument("--status-callback-method", choices=["GET", "POST"])
    start.add_argument("--parameter", action="append", metavar="k=v", help="repeatable (<= 99)")
    start.add_argument("--bearer-token", help="sent on the WebSocket upgrade as a Bearer token")
    start.set_defaults(handler=_signalwire_streams_start)

    stop = actions.add_parser("stop", help="stop a stream by SID or name (idempotent)")
    stop.add_argument("call_sid")
    stop.add_argument("sid_or_name")
    stop.set_defaults(handler=_signalwire_streams_stop)


async def _report(args: argparse.Namespace) -> Any:
    return await asyncio.to_thread(_write_report, args.wav, args.trace, args.out)


def _write_report(wav_arg: str, trace_arg: str | None, out_arg: str | None) -> dict[str, Any]:
    """Render CALL.wav (and its trace) to CALL.html; a missing or unreadable file is a
    usage error (exit 2)."""

    from .errors import CodecError
    from .report import render
    from .trace import TraceError

    wav = Path(wav_arg)
    if not wav.is_file():
        raise ValidationError("wav", f"{wav}: no such file")
    trace = Path(trace_arg) if trace_arg else wav.with_suffix(".jsonl")
    if trace_arg and not trace.is_file():
        raise ValidationError("trace", f"{trace}: no such file")
    out = Path(out_arg) if out_arg else wav.with_suffix(".html")
    href = Path(os.path.relpath(wav.resolve(), out.resolve().parent)).as_posix()
    try:
        page = render(wav, trace if trace.is_file() else None, audio_href=href)
        out.parent.mkdir(parents=True, exist_ok=True)
        size = out.write_bytes(page.encode("utf-8"))
    except CodecError as exc:
        raise ValidationError("wav", str(exc)) from None
    except TraceError as exc:
        raise ValidationError("trace", str(exc)) from None
    except OSError as exc:
        raise ValidationError("file", f"{exc.filename or wav}: {exc.strerror or exc}") from None
    return {"html": str(out), "bytes": size}


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser("report", help="draw a call (WAV and trace) as one HTML page")
    rep.add_argument("wav", metavar="CALL.wav", help="stereo: caller left, agent right")
    rep.add_argument("--trace", metavar="CALL.jsonl", help="default: CALL.jsonl if present")
    rep.add_argument("--out", metavar="CALL.html", help="default: CALL.html beside the WAV")
    rep.set_defaults(handler=_report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    parser = argparse.ArgumentParser(
        prog="vobiz-async",
        description="Vobiz Audio Streams from the command line. Prints JSON.",
    )
    parser.add_argument("--auth-id", help="default: $VOBIZ_AUTH_ID")
    parser.add_argument("--auth-token", help="default: $VOBIZ_AUTH_TOKEN")
    parser.add_argument("--base-url", help="default: $VOBIZ_BASE_URL or https://api.vobiz.ai")
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop: auto (default) uses uvloop when installed (vobiz-async[speed])",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_streams(sub)
    _add_serve(sub)
    _add_app(sub)
    _add_emulator(sub)
    _add_callbacks(sub)
    _add_signalwire(sub)
    _add_sessions(sub)
    _add_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            result = runner.run(handler(args))
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
