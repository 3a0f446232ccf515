"""Check a call report in a real browser: headless Chromium renders it to a PNG.

Run: ``python -m tests.report_check [CALL.wav] [--out DIR]`` (``make report-check``).
Without a WAV it renders the scripted call of ``tests/_call.py`` (16 kHz). The PNG is
decoded with zlib alone and must not be blank, and the timeline must be drawn: pixels of
the caller's and the agent's envelope colours, the caller's above the agent's, each
spread over at least a third of the page's width. Prints the findings as JSON; exit status 1
when a check fails, 2 when Chromium is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from tests._call import scripted_call
from vobiz_async.report import AGENT_COLOUR, CALLER_COLOUR, render

WINDOW = (1400, 900)


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB or RGBA PNG; returns width, height and RGB rows."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    offset, idat = 8, bytearray()
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"{path}: only 8-bit non-interlaced RGB(A) is decoded")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    rows: list[bytes] = []
    prior = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_byte = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind_byte, line, prior, channels)
        rgb = bytearray(width * 3)
        for c in range(3):
            rgb[c::3] = line[c::channels]
        rows.append(bytes(rgb))
        prior = line
    return width, height, rows


def _unfilter(kind: int, line: bytearray, prior: bytearray, bpp: int) -> None:
    """Undo one row's PNG filter in place (RFC 2083 section 6)."""
    n = len(line)
    if kind == 0:
        return
    if kind == 2:  # up
        for i in range(n):
            line[i] = (line[i] + prior[i]) & 0xFF
        return
    for i in range(n):
        left = line[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + prior[i]) >> 1)) & 0xFF
        elif kind == 4:
            up = prior[i]
            corner = prior[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + pred) & 0xFF
        else:
            raise ValueError(f"unknown PNG filter {kind}")


def _rgb(colour: str) -> bytes:
    return bytes.fromhex(colour.lstrip("#"))


def analyse(width: int, height: int, rows: list[bytes]) -> dict[str, object]:
    """Where the envelope colours are, and how much of the page is not background."""
    targets = {"caller": _rgb(CALLER_COLOUR), "agent": _rgb(AGENT_COLOUR)}
    found: dict[str, list[tuple[int, int]]] = {name: [] for name in targets}
    background = rows[0][:3]
    painted = 0
    colours: set[bytes] = set()
    for y, row in enumerate(rows):
        for name, rgb in targets.items():
            at = row.find(rgb)
            while at != -1:
                if at % 3 == 0:
                    found[name].append((at // 3, y))
                at = row.find(rgb, at + 1)
        if y % 4 == 0:  # a sample of rows is enough to count colours and paint
            for x in range(0, width * 3, 12):
                pixel = row[x : x + 3]
                colours.add(pixel)
                painted += pixel != background
    sampled = (height // 4 + 1) * (width // 4)
    result: dict[str, object] = {
        "size": [width, height],
        "painted_fraction": round(painted / sampled, 3),
        "distinct_colours": len(colours),
    }
    for name, points in found.items():
        xs = [x for x, _ in points]
        result[name] = {
            "pixels": len(points),
            "mean_y": round(sum(y for _, y in points) / len(points), 1) if points else None,
            "x_span": (max(xs) - min(xs)) if xs else 0,
        }
    return result


def failures(found: dict[str, object]) -> list[str]:
    """The checks the rendering failed, in words (empty when it passed)."""
    problems = []
    width = WINDOW[0]
    if float(str(found["painted_fraction"])) < 0.02:
        problems.append("the page is blank")
    if int(str(found["distinct_colours"])) < 8:
        problems.append("fewer than 8 colours: nothing drawn")
    lanes = {name: found[name] for name in ("caller", "agent")}
    for name, lane in lanes.items():
        assert isinstance(lane, dict)
        if lane["pixels"] < 300:
            problems.append(f"the {name} envelope is missing ({lane['pixels']} pixels)")
        elif lane["x_span"] < width // 3:
            problems.append(f"the {name} envelope spans only {lane['x_span']} px")
    caller, agent = lanes["caller"], lanes["agent"]
    assert isinstance(caller, dict) and isinstance(agent, dict)
    if None not in (caller["mean_y"], agent["mean_y"]) and caller["mean_y"] >= agent["mean_y"]:
        problems.append("the caller's lane is not above the agent's")
    return problems


def screenshot(html: Path, png: Path) -> None:
    """Render ``html`` with headless Chromium to ``png`` at the window size."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.stderr.write("report_check: chromium is not installed (apt-get install chromium)\n")
        sys.exit(2)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={png}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("wav", nargs="?", help="a call's WAV (default: the scripted call)")
    parser.add_argument("--out", help="keep call.html and call.png in this directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.wav:
            wav = Path(args.wav)
            trace: Path | None = wav.with_suffix(".jsonl")
            html = wav.with_suffix(".html")
        else:
            wav, trace = scripted_call(out, rate=16000)
            html = out / "call.html"
        page = render(wav, trace if trace is not None and trace.exists() else None)
        html.write_text(page, encoding="utf-8")
        png = out / "call.png"
        screenshot(html, png)
        found = analyse(*read_png(png))
    problems = failures(found)
    found["html"], found["png"], found["problems"] = str(html), str(png), problems
    sys.stdout.write(json.dumps(found, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
