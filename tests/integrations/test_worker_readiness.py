"""A ``qwen-fast worker`` says ready only when its servers serve its model, and says why it fails jobs.

Real processes as users start them: ``qwen-fast worker``, a simulator serving another name (as a widely
copied deployment guide does: ``Qwen-0.6B``), a real redis-server.

Covers: cli/readiness.py, cli/worker.py, integrations/redis_streams/stream_worker.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from queue_tier import SIM_MODEL, RedisServer, WorkerProcess, wait_until

from langchain_qwen_fast.integrations.redis_streams import JobQueue
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.redis
STREAM = "jobs"


async def test_a_worker_for_an_unserved_model_waits_with_503_and_becomes_ready_when_the_server_serves_it(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    sim = SimServer(SimConfig(latency="zero", model_name="Qwen-0.6B")).start()
    try:
        w = start_worker(redis_server.url, [sim.base_url], ready="WORKER_HTTP")  # --model Qwen/Qwen3-0.6B
        await wait_until(lambda: "not ready" in w.child.output(), 15, "the worker's not-ready warning")
        status, body = w.health()
        assert status == 503 and body["ready"] is False and body[sim.base_url] is False, body
        assert body["reason"] == (f"{SIM_MODEL} is not served: the server serves Qwen-0.6B; "
                                  f"start the worker with --model Qwen-0.6B (or QWEN_MODEL=Qwen-0.6B)"), body
        assert re.search(r"WARNING langchain_qwen_fast\.worker: not ready .*is not served", w.child.output())
        async with JobQueue(redis_server.url, STREAM) as q:
            ids = await q.submit_many([f"job {i}" for i in range(20)])
            await asyncio.sleep(1.5)
            assert not w.read_ready()  # not reading: the jobs wait in the stream instead of failing with 404s
            assert await q.client.xlen(STREAM) == 20
            # The server comes back serving the model too: the worker sees it and starts, by itself.
            sim.stop()
            sim.config = SimConfig(latency="zero", model_name=SIM_MODEL, aliases=("Qwen-0.6B",))
            sim.start()
            await wait_until(w.read_ready, 20, "WORKER_READY after the server serves the model")
            results = await q.results(ids, timeout=60)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        status, body = w.health()
        assert status == 200 and body["ready"] is True and "reason" not in body and body["model"] == SIM_MODEL
    finally:
        sim.stop()


async def test_a_worker_with_no_model_named_takes_the_one_model_its_server_serves(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    with SimServer(SimConfig(latency="zero", model_name="Qwen-0.6B")) as sim:
        env = {k: v for k, v in __import__("os").environ.items() if k != "QWEN_MODEL"}
        w = start_worker(redis_server.url, [sim.base_url], model=None, env=env)
        status, body = w.health()
        assert status == 200 and body["model"] == "Qwen-0.6B", body
        async with JobQueue(redis_server.url, STREAM) as q:
            results = await q.results(await q.submit_many(["hello", "there"]), timeout=30)
        assert all(r.ok and r.content for r in results), [r.error for r in results]


async def test_each_new_kind_of_job_failure_is_logged_once_without_the_prompt(
    redis_server: RedisServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    secret_prompt = "PRIVATE-PROMPT-7731"
    with SimServer(SimConfig(latency="zero")) as sim:
        w = start_worker(redis_server.url, [sim.base_url])
        async with JobQueue(redis_server.url, STREAM) as q:
            prompts = [f"{secret_prompt} {i} [[fault:status={400 if i % 2 else 403}]]" for i in range(10)]
            results = await q.results(await q.submit_many(prompts), timeout=30)
    assert {r.error["type"] for r in results if r.error} == {"BadRequestError", "PermissionDeniedError"}
    out = w.child.output()
    lines = [x for x in out.splitlines() if "a job failed with" in x]
    assert len(lines) == 2, lines  # one per kind, not one per job
    assert any("WARNING" in x and "BadRequestError: HTTP 400" in x for x in lines), lines
    assert any("WARNING" in x and "PermissionDeniedError: HTTP 403" in x for x in lines), lines
    assert secret_prompt not in out
