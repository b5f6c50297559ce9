"""Benchmark rows count their errors by type (bench/scenarios.py), whichever client made them; the replicas plan
compares engine counts or named sets of engines (bench/replicas.py).

Covers: bench/scenarios.py, bench/replicas.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from _qwen_fakes import LocalServer, chat_body, last_user_text

from langchain_qwen_fast.bench import scenarios as S


def test_the_recorder_counts_llm_errors_by_exception_type() -> None:
    rec = S.LatencyRecorder()
    for error in (TimeoutError(), ValueError("a"), ValueError("b")):
        rec.on_llm_error(error, run_id=uuid.uuid4())
    assert rec.errors == {"ValueError": 2, "TimeoutError": 1}


def test_a_row_holds_the_total_and_the_types() -> None:
    w = S.Workload("http://127.0.0.1:1/v1", n=10)
    row = S._result("x", w, 1.0, 0.1, [0.5], 0, {"ServerError": 2, "HTTP 503": 1})
    assert (row["errors"], row["error_types"]) == (3, {"ServerError": 2, "HTTP 503": 1})
    clean = S._result("x", w, 1.0, 0.1, [0.5], 0, 0)  # a client that counts no types (httpx_serial)
    assert (clean["errors"], clean["error_types"]) == (0, {})


def _what_fails(status: int) -> Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]:
    """The server answers ``status`` to every question that starts with "What", 200 to the others."""

    def respond(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if last_user_text(payload).startswith("What"):
            return status, {"error": {"message": "no", "type": "BadRequestError"}}
        return 200, chat_body("ok")

    return respond


def test_raw_client_rows_count_http_statuses_and_connection_errors(
    local_server: Callable[..., LocalServer],
) -> None:
    server = local_server()
    server.respond = _what_fails(503)
    w = S.Workload(server.base_url, n=30, max_tokens=8)
    failing = sum(q.startswith("What") for q in S.prompts(30))
    row = S.raw_scenario(w, "chat", 8)
    assert (row["errors"], row["error_types"]) == (failing, {"HTTP 503": failing})

    refused = S.raw_scenario(S.Workload("http://127.0.0.1:9/v1", n=3, max_tokens=8), "chat", 2)
    assert refused["errors"] == 3 and set(refused["error_types"]) == {"ClientConnectorError"}


def test_langchain_client_rows_name_the_exception_each_failed_call_raised(
    local_server: Callable[..., LocalServer],
) -> None:
    server = local_server()
    server.respond = _what_fails(400)
    w = S.Workload(server.base_url, n=20, max_tokens=8)
    failing = sum(q.startswith("What") for q in S.prompts(20))
    row = S.qwen_scenario(w, "batch", "chat", max_retries=0)
    assert (row["errors"], row["error_types"]) == (failing, {"BadRequestError": failing})


def test_open_loop_rows_count_errors_by_type() -> None:
    class Failing:
        async def ainvoke(self, q: str) -> Any:
            raise ConnectionResetError("gone")

    lat, _, errors, sent = asyncio.run(S._poisson(S.Workload("http://x/v1"), Failing(), 400.0, 0.05, seed=1))
    assert sent > 0 and lat == [] and errors == {"ConnectionResetError": sent}


def test_replicas_plan_reverses_each_engine_counts_rows_in_odd_rounds() -> None:
    from langchain_qwen_fast.bench import replicas

    urls = ["http://a/v1", "http://b/v1", "http://c/v1"]
    even = [n for n, _ in replicas.plan([1, 3], urls, {3}, openai=True, rnd=0)]
    odd = [n for n, _ in replicas.plan([1, 3], urls, {3}, openai=True, rnd=1)]
    assert even[0] == odd[0] == "openai_batch_default_x1"
    assert even[1:4] == ["raw_lists_x1", "qwen_batch_x1", "qwen_abatch_x1"]
    assert odd[1:4] == ["qwen_abatch_x1", "qwen_batch_x1", "raw_lists_x1"]
    assert even[4:] == ["raw_lists_x3", "qwen_batch_x3", "qwen_abatch_x3", "qwen_batch_x3_shared512",
                        "qwen_batch_x3_affinity"]
    assert odd[4:] == list(reversed(even[4:]))


def test_replicas_raw_rows_spread_lists_over_the_engines_and_name_each_error_type(
    local_server: Callable[..., LocalServer],
) -> None:
    from langchain_qwen_fast.bench import replicas

    server = local_server()
    server.respond = lambda payload: (503, {"error": {"message": "busy"}})
    w = S.Workload(server.base_url, n=64, max_tokens=8)
    row = replicas.raw_scenario([server.base_url, "http://127.0.0.1:9/v1"], w, per_server=2, batch=8)
    assert row["scenario"] == "raw_lists_x2" and row["errors"] == 64
    assert set(row["error_types"]) == {"HTTP 503", "ClientConnectorError"}, row["error_types"]  # both engines got lists


def test_named_sets_run_each_depth_and_limit_and_reverse_in_odd_rounds() -> None:
    from langchain_qwen_fast.bench import replicas

    sets = replicas.parse_sets(["old=http://a/v1,http://b/v1", "new=http://c/v1, http://d/v1"])
    assert sets == {"old": ["http://a/v1", "http://b/v1"], "new": ["http://c/v1", "http://d/v1"]}
    even = [n for n, _ in replicas.set_plan(sets, [16, 64], ["raw", "batch"], [512], openai=True, rnd=0)]
    assert even == ["openai_batch_default_x1", "raw_lists_old_c16", "raw_lists_old_c64", "qwen_batch_old",
                    "qwen_batch_old_mc512", "raw_lists_new_c16", "raw_lists_new_c64", "qwen_batch_new",
                    "qwen_batch_new_mc512"]
    odd = [n for n, _ in replicas.set_plan(sets, [16, 64], ["raw", "batch"], [512], openai=True, rnd=1)]
    assert odd == list(reversed(even))
    for bad in (["old"], ["=http://a/v1"], ["a=http://x/v1", "a=http://y/v1"]):
        with pytest.raises(SystemExit, match="give NAME=URL"):
            replicas.parse_sets(bad)


def test_a_deep_row_sends_three_times_what_it_keeps_in_flight() -> None:
    from langchain_qwen_fast.bench import replicas

    w = S.Workload("http://x/v1", n=3000)
    assert replicas.waves(w, 16 * 32, 3).n == 4608  # 16 lists of 32 on each of 3 engines, three times over
    assert replicas.waves(w, 2, 1).n == 3000  # never fewer than asked for
