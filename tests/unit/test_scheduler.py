"""``_dispatch/scheduler.py``: per-flow queues, deficit round robin, priorities; with the dispatcher's list rule
(which items may share a list) where lists are taken (no I/O).

Covers: _dispatch/scheduler.py, _dispatch/item.py, _dispatch/dispatcher.py."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from langchain_qwen_fast._dispatch.dispatcher import _ListRule
from langchain_qwen_fast._dispatch.item import CHAT, LIST, Item
from langchain_qwen_fast._dispatch.scheduler import Flow, FlowPolicy, Scheduler


def items(n: int, loop: asyncio.AbstractEventLoop, key: bytes | None = b"k", tag: str = "") -> list[Item]:
    """List items with ``key`` (chat items when ``key`` is None), 10 estimated tokens each."""
    if key is None:
        return [Item(CHAT, {}, None, "m", payload={}, est_tokens=10) for _ in range(n)]
    return [Item(LIST, {}, None, "m", prompt=f"{tag}{i}", list_key=key, est_tokens=10) for i in range(n)]


def collect(s: Scheduler, flow: Flow, limit: int, token_cap: int, window: int) -> list[Item]:
    """What the dispatcher takes for a list headed by ``flow``'s head: its list rule offered the scheduler's
    candidates."""
    head = s.head(flow)
    assert head is not None
    return s.take(flow, limit, window, _ListRule(head, token_cap, None))


@pytest.fixture
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def serve(s: Scheduler, rounds: int, size: int = 32) -> list[Flow]:
    order = []
    for _ in range(rounds):
        f = s.current()
        if f is None:
            break
        collect(s, f, size, 10**9, 4 * size)
        order.append(f)
    return order


def test_a_lone_call_is_served_after_at_most_one_list_of_a_long_backlog(loop: Any) -> None:
    s = Scheduler()
    bulk = Flow("batch")
    for it in items(6000, loop):
        s.push(bulk, it)
    serve(s, 3)
    single = Flow("single")
    (one,) = items(1, loop, key=None)
    s.push(single, one)
    order = serve(s, 2)
    assert single in order
    assert len(s) == 6000 - 32 * 4 or len(s) == 6000 - 32 * 5 + 31  # the lone item left the queue


def test_two_bulk_flows_take_turns_by_sequences(loop: Any) -> None:
    s = Scheduler(FlowPolicy(quantum=32))
    a, b = Flow("batch"), Flow("batch")
    for it in items(320, loop, key=b"a"):
        s.push(a, it)
    for it in items(320, loop, key=b"b"):
        s.push(b, it)
    order = serve(s, 10)
    assert order.count(a) == order.count(b) == 5
    assert all(x is not y for x, y in itertools.pairwise(order))  # alternating


def test_small_lists_still_count_as_sequences(loop: Any) -> None:
    s = Scheduler(FlowPolicy(quantum=32))
    a, b = Flow("batch"), Flow("batch")
    for it in items(200, loop, key=b"a"):
        s.push(a, it)
    for it in items(200, loop, key=b"b"):
        s.push(b, it)
    taken = {a: 0, b: 0}
    for _ in range(40):  # capacity frees 8 at a time
        f = s.current()
        assert f is not None
        taken[f] += len(collect(s, f, 8, 10**9, 128))
    assert taken[a] == taken[b] == 160


def test_fifo_is_kept_within_a_flow(loop: Any) -> None:
    s = Scheduler()
    f = Flow("batch")
    its = items(100, loop)
    for it in its:
        s.push(f, it)
    got: list[Item] = []
    while s.current() is not None:
        got += collect(s, f, 7, 10**9, 28)
    assert got == its


def test_lists_fill_across_flows_with_the_same_key(loop: Any) -> None:
    s = Scheduler()
    flows = [Flow("single") for _ in range(10)]
    for f in flows:
        (it,) = items(1, loop)
        s.push(f, it)
    f = s.current()
    assert f is not None
    assert len(collect(s, f, 32, 10**9, 128)) == 10
    assert len(s) == 0
    other = Flow("single")
    (x,) = items(1, loop, key=b"other")
    s.push(other, x)
    g = Flow("batch")
    for it in items(5, loop):
        s.push(g, it)
    head = s.current()
    assert head is other
    assert collect(s, head, 32, 10**9, 128) == [x]  # a different key never rides along


def test_higher_priority_first_and_lower_never_starves(loop: Any) -> None:
    s = Scheduler(FlowPolicy(quantum=32, starve_after=4))
    low, high = Flow("batch", priority=0), Flow("batch", priority=5)
    for it in items(320, loop, key=b"l"):
        s.push(low, it)
    for it in items(3200, loop, key=b"h"):
        s.push(high, it)
    order = serve(s, 50)
    assert order[:4] == [high] * 4
    assert order.count(low) == 10  # one grant in every five
    assert order.count(high) == 40


def test_a_cancelled_flow_frees_its_queue_at_once(loop: Any) -> None:
    s = Scheduler()
    f, g = Flow("batch"), Flow("single")
    for it in items(10000, loop):
        s.push(f, it)
    (one,) = items(1, loop, key=b"z")
    s.push(g, one)
    dropped = s.drop(f)
    assert len(dropped) == 10000 and len(s) == 1
    assert s.current() is g


def test_cancelled_items_are_skipped_and_counted_out(loop: Any) -> None:
    s = Scheduler()
    f = Flow("batch")
    its = items(10, loop)
    for it in its:
        s.push(f, it)
    for it in its[:4]:
        it.done = True
    assert s.current() is f
    assert s.head(f) is its[4]
    assert len(s) == 6


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="quantum"):
        FlowPolicy(quantum=0)
    with pytest.raises(ValueError, match="kind"):
        Flow("bulk")


def test_filling_a_list_from_flows_that_rotate_is_safe(loop: Any) -> None:
    s = Scheduler(FlowPolicy(quantum=2))
    flows = [Flow("batch") for _ in range(5)]
    for f in flows:
        for it in items(3, loop):
            s.push(f, it)
    f = s.current()
    assert f is not None
    got = collect(s, f, 15, 10**9, 60)  # takes from every other flow, which charges (and rotates) them
    assert len(got) == 15 and len(s) == 0


def test_the_first_flow_accept_allows_is_taken_in_priority_order(loop: Any) -> None:
    """``current(accept=...)`` (single calls using the headroom while bulk work is full) follows the
    priorities like ``current()``: a priority-5 single call before a priority-0 one that came first."""
    s = Scheduler()
    bulk, low, high = Flow("batch", 9), Flow("single", 0), Flow("single", 5)
    for f in (bulk, low, high):
        (it,) = items(1, loop, key=None)
        s.push(f, it)
    assert s.current() is bulk
    assert s.current(accept=lambda f: not f.bulk) is high
    assert s.current(accept=lambda f: f is low) is low
    assert s.current(accept=lambda f: False) is None
