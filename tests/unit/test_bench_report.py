"""The benchmark report: medians over rounds, and ratios to the best raw strategy of the same round.

Covers: bench/report.py."""

from __future__ import annotations

from typing import Any

from langchain_qwen_fast.bench import report


def _row(scenario: str, rnd: int, req_s: float) -> dict[str, Any]:
    return {
        "scenario": scenario, "max_tokens": 32, "n": 100, "round": rnd, "req_s": req_s,
        "client_cpu_ms_per_req": 0.1, "p50_s": 1.0, "p95_s": 2.0, "errors": 0, "tokens_ok": True,
    }


def test_ratio_to_best_raw_is_taken_within_each_round() -> None:
    # The server is twice as fast in round 1; the client keeps 0.9x of raw lists in both rounds.
    rows = [
        _row("raw_aiohttp_list32_x16", 0, 100.0), _row("raw_aiohttp_chat_c256", 0, 60.0), _row("qwen_batch", 0, 90.0),
        _row("raw_aiohttp_list32_x16", 1, 200.0), _row("raw_aiohttp_chat_c256", 1, 250.0), _row("qwen_batch", 1, 225.0),
    ]
    q = report.closed_loop(rows)[32]["qwen_batch"]
    assert q["x_raw_rounds"] == 0.9  # 90/100 in round 0, 225/250 in round 1 (chat was the best raw there)
    assert q["x_raw_rounds_spread"] == "0.90-0.90"
    assert q["req_s"] == 157.5  # the median over rounds is still reported
    md = report.closed_loop_md(rows)
    assert "| qwen_batch | 157.5 | 90-225 |" in md and "0.90 (0.90-0.90)" in md


def test_sweep_and_open_loop_rows_stay_out_of_the_closed_loop_table() -> None:
    rows = [_row("raw_aiohttp_list32_x16", 0, 100.0), {**_row("qwen_batch_completions", 0, 50.0), "sweep": "sweep_n"}]
    assert set(report.closed_loop(rows)[32]) == {"raw_aiohttp_list32_x16"}


def test_the_errors_column_names_the_error_types_summed_over_rounds() -> None:
    rows = [
        {**_row("qwen_batch", 0, 90.0), "errors": 2, "error_types": {"ServerError": 2}},
        {**_row("qwen_batch", 1, 95.0), "errors": 3, "error_types": {"ServerError": 1, "APIConnectionError": 2}},
        {**_row("openai_batch_default", 0, 20.0), "error_types": {}},
        {**_row("openai_batch_default", 1, 21.0), "errors": 4},  # a row written before error_types: the count only
    ]
    md = report.closed_loop_md(rows)
    qwen = next(line for line in md.splitlines() if line.startswith("| qwen_batch |"))
    assert qwen.endswith("| 5 (ServerError 3, APIConnectionError 2) | yes |")  # most frequent first
    oai = next(line for line in md.splitlines() if line.startswith("| openai_batch_default |"))
    assert oai.endswith("| 4 | yes |")


def test_open_loop_and_sweep_rows_with_errors_name_their_types() -> None:
    poisson = {
        **_row("poisson_qwen_ainvoke_completions", 0, 50.0), "offered_rps": 60.0, "p99_s": 3.0,
        "errors": 1, "error_types": {"DeadlineExceededError": 1},
    }
    sweep = {**_row("qwen_batch_completions", 0, 50.0), "sweep": "sweep_n", "mode": "completions",
             "errors": 7, "error_types": {"HTTP 503": 7}}
    assert "| 1 (DeadlineExceededError 1) |" in report.open_loop_md([poisson])
    assert "| 7 (HTTP 503 7) |" in report.sweep_md([sweep])


def test_a_run_that_failed_is_listed_with_its_exception_not_dropped() -> None:
    rows = [
        _row("raw_aiohttp_list32_x16", 0, 100.0),
        {"scenario": "openai_batch_default", "max_tokens": 32, "n": 100, "round": 1,
         "failure": "ModuleNotFoundError: No module named 'langchain_openai'"},
    ]
    assert "openai_batch_default" not in report.closed_loop_md(rows)
    assert report.failures_md(rows).splitlines()[2] == (
        "- openai_batch_default (max_tokens 32, round 2): ModuleNotFoundError: No module named 'langchain_openai'"
    )
    assert report.failures_md(rows[:1]) == ""
