"""The HTML call report: its structure, self-containment, and the ``report`` command."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from array import array
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests._call import scripted_call, scripted_wav
from vobiz_async.cli import main
from vobiz_async.codec import write_wav
from vobiz_async.errors import CodecError
from vobiz_async.protocol import ClearSummary
from vobiz_async.report import AGENT_COLOUR, CALLER_COLOUR, EMBED_MAX_BYTES, render
from vobiz_async.testing import speech_like
from vobiz_async.trace import CallTrace, TraceError

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"


def _page(html: str) -> ET.Element:
    """The page parsed as XML (it is polyglot XHTML)."""
    return ET.fromstring(html.split("\n", 1)[1])  # after the doctype line


def _svg(html: str) -> ET.Element:
    match = re.search(r"<svg .*?</svg>", html, re.S)
    assert match is not None
    return ET.fromstring(match.group(0))


def _groups(svg: ET.Element, kind: str) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if kind in g.get("class", "").split()]


class _Links(HTMLParser):
    """Every src and href in the page, as an HTML parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]


def test_scripted_call_page_structure(tmp_path: Path) -> None:
    """Both channels' envelopes, one marker per checkpoint and per clear, the DTMF digit,
    "heard X ms of Y ms", the gap and the bad seconds, and an <audio> element."""
    wav, trace = scripted_call(tmp_path)
    html = render(wav, trace)
    page = _page(html)
    svg = _svg(html)
    channels = {p.get("data-channel"): p.get("fill") for p in svg.iter(f"{SVG}path")}
    assert channels == {"caller": CALLER_COLOUR, "agent": AGENT_COLOUR}
    checkpoints = _groups(svg, "checkpoint")
    assert len(checkpoints) == 2
    labels = ["".join(g.itertext()) for g in checkpoints]
    assert any("turn-1: played" in label for label in labels)
    assert any("turn-2: cleared" in label for label in labels)
    (clear,) = _groups(svg, "clear")
    assert "heard 1200 ms of 3500 ms" in "".join(clear.itertext())
    (dtmf,) = _groups(svg, "dtmf")
    assert dtmf.findtext(f"{SVG}text") == "7"
    assert len(_groups(svg, "utterance")) == 2
    assert len(_groups(svg, "stop")) == 1 and len(_groups(svg, "close")) == 1
    rects = [r.get("class") for r in svg.iter(f"{SVG}rect")]
    assert rects.count("gap") == 1 and rects.count("drop") == 3
    assert rects.count("band-cut") == 1  # the barge-in cut the second utterance
    (audio,) = page.iter(f"{XHTML}audio")
    assert audio.get("src", "").startswith("data:audio/wav;base64,")
    figures = {
        row.findtext(f"{XHTML}th"): row.findtext(f"{XHTML}td") for row in page.iter(f"{XHTML}tr")
    }
    assert figures["DTMF"] == "7"
    assert figures["checkpoints"] == "1 played, 1 cleared"
    assert figures["dropped / late / malformed"] == "1 / 1 / 2"
    assert figures["seconds without caller audio"] == "1"
    assert figures["close"] == "code 1000 at 11.92 s"


def test_page_is_self_contained(tmp_path: Path) -> None:
    """No src or href points off the machine, no script, and an HTML parser agrees on
    the elements the XML parse found."""
    wav, trace = scripted_call(tmp_path)
    html = render(wav, trace)
    links = _Links()
    links.feed(html)
    assert links.urls and all(u.startswith("data:") for u in links.urls)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html)
    assert "script" not in links.tags and "<script" not in html
    assert {"svg", "audio", "table", "path"} <= set(links.tags)


def test_long_wav_is_linked_not_embedded(tmp_path: Path) -> None:
    """Above the embedding size the <audio> links the WAV by a relative URL (its name
    by default, or the given href), and the page stays small."""
    wav, trace = scripted_call(tmp_path)
    html = render(wav, trace, embed_max_bytes=0)
    (audio,) = _page(html).iter(f"{XHTML}audio")
    assert audio.get("src") == "call.wav"
    assert len(html) < 100_000 and wav.stat().st_size < EMBED_MAX_BYTES
    other = render(wav, trace, embed_max_bytes=0, audio_href="../calls/call%201.wav")
    assert 'src="../calls/call%201.wav"' in other


