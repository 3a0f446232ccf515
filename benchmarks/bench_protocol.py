"""Protocol speed: us per inbound media frame (parse + decode) and per outbound 20 ms frame.

Run: ``.venv/bin/python benchmarks/bench_protocol.py``. Prints a table, writes
``benchmarks/results/bench_protocol.json``; asserts nothing. Also times the same work
on the tolerant path with the stdlib JSON parser (to show whether msgspec earns its place)
and, when ``plivo-stream-sdk`` is importable, that peer's parse path, with the ratio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import math
import struct
from collections.abc import Callable, Iterator
from typing import Any, cast

from _common import calibration_ns, median_ns, print_table, write_json

from vobiz_async._wire import VOBIZ
from vobiz_async._wire import vobiz as wire_module
from vobiz_async.codec import AudioEncoding, AudioFormat, pcm16_to_ulaw
from vobiz_async.events import AudioReceived
from vobiz_async.protocol import StreamProtocol

REFERENCE_CALIBRATION_NS = 1900.0
SID = "4f23e5e8-6fdb-45ad-bfaf-b694111cf476"


def pcm(rate: int) -> bytes:
    n = rate // 50
    return struct.pack(
        f"<{n}h", *(round(7000 * math.sin(2 * math.pi * 300 * i / rate)) for i in range(n))
    )


def start(encoding: str, rate: int) -> str:
    media_format = {"encoding": encoding, "sampleRate": rate}
    inner = {
        "callId": "c",
        "streamId": SID,
        "accountId": "1",
        "tracks": ["inbound"],
        "mediaFormat": media_format,
    }
    return json.dumps(
        {"sequenceNumber": 0, "event": "start", "start": inner, "extra_headers": "{}"}
    )


def media(payload: bytes) -> str:
    body = {
        "track": "inbound",
        "timestamp": "1777888931440",
        "chunk": 57,
        "payload": base64.b64encode(payload).decode(),
    }
    return json.dumps(
        {
            "sequenceNumber": 57,
            "streamId": SID,
            "event": "media",
            "media": body,
            "extra_headers": "{}",
        }
    )


@contextlib.contextmanager
def stdlib_json() -> Iterator[None]:
    """The dialect's generic decoder swapped for stdlib json (see inbound_case)."""
    saved = wire_module._loads
    wire_module._loads = json.loads
    try:
        yield
    finally:
        wire_module._loads = saved


def inbound_case(
    encoding: str, rate: int, *, stdlib: bool = False, decode: bool = True
) -> tuple[Callable[[], object], str]:
    proto = StreamProtocol(provider="vobiz")
    if stdlib:  # no one-pass typed decoder: every frame takes the generic parser
        proto._dialect = dataclasses.replace(VOBIZ, decode_media=lambda frame: None)
    proto.receive(start(encoding, rate))
    audio = pcm(rate)
    frame = media(pcm16_to_ulaw(audio) if encoding == "audio/x-mulaw" else audio)
    if not decode:
        return (lambda: proto.receive(frame)), frame

    def parse_and_decode() -> bytes:
        # AudioReceived decodes mu-law on the first read of .pcm: read it, so the
        # figure is parse + decode, as the peers' figures are.
        return cast(AudioReceived, proto.receive(frame)[0]).pcm

    return parse_and_decode, frame


def outbound_case(fmt: AudioFormat) -> Callable[[], object]:
    proto = StreamProtocol(outbound_format=fmt)
    proto.receive(start("audio/x-mulaw", 8000))
    audio = pcm(fmt.sample_rate)
    clock = itertools.count(step=0.02)

    def play_one() -> list[str]:
        now = next(clock)
        proto.play(audio, fmt.sample_rate, now=now)
        return proto.frames_due(now)

    return play_one


def peer_case(frame: str) -> Callable[[], object] | None:
    try:
        from plivo_stream.types import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            EventType,
            MediaEvent,
            StreamEvent,
        )
    except ImportError:
        return None

    def parse() -> object:
        data = json.loads(frame)
        StreamEvent(event=EventType(data["event"]), data=data)
        event = MediaEvent(**data)
        return base64.b64decode(event.media.payload)

    return parse


