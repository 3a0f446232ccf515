"""The REST fault suite: every fault FakeVobiz can inject, counted, must give 0 duplicate
starts, 0 lost stream ids and 0 untyped errors (issue 12).

Each scenario runs the real client against the emulator on loopback. A *duplicate* is
a second stream at the same ``service_url`` on the call; a *lost id* is a stream that
exists at the end whose id the client neither returned nor pointed at with an error
carrying the call and ``service_url``; an *untyped error* is any exception that is not
a :class:`~vobiz_async.errors.VobizError`. A hostile id that reaches the network counts
as a *wrong request*. ``python -m tests.test_rest_faults`` prints the table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from vobiz_async.client import RetryPolicy, Timeouts, VobizClient
from vobiz_async.errors import VobizError
from vobiz_async.testing import FakeVobiz, Fault

WS = "wss://agent.example.net/media?tenant=42"
DEEP = "[" * 100_000 + "]" * 100_000


@dataclasses.dataclass
class Outcome:
    """What one scenario left behind."""

    duplicates: int = 0
    lost: int = 0
    untyped: int = 0
    wrong_requests: int = 0
    error: str = ""


def _client(fake: FakeVobiz, *, total: float = 5.0, reconcile: float = 0.05) -> VobizClient:
    fields = RetryPolicy.__dataclass_fields__
    retry: dict[str, Any] = {
        "attempts": 3,
        "base_delay": 0.01,
        "max_delay": 0.02,
        "reconcile_delay": reconcile,
    }
    policy = RetryPolicy(**{k: v for k, v in retry.items() if k in fields})
    return fake.client(retry=policy, timeout=Timeouts(connect=1.0, total=total))


async def _settle(fake: FakeVobiz) -> None:
    """Let held (slow) requests finish, so late-created streams are counted."""
    for _ in range(500):
        if not fake.rest.in_flight:
            return
        await asyncio.sleep(0.01)


async def _start(faults: list[Fault], *, total: float = 5.0, reconcile: float = 0.05) -> Outcome:
    async with FakeVobiz() as fake:
        call = fake.call(audio=b"", seconds=1.0)
        for fault in faults:
            fake.rest.inject(fault)
        returned: str | None = None
        error: BaseException | None = None
        try:
            async with asyncio.timeout(15), _client(fake, total=total, reconcile=reconcile) as c:
                returned = (await c.streams.start(call.call_uuid, WS)).stream_id
        except Exception as exc:
            error = exc
        await _settle(fake)
        mine = [
            r
            for r in fake.streams.values()
            if r.call_uuid == call.call_uuid and r.service_url == WS
        ]
        pointed = (
            getattr(error, "call_uuid", None) == call.call_uuid
            and getattr(error, "service_url", None) == WS
        )
        return Outcome(
            duplicates=max(0, len(mine) - 1),
            lost=sum(1 for r in mine if r.stream_id != returned and not pointed),
            untyped=int(error is not None and not isinstance(error, VobizError)),
            error=type(error).__name__ if error is not None else "",
        )


async def _iterate_all(client: VobizClient, call_uuid: str) -> int:
    return len([s async for s in client.streams.iterate(call_uuid)])


async def _call_on(
    fn: Callable[[VobizClient, str, str], Awaitable[Any]], faults: list[Fault]
) -> Outcome:
    async with FakeVobiz() as fake:
        call = fake.call(audio=b"", seconds=1.0)
        async with _client(fake) as client:
            started = await client.streams.start(call.call_uuid, WS)
            before = len(fake.requests)
            for fault in faults:
                fake.rest.inject(fault)
            error: BaseException | None = None
            try:
                async with asyncio.timeout(15):
                    await fn(client, call.call_uuid, started.stream_id)
            except Exception as exc:
                error = exc
        return Outcome(
            untyped=int(error is not None and not isinstance(error, VobizError)),
            wrong_requests=len(fake.requests) - before if fn.__name__ == "hostile" else 0,
            error=type(error).__name__ if error is not None else "",
        )


async def get(client: VobizClient, call_uuid: str, stream_id: str) -> Any:
    return await client.streams.get(call_uuid, stream_id)


async def listing(client: VobizClient, call_uuid: str, stream_id: str) -> Any:
    return await client.streams.list(call_uuid)


async def iterate(client: VobizClient, call_uuid: str, stream_id: str) -> Any:
    return await _iterate_all(client, call_uuid)


async def hostile(client: VobizClient, call_uuid: str, stream_id: str) -> Any:
    """Every hostile id, for stop and get; each must fail before any request."""
    failures = 0
    for bad in (".", "..", "%2e%2e", "a?b", "a#b", "a/b", " a", "", "x" * 129, "a\n"):
        for coro in (
            lambda b=bad: client.streams.stop(call_uuid, b),
            lambda b=bad: client.streams.get(call_uuid, b),
            lambda b=bad: client.streams.stop_all(b),
            lambda b=bad: client.streams.start(b, WS),
        ):
            try:
                await coro()
            except VobizError:
                failures += 1
    return failures


def _lost(status: int = 502) -> Fault:
    return Fault(status=status, method="POST", after=True)


NO_ID = '{"message": "audio streaming started"}'
BAD_TIME = (
    '{"stream_id": "s1", "status": "in-progress", "start_time": "yesterday-ish",'
    ' "end_time": "Mon, 04 Sept 2026 10:02:11 +0000"}'
)


def _bomb() -> bytes:
    """About 0.2 MB of gzip that inflates to 200 MB of spaces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    out = [packer.compress(block) for _ in range(200)]
    return b"".join(out) + packer.flush()


