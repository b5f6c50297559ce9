"""``qwen-fast bench client-cpu``: one child process per measurement, importing the tree it was told to.

The end-to-end tests run the plan with tiny numbers against zero-latency simulators; the rest check the
plan's order, the tables' ratios and the py-spy summariser on hand-written inputs.

Covers: bench/client_cpu.py, bench/client_cpu_child.py, bench/client_cpu_scenarios.py, bench/client_cpu_tables.py,
bench/profile_summary.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from langchain_qwen_fast.bench import cli as bench_cli
from langchain_qwen_fast.bench import client_cpu
from langchain_qwen_fast.bench.client_cpu_tables import tables
from langchain_qwen_fast.bench.profile_summary import parse_collapsed, short_path, summarize

pytestmark = pytest.mark.sim

ROW_FIELDS = {
    "kind", "scenario", "tree", "round", "n", "wall_s", "req_s", "cpu_us_per_req", "caller_us_per_req",
    "loop_us_per_req", "other_us_per_req", "errors", "error_types", "answers", "answers_ok", "wrong_answers",
    "tokens_ok", "package_file", "package_version",
}


def _run(tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    assert client_cpu.main(["--rounds", "1", "--warmup", "50", "--out", str(tmp_path), *args]) == 0
    (folder,) = tmp_path.glob("client-cpu-*")
    rows = [json.loads(line) for line in (folder / "client_cpu.jsonl").read_text().splitlines()]
    return rows, (folder / "tables.md").read_text()


def _assert_clean(row: dict[str, Any], tree: Path) -> None:
    assert set(row) >= ROW_FIELDS, ROW_FIELDS - set(row)
    assert row["errors"] == 0 and row["error_types"] == {} and row["wrong_answers"] == 0, row
    assert row["answers"] == row["answers_ok"] == row["n"]
    assert row["tokens_ok"] is True  # every scenario below makes exactly max_tokens tokens per answer
    assert Path(row["package_file"]).is_relative_to(tree)
    assert row["cpu_us_per_req"] > 0 and row["req_s"] > 0


def test_one_tree_gives_one_clean_row_per_scenario_from_that_tree(tmp_path: Path) -> None:
    rows, md = _run(tmp_path, "--n", "300", "--scenarios", "raw_lists,batch,abatch,openai_batch", "--openai-n", "50")
    assert [(r["scenario"], r["tree"]) for r in rows] == [
        ("raw_lists", "now"), ("batch", "now"), ("abatch", "now"), ("openai_batch", "now")]
    for r in rows:
        _assert_clean(r, client_cpu.OWN_TREE)
    assert [r["n"] for r in rows] == [300, 300, 300, 50]
    # the package's calls run on its loop thread; raw aiohttp and ChatOpenAI have none
    assert rows[1]["loop_us_per_req"] is not None and rows[0]["loop_us_per_req"] is None
    for s in ("raw_lists", "batch", "abatch", "openai_batch"):
        assert f"| {s} | now | 1 |" in md


def test_two_tree_labels_measure_each_scenario_per_tree_and_raw_lists_once(tmp_path: Path) -> None:
    root = str(client_cpu.OWN_TREE)
    rows, md = _run(tmp_path, "--n", "300", "--scenarios", "raw_lists,batch",
                    "--tree", f"before={root}", "--tree", f"after={root}")
    assert [(r["scenario"], r["tree"]) for r in rows] == [
        ("raw_lists", "before"), ("batch", "before"), ("batch", "after")]
    for r in rows:
        _assert_clean(r, client_cpu.OWN_TREE)
    assert "| x before |" in md and "| batch | before | 1 |" in md and "1 (ref)" in md


def test_the_child_refuses_a_package_imported_from_outside_its_tree(tmp_path: Path) -> None:
    argv = [sys.executable, str(client_cpu.CHILD_SCRIPT), "--scenario", "batch", "--base-url", "http://127.0.0.1:9/v1",
            "--model", "m", "--n", "1", "--tree", "elsewhere", "--tree-path", str(tmp_path),
            "--result", str(tmp_path / "row.json")]
    env = {**os.environ, "PYTHONPATH": str(client_cpu.OWN_TREE)}
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 3, p.stderr
    assert "not from the tree elsewhere" in p.stderr and not (tmp_path / "row.json").exists()


def test_the_child_counts_request_errors_by_type_in_its_row(tmp_path: Path) -> None:
    # Port 9 (discard) refuses connections on loopback: every list fails, and each prompt's failure is counted.
    argv = [sys.executable, str(client_cpu.CHILD_SCRIPT), "--scenario", "raw_lists", "--base-url",
            "http://127.0.0.1:9/v1", "--model", "m", "--n", "40", "--warmup", "0", "--tree", "now",
            "--tree-path", str(client_cpu.OWN_TREE), "--result", str(tmp_path / "row.json")]
    env = {**os.environ, "PYTHONPATH": str(client_cpu.OWN_TREE)}
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    row = json.loads((tmp_path / "row.json").read_text())
    assert row["errors"] == 40 and sum(row["error_types"].values()) == 40 and row["answers_ok"] == 0
    assert row["tokens_ok"] is False


def test_a_tree_without_the_package_is_rejected_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        client_cpu.main(["--tree", f"old={tmp_path}", "--out", str(tmp_path)])
    assert exc.value.code == 2 and not list(tmp_path.glob("client-cpu-*"))


def test_the_plan_has_its_own_help_under_qwen_fast_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_cli.main(["client-cpu", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "qwen-fast bench client-cpu" in out and "--tree" in out and "(default: 20000)" in out


def test_each_round_runs_raw_lists_once_and_odd_rounds_run_in_reverse() -> None:
    a, b = client_cpu.Tree("a", Path("/a")), client_cpu.Tree("b", Path("/b"))
    cfg = client_cpu.PlanConfig(trees=(a, b), scenarios=("raw_lists", "batch", "abatch"))
    even = [(s, t.label) for s, t in client_cpu.plan(cfg, 0)]
    assert even == [("raw_lists", "a"), ("batch", "a"), ("batch", "b"), ("abatch", "a"), ("abatch", "b")]
    assert [(s, t.label) for s, t in client_cpu.plan(cfg, 1)] == even[::-1]


def _row(scenario: str, tree: str, rnd: int, cpu: float, **kw: Any) -> dict[str, Any]:
    return {"kind": "measure", "scenario": scenario, "tree": tree, "round": rnd, "n": 100, "max_tokens": 16,
            "servers": 1, "cpu_us_per_req": cpu, "req_s": 1000.0, "errors": 0, "wrong_answers": 0, **kw}


def test_tables_take_ratios_within_each_round_and_leave_rows_with_errors_out() -> None:
    # The machine is twice as busy in round 1; "after" costs half of "before" in both rounds.
    rows = [
        _row("raw_lists", "before", 0, 10.0), _row("batch", "before", 0, 100.0), _row("batch", "after", 0, 50.0),
        _row("raw_lists", "before", 1, 20.0), _row("batch", "before", 1, 200.0), _row("batch", "after", 1, 100.0),
        _row("batch", "after", 2, 1.0, errors=3, error_types={"APIConnectionError": 3}),
        {**_row("batch", "after", 0, 1.0), "kind": "profile"},  # ran under py-spy: not in the table
    ]
    md = tables(rows, ["before", "after"])
    assert "| batch | before | 2 | 150.0 (100.0-200.0) |" in md
    assert "| 10.00 (10.00-10.00) | 1 (ref) | 0 |" in md  # before: 100/10 and 200/20
    assert "| batch | after | 3 | 75.0 (50.0-100.0) |" in md  # the row with errors is counted, not averaged
    assert "| 5.00 (5.00-5.00) | 0.50 (0.50-0.50) | 3 |" in md
    assert "round 2 after batch: errors {'APIConnectionError': 3}" in md


SAMPLE = """\
thread (101): MainThread;<module> (/srv/app/bench.py:1);main (/srv/app/bench.py:9);work (/srv/app/bench.py:20) 6
thread (101): MainThread;<module> (/srv/app/bench.py:1);main (/srv/app/bench.py:9) 2
thread (202): qwen-fast-loop;Thread.run (/usr/lib/python3.11/threading.py:971);\
_run (/repo/langchain_qwen_fast/_loop/runtime.py:57);read (/v/lib/python3.11/site-packages/aiohttp/client.py:700) 3
thread (202): qwen-fast-loop;Thread.run (/usr/lib/python3.11/threading.py:971);\
_run (/repo/langchain_qwen_fast/_loop/runtime.py:57) 1
thread (303): MainThread 1
not a stack line
"""


def test_summary_counts_self_and_inclusive_samples_per_thread() -> None:
    threads = parse_collapsed(SAMPLE.splitlines())
    main, loop = threads["MainThread"], threads["qwen-fast-loop"]
    assert (main.samples, loop.samples) == (9, 4)  # two threads named MainThread are merged
    assert main.self_["work (/srv/app/bench.py:20)"] == 6 and main.self_["main (/srv/app/bench.py:9)"] == 2
    assert main.self_["(no Python frame)"] == 1
    assert main.inclusive["main (/srv/app/bench.py:9)"] == 8
    assert loop.inclusive["_run (langchain_qwen_fast/_loop/runtime.py:57)"] == 4
    assert loop.self_["read (aiohttp/client.py:700)"] == 3 and loop.self_["Thread.run (threading.py:971)"] == 0
    md = summarize(SAMPLE, title="t", top=2)
    assert "13 samples in 2 thread(s)" in md and "- MainThread: 9 (69.2%)" in md
    assert " 66.7%  work (/srv/app/bench.py:20)" in md and " 75.0%  read (aiohttp/client.py:700)" in md
    assert "100.0%  _run (langchain_qwen_fast/_loop/runtime.py:57)" in md


def test_pool_workers_waiting_for_work_are_left_out_of_the_samples() -> None:
    wait = "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:69)"
    text = (f"thread (1): qwen-fast-loop;Thread.run (/usr/lib/python3.11/threading.py:971);"
            f"parse (/x/langchain_qwen_fast/_convert.py:9) 3\n"
            f"thread (2): qwen-fast-sync_0;Thread.run (/usr/lib/python3.11/threading.py:971);{wait} 50\n"
            f"thread (3): qwen-fast-sync_1;Thread.run (/usr/lib/python3.11/threading.py:971);{wait} 40\n"
            f"thread (3): qwen-fast-sync_1;Thread.run (/usr/lib/python3.11/threading.py:971);{wait};"
            f"run (/x/app.py:5) 1\n")
    threads = parse_collapsed(text.splitlines())
    assert (threads["qwen-fast-sync_0"].samples, threads["qwen-fast-sync_0"].waiting) == (0, 50)
    assert (threads["qwen-fast-sync_1"].samples, threads["qwen-fast-sync_1"].waiting) == (1, 40)
    md = summarize(text, title="t")
    assert "4 samples in 2 thread(s)" in md and "- qwen-fast-loop: 3 (75.0%)" in md
    assert "qwen-fast-sync_0" not in md and "- qwen-fast-sync_1: 1 (25.0%)" in md
    assert "90 more samples of thread-pool workers waiting for work are left out; 1 thread(s) did nothing else" in md


def test_short_path_keeps_the_package_site_packages_or_stdlib_relative_part() -> None:
    assert short_path("/x/langchain_qwen_fast/_convert.py") == "langchain_qwen_fast/_convert.py"
    assert short_path("/v/lib/python3.11/site-packages/orjson/__init__.py") == "orjson/__init__.py"
    assert short_path("/usr/lib/python3.11/asyncio/events.py") == "asyncio/events.py"
    assert short_path("aiohttp/client.py") == "aiohttp/client.py"
