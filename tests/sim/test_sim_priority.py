"""The simulator's ``--scheduling-policy`` (testing/engine.py, testing/server.py): under fcfs a
request's ``priority`` is accepted and ignored, as vLLM's V1 engine does; under priority the engine
admits the lowest value first; ``/server_info`` says which policy runs, like vLLM's dev mode.

Covers: testing/sim_engine.py, testing/server.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from langchain_qwen_fast.testing import SimConfig, SimServer
from langchain_qwen_fast.testing.sim_engine import LatencyParams, SimEngine, VirtualClockLoop, build_parser

pytestmark = pytest.mark.sim
ONE_SLOT = LatencyParams(step_a=1e-3, max_num_seqs=1)


def finish_order(policy: str) -> list[str]:
    """A long sequence holds the only slot; then b (priority 0) and c (priority -1) wait."""

    async def scenario() -> list[str]:
        eng = SimEngine(ONE_SLOT, policy)
        done: list[str] = []

        async def run(name: str, tokens: int, priority: int) -> None:
            await eng.submit([10], [tokens], priority)
            done.append(name)

        first = asyncio.ensure_future(run("a", 20, 0))
        await asyncio.sleep(0.005)  # a is running
        rest = [asyncio.ensure_future(run("b", 2, 0)), asyncio.ensure_future(run("c", 2, -1))]
        await asyncio.gather(first, *rest)
        await eng.close()
        return done

    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_priority_policy_admits_the_lowest_value_first() -> None:
    assert finish_order("priority") == ["a", "c", "b"]


def test_fcfs_policy_ignores_priority_and_keeps_arrival_order() -> None:
    assert finish_order("fcfs") == ["a", "b", "c"]


def test_equal_priorities_keep_arrival_order() -> None:
    async def scenario() -> list[int]:
        eng = SimEngine(ONE_SLOT, "priority")
        done: list[int] = []

        async def run(i: int) -> None:
            await eng.submit([10], [2], 5)
            done.append(i)

        await asyncio.gather(*(run(i) for i in range(6)))
        await eng.close()
        return done

    loop = VirtualClockLoop()
    try:
        assert loop.run_until_complete(scenario()) == list(range(6))
    finally:
        loop.close()


def test_scheduling_policy_is_checked_and_round_trips_the_command_line() -> None:
    with pytest.raises(ValueError, match="scheduling_policy must be one of"):
        SimConfig(scheduling_policy="lifo")
    with pytest.raises(ValueError, match="scheduling_policy"):
        SimEngine(ONE_SLOT, "lifo")
    cfg = SimConfig(latency="zero", scheduling_policy="priority")
    assert "--scheduling-policy" in cfg.to_argv()
    assert SimConfig.from_args(build_parser().parse_args(cfg.to_argv())) == cfg
    assert build_parser().parse_args([]).scheduling_policy == "fcfs"


def chat(priority: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "priority": priority, **extra}


def test_fcfs_server_accepts_a_priority_and_server_info_says_fcfs() -> None:
    with SimServer(SimConfig(latency="zero")) as srv, httpx.Client(timeout=10) as c:
        assert c.post(srv.base_url + "/chat/completions", json=chat(-1)).status_code == 200
        body = {"model": "Qwen/Qwen3-0.6B", "prompt": ["a", "b"], "max_tokens": 2, "priority": 3}
        assert c.post(srv.base_url + "/completions", json=body).status_code == 200
        bad = c.post(srv.base_url + "/chat/completions", json=chat("high"))
        assert bad.status_code == 400 and "`priority` must be an integer" in bad.text
        info = c.get(srv.url + "/server_info", params={"config_format": "json"}).json()
        assert info["vllm_config"]["scheduler_config"]["policy"] == "fcfs"
        assert isinstance(c.get(srv.url + "/server_info").json()["vllm_config"], str)  # text form


def test_priority_server_serves_a_lower_priority_request_first() -> None:
    # One engine slot, held by a long answer; then a priority-0 and a priority--1 request wait.
    cfg = SimConfig(latency="h100", max_num_seqs=1, scheduling_policy="priority")

    async def scenario(url: str) -> list[str]:
        done: list[str] = []
        async with httpx.AsyncClient(timeout=30) as c:

            async def send(name: str, priority: int, tokens: int) -> None:
                r = await c.post(url, json=chat(priority, max_tokens=tokens, ignore_eos=True))
                assert r.status_code == 200
                done.append(name)

            first = asyncio.create_task(send("long", 0, 120))
            await asyncio.sleep(0.05)
            normal = asyncio.create_task(send("normal", 0, 4))
            await asyncio.sleep(0.02)
            urgent = asyncio.create_task(send("urgent", -1, 4))
            await asyncio.gather(first, normal, urgent)
        return done

    with SimServer(cfg) as srv:
        t0 = time.perf_counter()
        order = asyncio.run(scenario(srv.base_url + "/chat/completions"))
        assert time.perf_counter() - t0 < 10
        info = httpx.get(srv.url + "/server_info", params={"config_format": "json"}).json()
    assert info["vllm_config"]["scheduler_config"]["policy"] == "priority"
    assert order == ["long", "urgent", "normal"]
