"""The invariant every reliability test checks: each submitted input ends in exactly one outcome.

An input is ``"item-000042 <text>"``; the simulator answers ``"[sim] " + the last user message``, so
an answer names the input it belongs to. For every input the :class:`Ledger` expects exactly one
outcome:

- **answered**: a message whose content starts with ``"[sim] item-000042"`` (its own id);
- **failed**: an exception of an expected type with a non-empty message (a per-item exception from
  ``return_exceptions=True``, or what ``invoke`` raised for that input);
- **cancelled**: ``asyncio.CancelledError``, only where the test cancelled callers on purpose.

Anything else is a violation: **lost** (no outcome), **duplicated** (two outcomes for one input),
**swapped** (an answer naming another input), **unclear** (an exception of an unexpected type or
without a message, a None, a non-message). :meth:`Ledger.check` asserts that there are none and
adds a row to :data:`RESULTS`, which ``conftest.py`` prints as a markdown table at the end of the
session.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.exceptions import ModelError
from langchain_core.messages import BaseMessage

from langchain_qwen_fast._errors import ClientClosedError

SIM_MODEL = "Qwen/Qwen3-0.6B"  # the simulator's served name (any other model name is a 404)
_ANSWER = re.compile(r"^\[sim\] (item-\d{6})(?!\d)")
#: What a caller may legitimately get instead of an answer: the package's errors (all
#: ``langchain_core.exceptions.ModelError``), ``ClientClosedError``, and ``ValueError`` for input
#: rejected before anything is sent.
CLEAR_ERRORS: tuple[type[BaseException], ...] = (ModelError, ClientClosedError, ValueError)


@dataclass
class Tally:
    label: str
    inputs: int = 0
    answered: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0
    duplicated: int = 0
    swapped: int = 0
    unclear: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "fault": self.label,
            "inputs": self.inputs,
            "answered": self.answered,
            "failed_clear": self.failed,
            "cancelled": self.cancelled,
            "lost": self.lost,
            "duplicated": self.duplicated + self.swapped,
            "unclear": self.unclear,
            "errors": ", ".join(f"{k}x{v}" for k, v in sorted(self.errors.items())),
        }


#: One row per :meth:`Ledger.check`, printed by conftest's ``pytest_terminal_summary``.
RESULTS: list[dict[str, Any]] = []
#: Free-form lines printed under the table (peak RSS, admission maxima, soak totals).
NOTES: list[str] = []
_RESULTS_LOCK = threading.Lock()


def add_row(row: dict[str, Any]) -> None:
    with _RESULTS_LOCK:
        RESULTS.append(row)


def markdown_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols = [
        "fault",
        "inputs",
        "answered",
        "failed_clear",
        "cancelled",
        "lost",
        "duplicated",
        "unclear",
        "errors",
    ]
    head = [
        "fault",
        "inputs",
        "answered",
        "failed (clear error)",
        "cancelled",
        "lost",
        "duplicated",
        "unclear",
        "error types",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return lines


def answer_id(content: Any) -> str | None:
    """The id an answer names, or None when it is not a simulator answer."""
    if not isinstance(content, str):
        return None
    m = _ANSWER.match(content)
    return m.group(1) if m else None


class Ledger:
    """Ids out, outcomes in; thread-safe, so threads and callbacks can record directly."""

    def __init__(
        self,
        label: str,
        *,
        errors: tuple[type[BaseException], ...] = CLEAR_ERRORS,
        allow_cancelled: bool = False,
    ) -> None:
        self.label = label
        self.errors = errors
        self.allow_cancelled = allow_cancelled
        self.ids: list[str] = []
        self._known: set[str] = set()
        self._outcomes: dict[str, list[tuple[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next = 0

    # -- inputs ---------------------------------------------------------------------------------
    def new_ids(self, n: int) -> list[str]:
        with self._lock:
            ids = [f"item-{i:06d}" for i in range(self._next, self._next + n)]
            self._next += n
            self.ids += ids
            self._known.update(ids)
        return ids

    @staticmethod
    def prompt(item_id: str, extra: str = "") -> str:
        return f"{item_id} please echo{(' ' + extra) if extra else ''}"

    def prompts(self, n: int, extra: str | dict[int, str] = "") -> tuple[list[str], list[str]]:
        """``n`` new ids and their prompts; ``extra`` goes after all, or after the indexes given."""
        ids = self.new_ids(n)
        if isinstance(extra, dict):
            return ids, [self.prompt(i, extra.get(k, "")) for k, i in enumerate(ids)]
        return ids, [self.prompt(i, extra) for i in ids]

    # -- outcomes -------------------------------------------------------------------------------
    def _classify(self, item_id: str, out: Any) -> tuple[str, Any]:
        if isinstance(out, asyncio.CancelledError):
            return ("cancelled", "CancelledError") if self.allow_cancelled else ("unclear", out)
        if isinstance(out, BaseException):
            if isinstance(out, self.errors) and str(out).strip():
                return "failed", type(out).__name__
            return "unclear", out
        content = out.content if isinstance(out, BaseMessage) else out
        got = answer_id(content)
        if got == item_id:
            return "answered", None
        if got is not None and got in self._known:
            return "swapped", got
        return "unclear", out

    def record(self, item_id: str, out: Any) -> None:
        kind = self._classify(item_id, out)
        with self._lock:
            self._outcomes.setdefault(item_id, []).append(kind)

    def record_all(self, ids: Sequence[str], outputs: Sequence[Any]) -> None:
        assert len(outputs) == len(ids), f"{len(outputs)} outputs for {len(ids)} inputs"
        for i, out in zip(ids, outputs, strict=True):
            self.record(i, out)

    # -- the invariant --------------------------------------------------------------------------
    def tally(self) -> Tally:
        t = Tally(self.label, inputs=len(self.ids))
        with self._lock:
            outcomes = {k: list(v) for k, v in self._outcomes.items()}
        for item_id in self.ids:
            got = outcomes.get(item_id, [])
            if not got:
                t.lost += 1
                t.problems.append(f"{item_id}: no outcome")
                continue
            if len(got) > 1:
                t.duplicated += 1
                t.problems.append(f"{item_id}: {len(got)} outcomes {[k for k, _ in got]}")
                continue
            kind, detail = got[0]
            if kind == "answered":
                t.answered += 1
            elif kind == "failed":
                t.failed += 1
                t.errors[detail] += 1
            elif kind == "cancelled":
                t.cancelled += 1
            elif kind == "swapped":
                t.swapped += 1
                t.problems.append(f"{item_id}: got the answer of {detail}")
            else:
                t.unclear += 1
                t.problems.append(f"{item_id}: unclear outcome {detail!r:.300}")
        strays = set(outcomes) - self._known
        if strays:
            t.problems.append(f"outcomes for unknown ids: {sorted(strays)[:5]}")
            t.duplicated += len(strays)
        return t

    def check(
        self,
        *,
        min_answered: int | None = None,
        max_answered: int | None = None,
        min_failed: int | None = None,
        record: bool = True,
    ) -> Tally:
        """Assert lost == duplicated == swapped == unclear == 0 (and the bounds); add a row."""
        t = self.tally()
        if record:
            add_row(t.row())
        detail = "; ".join(t.problems[:8])
        assert t.lost == 0, f"{self.label}: {t.lost} inputs lost: {detail}"
        assert t.duplicated == 0, f"{self.label}: {t.duplicated} inputs duplicated: {detail}"
        assert t.swapped == 0, f"{self.label}: {t.swapped} answers swapped: {detail}"
        assert t.unclear == 0, f"{self.label}: {t.unclear} unclear outcomes: {detail}"
        assert t.answered + t.failed + t.cancelled == t.inputs
        if min_answered is not None:
            assert t.answered >= min_answered, f"{self.label}: answered {t.answered} < {min_answered} ({t.errors})"
        if max_answered is not None:
            assert t.answered <= max_answered, f"{self.label}: answered {t.answered} > {max_answered}"
        if min_failed is not None:
            assert t.failed >= min_failed, f"{self.label}: failed {t.failed} < {min_failed}"
        return t


def errors_in(outputs: Iterable[Any]) -> list[BaseException]:
    return [o for o in outputs if isinstance(o, BaseException)]


def served_requests(srv: Any) -> int:
    """Arrivals on the two generation endpoints (counted before anything else happens)."""
    req = srv.stats()["requests"]
    return int(req.get("chat", 0)) + int(req.get("completions", 0))


def batch_through_a_kill(
    model: Any, prompts: list[Any], victim: Any, progress: Callable[[], float], at: float, pause_s: float,
    at_kill: Callable[[], Any],
) -> tuple[list[Any], dict[str, Any]]:
    """``model.batch(prompts, return_exceptions=True)`` while another thread waits for ``progress() >= at``
    (60 s at most), records ``at_kill()``, SIGKILLs ``victim``, waits ``pause_s`` and restarts it.

    Returns the outputs and the events: ``at_kill``, and the monotonic times ``killed`` (just after the
    kill), ``restarted`` and ``done`` (the batch returned). The thread has ended when this returns.
    """
    events: dict[str, Any] = {}

    def chaos() -> None:
        give_up = time.monotonic() + 60
        while progress() < at and time.monotonic() < give_up:
            time.sleep(0.01)
        events["at_kill"] = at_kill()
        victim.kill()
        events["killed"] = time.monotonic()
        time.sleep(pause_s)
        victim.restart()
        events["restarted"] = time.monotonic()

    th = threading.Thread(target=chaos, daemon=True)
    th.start()
    outs = model.batch(prompts, return_exceptions=True)
    events["done"] = time.monotonic()
    th.join(30)
    assert not th.is_alive(), "the kill-and-restart thread did not finish"
    return outs, events


def note(line: str) -> None:
    with _RESULTS_LOCK:
        NOTES.append(line)
