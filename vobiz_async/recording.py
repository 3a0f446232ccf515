"""Two-channel call recordings: the caller on the left, the agent (as heard) on the right.

Recording is cheap on the read path: audio is kept as it arrived (with its rate) and is
only converted to the recording's rate when the WAV is rendered, which the server and
the CLI do off the event loop (``asyncio.to_thread``). Its size is bounded
(``max_bytes``); what does not fit is counted in :attr:`CallRecorder.truncated_ms`.

File names never come from the peer: :func:`save_recording` names the file itself
(safe characters, bounded length, unique, never overwriting) and puts the peer's ids in
the WAV's ``LIST/INFO`` metadata instead.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from .codec import Resamplers, interleave_stereo
from .errors import ValidationError

__all__ = ["DEFAULT_MAX_RECORDING_BYTES", "CallRecorder", "save_recording"]

DEFAULT_MAX_RECORDING_BYTES = 128 * 1024 * 1024
"""Default bound of a recording's WAV data: about 35 min of 16 kHz stereo, 70 min at 8 kHz."""

_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
_NAME_ID_CHARS = 48
_META_VALUE_CHARS = 512
_serial = itertools.count(1)
_WRITE_BLOCK = 256 * 1024  # mono bytes per side interleaved per write


_SNAP_MS = 5  # agent pieces closer than this to back to back are joined


