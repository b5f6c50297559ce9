"""The benchmark report: medians over rounds, and ratios to the best raw strategy of the same round."""

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
