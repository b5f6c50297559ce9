"""``_replicas.py``: admission per replica, least-outstanding routing, health, prefix affinity (no I/O).

Covers: _upstream/replicas.py, _upstream/affinity.py."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from langchain_qwen_fast._errors import APIConnectionError, ServerError, connection_error, from_status
from langchain_qwen_fast._qwen import render_chatml
from langchain_qwen_fast._upstream.affinity import prefix_keys
from langchain_qwen_fast._upstream.replicas import HealthPolicy, ReplicaSet, RoutingPolicy

URLS = ["http://a:8000/v1", "http://b:8000/v1", "http://c:8000/v1"]


def refused(url: str) -> APIConnectionError:
    return connection_error(url, ConnectionRefusedError("refused"), maybe_sent=False)


def reset(url: str) -> APIConnectionError:
    return connection_error(url, ConnectionResetError("reset by peer"), maybe_sent=True)


def test_each_replica_admits_up_to_its_own_limit() -> None:
    rs = ReplicaSet(URLS, limit=4)
    leases = []
    while (r := rs.choose(bulk=True)) is not None:
        leases.append(rs.admit(r, 1))
    assert [r.inflight for r in rs.replicas] == [4, 4, 4]
    assert rs.inflight == 12
    rs.release(leases[0])
    assert rs.choose(bulk=True) is leases[0].replica


def test_a_total_caps_the_sum_over_replicas() -> None:
    rs = ReplicaSet(URLS, limit=4, total=6)
    while (r := rs.choose(bulk=True)) is not None:
        rs.admit(r, 1)
    assert rs.inflight == 6
    assert max(r.inflight for r in rs.replicas) - min(r.inflight for r in rs.replicas) <= 1


def test_routing_picks_the_least_loaded_and_ties_rotate() -> None:
    rs = ReplicaSet(URLS, limit=100)
    rs.admit(rs.replicas[0], 5)
    assert rs.choose(bulk=True) in rs.replicas[1:]
    rs.release(rs.admit(rs.replicas[1], 0))
    picks = {rs.choose(bulk=True) for _ in range(12)}
    assert picks == set(rs.replicas[1:])  # b and c tie: both get picked


def test_headroom_keeps_slots_for_single_calls_while_they_come() -> None:
    rs = ReplicaSet(URLS[:1], limit=10, headroom=2)
    r = rs.replicas[0]
    rs.admit(r, 8)
    assert rs.choose(bulk=True) is r  # no single call seen yet: bulk may use the whole limit
    rs.interactive_seen(window_s=0.2)
    assert rs.choose(bulk=True) is None
    assert rs.choose(bulk=False) is r
    assert rs.free(r, bulk=False) == 2
    time.sleep(0.25)
    assert rs.choose(bulk=True) is r  # the single calls stopped: the headroom is bulk's again


def test_headroom_is_at_most_a_quarter_of_a_small_limit() -> None:
    rs = ReplicaSet(URLS[:1], limit=10, headroom=32)
    r = rs.replicas[0]
    rs.interactive_seen()
    assert rs.free(r, bulk=True) == 8  # 10 - a quarter (2): bulk work still gets most of a small limit
    assert rs.free(r, bulk=False) == 10


def test_a_refused_connection_ejects_at_once_and_a_retry_goes_elsewhere() -> None:
    rs = ReplicaSet(URLS, limit=8)
    a = rs.replicas[0]
    rs.failed(a, refused(a.base))
    assert a.ejected
    assert rs.for_retry(a) is not a
    assert all(rs.choose(bulk=True) is not a for _ in range(6))


def test_resets_eject_only_after_several_in_a_row() -> None:
    rs = ReplicaSet(URLS, limit=8, health=HealthPolicy(eject_after=3))
    a = rs.replicas[0]
    rs.failed(a, reset(a.base))
    rs.failed(a, reset(a.base))
    assert not a.ejected
    rs.succeeded(a, 0.01)
    rs.failed(a, reset(a.base))
    rs.failed(a, reset(a.base))
    assert not a.ejected  # the success in between reset the count
    rs.failed(a, reset(a.base))
    assert a.ejected


def test_a_503_pauses_new_work_without_ejecting() -> None:
    rs = ReplicaSet(URLS[:2], limit=8, health=HealthPolicy(busy_first_s=0.2))
    a, b = rs.replicas
    busy = from_status(503, b'{"error": {"message": "queue full"}}', a.base + "/completions")
    assert isinstance(busy, ServerError)
    rs.failed(a, busy)
    assert not a.ejected
    assert all(rs.choose(bulk=True) is b for _ in range(5))
    assert rs.next_open_at() is not None
    rs.failed(a, busy)
    assert a.busy_until - time.monotonic() > 0.3  # the pause grows while the 503s go on
    rs.succeeded(a, 0.01)
    assert a.busy_streak == 0


def test_every_replica_down_names_each_url_and_its_last_error() -> None:
    rs = ReplicaSet(URLS[:2], limit=8)
    for r in rs.replicas:
        rs.failed(r, refused(r.base))
    assert rs.all_down()
    msg = str(rs.down_error())
    assert "all 2 replicas are down" in msg
    for r in rs.replicas:
        assert r.base in msg
    assert msg.count("refused") == 2
    assert rs.choose(bulk=False) is None


async def test_an_ejected_replica_is_probed_back_with_backoff() -> None:
    calls: list[float] = []

    async def probe(base: str, timeout: float) -> str | None:
        calls.append(time.monotonic())
        return None if len(calls) >= 3 else "connection refused"

    woke: list[bool] = []
    rs = ReplicaSet(URLS[:1], limit=8, health=HealthPolicy(probe_first_s=0.02, probe_max_s=0.1), prober=probe)
    rs.bind(lambda: woke.append(True))
    a = rs.replicas[0]
    rs.failed(a, refused(a.base))
    assert rs.all_down()
    assert await rs.wait_healthy(2.0)
    assert not a.ejected and not rs.all_down() and woke == [True]
    assert len(calls) == 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[1] > gaps[0] * 1.5  # backoff
    await rs.aclose()


async def test_waiting_for_a_replica_gives_up_after_its_timeout() -> None:
    async def probe(base: str, timeout: float) -> str | None:
        return "still refused"

    rs = ReplicaSet(URLS[:1], limit=8, health=HealthPolicy(probe_first_s=0.01, probe_max_s=0.02), prober=probe)
    rs.failed(rs.replicas[0], refused(URLS[0]))
    t0 = time.monotonic()
    assert not await rs.wait_healthy(0.1)
    assert 0.09 < time.monotonic() - t0 < 1.0
    assert "still refused" in str(rs.down_error())
    await rs.aclose()
    await asyncio.sleep(0)


def test_a_replica_set_is_bound_to_one_dispatcher() -> None:
    rs = ReplicaSet(URLS[:1], limit=8)
    woke: list[str] = []

    def wake() -> None:
        woke.append("first")

    rs.bind(wake)
    rs.bind(wake)  # the same one again is harmless
    with pytest.raises(RuntimeError, match="another dispatcher"):
        rs.bind(lambda: woke.append("second"))
    a = rs.replicas[0]
    rs.failed(a, refused(a.base))
    rs.succeeded(a, 0.01)  # a call got through: it takes work again, and the bound dispatcher hears of it
    assert woke == ["first"]


def test_a_replica_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        ReplicaSet([URLS[0], URLS[0] + "/"], limit=8)


def test_prefix_keys_cover_each_leading_turn_but_not_the_last_question() -> None:
    sys_turn = {"role": "system", "content": "You are a careful assistant. " * 50}
    one = render_chatml([sys_turn, {"role": "user", "content": "What is 2+2?"}], enable_thinking=False)
    two = render_chatml([sys_turn, {"role": "user", "content": "Name a prime."}], enable_thinking=False)
    alone = render_chatml([{"role": "user", "content": "What is 2+2?"}], enable_thinking=False)
    assert prefix_keys(one, None) == prefix_keys(two, None) != ()
    assert prefix_keys(alone, None) == ()
    chat = [sys_turn, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and now?"}]
    keys = prefix_keys(None, chat)
    assert len(keys) == 3 and keys[0] == prefix_keys(None, [sys_turn, {"role": "user", "content": "x"}])[0]


def test_prefix_affinity_sticks_within_the_load_bound_then_spills() -> None:
    rs = ReplicaSet(URLS, limit=1000, routing=RoutingPolicy(mode="prefix_affinity", balance_abs=10, balance_rel=1.5))
    keys = (111, 222)
    first = rs.choose(bulk=True, keys=keys)
    assert first is not None
    homes = []
    for _ in range(10):
        r = rs.choose(bulk=True, keys=keys)
        assert r is not None
        rs.admit(r, 1)
        homes.append(r)
    assert set(homes) == {first}  # within the bound: all on one replica
    rs.admit(first, 10)  # now 20 ahead of the others
    spill = rs.choose(bulk=True, keys=keys)
    assert spill is not first
    other = rs.choose(bulk=True, keys=(999,))
    assert other is not first  # an unrelated prefix goes to the least loaded


def test_least_outstanding_ignores_prefixes() -> None:
    rs = ReplicaSet(URLS, limit=1000)
    seen = set()
    for _ in range(9):
        r = rs.choose(bulk=True, keys=(1, 2, 3))
        assert r is not None
        rs.admit(r, 1)
        seen.add(r)
    assert seen == set(rs.replicas)


def test_a_list_takes_only_prompts_whose_prefix_lives_on_its_replica() -> None:
    rs = ReplicaSet(URLS[:2], limit=1000, routing=RoutingPolicy(mode="prefix_affinity"))
    a, b = rs.replicas
    rs._table.record((1,), a)
    rs._table.record((2,), b)
    assert rs.belongs(a, (1,)) and not rs.belongs(a, (2,))
    assert rs.belongs(a, ())  # a lone question has no prefix to keep anywhere
    assert not rs.belongs(a, (3,)) and not rs.belongs(b, (3,))  # a new prefix heads a list of its own first
