"""Sessions registered in Redis and controlled from any process or host (issue 17).

A :class:`Cluster` attached to a media server (``serve(handler, cluster=cluster)``)
registers every live session in Redis with a lease; any other process holding a
``Cluster`` on the same Redis finds a session by stream id or call id and drives it
through a :class:`RemoteSession`: the control half of ``StreamSession`` (``play``,
``play_encoded``, ``checkpoint``, ``clear``, ``stop``, ``stats``) and its events.

Keys (``NS`` is the namespace, ``vobiz`` by default)::

    NS:session:STREAM_ID   hash: stream_id, call_id, worker, started_at, provider (TTL = lease)
    NS:call:CALL_ID        the call's latest stream id (TTL = lease)
    NS:events:STREAM_ID    Redis Stream of the session's events (MAXLEN ~max_stream_events)
    NS:cmd:WORKER          Redis Stream of commands for one worker (TTL = lease)
    NS:reply:REQUEST       list holding one command's reply (TTL = lease)
    NS:registered:all      pub/sub channel announcing registrations (a wake-up only)

Transport and delivery guarantees:

* Leases. A worker renews its sessions' keys every ``lease / 3`` seconds, so a session
  disappears from Redis at most ``lease`` seconds after its worker dies, stalls or loses
  Redis. A worker that comes back registers its still-live sessions again.
* Commands go over the worker's Redis Stream, read by that worker alone (no consumer
  group), in order. A Lua script checks that the session is registered and appends the
  command in one atomic step, so a command for a session that has ended fails at once
  with :class:`~vobiz_async.errors.SessionGoneError` and is never queued. Each command
  is executed **at most once**: there are no retries and no redelivery, so there are no
  duplicates. Commands start in the order sent; like local calls, ``play`` and
  ``checkpoint`` queue behind each other on the session while ``clear`` and ``stop``
  act at once.
* Replies go to a per-command list the caller waits on with ``BLPOP`` in slices of
  ``lease / 3``; between slices it checks the lease. If the worker dies mid-command the
  caller gets ``SessionGoneError(reason="lease-expired")`` within about ``4/3 * lease``
  seconds: the command may have run in part (audio partly played), never twice. A
  worker that stalls past its lease and resumes still runs the commands queued for it;
  their callers have already been told the session was gone.
* Events (DTMF, checkpoint acknowledgements and voided checkpoints, ``clearedAudio``,
  ``stop``, then a final ``closed`` record with the close code) are appended in order to
  the session's Redis Stream. Every reader sees every retained event, in order; events
  are kept ``max_stream_events`` deep and ``event_retention`` seconds after the close.
  Each carries a sequence number, so a reader that fell behind the trim, or a worker
  that dropped events past ``max_pending_events``, shows up as
  ``RemoteSession.missed_events`` (and ``ClusterStats.dropped_events`` on the worker).
  Events still buffered in a worker that dies are lost. Inbound audio is forwarded only
  when the worker's ``ClusterConfig.forward_audio`` is on (off by default).
* Audio sent with ``play``/``play_encoded`` travels as raw bytes, at most
  ``max_audio_bytes`` per command (1 MiB: 32 s of 16 kHz PCM16); split longer prompts.

Nothing waits forever on a dead worker: every wait is cut in ``lease / 3`` slices that
re-check the lease. Against a live worker, ``clear``/``stop``/``stats`` give up after
``command_timeout`` (``TimeoutError``), ``checkpoint`` after its own timeout plus that;
``play`` waits until its audio is on the wire, as it does locally. Waiting for a session
to register (``session``, ``session_for_call``) ends in ``TimeoutError`` after ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "vobiz_async.cluster needs the redis package: pip install 'vobiz-async[cluster]'"
    ) from exc

from . import _cluster_wire as wire
from .errors import CodecError, SessionGoneError, StreamClosedError, ValidationError, VobizError
from .events import (
    AudioReceived,
    CheckpointOutcome,
    CheckpointVoided,
    InboundEvent,
)
from .protocol import ClearSummary
from .server import SessionStats

if TYPE_CHECKING:
    from .server import MediaServer, StreamSession

__all__ = ["Cluster", "ClusterConfig", "ClusterStats", "RemoteSession", "SessionInfo"]

log = logging.getLogger("vobiz_async.cluster")

# Append a command only while the session is registered: KEYS session, cmd stream;
# ARGV maxlen, ttl ms, then field/value pairs. Returns 0 when the session is gone.
_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
# Delete a call's key only if it still names this stream (a newer stream may own it).
_DEL_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Bounds and timings of a :class:`Cluster` (the same on every process of a cluster).

    Attributes:
        lease: seconds a registration lives without renewal; a dead worker's sessions
            vanish within it, and every remote wait re-checks it each ``lease / 3``.
        command_timeout: seconds a remote ``clear``/``stop``/``stats`` waits for its
            reply from a live worker (``checkpoint`` adds its own timeout to it; ``play``
            waits as long as the worker is alive, since prompts can be long).
        max_audio_bytes: largest audio payload of one ``play``/``play_encoded`` command.
        max_stream_events: events kept per session stream (approximate ``MAXLEN``).
        max_command_backlog: commands kept in a worker's command stream (approximate
            ``MAXLEN``); a worker reads them as they come, so this only bounds the
            stream of a worker that stopped reading.
        max_pending_events: events a worker buffers while Redis is slow; past it new
            events are dropped and counted (``ClusterStats.dropped_events``).
        event_retention: seconds a session's events stay readable after it closed.
        forward_audio: also publish inbound audio frames as events (bounded like the
            rest; about 50 events a second per call).
        provider: the ``provider`` recorded with each session.
    """

    lease: float = 10.0
    command_timeout: float = 10.0
    max_audio_bytes: int = 1024 * 1024
    max_stream_events: int = 1000
    max_command_backlog: int = 10_000
    max_pending_events: int = 10_000
    event_retention: float = 60.0
    forward_audio: bool = False
    provider: str = "vobiz"

    def __post_init__(self) -> None:
        for name in ("lease", "command_timeout", "event_retention"):
            if not getattr(self, name) > 0:
                raise ValidationError(name, "must be a positive number of seconds")
        for name in (
            "max_audio_bytes",
            "max_stream_events",
            "max_command_backlog",
            "max_pending_events",
        ):
            if getattr(self, name) < 1:
                raise ValidationError(name, "must be at least 1")

    @property
    def slice(self) -> float:
        """How often leases are renewed and re-checked, in seconds."""
        return self.lease / 3


