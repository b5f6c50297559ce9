"""A queue worker's phases and its held-job table, without Redis: what each phase allows, the one drain deadline, the
wake-up every loop waits on, and a job held once.

Covers: integrations/redis_streams/state.py."""

from __future__ import annotations

import asyncio
import time

from langchain_qwen_fast.integrations.redis_streams.state import DOES, HeldJobs, Phase, WorkerState


def test_each_phase_allows_what_the_table_says_and_the_drain_has_one_deadline() -> None:
    state = WorkerState()
    assert state.phase is Phase.RUNNING and all(state.does(a) for a in DOES[Phase.RUNNING])
    t0 = time.monotonic()
    deadline = state.drain(5.0)
    assert state.phase is Phase.DRAINING and 4.9 < deadline - t0 <= 5.1
    assert not state.does("read") and not state.does("reclaim")
    assert state.does("heartbeat") and state.does("answer") and state.does("write")
    assert state.drain(60.0) == deadline  # a second stop signal does not move the deadline
    state.stop()
    assert [a for a in ("read", "reclaim", "heartbeat", "answer", "write") if state.does(a)] == ["write"]


async def test_until_wakes_at_the_change_that_makes_it_true_and_gives_up_at_its_timeout() -> None:
    state = WorkerState()
    box: list[int] = []

    async def fill() -> None:
        await asyncio.sleep(0.05)
        state.changed()  # a change that does not make it true: the waiter checks and waits on
        await asyncio.sleep(0.05)
        box.append(1)
        state.changed()

    filler = asyncio.create_task(fill())
    t0 = time.monotonic()
    assert await state.until(lambda: bool(box), timeout=5.0)
    assert 0.09 < time.monotonic() - t0 < 1.0
    await filler
    t1 = time.monotonic()
    assert not await state.until(lambda: False, timeout=0.1)
    assert 0.09 < time.monotonic() - t1 < 1.0


async def test_every_waiting_loop_wakes_at_one_change() -> None:
    state = WorkerState()
    waiters = [asyncio.create_task(state.until(lambda: state.phase is Phase.STOPPED)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    state.stop()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1.0) == [True, True, True]


def test_a_job_is_held_once_and_capacity_counts_what_is_held() -> None:
    held = HeldJobs(capacity=2)
    assert held.free == 2 and held.oldest_s() is None
    assert held.take(b"1-0")
    assert not held.take(b"1-0")  # handed back again (XAUTOCLAIM of our own entry): not twice
    assert held.take(b"2-0")
    assert held.free == 0 and len(held) == 2 and b"2-0" in held
    assert sorted(held.ids()) == [b"1-0", b"2-0"]
    assert (held.oldest_s() or -1) >= 0
    held.release(b"1-0")
    held.release(b"1-0")  # releasing twice is harmless (a write given up after a cancel)
    assert held.free == 1 and held.ids() == [b"2-0"]
