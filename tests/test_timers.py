"""KeyedTimers: one pending timer per key, deadlines never pushed back by a repeat."""

from __future__ import annotations

import asyncio

from vobiz_async._timers import KeyedTimers


async def test_a_repeat_keeps_the_earlier_deadline_unless_replaced() -> None:
    """Asking again for a pending key keeps the first timer; replace=True swaps it."""
    loop = asyncio.get_running_loop()
    timers = KeyedTimers(loop)
    fired: list[str] = []
    timers.later("close", 0.01, lambda: fired.append("first"))
    timers.later("close", 0.0, lambda: fired.append("second"))  # ignored: pending
    timers.later("stall", 10.0, lambda: fired.append("old stall"))
    timers.later("stall", 0.01, lambda: fired.append("new stall"), replace=True)
    assert len(timers) == 2 and "close" in timers
    await asyncio.sleep(0.05)
    assert sorted(fired) == ["first", "new stall"] and len(timers) == 0


async def test_a_fired_timer_is_forgotten_before_its_callback_so_it_can_rearm() -> None:
    """The callback may set its own key again (an idle check re-arming itself)."""
    timers = KeyedTimers(asyncio.get_running_loop())
    runs: list[int] = []

    def tick() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            timers.later("idle", 0.0, tick)

    timers.later("idle", 0.0, tick)
    for _ in range(50):  # bounded
        if len(runs) == 3:
            break
        await asyncio.sleep(0.001)
    assert runs == [0, 1, 2] and "idle" not in timers


async def test_cancel_and_close() -> None:
    """cancel() stops one key; close() stops all and refuses new timers."""
    timers = KeyedTimers(asyncio.get_running_loop())
    fired: list[str] = []
    timers.later("a", 0.0, lambda: fired.append("a"))
    timers.later("b", 0.0, lambda: fired.append("b"))
    timers.cancel("a")
    timers.cancel("missing")
    timers.close()
    timers.later("c", 0.0, lambda: fired.append("c"))
    await asyncio.sleep(0.01)
    assert fired == [] and len(timers) == 0