class CallRecorder:
    """Collects both sides of a call on one timeline and writes a stereo WAV.

    The caller's audio is appended frame by frame as it arrives. Agent audio is placed
    where it will play: at the playout position it was queued at (a paced sender knows
    it), and cut off at a barge-in, because audio flushed by ``clearAudio`` was never
    heard. Adding audio costs a list append; resampling to ``sample_rate`` happens when
    the recording is rendered (:meth:`stereo`, :meth:`write`), which should run off the
    event loop for a long call.

    Args:
        sample_rate: the recording's rate; other rates are resampled to it on render.
        origin: the clock time (seconds) of the recording's first sample.
        max_bytes: bound of the stereo PCM data (each side gets half); audio past it is
            dropped and counted in :attr:`truncated_ms`. ``None``: unbounded.
    """

    def __init__(
        self,
        sample_rate: int,
        origin: float,
        *,
        max_bytes: int | None = DEFAULT_MAX_RECORDING_BYTES,
    ) -> None:
        if sample_rate <= 0:
            raise ValidationError("sample_rate", "must be positive")
        self.sample_rate = sample_rate
        self.origin = origin
        self.max_bytes = max_bytes
        self.truncated_ms = 0.0
        self._side_cap = None if max_bytes is None else max(0, max_bytes // 4 * 2)
        self._caller: list[tuple[int, bytearray]] = []
        self._caller_bytes = 0  # size once converted to sample_rate
        self._agent: list[tuple[float, int, bytes]] = []  # (starts at, rate, pcm)

    def _converted_len(self, nbytes: int, rate: int) -> int:
        return (nbytes // 2) * self.sample_rate // rate * 2

    def _fit(self, pcm: bytes, rate: int, room: int | None) -> bytes:
        """``pcm`` cut so that, converted, it fits in ``room`` bytes (the rest counted)."""
        if room is None:
            return pcm
        size = self._converted_len(len(pcm), rate)
        if size <= room:
            return pcm
        keep = max(0, room) * rate // self.sample_rate // 2 * 2
        self.truncated_ms += (len(pcm) - keep) * 500 / rate
        return pcm[:keep]

    def _offset(self, at: float) -> int:
        return max(0, round((at - self.origin) * self.sample_rate)) * 2

    def add_caller(self, pcm: bytes, sample_rate: int) -> None:
        """Append caller audio (frames arrive back to back)."""
        cap = self._side_cap
        pcm = self._fit(pcm, sample_rate, None if cap is None else cap - self._caller_bytes)
        if not pcm:
            return
        self._caller_bytes += self._converted_len(len(pcm), sample_rate)
        if self._caller and self._caller[-1][0] == sample_rate:
            self._caller[-1][1].extend(pcm)  # amortised O(len(pcm)) per frame
        else:
            self._caller.append((sample_rate, bytearray(pcm)))

    def add_agent(self, pcm: bytes, sample_rate: int, at: float) -> None:
        """Place agent audio that starts playing at clock time ``at``."""
        cap = self._side_cap
        pcm = self._fit(pcm, sample_rate, None if cap is None else cap - self._offset(at))
        if pcm:
            self._agent.append((at, sample_rate, pcm))

    def cut_agent(self, at: float) -> None:
        """Silence agent audio after clock time ``at`` (a clear flushed it unheard)."""
        kept: list[tuple[float, int, bytes]] = []
        for start, rate, pcm in self._agent:
            if start >= at:
                continue
            end = start + len(pcm) / (2 * rate)
            if end > at:
                pcm = pcm[: int((at - start) * rate) * 2]
            kept.append((start, rate, pcm))
        self._agent = kept

    @property
    def caller_pcm(self) -> bytes:
        """The caller's side so far, at :attr:`sample_rate` (rendered on each access)."""
        resamplers = Resamplers(self.sample_rate)
        parts: list[bytes | bytearray] = []
        for rate, pcm in self._caller:
            parts.append(pcm if rate == self.sample_rate else resamplers.process(bytes(pcm), rate))
        return b"".join(parts)

    @property
    def agent_pcm(self) -> bytes:
        """The agent's side so far (silence where nothing played).

        Pieces that play back to back (a TTS streamed in chunks, each a ``play()``) are
        rendered as one signal: one streaming resampler across them, and a start within
        ``_SNAP_MS`` after the previous piece's end, or up to one 20 ms frame before it
        (the partial frame ``play()`` held back), taken as that end, so clock rounding,
        held-back audio and per-piece filter edges leave no gaps, overlaps or clicks."""
        out = bytearray()
        snap = round(self.sample_rate * _SNAP_MS / 1000) * 2
        # play() holds back a partial frame, so a piece's clock start can fall up to one
        # frame before the previous piece's end: that is back to back too.
        overlap = round(self.sample_rate * 20 / 1000) * 2
        resamplers: Resamplers | None = None
        run_rate = 0
        run_end = -1  # byte offset where the current run of pieces ends, -1: no run

        def put(start: int, data: bytes) -> int:
            end = start + len(data)
            if len(out) < end:
                out.extend(bytes(end - len(out)))
            out[start:end] = data
            return end

        for at, rate, pcm in self._agent:
            start = self._offset(at)
            if run_end >= 0 and rate == run_rate and -overlap <= start - run_end <= snap:
                start = run_end
            else:
                if resamplers is not None and run_end >= 0:
                    put(run_end, resamplers.flush())
                resamplers = Resamplers(self.sample_rate)
                run_rate = rate
            assert resamplers is not None
            run_end = put(start, resamplers.process(pcm, rate))
        if resamplers is not None and run_end >= 0:
            put(run_end, resamplers.flush())
        cap = self._side_cap
        return bytes(out if cap is None else out[:cap])

    def stereo(self) -> bytes:
        """Interleaved stereo PCM: caller left, agent right, padded to equal length."""
        return interleave_stereo(self.caller_pcm, self.agent_pcm)

    def write(self, path: str | Path, *, metadata: Mapping[str, str] | None = None) -> Path:
        """Write the stereo WAV (blocking: use ``asyncio.to_thread`` on a loop).

        The parent directory must exist (it is never created from here).

        Args:
            path: where to write; an existing file is replaced.
            metadata: written as JSON in the WAV's ``LIST/INFO`` comment (``ICMT``).

        Returns:
            ``path``.
        """
        path = Path(path)
        with open(path, "wb") as out:
            self._write_to(out, metadata)
        return path

    def _write_to(self, out: BinaryIO, metadata: Mapping[str, str] | None) -> None:
        """Write the WAV, interleaving block by block: no second copy of the whole call,
        and no single long step that would hold the GIL (and stall the event loop)."""
        caller = self.caller_pcm
        agent = self.agent_pcm
        data_size = 2 * max(len(caller), len(agent))
        fmt = struct.pack("<HHIIHH", 1, 2, self.sample_rate, self.sample_rate * 4, 4, 16)
        info = b""
        if metadata:
            text = (
                json.dumps(
                    {k[:64]: str(v)[:_META_VALUE_CHARS] for k, v in metadata.items()},
                    ensure_ascii=True,
                ).encode("ascii")
                + b"\0"
            )
            if len(text) % 2:
                text += b"\0"
            info = b"INFO" + b"ICMT" + struct.pack("<I", len(text)) + text
        chunks = [b"fmt " + struct.pack("<I", len(fmt)) + fmt]
        if info:
            chunks.append(b"LIST" + struct.pack("<I", len(info)) + info)
        body = b"".join(chunks)
        out.write(b"RIFF" + struct.pack("<I", 4 + len(body) + 8 + data_size) + b"WAVE")
        out.write(body)
        out.write(b"data" + struct.pack("<I", data_size))
        for offset in range(0, data_size // 2, _WRITE_BLOCK):
            end = offset + _WRITE_BLOCK
            out.write(interleave_stereo(caller[offset:end], agent[offset:end]))


def _safe_name(stream_id: str) -> str:
    """``stream_id`` reduced to ``[A-Za-z0-9_-]``, at most 48 characters (or ``stream``)."""
    return _SAFE.sub("_", stream_id).strip("_")[:_NAME_ID_CHARS] or "stream"


def save_recording(
    recorder: CallRecorder, directory: str | Path, *, stream_id: str, call_id: str
) -> Path:
    """Write ``recorder`` to a new file in ``directory``, named by us (blocking).

    The name is ``<UTC time>-<safe id>-<serial>.wav``: characters ``[A-Za-z0-9_-]`` only,
    at most 48 from the stream id, created exclusively so no earlier recording is ever
    overwritten. The peer's ids (which may hold ``../``, NUL or 300 characters) go into
    the WAV's metadata, never into the path.

    Args:
        recorder: what to write.
        directory: an existing directory; nothing is written outside it.
        stream_id, call_id: the ids from ``start``, kept in the metadata.

    Returns:
        The path written.

    Raises:
        OSError: the directory is missing or not writable.
    """
    base = Path(directory).resolve()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = _safe_name(stream_id)
    metadata = {"stream_id": stream_id, "call_id": call_id}
    while True:
        path = base / f"{stamp}-{safe}-{os.getpid()}-{next(_serial)}.wav"
        if path.parent != base:  # the name has no separators; this is a second guard
            raise ValidationError("stream_id", "recording path escapes its directory")
        try:
            out = open(path, "xb")  # noqa: SIM115 - closed below, exclusive create
        except FileExistsError:
            continue
        with out:
            recorder._write_to(out, metadata)
        return path
