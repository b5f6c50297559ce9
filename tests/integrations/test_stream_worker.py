"""``StreamWorker`` in the test's own loop against a real redis-server and the simulator: bad input, duplicates,
backpressure, reclaim, the heartbeat that keeps a live worker's slow job its own, and the drain.

Covers: integrations/redis_streams/stream_worker.py, integrations/redis_streams/finish.py,
integrations/redis_streams/state.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from queue_tier import SIM_MODEL, RedisServer, wait_until

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast.integrations.redis_streams import (
    JobQueue,
    StreamWorker,
    SyncJobQueue,
    WorkerConfig,
    connect,
)
from langchain_qwen_fast.integrations.redis_streams.jobs import job_document
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.redis
STREAM, GROUP = "jobs", "qwen"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero", seed=9)) as srv:
        yield srv


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="h100", speed=0.5, seed=4)) as srv:
        yield srv


@contextlib.asynccontextmanager
async def serving(url: str, base_url: str, **config: Any) -> AsyncIterator[tuple[StreamWorker, asyncio.Event,
                                                                                asyncio.Task[None]]]:
    """A worker running in this loop: it, the event that stops it, and its ``run()`` task."""
    model = BatchedChatQwen(base_url=base_url, model=SIM_MODEL, max_tokens=16, max_retries=1, timeout=30)
    client = connect(url)
    worker = StreamWorker(client, model, WorkerConfig(stream=STREAM, group=GROUP, **config))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker, stop, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 40)
        await model.aclose()
        await client.aclose()


async def stop_and_time(stop: asyncio.Event, task: asyncio.Task[None]) -> float:
    """Stop a worker started by :func:`serving`; the seconds its ``run()`` took to return."""
    loop = asyncio.get_running_loop()
    stop.set()
    t0 = loop.time()
    await asyncio.wait_for(task, 30)
    return loop.time() - t0


@contextlib.asynccontextmanager
async def running(url: str, base_url: str, **config: Any) -> AsyncIterator[StreamWorker]:
    async with serving(url, base_url, **config) as (worker, _stop, _task):
        yield worker


def _job(doc: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": 1, **doc})


async def test_bad_jobs_get_an_error_result_and_a_dead_letter_copy_and_never_stall_the_stream(
    redis_server: RedisServer, sim: SimServer
) -> None:
    r = connect(redis_server.url)
    big = "x" * 10_000
    cases: list[tuple[dict[str, bytes], str | None, str]] = [  # (entry fields, result key id or None: entry id, why)
        ({"job": b"{not json", "id": b"bad-json"}, "bad-json", "not valid JSON"),
        ({"something": b"else"}, None, "has no 'job' field"),
        ({"job": b"[1, 2]"}, None, "must be a JSON object"),
        ({"job": _job({"id": "no-msgs"})}, "no-msgs", "exactly one of 'messages'"),
        ({"job": _job({"id": "bad-role", "messages": [{"role": "robot", "content": "hi"}]})}, "bad-role",
         "role must be one of"),
        ({"job": _job({"id": "unknown", "prompt": "hi", "params": {"logit_bias": {"1": 2}}})}, "unknown",
         "unknown param 'logit_bias'"),
        ({"job": _job({"id": "bad-type", "prompt": "hi", "params": {"max_tokens": "many"}})}, "bad-type",
         "must be a positive integer"),
        ({"job": _job({"id": "has spaces", "prompt": "hi"})}, None, "'id' must be"),
        ({"job": _job({"id": "future", "prompt": "hi", "v": 2})}, "future", "v=2 is not understood"),
        ({"job": _job({"id": "big", "prompt": big})}, "big", "this worker accepts at most 4096"),
    ]
    async with JobQueue(r, STREAM) as q:
        good = await q.submit_many([f"good {i}" for i in range(5)])
        entries = [await r.xadd(STREAM, fields) for fields, _, _ in cases]
        failing = await q.submit("[[fault:status=503]] fails on every attempt", temperature=0.5)
        too_big_from_producer = await q.submit(big)  # the producer allows 1 MiB; this worker 4 KiB
        good += await q.submit_many([f"good {i}" for i in range(5, 10)])
        async with running(redis_server.url, sim.base_url, max_job_bytes=4096) as worker:
            for res in await q.results(good, timeout=30):
                assert res.ok and res.content is not None and res.content.startswith("[sim] good"), res
            failed = await q.result(failing, timeout=30)
            refused = await q.result(too_big_from_producer, timeout=30)
            await wait_until(lambda: worker.stats()["in_flight"] == 0, 10, "the worker to write everything")
            stats = worker.stats()
        assert failed.error is not None and failed.error["type"] == "ServerError", failed.error
        assert refused.error is not None and refused.error["type"] == "BadJob"
        assert "accepts at most 4096" in refused.error["message"]

        for (_fields, key, why), eid in zip(cases, entries, strict=True):
            raw = await r.get(f"{STREAM}:result:{key or eid.decode()}")
            assert raw is not None, f"no error result for the {why!r} case"
            err = orjson.loads(raw)["error"]
            assert err["type"] == "BadJob" and why in err["message"], (why, err)
        dead = {fields[b"entry"]: fields for _id, fields in await r.xrange(f"{STREAM}:dead")}
        assert len(dead) == len(cases) + 1  # and not the model failure
        for (_fields, _key, why), eid in zip(cases, entries, strict=True):
            assert why in dead[eid][b"reason"].decode()
        big_copy = dead[entries[-1]]
        assert int(big_copy[b"job_bytes"]) > 10_000 and len(big_copy[b"job_head"]) == 4096  # a bounded copy
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0
        assert stats["dead_lettered"] == len(cases) + 1 and stats["failed"] == {"ServerError": 1}
    await r.aclose()


async def test_a_job_enqueued_twice_is_answered_once(redis_server: RedisServer, sim: SimServer) -> None:
    r = connect(redis_server.url)
    async with JobQueue(r, STREAM) as q, running(redis_server.url, sim.base_url) as worker:
        served = sim.stats()["prompts_served"]
        await q.submit("once please", job_id="dup-1")
        first = await q.result("dup-1", timeout=30)
        await q.submit("once please", job_id="dup-1")  # its result exists: acknowledged, not answered again
        await wait_until(lambda: worker.stats()["duplicates"] == 1, 10, "the second copy to be acknowledged")
        assert sim.stats()["prompts_served"] == served + 1
        async with r.pipeline(transaction=False) as p:  # two copies in one read: one result, one reply
            for _ in range(2):
                p.xadd(STREAM, {"job": job_document("dup-2", [{"role": "user", "content": "twice"}], {}, q.producer)})
            await p.execute()
        second = await q.result("dup-2", timeout=30)
        await wait_until(lambda: worker.stats()["duplicates"] == 2, 10, "the copy in the same read")
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0
        assert await r.xlen(f"{STREAM}:replies:{q.producer}") == 0  # every reply was read, none left over
    assert first.ok and second.ok and first.content != second.content
    assert worker.stats()["results_written"] == 2
    await r.aclose()


async def test_a_worker_holds_no_more_jobs_than_its_capacity_and_the_rest_wait_in_redis(
    redis_server: RedisServer, slow_sim: SimServer
) -> None:
    r = connect(redis_server.url)
    async with JobQueue(r, STREAM) as q, running(redis_server.url, slow_sim.base_url, max_in_flight=8) as worker:
        ids = await q.submit_many([f"slow {i}" for i in range(120)])
        held, lagged = [], []
        done = asyncio.create_task(q.results(ids, timeout=120))
        while not done.done():
            summary = await r.xpending(STREAM, GROUP)
            held.append(summary["pending"])
            lagged.append(worker.stream_lag or 0)
            await asyncio.sleep(0.01)
        assert all(res.ok for res in done.result())
    assert max(held) <= 8, max(held)
    assert max(held) == 8  # and it does fill its capacity
    assert max(lagged) > 0  # the rest waited in the stream, where another worker could take them
    await r.aclose()


async def test_jobs_held_by_a_silent_consumer_are_reclaimed_and_a_job_delivered_too_often_is_dead_lettered(
    redis_server: RedisServer, sim: SimServer
) -> None:
    r = connect(redis_server.url)
    await r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    async with JobQueue(r, STREAM) as q:
        ids = await q.submit_many(["orphan 0", "orphan 1", "orphan 2"])
        poison = await r.xadd(STREAM, {"job": job_document("poison", [{"role": "user", "content": "x"}], {}, None)})
        taken = await r.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=10)  # a consumer that then dies
        assert len(taken[0][1]) == 4
        await r.xclaim(STREAM, GROUP, "ghost", 0, [poison], retrycount=9)  # as if nine workers had died on it
        served = sim.stats()["prompts_served"]
        async with running(redis_server.url, sim.base_url, claim_idle_s=0.2, max_deliveries=5) as worker:
            results = await q.results(ids, timeout=30)
            await wait_until(lambda: worker.stats()["dead_lettered"] == 1, 10, "the poison job")
            stats = worker.stats()
    assert [res.content.split(" ")[1:3] for res in results if res.content] == [["orphan", str(i)] for i in range(3)]
    assert stats["read_reclaimed"] == 4 and stats["read_new"] == 0
    assert sim.stats()["prompts_served"] == served + 3  # the poison job never reached the model
    (_entry_id, fields), = await r.xrange(f"{STREAM}:dead")
    assert fields[b"entry"] == poison and b"delivered 10 times" in fields[b"reason"]
    assert orjson.loads(await r.get(f"{STREAM}:result:poison"))["error"]["type"] == "BadJob"
    assert (await r.xpending(STREAM, GROUP))["pending"] == 0
    await r.aclose()


async def test_a_live_workers_slow_job_is_not_taken_over_by_another_worker(
    redis_server: RedisServer, sim: SimServer
) -> None:
    r = connect(redis_server.url)
    async with JobQueue(r, STREAM) as q, running(redis_server.url, sim.base_url, claim_idle_s=0.3) as a, \
            running(redis_server.url, sim.base_url, claim_idle_s=0.3) as b:
        served = sim.stats()["prompts_served"]
        res = await q.result(await q.submit("[[fault:stall=2]] slow answer"), timeout=30)  # 2 s > 6 idle periods
        assert res.ok, res.error
        assert a.stats()["retried"] + b.stats()["retried"] == 0
    assert sim.stats()["prompts_served"] == served + 1
    await r.aclose()


async def test_a_stopped_worker_answers_what_it_holds_reads_nothing_more_and_returns(
    redis_server: RedisServer, slow_sim: SimServer
) -> None:
    r = connect(redis_server.url)
    async with JobQueue(r, STREAM) as q:
        ids = await q.submit_many([f"drain {i}" for i in range(60)])
        async with serving(redis_server.url, slow_sim.base_url, max_in_flight=8) as (worker, stop, task):
            await wait_until(lambda: worker.stats()["in_flight"] == 8, 30, "the worker to hold 8 jobs")
            took = await stop_and_time(stop, task)
            stats = worker.stats()
        assert took < 10, took  # it answered what it held and returned, long before drain_s (30 s)
        assert stats["in_flight"] == 0 and stats["read_new"] == stats["results_written"] < 60, stats
        assert (await r.xpending(STREAM, GROUP))["pending"] == 0  # all it took was answered and acknowledged
        groups = {g["name"].decode(): g for g in await r.xinfo_groups(STREAM)}
        assert groups[GROUP]["lag"] == 60 - stats["read_new"]  # the rest was never read: it waits in Redis
        async with running(redis_server.url, slow_sim.base_url):  # and another worker answers it
            results = await q.results(ids, timeout=60)
    assert all(res.ok for res in results)
    await r.aclose()


async def test_a_job_still_unanswered_at_the_drain_deadline_stays_pending_and_another_worker_answers_it(
    redis_server: RedisServer, sim: SimServer
) -> None:
    r = connect(redis_server.url)
    async with JobQueue(r, STREAM) as q:
        async with serving(redis_server.url, sim.base_url, drain_s=0.5, claim_idle_s=0.5) as (a, stop, task):
            jid = await q.submit("[[fault:stall=3]] longer than the drain")
            await wait_until(lambda: a.stats()["in_flight"] == 1, 10, "worker a to take the job")
            took = await stop_and_time(stop, task)
        assert took < 0.5 + a.config.block_s + 1.5, took  # the drain deadline, then the loops' own ends
        assert (await r.xpending(STREAM, GROUP))["pending"] == 1 and await r.get(f"{STREAM}:result:{jid}") is None
        async with running(redis_server.url, sim.base_url, claim_idle_s=0.5) as b:
            res = await q.result(jid, timeout=30)
            assert res.ok and res.worker == b.config.consumer, res
            assert b.stats()["read_reclaimed"] == 1
    assert (await r.xpending(STREAM, GROUP))["pending"] == 0
    await r.aclose()


async def test_a_draining_worker_keeps_its_held_jobs_fresh_so_a_slow_one_is_not_taken_over(
    redis_server: RedisServer, sim: SimServer
) -> None:
    r = connect(redis_server.url)
    async with JobQueue(r, STREAM) as q, serving(redis_server.url, sim.base_url, claim_idle_s=0.3) as (a, stop, task):
        jid = await q.submit("[[fault:stall=2]] answered while its worker drains")  # 2 s > 6 idle periods
        await wait_until(lambda: a.stats()["in_flight"] == 1, 10, "worker a to take the job")
        served = sim.stats()["prompts_served"]
        async with running(redis_server.url, sim.base_url, claim_idle_s=0.3) as b:
            await stop_and_time(stop, task)  # a drains: it still answers the job it holds, and still heartbeats it
            res = await q.result(jid, timeout=30)
            assert res.ok and res.worker == a.config.consumer, res
            assert b.stats()["retried"] == 0
    assert sim.stats()["prompts_served"] == served + 1  # one model call: b never took it over
    await r.aclose()


async def test_a_producer_closes_promptly_right_after_its_last_result_arrived(
    redis_server: RedisServer, sim: SimServer
) -> None:
    # The listener is then about to start its next blocking read: a cancel() landing there can be swallowed by
    # redis-py and the task reads on forever, so the listener must end by itself on the closing flag.
    async with running(redis_server.url, sim.base_url):
        for i in range(5):
            q = JobQueue(redis_server.url, STREAM)
            assert (await q.result(await q.submit(f"close {i}"), timeout=30)).ok
            await asyncio.wait_for(q.aclose(), 5)
            assert q._listener is not None and q._listener.done() and not q._listener.cancelled()


async def test_the_sync_producer_submits_and_waits_from_a_plain_thread_and_params_reach_the_model(
    redis_server: RedisServer, sim: SimServer
) -> None:
    def produce() -> list[Any]:
        with SyncJobQueue(redis_server.url, STREAM) as q:
            ids = q.submit_many(["sync 0", "sync 1"])
            ids.append(q.submit([{"role": "user", "content": "sync 2"}], max_tokens=4))
            return q.results(ids, timeout=30)

    async with running(redis_server.url, sim.base_url):
        results = await asyncio.to_thread(produce)
    assert [r.content.split(" ")[1:3] for r in results[:2]] == [["sync", "0"], ["sync", "1"]]
    assert results[2].ok and results[2].content.startswith("[sim] sync")
    assert [r.usage["output_tokens"] for r in results] == [16, 16, 4]  # the model's 16, then the job's own 4
