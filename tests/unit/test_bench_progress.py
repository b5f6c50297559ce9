"""What a benchmark run prints (bench/progress.py) and writes (run.emit): a summary line each, JSON to the file.

Covers: bench/progress.py, bench/run.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from langchain_qwen_fast.bench import progress, run

ROW: dict[str, Any] = {"scenario": "qwen_batch_completions", "max_tokens": 32, "n": 100, "round": 0, "req_s": 812.345,
                       "errors": 3, "error_types": {"ServerError": 1, "DeadlineExceededError": 2}, "tag": "cpu"}


def test_a_finished_row_is_one_line_with_round_rate_and_error_types() -> None:
    assert progress.row_line(ROW) == (
        "qwen_batch_completions (m32 round 1): 812.3 req/s, 3 errors (DeadlineExceededError 2, ServerError 1)"
    )
    clean = {**ROW, "errors": 0, "error_types": {}}
    assert progress.row_line(clean) == "qwen_batch_completions (m32 round 1): 812.3 req/s, 0 errors"


def test_failed_open_loop_and_sweep_rows_say_what_they_were() -> None:
    failed = {"scenario": "openai_batch_default", "max_tokens": 128, "round": 2, "failure": "ValueError: boom"}
    assert progress.row_line(failed) == "openai_batch_default (m128 round 3): FAILED ValueError: boom"
    poisson = {"scenario": "poisson_openai_ainvoke", "max_tokens": 128, "load_fraction": 0.8, "req_s": 40.0,
               "errors": 0, "error_types": {}}
    assert progress.row_line(poisson) == "poisson_openai_ainvoke (m128 at 80% load): 40.0 req/s, 0 errors"
    sweep = {**ROW, "round": None, "sweep": "sweep_admission", "admission_limit": 64, "errors": 0}
    assert "sweep_admission n=100 limit=64" in progress.row_line(sweep)


def test_emit_appends_the_unchanged_json_line_and_prints_only_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.jsonl"
    with progress.RunDisplay("cpu m32", total=2) as show:  # stdout is not a terminal here: plain lines
        run.emit(str(out), ROW, show)
        run.emit(str(out), {**ROW, "round": 1}, show)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [ROW, {**ROW, "round": 1}]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [progress.row_line(ROW), progress.row_line({**ROW, "round": 1})]
    run.emit(str(out), {**ROW, "scenario": "raw_aiohttp_list32_x16", "errors": 0, "req_s": 900.0})
    assert run.best_raw(str(out), 32) == 900.0  # the open-loop rate is still read back from the same file


def test_on_a_terminal_rows_print_above_a_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    rich_console = pytest.importorskip("rich.console")
    screen = io.StringIO()
    real = rich_console.Console
    monkeypatch.setattr(rich_console, "Console", lambda **kw: real(file=screen, force_terminal=True, width=120, **kw))
    with progress.RunDisplay("cpu m32", total=2) as show:
        show.start("qwen_batch_completions, round 1/2")
        show.row(ROW)
        assert show._progress.tasks[0].completed == 1
    text = screen.getvalue()
    assert "DeadlineExceededError 2, ServerError 1" in text and "1/2" in text
