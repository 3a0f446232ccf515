"""The ``vobiz-async`` command line (also ``python -m vobiz_async``).

Every command prints JSON on stdout. Exit status: 0 on success (stopping an
already-stopped stream is success), 1 with a one-line message on stderr for an API or
network error, 2 for a usage error (including a parameter Vobiz would refuse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .client import VobizClient
from .errors import APIError, TransportError, ValidationError, VobizError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, Any]]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def _parse_extra_headers(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    pairs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValidationError("--extra-headers", f"{part!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs


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
            extra_headers=_parse_extra_headers(args.extra_headers),
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
