"""Queue workers as users run them: ``qwen-fast worker`` processes, simulator replicas, a real redis-server.

Each test checks the ledger the issue asks for: every job has exactly one result (one result key, one reply
delivered to its producer, the right content for its prompt), nothing stays pending, and the failure in
the middle (a SIGKILLed worker, a SIGKILLed Redis) really happened while jobs were held.

Covers: cli/worker.py, integrations/redis_streams/.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from queue_tier import RedisServer, WorkerProcess, wait_until

from langchain_qwen_fast.integrations.redis_streams import JobQueue, JobResult, connect
from langchain_qwen_fast.integrations.redis_streams.config import client_name
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.redis
STREAM, GROUP = "jobs", "qwen"


class CountingQueue(JobQueue):
    """A producer that also counts every reply delivered to it, so a result sent twice shows up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries: Counter[str] = Counter()

    def _deliver(self, job_id: str, res: JobResult) -> None:
        self.deliveries[job_id] += 1
        super()._deliver(job_id, res)

    def arrived(self) -> int:
        return len(self.deliveries)


async def _check_ledger(q: CountingQueue, ids: list[str], prompts: list[str], timeout: float) -> list[JobResult]:
    results = await q.results(ids, timeout=timeout)
    bad = [(r.id, r.error) for r in results if not r.ok]
    assert not bad, f"{len(bad)} jobs failed, e.g. {bad[:3]}"
    for jid, prompt, r in zip(ids, prompts, results, strict=True):
        assert r.id == jid
        assert r.content is not None and r.content.startswith(f"[sim] {prompt} "), (prompt, r.content)
    twice = {k: n for k, n in q.deliveries.items() if n != 1}
    assert not twice, f"results delivered more than once: {list(twice.items())[:5]}"
    assert set(q.deliveries) == set(ids)
    r = q.client
    async with r.pipeline(transaction=False) as p:
        for jid in ids:
            p.exists(f"{STREAM}:result:{jid}")
        assert all(await p.execute()), "a job has no result key"
    pending = await r.xpending(STREAM, GROUP)
    assert pending["pending"] == 0, pending
    groups = {g["name"].decode(): g for g in await r.xinfo_groups(STREAM)}
    assert groups[GROUP]["lag"] == 0
    return results


