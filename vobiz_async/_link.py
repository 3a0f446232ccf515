"""One media stream over any transport (:class:`StreamLink`), and what it reports to
its server (:class:`ServerStats`) and is admitted with (:class:`Admission`).

The link is the middle layer of :mod:`vobiz_async.server`: the transport (the built-in
connection in :mod:`vobiz_async._listener`, or a framework adapter) hands it whole
messages; it feeds them to the :class:`~vobiz_async.protocol.StreamProtocol`, creates
the :class:`~vobiz_async.session.StreamSession` on ``start`` and enforces the
per-stream limits and timers. Everything here is re-exported by
:mod:`vobiz_async.server`, where users import it from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _logcontext
from ._timers import KeyedTimers
from .events import MalformedFrame, StreamStarted
from .protocol import StreamProtocol
from .session import StreamSession, Transport

if TYPE_CHECKING:
    from .server import MediaServer

__all__ = ["Admission", "ServerStats", "StreamLink"]

log = logging.getLogger("vobiz_async.server")  # one logger for the server's rooms


@dataclass(slots=True)
class ServerStats:
    """Server-wide counters (everything refused or dropped is counted).

    Beyond the obvious ones: ``evicted_handshakes`` (pending connections dropped to
    admit a newer one), ``accept_errors`` (accepts failed for lack of file descriptors),
    ``write_stalls`` (peers that stopped reading past ``write_stall_timeout``),
    ``repeated_starts``/``foreign_starts`` (a second ``start`` on one socket, for the
    same call: ignored; for another: closed with 1008), ``dropped_events`` and
    ``dropped_unknown_events`` (non-audio events over a session's budget), ``probes``
    (plain HTTP requests answered on the media port: ``/healthz``, ``/metrics``, 404s).
    """

    connections: int = 0
    active_connections: int = 0
    rejected_ip: int = 0
    sessions: int = 0
    rejected_auth: int = 0
    rejected_path: int = 0
    rejected_limit: int = 0
    handshake_failures: int = 0
    start_timeouts: int = 0
    idle_timeouts: int = 0
    oversized_messages: int = 0
    events_before_start: int = 0
    handler_errors: int = 0
    malformed_frames: int = 0
    dropped_frames: int = 0
    dropped_events: int = 0
    dropped_unknown_events: int = 0
    evicted_handshakes: int = 0
    accept_errors: int = 0
    write_stalls: int = 0
    repeated_starts: int = 0
    foreign_starts: int = 0
    probes: int = 0


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on a WebSocket upgrade, before it is accepted.

    Attributes:
        ok: accept the upgrade.
        status: the HTTP status to refuse with (401, 403, 404, 400, 503) when not ok.
        reason: a short reason (``"missing"``, ``"mismatch"``, ``"expired"``, ...).
        call_id: for a signed per-call URL, the only call this stream may carry.
    """

    ok: bool
    status: int = 101
    reason: str = "ok"
    call_id: str | None = None


class StreamLink:
    """One media stream over any transport, from the accepted upgrade to the close.

    The transport (the built-in connection, or a framework adapter) calls
    :meth:`text_received` / :meth:`binary_received` for each message, :meth:`writable`
    when its write buffer drained, and :meth:`closed` exactly once at the end.

    Args:
        server: the :class:`MediaServer` whose stream this is.
        transport: how to send frames and close (see :class:`~vobiz_async.session.Transport`).
        admission: what :meth:`MediaServer.admit` said of the upgrade.
        request_path, request_headers: the upgrade request, kept on the session.
    """

    def __init__(
        self,
        server: MediaServer,
        transport: Transport,
        admission: Admission,
        *,
        request_path: str = "",
        request_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.server = server
        self.transport = transport
        self.limits = server.limits
        self.loop = server.loop
        self.request_path = request_path
        self.request_headers: Mapping[str, str] = request_headers or {}
        self._signed_call = admission.call_id
        self.proto = StreamProtocol(
            l16_byte_order=server.l16_byte_order,
            outbound_byte_order=server.outbound_byte_order,
            outbound_format=server.outbound_format,
            lead_ms=server.pacing.lead_ms,
            coalesce_ms=server.pacing.coalesce_ms,
            provider=server.provider,
            max_audio_bytes=server.limits.max_audio_frame_bytes,
            accept_restart=False,
        )
        self.session: StreamSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.started_at = 0.0  # loop time of the start frame
        self.ended_at = 0.0  # loop time of the close
        self._last_frame = self.loop.time()
        self._timers = KeyedTimers(self.loop)
        self._closed = False
        server._links.add(self)
        if self.limits.start_timeout is not None:
            self._timers.later("start", self.limits.start_timeout, self._start_deadline)
        if self.limits.idle_timeout is not None:
            self._timers.later("idle", self.limits.idle_timeout, self._idle_check)

    # ---------------------------------------------------------------- messages in
    def text_received(self, data: bytes | str, now: float | None = None) -> None:
        """One text message (UTF-8 bytes, or ``str`` from a framework); ``now``: the
        loop's time if the caller just read it."""
        if now is None:
            now = self.loop.time()
        self._last_frame = now  # media activity: data, not pings
        if isinstance(data, str):
            self._dispatch(self.proto.receive(data, now=now), len(data))
        else:
            self._dispatch(self.proto.receive_text(data, now=now), len(data))

    def binary_received(self, data: bytes) -> None:
        """One binary message: counted as malformed (providers send text only)."""
        self._last_frame = self.loop.time()
        self._dispatch(self.proto.receive(bytes(data)), len(data))

    def _dispatch(self, events: list[Any], size: int) -> None:
        session = self.session
        for event in events:
            if type(event) is MalformedFrame:
                self._on_malformed(event)
        if session is not None:
            session.events_received(events, size)
            return
        for event in events:
            if type(event) is StreamStarted:
                assert isinstance(event, StreamStarted)
                session = self._on_start(event)
                if session is None:
                    return
            elif type(event) is not MalformedFrame:
                # A well-formed event before any start: no session to give it to.
                self.server.stats.events_before_start += 1

    def _on_malformed(self, event: MalformedFrame) -> None:
        with _logcontext.about(self):  # its log lines carry the call (rare path)
            self._malformed(event)

    def _malformed(self, event: MalformedFrame) -> None:
        stats = self.server.stats
        if event.reason == "foreign-start":
            # A second start on this socket for another call: it would dodge the
            # signed-URL call check. Reconnects are new sockets (spec 3.1, 4.1).
            stats.foreign_starts += 1
            log.warning("second start on one socket for another call: closing")
            self.transport.close(1008, "start for another call")
        elif event.reason == "repeated-start":
            stats.repeated_starts += 1
        log.debug("malformed frame (%s): %s", event.reason, event.detail)

    def _on_start(self, started: StreamStarted) -> StreamSession | None:
        with _logcontext.about(self):  # its log lines carry the call once it is one
            return self._start(started)

    def _start(self, started: StreamStarted) -> StreamSession | None:
        server = self.server
        if self._signed_call is not None and started.call_id != self._signed_call:
            log.warning(
                "signed URL for call %r used by call %r",
                self._signed_call[:64],
                started.call_id[:64],
            )
            server.stats.rejected_auth += 1
            self.transport.close(1008, "token not valid for this call")
            return None
        if server._session_count >= self.limits.max_sessions:
            server.stats.rejected_limit += 1
            self.transport.close(1013, "too many streams")
            return None
        self._timers.cancel("start")
        self.started_at = self.loop.time()
        session = StreamSession(
            self.transport,
            self.proto,
            started,
            pacer=server._pacer,
            limits=self.limits,
            pacing=server.pacing,
            request_path=self.request_path,
            request_headers=self.request_headers,
            on_dropped_frame=server._count_dropped_frame,
            on_dropped_event=server._count_dropped_event,
        )
        self.session = session
        # The call's first log line (frame handling has set the log context to it).
        log.info(
            "call started: stream %s call %s provider %s in %s out %s path %s",
            session.stream_id,
            session.call_id,
            session.provider,
            session.inbound_format.content_type,
            session.outbound_format.content_type,
            self.request_path or "/",
        )
        if server.record:
            session.record()
        server._register(session)
        self.task = self.loop.create_task(server._run_handler(session, self))
        return session

    # ------------------------------------------------------------------ lifecycle
    def writable(self) -> None:
        """The transport's write buffer drained: resume paced sending."""
        if self.session is not None:
            self.session.writable()

    def closed(self, code: int | None = None) -> None:
        """The transport closed (with ``code`` when known): end the stream."""
        if self._closed:
            return
        self._closed = True
        self._timers.close()
        server = self.server
        server._links.discard(self)
        session = self.session
        if session is not None:
            server._forget(session)
            session.connection_closed(code)
            self.ended_at = self.loop.time()
            if self.task is None or self.task.done():
                server._call_finished(self, session)
                session.release()
            else:  # its handler still runs (a checkpoint may still end): still counted
                server._finishing.add(self)
        else:
            self.proto.connection_closed()
            server._call_totals.add(self)  # metrics: folded in once, at the close
        server.stats.malformed_frames += self.proto.stats.malformed

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the stream's transport (a close handshake where the transport has one)."""
        self.transport.close(code, reason)

    # --------------------------------------------------------------------- timers
    def _start_deadline(self) -> None:
        if self.session is None and not self._closed:
            self.server.stats.start_timeouts += 1
            self.transport.close(1008, "no start frame")

    def _idle_check(self) -> None:
        idle = self.limits.idle_timeout
        if idle is None or self._closed:
            return
        quiet = self.loop.time() - self._last_frame
        if quiet >= idle:
            self.server.stats.idle_timeouts += 1
            self.transport.close(1001, "idle")
        else:
            self._timers.later("idle", idle - quiet, self._idle_check)
