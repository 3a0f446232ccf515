"""Two-channel call recordings: the caller on the left, the agent (as heard) on the right."""

from __future__ import annotations

from pathlib import Path

from .codec import Resampler, interleave_stereo, write_wav

__all__ = ["CallRecorder"]


class CallRecorder:
    """Collects both sides of a call on one timeline and writes a stereo WAV.

    The caller's audio is appended frame by frame as it arrives. Agent audio is placed
    where it will play: at the playout position it was queued at (a paced sender knows
    it), and cut off at a barge-in, because audio flushed by ``clearAudio`` was never
    heard.

    Args:
        sample_rate: the recording's rate; other rates are resampled to it.
        origin: the clock time (seconds) of the recording's first sample.
    """

    def __init__(self, sample_rate: int, origin: float) -> None:
        self.sample_rate = sample_rate
        self.origin = origin
        self._caller = bytearray()
        self._agent = bytearray()
        self._resamplers: dict[tuple[str, int], Resampler] = {}

    def _convert(self, side: str, pcm: bytes, rate: int) -> bytes:
        if rate == self.sample_rate:
            return pcm
        key = (side, rate)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = Resampler(rate, self.sample_rate)
        return resampler.process(pcm)

    def _offset(self, at: float) -> int:
        return max(0, round((at - self.origin) * self.sample_rate)) * 2

    def add_caller(self, pcm: bytes, sample_rate: int) -> None:
        """Append caller audio (frames arrive back to back)."""
        self._caller += self._convert("caller", pcm, sample_rate)

    def add_agent(self, pcm: bytes, sample_rate: int, at: float) -> None:
        """Place agent audio that starts playing at clock time ``at``."""
        data = self._convert("agent", pcm, sample_rate)
        start = self._offset(at)
        end = start + len(data)
        if len(self._agent) < end:
            self._agent += bytes(end - len(self._agent))
        self._agent[start:end] = data

    def cut_agent(self, at: float) -> None:
        """Silence agent audio after clock time ``at`` (a clear flushed it unheard)."""
        start = self._offset(at)
        if start < len(self._agent):
            del self._agent[start:]

    @property
    def caller_pcm(self) -> bytes:
        """The caller's side so far."""
        return bytes(self._caller)

    @property
    def agent_pcm(self) -> bytes:
        """The agent's side so far (silence where nothing played)."""
        return bytes(self._agent)

    def stereo(self) -> bytes:
        """Interleaved stereo PCM: caller left, agent right, padded to equal length."""
        return interleave_stereo(bytes(self._caller), bytes(self._agent))

    def write(self, path: str | Path) -> Path:
        """Write the stereo WAV; returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, self.stereo(), self.sample_rate, channels=2)
        return path