def pipecat_vobiz_cases(frame: str) -> tuple[Callable[[], object], Callable[[], object]] | None:
    """pipecat-vobiz's ``VobizFrameSerializer`` (when installed): one awaited
    ``deserialize`` of a mu-law 8 kHz media frame and one ``serialize`` of 20 ms of
    8 kHz PCM to ``playAudio``, each timed inside one event loop run per batch."""
    try:
        from pipecat.frames.frames import (  # type: ignore[import-not-found, unused-ignore]
            OutputAudioRawFrame,
            StartFrame,
        )
        from pipecat.serializers.vobiz import (  # type: ignore[import-not-found, unused-ignore]
            VobizFrameSerializer,
        )
    except ImportError:
        return None
    params = VobizFrameSerializer.InputParams(
        vobiz_sample_rate=8000, sample_rate=8000, auto_hang_up=False
    )
    serializer = VobizFrameSerializer(SID, params=params)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(serializer.setup(StartFrame(audio_in_sample_rate=8000)))
    out = OutputAudioRawFrame(audio=pcm(8000), sample_rate=8000, num_channels=1)
    number = 500

    def timed(make: Callable[[], Any]) -> Callable[[], object]:
        async def batch() -> None:
            for _ in range(number):
                await make()

        return lambda: loop.run_until_complete(batch())

    return timed(lambda: serializer.deserialize(frame)), timed(lambda: serializer.serialize(out))


def main() -> None:
    calib = calibration_ns()
    scale = calib / REFERENCE_CALIBRATION_NS
    rows: list[dict[str, Any]] = []
    frames: dict[str, str] = {}
    for label, encoding, rate, target in [
        ("in mu-law 8k", "audio/x-mulaw", 8000, 2.5),
        ("in L16 8k", "audio/x-l16", 8000, None),
        ("in L16 16k", "audio/x-l16", 16000, 3.0),
    ]:
        fn, frame = inbound_case(encoding, rate)
        frames[label] = frame
        rows.append(
            {
                "case": label,
                "parser": "msgspec fast path",
                "target_us": target,
                "us": median_ns(fn, number=20000) / 1000,
            }
        )
        with stdlib_json():
            slow, _ = inbound_case(encoding, rate, stdlib=True)
            rows.append(
                {
                    "case": label,
                    "parser": "stdlib json",
                    "target_us": None,
                    "us": median_ns(slow, number=20000) / 1000,
                }
            )
    parse_only, _ = inbound_case("audio/x-mulaw", 8000, decode=False)
    rows.append(
        {
            "case": "in mu-law 8k, pcm not read (an echo)",
            "parser": "msgspec fast path",
            "target_us": None,
            "us": median_ns(parse_only, number=20000) / 1000,
        }
    )
    for label, fmt, target in [
        ("out mu-law 8k", AudioFormat(AudioEncoding.MULAW, 8000), 3.5),
        ("out L16 16k", AudioFormat(AudioEncoding.L16, 16000), None),
        ("out L16 24k", AudioFormat(AudioEncoding.L16, 24000), None),
    ]:
        rows.append(
            {
                "case": label,
                "parser": "-",
                "target_us": target,
                "us": median_ns(outbound_case(fmt), number=5000) / 1000,
            }
        )
    peer = peer_case(frames["in mu-law 8k"])
    ours = rows[0]["us"]
    pipecat = pipecat_vobiz_cases(frames["in mu-law 8k"])
    if pipecat is not None:
        ours_out = next(r["us"] for r in rows if r["case"] == "out mu-law 8k")
        for label, fn, mine in (
            ("in mu-law 8k: pipecat-vobiz deserialize", pipecat[0], ours),
            ("out mu-law 8k: pipecat-vobiz serialize", pipecat[1], ours_out),
        ):
            us = median_ns(fn, number=1) / 500 / 1000
            rows.append(
                {
                    "case": label,
                    "parser": "json+audioop",
                    "target_us": None,
                    "us": us,
                    "ratio_vs_ours": us / mine,
                }
            )
    if peer is not None:
        peer_us = median_ns(peer, number=20000) / 1000
        rows.append(
            {
                "case": "in mu-law 8k: plivo-stream-sdk parse only",
                "parser": "json+pydantic",
                "target_us": None,
                "us": peer_us,
                "ratio_vs_ours": peer_us / ours,
            }
        )
    for row in rows:
        row["us_scaled"] = row["us"] / scale
        target = row.get("target_us")
        row["meets_target"] = (
            "-" if target is None else ("yes" if row["us_scaled"] <= target else "no")
        )
    print(
        f"calibration: json.loads(media frame) = {calib:,.0f} ns here, "
        f"{REFERENCE_CALIBRATION_NS:,.0f} ns reference (scale {scale:.2f})"
    )
    if peer is None:
        print("plivo-stream-sdk is not installed; `pip install plivo-stream-sdk` to time it too")
    if pipecat is None:
        print("pipecat-vobiz is not installed; `make bench` installs it in .venv-bench")
    print_table(
        "protocol, per 20 ms frame (median)",
        rows,
        ["case", "parser", "us", "us_scaled", "target_us", "meets_target", "ratio_vs_ours"],
    )
    write_json("bench_protocol", {"calibration_ns": calib, "scale": scale, "rows": rows})


if __name__ == "__main__":
    main()