async def test_three_workers_share_20000_jobs_and_the_jobs_of_a_killed_worker_are_reclaimed(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    n, started = 20_000, time.monotonic()
    with SimServer(SimConfig(latency="zero", seed=1)) as a, SimServer(SimConfig(latency="zero", seed=2)) as b:
        replicas = [a.base_url, b.base_url]
        args = ("--claim-idle", "1.0", "--max-in-flight", "128", "--trim-interval", "1")
        workers = [start_worker(redis_server.url, replicas, *args) for _ in range(3)]
        status, health = workers[0].health()
        assert status == 200 and health["ready"] and health["redis"], health
        async with CountingQueue(redis_server.url, STREAM) as q:
            prompts = [f"job {i}" for i in range(n)]
            ids = await q.submit_many(prompts)
            await wait_until(lambda: q.arrived() >= 0.3 * n, 120, "30% of the results")
            victim = workers[0]
            name = client_name(victim.consumer)

            async def victim_connected() -> bool:
                return any(c.get("name") == name for c in await q.client.client_list())

            async def held_by_victim() -> list[dict[str, Any]]:
                return await q.client.xpending_range(STREAM, GROUP, "-", "+", 10_000, consumername=victim.consumer)

            assert await victim_connected(), "the worker's Redis connections do not carry its name"
            # Freeze it, and kill it only while it holds jobs: between acknowledging its last list and its next
            # read a worker can hold none for a moment (a kill there proved nothing in 1 of many CI runs).
            give_up = time.monotonic() + 30
            while True:
                victim.child.send_signal(signal.SIGSTOP)  # it can neither acknowledge nor read now
                await asyncio.sleep(0.2)  # what it sent before it froze has reached Redis
                held = await held_by_victim()
                if held or time.monotonic() > give_up:
                    break
                victim.child.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.005)
            victim.child.kill()  # SIGKILL: no drain, its jobs stay pending under its name
            # Redis reads a long pipeline of results in pieces, so answers the victim sent before it froze can
            # still land after the look above (1 of many CI runs: a job seen held had the victim's answer). Once
            # its connections are gone nothing more of it can land: what it holds then, it never answered.

            async def victim_gone() -> bool:
                return not await victim_connected()

            await wait_until(victim_gone, 10, "Redis to drop the killed worker's connections")
            held = await held_by_victim()
            assert held, "the killed worker held no jobs: the test proved nothing"
            async with q.client.pipeline(transaction=False) as p:
                for row in held:
                    p.xrange(STREAM, row["message_id"], row["message_id"])
                entries = await p.execute()
            held_ids = {json.loads(e[0][1][b"job"])["id"] for e in entries}

            results = await _check_ledger(q, ids, prompts, timeout=240)
        by_id = {r.id: r for r in results}
        assert all(by_id[j].worker != victim.consumer for j in held_ids)
        survivors = workers[1:]
        reclaimed = sum(w.metrics()['qwen_fast_worker_jobs_read_total{source="reclaimed"}'] for w in survivors)
        assert reclaimed >= len(held_ids)
        answered = Counter(r.worker for r in results)
        assert all(answered[w.consumer] > 0 for w in workers), answered  # all three took part
        metrics = survivors[0].metrics()
        assert metrics["qwen_fast_items_total"] > 0 and metrics["qwen_fast_batch_size_count"] > 0
        assert any(k.startswith("qwen_fast_endpoint_latency_seconds_count") for k in metrics)
        for w in survivors:  # SIGTERM: drain and exit cleanly
            w.child.stop(timeout=15)
            assert w.child.returncode == 0, w.child.output_tail()
        r = connect(redis_server.url)
        assert await r.xlen(STREAM) < n  # acknowledged entries were trimmed
        await r.aclose()
    print(f"\n20,000 jobs, 3 workers (one SIGKILLed at 30%, {len(held_ids)} jobs reclaimed), 2 replicas: "
          f"{time.monotonic() - started:.1f} s; answered per worker {dict(answered)}")


async def test_workers_reconnect_after_redis_is_killed_and_restarted_and_no_job_is_lost(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    n = 4000
    with SimServer(SimConfig(latency="h100", speed=2.0, seed=3)) as sim:
        workers = [start_worker(redis_server.url, [sim.base_url], "--claim-idle", "2.0", "--max-in-flight", "64")
                   for _ in range(2)]
        async with CountingQueue(redis_server.url, STREAM) as q:
            prompts = [f"job {i}" for i in range(n)]
            ids = await q.submit_many(prompts[: n // 2])
            await wait_until(lambda: q.arrived() >= 300, 120, "the first results")
            before, old_pid = q.arrived(), redis_server.child.pid if redis_server.child else None
            redis_server.restart(kill=True)  # SIGKILL mid-run; the append-only file brings every job back
            assert redis_server.child is not None and redis_server.child.pid != old_pid
            late = await q.submit_many(prompts[n // 2 :])
            results = await _check_ledger(q, ids + late, prompts, timeout=240)
        assert before < n // 2, "every job was done before the restart: the test proved nothing"
        after = Counter(r.worker for r in results[n // 2 :])  # jobs that only existed after the restart
        for w in workers:
            assert w.child.alive(), w.child.output_tail()
            assert after[w.consumer] > 0, after  # each worker reconnected and kept answering
    print(f"\nRedis SIGKILLed after {before} of {n} results; all {n} answered once after the restart")


async def test_worker_health_is_503_while_no_replica_answers(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    with SimServer(SimConfig(latency="zero")) as sim:
        url = sim.base_url
    w = start_worker(redis_server.url, [url], ready="WORKER_HTTP")  # the replica's port is closed now
    status, body = w.health()
    assert status == 503 and body["redis"] is True and body["ready"] is False
    assert body[url] is False and "GET /models failed" in body["reason"], body
    assert not w.read_ready()  # it never said ready, so it reads no job