@dataclass(slots=True)
class ClusterStats:
    """A worker's cluster counters (nothing is dropped without being counted here)."""

    registered: int = 0
    commands: int = 0
    command_errors: int = 0
    events_published: int = 0
    dropped_events: int = 0
    redis_errors: int = 0


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A registered session, as ``sessions list`` prints it.

    Attributes:
        stream_id, call_id: from the stream's ``start``.
        worker: the id of the worker process holding its socket.
        started_at: ISO 8601 UTC time of registration.
        provider: ``"vobiz"``.
    """

    stream_id: str
    call_id: str
    worker: str
    started_at: str
    provider: str

    @classmethod
    def _from_hash(cls, data: dict[bytes, bytes]) -> SessionInfo | None:
        try:
            return cls(**{f.name: data[f.name.encode()].decode() for f in fields(cls)})
        except KeyError:
            return None


@dataclass(slots=True)
class _Op:
    """One write the worker's writer task performs, in order."""

    kind: Literal["register", "event", "end"]
    stream_id: str
    payload: wire.Fields
    session: StreamSession | None = None


class Cluster:
    """Sessions of many media-server processes, registered and controlled over Redis.

    The same object serves both sides: pass it to ``serve(..., cluster=cluster)`` in a
    worker, and call :meth:`session` / :meth:`session_for_call` from anywhere. Close it
    with ``await cluster.close()`` or ``async with Cluster(url) as cluster``.

    Args:
        redis_url: ``redis://HOST:PORT/DB`` (``rediss://`` for TLS).
        namespace: prefix of every key, so clusters can share one Redis.
        worker_id: this process's id in the registry (default ``HOST:PID:RANDOM``).
        config: see :class:`ClusterConfig`.

    Raises:
        ValidationError: the URL or namespace is not usable.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        namespace: str = "vobiz",
        worker_id: str | None = None,
        config: ClusterConfig | None = None,
    ) -> None:
        if not namespace or any(c.isspace() for c in namespace):
            raise ValidationError("namespace", "must be a non-empty word")
        try:
            self.redis: aioredis.Redis = aioredis.Redis.from_url(redis_url)
        except ValueError as exc:
            raise ValidationError("redis_url", str(exc)) from None
        self.namespace = namespace
        self.config = config or ClusterConfig()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = ClusterStats()
        self._send = self.redis.register_script(_SEND)
        self._server: MediaServer | None = None
        self._tracked: dict[StreamSession, str] = {}
        self._live: dict[str, tuple[StreamSession, wire.Fields]] = {}
        self._seq: dict[str, itertools.count[int]] = {}
        self._ops: deque[_Op] = deque()
        self._pending_events = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._cmd_last = "0-0"

    # ------------------------------------------------------------------ keys
    def _key(self, kind: str, name: str) -> str:
        return f"{self.namespace}:{kind}:{name}"

    @property
    def _ms(self) -> int:
        return int(self.config.lease * 1000)

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Detach from the server (if still attached) and close the Redis connections."""
        if self._server is not None:
            await self._detach(self._server)
        await self.redis.aclose()

    # ========================================================== worker side
    async def _attach(self, server: MediaServer) -> None:
        """Called by ``MediaServer.start``: start renewing leases and reading commands.

        Raises:
            ValidationError: the cluster is already attached to a server.
            VobizError: Redis cannot be reached.
        """
        if self._server is not None:
            raise ValidationError("cluster", "already attached to a media server")
        try:
            seconds, micros = await self.redis.time()  # commands from now on, Redis's clock
        except (RedisError, OSError) as exc:
            raise VobizError(f"cluster: cannot reach Redis: {exc}") from exc
        self._cmd_last = f"{seconds * 1000 + micros // 1000}-0"
        self._server = server
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._write_loop(), name="vobiz-cluster-writer"),
            loop.create_task(self._read_commands(), name="vobiz-cluster-commands"),
        ]

    async def _detach(self, server: MediaServer) -> None:
        """Called by ``MediaServer.close``: finish commands, flush, drop our command key."""
        if self._server is not server:
            return
        for session in list(self._tracked):
            self._session_ended(session)
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.slice):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        reader = self._loops[1]
        reader.cancel()
        with contextlib.suppress(TimeoutError):  # let the writer flush what is queued
            async with asyncio.timeout(self.config.slice):
                while self._ops and not self._loops[0].done():
                    self._wake.set()
                    await asyncio.sleep(0.01)
        for task in (*self._loops, *self._tasks):
            task.cancel()
        await asyncio.gather(*self._loops, *self._tasks, return_exceptions=True)
        self._loops = []
        self._server = None
        await self._safe(self.redis.delete(self._key("cmd", self.worker_id)))

    def _session_started(self, session: StreamSession) -> None:
        """Called by the server when a session registers (or re-binds to a new id)."""
        old = self._tracked.get(session)
        if old == session.stream_id:
            return
        if old is not None:
            self._session_ended(session)
        stream_id = session.stream_id
        info: wire.Fields = {
            "stream_id": stream_id,
            "call_id": session.call_id,
            "worker": self.worker_id,
            "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "provider": self.config.provider,
        }
        self._tracked[session] = stream_id
        self._live[stream_id] = (session, info)
        self._seq[stream_id] = itertools.count()
        session.observe(lambda event: self._on_event(session, event))
        self.stats.registered += 1
        self._queue(_Op("register", stream_id, info))

    def _session_ended(self, session: StreamSession) -> None:
        """Called by the server when a session is forgotten: publish ``closed``, deregister."""
        stream_id = self._tracked.pop(session, None)
        if stream_id is None:
            return
        self._live.pop(stream_id, None)
        self._seq.pop(stream_id, None)
        session.observe(None)
        self._queue(_Op("end", stream_id, {"call_id": session.call_id}, session))

    def _on_event(self, session: StreamSession, event: InboundEvent) -> None:
        """The session's tap, on the read path: encode and queue, never block."""
        if type(event) is AudioReceived and not self.config.forward_audio:
            return
        stream_id = self._tracked.get(session)
        counter = self._seq.get(stream_id) if stream_id is not None else None
        if stream_id is None or counter is None:
            return
        payload = wire.encode_event(event)
        if payload is None:
            return
        payload["seq"] = str(next(counter))
        if self._pending_events >= self.config.max_pending_events:
            self.stats.dropped_events += 1
            return
        self._pending_events += 1
        self._queue(_Op("event", stream_id, payload))

    def _queue(self, op: _Op) -> None:
        self._ops.append(op)
        self._wake.set()

    async def _safe(self, work: Awaitable[Any]) -> bool:
        """Await a Redis call; count and log a failure instead of raising."""
        try:
            await work
        except (RedisError, OSError) as exc:
            self.stats.redis_errors += 1
            log.warning("redis: %s: %s", type(exc).__name__, exc)
            return False
        return True

    async def _write_loop(self) -> None:
        """The one task that writes registrations, renewals and events, in order."""
        loop = asyncio.get_running_loop()
        renew_at = loop.time()
        while True:
            if loop.time() >= renew_at:
                await self._safe(self._renew())
                renew_at = loop.time() + self.config.slice
            if not self._ops:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, renew_at - loop.time())):
                        await self._wake.wait()
                continue
            batch = [self._ops.popleft() for _ in range(min(len(self._ops), 500))]
            if await self._safe(self._flush(batch)):
                sent = sum(op.kind == "event" for op in batch)
                self._pending_events -= sent
                self.stats.events_published += sent
            else:
                self._ops.extendleft(reversed(batch))
                await asyncio.sleep(min(self.config.slice, 0.5))

    async def _renew(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for stream_id, (session, info) in self._live.items():
            key = self._key("session", stream_id)
            pipe.hset(key, mapping=info)
            pipe.pexpire(key, self._ms)
            pipe.set(self._key("call", session.call_id), stream_id, px=self._ms)
            pipe.pexpire(self._key("events", stream_id), self._ms)
        pipe.pexpire(self._key("cmd", self.worker_id), self._ms)
        await pipe.execute()

    async def _flush(self, batch: list[_Op]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        config = self.config
        for op in batch:
            events = self._key("events", op.stream_id)
            if op.kind == "register":
                key = self._key("session", op.stream_id)
                call_id = wire.text(op.payload["call_id"])
                pipe.hset(key, mapping=op.payload)
                pipe.pexpire(key, self._ms)
                pipe.set(self._key("call", call_id), op.stream_id, px=self._ms)
                pipe.publish(self._key("registered", "all"), call_id + " " + op.stream_id)
            elif op.kind == "event":
                pipe.xadd(events, op.payload, maxlen=config.max_stream_events, approximate=True)
                pipe.pexpire(events, self._ms)
            else:
                code = op.session.close_code if op.session is not None else None
                closed: wire.Fields = {"type": "closed", "seq": "-1", "data": json.dumps(code)}
                pipe.xadd(events, closed, maxlen=config.max_stream_events, approximate=True)
                pipe.pexpire(events, int(config.event_retention * 1000))
                pipe.delete(self._key("session", op.stream_id))
                call_key = self._key("call", wire.text(op.payload["call_id"]))
                pipe.eval(_DEL_IF, 1, call_key, op.stream_id)
        await pipe.execute()

    async def _read_commands(self) -> None:
        """Read this worker's command stream and run each command in its own task."""
        key = self._key("cmd", self.worker_id)
        block = max(1, int(self.config.slice * 1000))
        loop = asyncio.get_running_loop()
        while True:
            try:
                reply = await self.redis.xread({key: self._cmd_last}, block=block, count=100)
            except (RedisError, OSError) as exc:
                self.stats.redis_errors += 1
                log.warning("redis: reading commands: %s", exc)
                await asyncio.sleep(min(self.config.slice, 1.0))
                continue
            for entry_id, data in wire.entries(reply):
                self._cmd_last = entry_id
                task = loop.create_task(self._execute(data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _execute(self, data: dict[bytes, bytes]) -> None:
        self.stats.commands += 1
        stream_id = data.get(b"stream_id", b"").decode()
        request = data.get(b"req", b"").decode()
        server = self._server
        session = server.get_session(stream_id) if server is not None else None
        reply: dict[str, Any]
        if session is None or session.closed or self._tracked.get(session) != stream_id:
            reply = {"error": "gone"}
        else:
            try:
                args = json.loads(data.get(b"args", b"{}"))
                op = data.get(b"op", b"").decode()
                reply = {"ok": await self._run(session, op, args, data.get(b"audio", b""))}
            except StreamClosedError:
                reply = {"error": "gone"}
            except ValidationError as exc:
                reply = {"error": "invalid", "field": exc.field, "reason": exc.reason}
            except CodecError as exc:
                reply = {"error": "codec", "message": str(exc)}
            except Exception as exc:
                log.exception("cluster command failed for stream %s", stream_id)
                reply = {"error": "failed", "message": f"{type(exc).__name__}: {exc}"}
        if "error" in reply:
            self.stats.command_errors += 1
        if not request:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self._key("reply", request), json.dumps(reply))
        pipe.pexpire(self._key("reply", request), self._ms)
        await self._safe(pipe.execute())

    async def _run(
        self, session: StreamSession, op: str, args: dict[str, Any], audio: bytes
    ) -> Any:
        if op == "play":
            return await session.play(audio, args.get("sample_rate"))
        if op == "play_encoded":
            return await session.play_encoded(audio)
        if op == "checkpoint":
            name = str(args["name"])
            outcome = await session.checkpoint(name, timeout=args.get("timeout"))
            if outcome is not CheckpointOutcome.PLAYED:  # local code learns it from the call
                self._on_event(session, CheckpointVoided(name, outcome))
            return outcome.value
        if op == "clear":
            return asdict(await session.clear(wait=args.get("wait")))
        if op == "stop":
            await session.stop()
            return True
        if op == "stats":
            return asdict(session.stats)
        raise ValidationError("op", f"unknown cluster command {op!r}")

    # ========================================================== control side
    async def sessions(self) -> list[SessionInfo]:
        """Every session registered now, on any worker (order not defined)."""
        keys = [key async for key in self.redis.scan_iter(match=self._key("session", "*"))]
        if not keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        found = (
            SessionInfo._from_hash({wire.raw(k): wire.raw(v) for k, v in data.items()})
            for data in await pipe.execute()
        )
        return [info for info in found if info is not None]

    async def session(self, stream_id: str, *, timeout: float | None = 10.0) -> RemoteSession:
        """The session of ``stream_id`` on whichever worker holds it, waiting for it to
        register (``start`` may come after the REST answer).

        Raises:
            TimeoutError: no such session registered within ``timeout`` seconds.
        """
        return await self._wait(lambda: self._by_stream(stream_id), stream_id, 1, timeout)

    async def wait_for_session(
        self, stream_id: str, *, timeout: float | None = 10.0
    ) -> RemoteSession:
        """Same as :meth:`session`, named like ``MediaServer.wait_for_session`` so that
        ``StartedStream.session(cluster)`` works as with a local server."""
        return await self.session(stream_id, timeout=timeout)

    async def session_for_call(
        self, call_id: str, *, timeout: float | None = 10.0
    ) -> RemoteSession:
        """The (latest) session of a call, on whichever worker holds it.

        Raises:
            TimeoutError: no session of that call registered within ``timeout`` seconds.
        """
        return await self._wait(lambda: self._by_call(call_id), call_id, 0, timeout)

    async def wait_for_call(self, call_id: str, *, timeout: float | None = 10.0) -> RemoteSession:
        """Same as :meth:`session_for_call`, named like ``MediaServer.wait_for_call``."""
        return await self.session_for_call(call_id, timeout=timeout)

    async def stop_session(self, stream_id: str) -> bool:
        """Stop a session from anywhere; False when it was not (or no longer) registered."""
        info = await self._by_stream(stream_id)
        if info is None:
            return False
        try:
            await RemoteSession(self, info, "0-0", 0).stop()
        except SessionGoneError:
            return False
        return True

    async def _by_stream(self, stream_id: str) -> SessionInfo | None:
        data = await self.redis.hgetall(self._key("session", stream_id))
        return SessionInfo._from_hash({wire.raw(k): wire.raw(v) for k, v in data.items()})

    async def _by_call(self, call_id: str) -> SessionInfo | None:
        stream_id = await self.redis.get(self._key("call", call_id))
        if stream_id is None:
            return None
        return await self._by_stream(wire.text(stream_id))

    async def _wait(
        self,
        lookup: Callable[[], Awaitable[SessionInfo | None]],
        wanted: str,
        field: int,
        timeout: float | None,
    ) -> RemoteSession:
        info = await lookup()
        if info is None:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._key("registered", "all"))
                async with asyncio.timeout(timeout):
                    info = await lookup()  # subscribed first, so no announcement is missed
                    while info is None:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=self.config.slice
                        )
                        if message is not None:
                            words = bytes(message["data"]).decode().split(" ", 1)
                            if words[field] != wanted:
                                continue
                        info = await lookup()  # announced, or a periodic re-check
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        last = await self.redis.xrevrange(self._key("events", info.stream_id), count=1)
        if not last:
            return RemoteSession(self, info, "0-0", 0)
        seq = int((last[0][1] or {}).get(b"seq", b"-1"))
        return RemoteSession(self, info, wire.text(last[0][0]), seq + 1)

    async def _command(
        self, info: SessionInfo, op: str, args: dict[str, Any], audio: bytes, limit: float | None
    ) -> Any:
        """Send one command to the session's worker and wait for its reply."""
        if len(audio) > self.config.max_audio_bytes:
            raise ValidationError(
                "audio",
                f"{len(audio)} bytes is over the cluster's max_audio_bytes "
                f"({self.config.max_audio_bytes}); send it in parts",
            )
        request = uuid.uuid4().hex
        session_key = self._key("session", info.stream_id)
        reply_key = self._key("reply", request)
        pairs: list[str | bytes] = ["req", request, "stream_id", info.stream_id, "op", op]
        pairs += ["args", json.dumps(args)]
        if audio:
            pairs += ["audio", audio]
        argv: list[str | bytes | int] = [self.config.max_command_backlog, self._ms, *pairs]
        sent = await self._send(keys=[session_key, self._key("cmd", info.worker)], args=argv)
        if not sent:
            raise SessionGoneError(info.stream_id, await self._gone_reason(info.stream_id))
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        ended_grace = True
        while True:
            wait = self.config.slice
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    raise TimeoutError(f"no reply to {op} for stream {info.stream_id}")
            got = await self.redis.blpop([reply_key], timeout=max(wait, 0.01))
            if got is not None:
                return wire.reply(info.stream_id, wire.raw(got[1]))
            if await self.redis.exists(session_key):
                continue
            reason = await self._gone_reason(info.stream_id)
            if reason == "ended" and ended_grace:  # the worker is alive: its reply is near
                ended_grace = False
                continue
            raise SessionGoneError(info.stream_id, reason)

    async def _gone_reason(self, stream_id: str) -> str:
        last = await self.redis.xrevrange(self._key("events", stream_id), count=1)
        data = last[0][1] if last else None
        return "ended" if data and data.get(b"type") == b"closed" else "lease-expired"


class RemoteSession:
    """The control half of a ``StreamSession`` held by another process.

    Every method raises :class:`~vobiz_async.errors.SessionGoneError` when the session
    has ended or its worker's lease expired (see the module's guarantees), and the Redis
    client's errors when Redis itself cannot be reached.
    """

    def __init__(
        self, cluster: Cluster, info: SessionInfo, events_from: str, next_seq: int
    ) -> None:
        self.cluster = cluster
        self.info = info
        self.close_code: int | None = None
        self.missed_events = 0
        """Events a reader of this session could not get: trimmed from the session's
        stream before it read them, or dropped by the worker (``max_pending_events``)."""
        self._events_from = events_from
        self._next_seq = next_seq
        self._closed = False

    @property
    def stream_id(self) -> str:
        """The stream id."""
        return self.info.stream_id

    @property
    def call_id(self) -> str:
        """The call id."""
        return self.info.call_id

    @property
    def worker(self) -> str:
        """The worker holding the session's socket."""
        return self.info.worker

    @property
    def closed(self) -> bool:
        """Whether an event iterator has seen the session end."""
        return self._closed

    def __repr__(self) -> str:
        return f"<RemoteSession stream_id={self.stream_id!r} worker={self.worker!r}>"

    async def _call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        audio: bytes = b"",
        *,
        limit: float | None,
    ) -> Any:
        return await self.cluster._command(self.info, op, args or {}, audio, limit)

    async def play(self, pcm: bytes, sample_rate: int | None = None) -> float:
        """Speak on the remote session (see ``StreamSession.play``).

        Returns:
            Milliseconds of audio sent (less when a clear or the stream's end cut it).

        Raises:
            ValidationError: more than ``ClusterConfig.max_audio_bytes`` of audio.
            SessionGoneError: the session had ended, or its worker died meanwhile.
        """
        return float(await self._call("play", {"sample_rate": sample_rate}, pcm, limit=None))

    async def play_encoded(self, payload: bytes) -> float:
        """Play audio already in the session's outbound format (``StreamSession.play_encoded``)."""
        return float(await self._call("play_encoded", {}, payload, limit=None))

    async def checkpoint(
        self, name: str | None = None, *, timeout: float | None = None
    ) -> CheckpointOutcome:
        """Mark the end of an utterance and wait until it has played (see
        ``StreamSession.checkpoint``): ``PLAYED``, ``CLEARED``, ``CLOSED`` (also when the
        stream had already ended) or ``TIMED_OUT``.

        Raises:
            SessionGoneError: the worker's lease expired, so the outcome is unknown.
        """
        name = name or f"cp-{uuid.uuid4().hex[:8]}"
        limit = self.cluster.config.command_timeout + (timeout if timeout is not None else 3600)
        try:
            value = await self._call("checkpoint", {"name": name, "timeout": timeout}, limit=limit)
        except SessionGoneError as exc:
            if exc.reason == "ended":
                return CheckpointOutcome.CLOSED
            raise
        return CheckpointOutcome(value)

    async def clear(self, *, wait: bool | None = None) -> ClearSummary:
        """Barge in (``StreamSession.clear``); returns what was interrupted."""
        data = await self._call("clear", {"wait": wait}, limit=self.cluster.config.command_timeout)
        data["voided"] = tuple(data["voided"])
        return ClearSummary(**data)

    async def stop(self) -> None:
        """End the stream and wait until its socket closed (``StreamSession.stop``)."""
        await self._call("stop", limit=self.cluster.config.command_timeout)

    async def stats(self) -> SessionStats:
        """A snapshot of the session's counters, taken on its worker."""
        data = await self._call("stats", limit=self.cluster.config.command_timeout)
        known = {f.name for f in fields(SessionStats)}
        return SessionStats(**{key: value for key, value in data.items() if key in known})

    def __aiter__(self) -> AsyncIterator[InboundEvent]:
        return self.events()

    async def events(self, *, from_start: bool = False) -> AsyncIterator[InboundEvent]:
        """The session's events from when this object was made (or its first retained
        event with ``from_start``); ends when the stream closes.

        Yields ``DtmfReceived``, ``PlaybackCheckpointReached``, ``CheckpointVoided``,
        ``AudioCleared``, ``StreamStopped`` and, when the worker forwards audio,
        ``AudioReceived``.

        Raises:
            SessionGoneError: the worker's lease expired before the stream's end.
        """
        cluster = self.cluster
        redis = cluster.redis
        events_key = cluster._key("events", self.stream_id)
        session_key = cluster._key("session", self.stream_id)
        block = max(1, int(cluster.config.slice * 1000))
        last, expected = ("0-0", 0) if from_start else (self._events_from, self._next_seq)
        while True:
            entries = wire.entries(await redis.xread({events_key: last}, block=block, count=100))
            if not entries and not await redis.exists(session_key):
                entries = wire.entries(await redis.xread({events_key: last}, count=100))
                if not entries and await cluster._gone_reason(self.stream_id) == "ended":
                    self._closed = True  # it closed before this reader's starting point
                    return
                if not entries:
                    raise SessionGoneError(self.stream_id, "lease-expired")
            for entry_id, data in entries:
                last = entry_id
                if data.get(b"type") == b"closed":
                    self._closed = True
                    self.close_code = json.loads(data.get(b"data", b"null"))
                    return
                seq = int(data.get(b"seq", b"0"))
                if seq > expected:
                    self.missed_events += seq - expected
                expected = seq + 1
                event = wire.decode_event(data)
                if event is not None:
                    yield event
