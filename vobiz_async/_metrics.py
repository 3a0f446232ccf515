"""Prometheus metrics for the media server, gathered at scrape time.

Nothing here runs per frame: the server already counts everything (``ServerStats``, each
stream's ``ProtocolStats``/``PlayoutStats``, each session's checkpoint outcomes).
:class:`CallTotals` folds a stream's counters in once, when it has finished (closed and
its handler returned); a scrape adds the unfinished streams' counters to those totals
through a custom collector, so every counter only grows. ``prometheus-client``
is optional (``vobiz-async[metrics]``); without it :func:`render` returns None.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import MediaServer, StreamLink

__all__ = ["CLEAR_BUCKETS", "CallTotals", "render"]

log = logging.getLogger("vobiz_async.server")

CLEAR_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the clear-to-``clearedAudio`` latency histogram."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_missing_logged = False


@dataclass(slots=True)
class CallTotals:
    """Counters of the streams that have ended, summed (one update per stream)."""

    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    late_outbound: int = 0
    dropped_outbound: int = 0
    checkpoints: Counter[str] = field(default_factory=Counter)
    clear_buckets: list[int] = field(default_factory=lambda: [0] * len(CLEAR_BUCKETS))
    clear_count: int = 0
    clear_sum: float = 0.0

    def add(self, link: StreamLink) -> None:
        """Fold in the counters of a stream that has just ended."""
        _add_link(self, link)


def _add_link(totals: CallTotals, link: StreamLink) -> None:
    stats = link.proto.stats
    totals.frames_in += stats.frames_in
    totals.frames_out += stats.frames_out
    totals.malformed += stats.malformed
    totals.late_outbound += stats.late_outbound
    totals.dropped_outbound += stats.dropped_outbound
    session = link.session
    if session is not None:
        totals.checkpoints.update(session.checkpoint_outcomes)
    _add_clears(totals, link.proto.playout.clear_round_trip_ms)


def _add_clears(totals: CallTotals, values_ms: Iterable[float]) -> None:
    buckets = totals.clear_buckets
    for value_ms in values_ms:
        seconds = value_ms / 1000
        totals.clear_count += 1
        totals.clear_sum += seconds
        for i, bound in enumerate(CLEAR_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1


def snapshot(server: MediaServer) -> CallTotals:
    """Ended streams' totals plus the live ones' counters, now."""
    ended = server._call_totals
    now = CallTotals(
        frames_in=ended.frames_in,
        frames_out=ended.frames_out,
        malformed=ended.malformed,
        late_outbound=ended.late_outbound,
        dropped_outbound=ended.dropped_outbound,
        checkpoints=Counter(ended.checkpoints),
        clear_buckets=list(ended.clear_buckets),
        clear_count=ended.clear_count,
        clear_sum=ended.clear_sum,
    )
    for link in (*server._links, *server._finishing):
        _add_link(now, link)
    return now


class _Collector:
    """A prometheus-client collector reading one server's counters at scrape time."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server

    def describe(self) -> list[Any]:
        return []  # no eager collect at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        server = self.server
        stats = server.stats
        worker = server.worker
        totals = snapshot(server)
        labels = ["worker"]

        def gauge(name: str, doc: str, value: float) -> Any:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric([worker], value)
            return family

        def counter(name: str, doc: str, value: float) -> Any:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric([worker], value)
            return family

        yield gauge("vobiz_sessions", "Streams open now.", server._session_count)
        yield gauge("vobiz_max_sessions", "Limits.max_sessions.", server.limits.max_sessions)
        yield gauge(
            "vobiz_pending_handshakes",
            "Connections that are not streams yet.",
            server.pending_handshakes,
        )
        yield gauge("vobiz_connections", "TCP connections open now.", stats.active_connections)
        yield counter("vobiz_sessions_started", "Streams started.", stats.sessions)
        yield counter("vobiz_frames_in", "Frames read, all streams.", totals.frames_in)
        yield counter("vobiz_frames_out", "Frames written, all streams.", totals.frames_out)
        yield counter(
            "vobiz_dropped_frames",
            "Inbound audio frames dropped: the application fell behind.",
            stats.dropped_frames,
        )
        yield counter(
            "vobiz_dropped_events",
            "Non-audio events dropped: the application fell behind.",
            stats.dropped_events,
        )
        yield counter(
            "vobiz_dropped_outbound_frames",
            "Outbound frames discarded unsent by a clear or a close.",
            totals.dropped_outbound,
        )
        yield counter("vobiz_malformed_frames", "Frames refused as malformed.", totals.malformed)
        yield counter(
            "vobiz_late_outbound_frames",
            "Outbound frames written after their pacing deadline.",
            totals.late_outbound,
        )
        yield counter("vobiz_probes", "Plain HTTP requests answered.", stats.probes)
        checkpoints = CounterMetricFamily(
            "vobiz_checkpoints", "Checkpoints by outcome.", labels=["worker", "outcome"]
        )
        for outcome in ("played", "cleared", "closed", "timed_out"):
            checkpoints.add_metric([worker, outcome], totals.checkpoints.get(outcome, 0))
        yield checkpoints
        rejections = CounterMetricFamily(
            "vobiz_handshake_rejections",
            "Connections refused before becoming a stream, by reason.",
            labels=["worker", "reason"],
        )
        for reason, value in (
            ("address", stats.rejected_ip),
            ("auth", stats.rejected_auth),
            ("path", stats.rejected_path),
            ("limit", stats.rejected_limit),
            ("failed", stats.handshake_failures),
            ("evicted", stats.evicted_handshakes),
            ("start_timeout", stats.start_timeouts),
        ):
            rejections.add_metric([worker, reason], value)
        yield rejections
        # Each bucket already counts every value <= its bound (cumulative).
        cumulative: list[tuple[str, float]] = [
            (repr(bound), count)
            for bound, count in zip(CLEAR_BUCKETS, totals.clear_buckets, strict=True)
        ]
        cumulative.append(("+Inf", totals.clear_count))
        clear = HistogramMetricFamily(
            "vobiz_clear_round_trip_seconds",
            "Time from clearAudio to the provider's clearedAudio.",
            labels=labels,
        )
        clear.add_metric([worker], cumulative, sum_value=totals.clear_sum)
        yield clear


def render(server: MediaServer) -> bytes | None:
    """The server's metrics in Prometheus text format, or None without prometheus-client
    (logged once per process)."""
    global _missing_logged
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        if not _missing_logged:
            _missing_logged = True
            log.warning(
                "/metrics answers 404: prometheus-client is not installed "
                "(pip install 'vobiz-async[metrics]')"
            )
        return None
    registry = server._metrics_registry
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(server))
        server._metrics_registry = registry
    return bytes(generate_latest(registry))