def test_wav_alone_renders_both_channels(tmp_path: Path) -> None:
    """Without a trace the page still draws both envelopes, with no event markers."""
    wav = scripted_wav(tmp_path / "call.wav")
    html = render(wav)
    svg = _svg(html)
    assert {p.get("data-channel") for p in svg.iter(f"{SVG}path")} == {"caller", "agent"}
    assert not _groups(svg, "marker") and not _groups(svg, "utterance")
    assert "frames" not in "".join(svg.itertext()) and "DTMF" not in html


def test_envelope_follows_the_audio(tmp_path: Path) -> None:
    """Where the caller speaks the envelope reaches the lane's edge at the loudest sample
    (exact extremes, scaled to the call's peak); where it is silent it is flat."""
    rate = 8000
    loud = speech_like(1.0, rate, level=12000)
    samples = array("h", loud)
    wav = tmp_path / "mono.wav"
    write_wav(wav, bytes(len(loud)) + loud, rate)
    svg = _svg(render(wav))
    (path,) = svg.iter(f"{SVG}path")  # mono: the caller alone
    tops, lows = path.get("d", "")[1:].rstrip(" Z").split(" L")
    top_y = [float(point.split(",")[1]) for point in tops.split()]
    low_y = [float(point.split(",")[1]) for point in lows.split()]
    half = len(top_y) // 2
    assert max(top_y[: half - 1]) == min(top_y[: half - 1]) == 131.5  # centre 132, 0.5 px
    peak = max(max(samples), -min(samples))
    assert min(top_y) == round(132 - max(samples) / peak * 56, 1)  # y grows downwards
    assert max(low_y) == round(132 - min(samples) / peak * 56, 1)


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    """A file that is not a WAV is a CodecError; a broken trace is a TraceError."""
    wav, trace = scripted_call(tmp_path)
    with pytest.raises(CodecError):
        render(trace)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nonsense\n")
    with pytest.raises(TraceError):
        render(wav, bad)
    with pytest.raises(FileNotFoundError):
        render(tmp_path / "missing.wav")


def test_cli_report_writes_the_page_beside_the_wav(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vobiz-async report CALL.wav`` picks up CALL.jsonl and writes CALL.html."""
    wav, _ = scripted_call(tmp_path)
    assert main(["report", str(wav)]) == 0
    out = json.loads(capsys.readouterr().out)
    html = tmp_path / "call.html"
    assert out == {"html": str(html), "bytes": html.stat().st_size}
    assert "heard 1200 ms of 3500 ms" in html.read_text()


def test_cli_report_links_the_wav_from_another_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --out elsewhere, a linked WAV's URL is relative to the page."""
    wav = scripted_wav(tmp_path / "calls" / "c.wav", rate=16000)  # too big to embed
    out = tmp_path / "pages" / "c.html"
    assert main(["report", str(wav), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["html"] == str(out)
    assert 'src="../calls/c.wav"' in out.read_text()


def test_cli_report_missing_or_unreadable_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing WAV, a missing --trace and a file that is not a WAV: exit 2, one line."""
    wav, trace = scripted_call(tmp_path)
    for argv in (
        ["report", str(tmp_path / "nope.wav")],
        ["report", str(wav), "--trace", str(tmp_path / "nope.jsonl")],
        ["report", str(trace)],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
        assert captured.err.startswith("vobiz-async: error: ")


def test_crowded_labels_are_left_out_but_every_marker_stays(tmp_path: Path) -> None:
    """With more markers than label room, each still has its line and tooltip, barge-in
    labels are kept first."""
    wav = scripted_wav(tmp_path / "call.wav")
    trace = CallTrace(0.0)
    for index in range(120):
        trace.checkpoint_outcome(f"cp-{index}", "played", now=index * 0.1)
    trace.clear(ClearSummary(500.0, 100.0, 400.0, ()), now=6.05)
    svg = _svg(render(wav, trace.write(tmp_path / "call.wav")))
    markers = _groups(svg, "checkpoint")
    assert len(markers) == 120
    assert all(g.findtext(f"{SVG}title") for g in markers)
    labelled = [g for g in markers if g.find(f"{SVG}text") is not None]
    assert 0 < len(labelled) < 120
    (clear,) = _groups(svg, "clear")
    assert "heard 400 ms of 500 ms" in "".join(clear.itertext())
