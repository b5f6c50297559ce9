"""Several engines behind one model: admission per replica, routing, live health, prefix affinity.

Real simulator processes on loopback, one per replica; every input goes through the Ledger
(exactly one outcome each: nothing lost, nothing duplicated).

Covers: _upstream/replicas.py, _upstream/affinity.py, _upstream/transport.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import Ledger, batch_through_a_kill, note

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._errors import AllReplicasDownError
from langchain_qwen_fast.testing import SimServer

MakeModel = Callable[..., BatchedChatQwen]
Sim = Callable[..., SimServer]


def served(srv: SimServer) -> int:
    return int(srv.stats()["prompts_served"])


@pytest.mark.timeout(120)
def test_three_replicas_each_hold_at_most_their_own_limit_and_all_are_used(
    scratch_sim: Sim, make_model: MakeModel
) -> None:
    sims = [scratch_sim(latency="h100", speed=4.0, seed=i) for i in range(3)]
    model = make_model([s.base_url for s in sims], max_concurrency=64)
    led = Ledger("3 replicas, max_concurrency=64 each, 3000-item batch")
    ids, prompts = led.prompts(3000)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    led.check(min_answered=3000)
    peaks = [s.stats()["max_inflight_prompts"] for s in sims]
    counts = [served(s) for s in sims]
    note(f"3 replicas, limit 64 each: peak sequences in flight per server {peaks}, served {counts}, "
         f"client max in flight {model.stats()['max_in_flight']}")
    assert all(p <= 64 for p in peaks), peaks
    assert all(p >= 48 for p in peaks), peaks  # each one was kept busy, not a third of one limit
    assert sum(counts) == 3000 and min(counts) > 500, counts
    assert model.stats()["max_in_flight"] > 64  # the limit is per replica, not shared


@pytest.mark.timeout(120)
def test_a_total_limit_still_caps_the_sum(scratch_sim: Sim, make_model: MakeModel) -> None:
    sims = [scratch_sim(latency="h100", speed=4.0, seed=i) for i in range(2)]
    model = make_model([s.base_url for s in sims], max_concurrency=64, max_total_concurrency=80)
    led = Ledger("2 replicas, max_total_concurrency=80")
    ids, prompts = led.prompts(1500)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    led.check(min_answered=1500)
    assert model.stats()["max_in_flight"] <= 80
    assert sum(s.stats()["max_inflight_prompts"] for s in sims) <= 80 + 64


@pytest.mark.timeout(120)
def test_the_faster_replica_serves_more(scratch_sim: Sim, make_model: MakeModel) -> None:
    slow = scratch_sim(latency="h100", speed=1.0, seed=1)
    fast = scratch_sim(latency="h100", speed=4.0, seed=2)
    model = make_model([slow.base_url, fast.base_url], max_concurrency=64)
    led = Ledger("2 replicas, one 4x faster")
    ids, prompts = led.prompts(2000)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    led.check(min_answered=2000)
    s, f = served(slow), served(fast)
    note(f"unequal speeds (1x, 4x): served {s} and {f}")
    assert f > 2 * s, (s, f)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("wire", ["completions", "chat"])
def test_a_replica_killed_mid_batch_and_restarted_loses_nothing(
    scratch_sim: Sim, make_model: MakeModel, wire: str
) -> None:
    sims = [scratch_sim(latency="h100", speed=2.0, seed=i) for i in range(3)]
    model = make_model([s.base_url for s in sims], wire_mode=wire, timeout=60.0)
    n = 5000
    led = Ledger(f"1 of 3 replicas SIGKILLed at 30% of a {n}-item batch, restarted 2 s later ({wire})")
    ids, prompts = led.prompts(n)
    victim = sims[1]
    outs, events = batch_through_a_kill(
        model, prompts, victim, progress=lambda: sum(served(s) for s in sims), at=0.3 * n, pause_s=2.0,
        at_kill=lambda: model.stats()["endpoints"][victim.base_url]["in_flight"])
    led.record_all(ids, outs)
    t = led.check(min_answered=n)  # the two others carry the killed one's work: nothing even fails
    assert events["killed"] < events["done"], "the kill came after the batch: nothing was tested"
    note(f"replica kill/restart ({wire}): {events['at_kill']} sequences on it at the kill, "
         f"{t.answered} answered, {t.failed} failed, batch ended {events['done'] - events['killed']:.2f} s after")
    # It serves again afterwards, without anything restarted on the client side.
    time.sleep(0.6)  # the probe's backoff is at most 0.5 s
    again = Ledger(f"after the restart ({wire})")
    ids2, prompts2 = again.prompts(600)
    before = served(victim)
    again.record_all(ids2, model.batch(prompts2, return_exceptions=True))
    again.check(min_answered=600)
    assert served(victim) - before > 50, "the restarted replica took no work"
    assert not model.stats()["endpoints"][victim.base_url]["ejected"]


@pytest.mark.timeout(120)
def test_a_replica_answering_503_is_not_ejected_and_load_moves_away_and_back(
    scratch_sim: Sim, make_model: MakeModel
) -> None:
    sims = [scratch_sim(latency="h100", speed=4.0, seed=i) for i in range(3)]
    busy = sims[0]
    model = make_model([s.base_url for s in sims], max_concurrency=64)
    led = Ledger("1 of 3 replicas answering 503 for 10 s under continuous batches")
    busy.set_faults(["status=503"])
    t_end = time.monotonic() + 10.0
    ejected_seen = paused_seen = False
    while time.monotonic() < t_end:
        ids, prompts = led.prompts(300)
        led.record_all(ids, model.batch(prompts, return_exceptions=True))
        ep = model.stats()["endpoints"][busy.base_url]
        ejected_seen |= ep["ejected"]
        paused_seen |= ep["busy"]
    during = busy.stats()
    busy.set_faults([])
    time.sleep(4.5)  # the longest pause a 503 streak can set
    after_before = served(busy)
    ids, prompts = led.prompts(900)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    t = led.check()
    ep = model.stats()["endpoints"][busy.base_url]
    note(f"503 replica: {during['faults'].get('status_503', 0)} requests answered 503 in 10 s, "
         f"{ep['errors'].get('ServerError', 0)} seen by the client; {t.failed} inputs failed; "
         f"after recovery it served {served(busy) - after_before} of 900")
    assert t.failed == 0, t.errors
    assert not ejected_seen and paused_seen
    assert during["faults"].get("status_503", 0) >= 3  # it was tried now and then, not flooded or dropped
    assert during["faults"].get("status_503", 0) < 200
    assert served(busy) - after_before > 100, "load did not come back"


@pytest.mark.timeout(60)
def test_all_replicas_down_fail_fast_with_one_clear_error_and_recover(
    scratch_sim: Sim, make_model: MakeModel
) -> None:
    sims = [scratch_sim(latency="zero", seed=i) for i in range(2)]
    model = make_model([s.base_url for s in sims])
    led = Ledger("every replica down, then one back")
    ids, prompts = led.prompts(20)
    for i, p in zip(ids[:4], prompts[:4], strict=True):
        led.record(i, model.invoke(p))
    for s in sims:
        s.kill()
    t0 = time.monotonic()
    outs = model.batch(prompts[4:10], return_exceptions=True)
    elapsed = time.monotonic() - t0
    led.record_all(ids[4:10], outs)
    assert all(isinstance(o, AllReplicasDownError) for o in outs), outs
    msg = str(outs[0])
    assert all(s.base_url in msg for s in sims) and "all 2 replicas are down" in msg, msg
    assert elapsed < 5.0, elapsed
    t1 = time.monotonic()
    with pytest.raises(AllReplicasDownError) as ei:
        model.invoke(prompts[10])  # still down: fails at once now
    led.record(ids[10], ei.value)
    late = time.monotonic() - t1
    assert late < 0.5, late
    sims[1].restart()
    time.sleep(0.7)
    for i, p in zip(ids[11:], prompts[11:], strict=True):
        led.record(i, model.invoke(p))
    note(f"all replicas down: {len(outs)} calls failed in {elapsed:.2f} s; the next one in {late:.3f} s")
    led.check(min_answered=13, min_failed=7)


@pytest.mark.timeout(120)
def test_prefix_affinity_keeps_a_prefix_on_one_replica_until_the_load_bound(
    scratch_sim: Sim, make_model: MakeModel
) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    sims = [scratch_sim(latency="h100", speed=4.0, seed=i) for i in range(3)]
    system = SystemMessage("You are the support assistant of a shoe shop. " * 40)

    def convo(p: str) -> list[Any]:
        return [system, HumanMessage(p)]

    sticky = make_model([s.base_url for s in sims], routing="prefix_affinity")
    led = Ledger("prefix affinity: sequential then a burst")
    ids, prompts = led.prompts(30)
    for i, p in zip(ids, prompts, strict=True):
        led.record(i, sticky.invoke(convo(p)))
    counts = [served(s) for s in sims]
    assert sorted(counts) == [0, 0, 30], counts  # one home for the prefix while loads are even
    burst_ids, burst = led.prompts(1500)
    led.record_all(burst_ids, sticky.batch([convo(p) for p in burst], return_exceptions=True))
    led.check(min_answered=1530)
    after = [served(s) for s in sims]
    note(f"prefix affinity: 30 sequential calls served {counts}; then a 1500 burst: {after}")
    home = counts.index(30)
    # Under a burst the bound keeps every replica within 64 sequences of the least-loaded one, so which ends
    # with the most requests is timing (the home had 2 fewer than another in 2 of 4 runs): it keeps serving.
    assert after[home] - counts[home] > 0.2 * len(burst)
    assert all(a > counts[i] for i, a in enumerate(after) if i != home)  # the bound spilled the rest

    plain = make_model([s.base_url for s in sims])  # least-outstanding: ties rotate
    before = [served(s) for s in sims]
    _, prompts2 = led.prompts(30)
    for p in prompts2:
        plain.invoke(convo(p))
    spread = [served(s) - b for s, b in zip(sims, before, strict=True)]
    assert sum(1 for x in spread if x) >= 2, spread