START_SCENARIOS: dict[str, tuple[list[Fault], dict[str, float]]] = {
    "lost response (502 after create), list ok": ([_lost()], {}),
    "lost response (500 after create), list ok": ([_lost(500)], {}),
    "lost response (connection dropped after create)": (
        [Fault(drop=True, method="POST", after=True)],
        {},
    ),
    "lost response + failing list (500s)": (
        [_lost(), Fault(status=500, method="GET", count=20)],
        {},
    ),
    "lost response + list dropped": (
        [_lost(), Fault(drop=True, method="GET", count=20)],
        {},
    ),
    "lost response + list not JSON": (
        [_lost(), Fault(status=200, body="<html>", method="GET", count=20)],
        {},
    ),
    "lost response + list endless pages": (
        [_lost(), Fault(fresh_pages=True, method="GET", count=10**6)],
        {},
    ),
    "timeout, response lost after create": (
        [Fault(delay=0.6, method="POST", after=True)],
        {"total": 0.2},
    ),
    "timeout, nothing created": ([Fault(delay=0.6, method="POST")], {"total": 0.2}),
    "slow creation, found on re-list": (
        [Fault(hold=0.4, method="POST")],
        {"total": 0.2, "reconcile": 0.6},
    ),
    "slow creation, later than the re-list": (
        [Fault(hold=0.8, method="POST")],
        {"total": 0.2, "reconcile": 0.05},
    ),
    "2xx without stream_id, list ok": (
        [Fault(status=202, body=NO_ID, method="POST", after=True)],
        {},
    ),
    "2xx without stream_id, nothing created": (
        [Fault(status=202, body=NO_ID, method="POST")],
        {},
    ),
    "2xx without stream_id + failing list": (
        [
            Fault(status=202, body=NO_ID, method="POST", after=True),
            Fault(status=503, method="GET", count=20),
        ],
        {},
    ),
    "2xx with a non-object body": (
        [Fault(status=202, body="[1, 2]", method="POST", after=True)],
        {},
    ),
    "2xx with a deeply nested body": (
        [Fault(status=202, body=DEEP, method="POST", after=True)],
        {},
    ),
    "2xx with a 2 MB body": (
        [Fault(status=202, body=" " * (2 << 20), method="POST", after=True)],
        {},
    ),
    "502 with a 2 MB HTML body after create": (
        [Fault(status=502, body="<p>" * (1 << 20), method="POST", after=True)],
        {},
    ),
    "G1 400 'already active' after create": (
        [Fault(status=400, body='{"error": "stream already active"}', method="POST", after=True)],
        {},
    ),
    "500 without effect, then ok": ([Fault(status=500, method="POST")], {}),
    "504 gateway timeout after create": ([_lost(504)], {}),
    "5xx storm without effect": ([Fault(status=500, method="POST", count=10)], {}),
    "429 then ok": ([Fault(status=429, retry_after="0", method="POST")], {}),
}

