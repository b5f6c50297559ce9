"""What a benchmark run shows while it works: a progress bar and one line per finished row.

The rows themselves go to the JSON lines file (``run.emit``); the console gets what a person watches
for: which scenario and round is running, and per finished row its req/s and its errors by type.
With rich (the ``bench`` extra) it draws as ``make demo`` does, a bar with the rows printed above
it; without rich, or when the output is not a terminal (the GPU runner's logs), the same lines are
printed plainly.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any


def error_summary(types: dict[str, int] | None) -> str:
    """``{"ServerError": 2, "APIConnectionError": 5}`` -> ``"APIConnectionError 5, ServerError 2"``."""
    return ", ".join(f"{k} {v}" for k, v in sorted((types or {}).items(), key=lambda kv: (-kv[1], kv[0])))


def row_line(row: dict[str, Any]) -> str:
    """One finished row in a line: scenario, round, req/s, errors (with their types when there are any)."""
    where = f"m{row.get('max_tokens')}"
    if row.get("round") is not None:
        where += f" round {row['round'] + 1}"
    if row.get("load_fraction"):
        where += f" at {row['load_fraction']:.0%} load"
    if row.get("sweep"):
        where += f" {row['sweep']} n={row.get('n')} limit={row.get('admission_limit')}"
    head = f"{row.get('scenario', '?')} ({where})"
    if row.get("failure"):
        return f"{head}: FAILED {row['failure']}"
    errors = row.get("errors") or 0
    err = f"{errors} errors" + (f" ({error_summary(row.get('error_types'))})" if row.get("error_types") else "")
    rate = row.get("req_s")
    return f"{head}: {rate:.1f} req/s, {err}" if rate is not None else f"{head}: {err}"


class RunDisplay:
    """A context manager: ``start(label)`` before each run, ``row(row)`` after it, ``note(text)`` for the rest."""

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total = title, total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> RunDisplay:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return self
        console = Console(stderr=False)
        if not console.is_terminal:
            return self
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self._progress.start()
        self._task = self._progress.add_task(self.title, total=self.total)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, label: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self.title}: {label}")

    def row(self, row: dict[str, Any]) -> None:
        line = row_line(row)
        if self._progress is None:
            print(line, flush=True)
            return
        self._progress.console.print(line, markup=False, highlight=False)
        self._progress.advance(self._task)

    def note(self, text: str) -> None:
        if self._progress is None:
            print(text, file=sys.stderr, flush=True)
        else:
            self._progress.console.print(text, markup=False, highlight=False)