CALL_SCENARIOS: dict[str, tuple[Callable[[VobizClient, str, str], Awaitable[Any]], list[Fault]]] = {
    "hostile ids (10 ids x 4 calls)": (hostile, []),
    "endless fresh pages (iterate)": (iterate, [Fault(fresh_pages=True, count=10**6)]),
    "deeply nested JSON (get)": (get, [Fault(status=200, body=DEEP)]),
    "deeply nested JSON (list)": (listing, [Fault(status=200, body=DEEP)]),
    "deeply nested JSON in a 500": (get, [Fault(status=500, body=DEEP, count=10)]),
    "non-object body (get)": (get, [Fault(status=200, body='"a string"')]),
    "huge body, 2 MB (get)": (get, [Fault(status=200, body=" " * (2 << 20))]),
    "gzip bomb (get)": (get, [Fault(status=200, body=_bomb(), content_encoding="gzip")]),
    "bad timestamps (get)": (get, [Fault(status=200, body=BAD_TIME)]),
    "bad field types (get)": (
        get,
        [Fault(status=200, body='{"stream_id": 5, "sampling_rate": "fast"}')],
    ),
    "empty {} list body": (listing, [Fault(status=200, body="{}")]),
    "list of non-objects": (listing, [Fault(status=200, body='{"objects": "many"}')]),
}


async def run_all() -> dict[str, Outcome]:
    """Every scenario, in order."""
    results: dict[str, Outcome] = {}
    for name, (faults, options) in START_SCENARIOS.items():
        results[name] = await _start([dataclasses.replace(f) for f in faults], **options)
    for name, (fn, faults) in CALL_SCENARIOS.items():
        results[name] = await _call_on(fn, [dataclasses.replace(f) for f in faults])
    return results


@pytest.mark.parametrize("name", list(START_SCENARIOS))
async def test_start_faults_never_duplicate_lose_or_go_untyped(name: str) -> None:
    """A start under this fault leaves no duplicate, no lost id and no untyped error."""
    faults, options = START_SCENARIOS[name]
    outcome = await _start([dataclasses.replace(f) for f in faults], **options)
    assert (outcome.duplicates, outcome.lost, outcome.untyped) == (0, 0, 0), outcome


@pytest.mark.parametrize("name", list(CALL_SCENARIOS))
async def test_other_faults_are_typed_and_send_nothing_wrong(name: str) -> None:
    """Under this fault every failure is a VobizError and no hostile id is sent."""
    fn, faults = CALL_SCENARIOS[name]
    outcome = await _call_on(fn, [dataclasses.replace(f) for f in faults])
    assert (outcome.untyped, outcome.wrong_requests) == (0, 0), outcome


async def test_gzip_bomb_does_not_raise_peak_memory() -> None:
    """A 0.2 MB gzip body inflating to 200 MB is cut at the cap: peak stays near the cap."""
    bomb = _bomb()
    async with FakeVobiz() as fake:
        call = fake.call(audio=b"", seconds=1.0)
        async with _client(fake) as client:
            started = await client.streams.start(call.call_uuid, WS)
            fake.rest.inject(Fault(status=200, body=bomb, content_encoding="gzip"))
            tracemalloc.start()
            try:
                with pytest.raises(VobizError) as info:
                    await client.streams.get(call.call_uuid, started.stream_id)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert info.value.__class__.__name__ == "ResponseTooLargeError"
    assert peak < 16 * 1024 * 1024, peak


def _table(results: dict[str, Outcome]) -> str:
    rows = ["| scenario | duplicates | lost ids | untyped errors | wrong requests | raised |"]
    rows.append("| --- | --- | --- | --- | --- | --- |")
    for name, o in results.items():
        rows.append(
            f"| {name} | {o.duplicates} | {o.lost} | {o.untyped} | {o.wrong_requests}"
            f" | {o.error or '-'} |"
        )
    total = Outcome(
        duplicates=sum(o.duplicates for o in results.values()),
        lost=sum(o.lost for o in results.values()),
        untyped=sum(o.untyped for o in results.values()),
        wrong_requests=sum(o.wrong_requests for o in results.values()),
    )
    rows.append(
        f"| **total ({len(results)})** | {total.duplicates} | {total.lost} | {total.untyped}"
        f" | {total.wrong_requests} | |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(_table(asyncio.run(run_all())))
