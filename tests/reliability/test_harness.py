"""The invariant harness itself can fail: lost, duplicated, swapped, unclear outcomes are caught.

Covers: tests/reliability/harness.py."""

from __future__ import annotations

import asyncio

import pytest
from harness import Ledger
from langchain_core.messages import AIMessage

from langchain_qwen_fast._errors import APIConnectionError


def _ok(item_id: str) -> AIMessage:
    return AIMessage(content=f"[sim] {item_id} please echo lo rem")


def test_a_clean_run_passes_and_counts() -> None:
    led = Ledger("harness self-check", errors=(APIConnectionError,))
    ids = led.new_ids(3)
    led.record_all(ids, [_ok(ids[0]), APIConnectionError("connection to x failed"), _ok(ids[2])])
    t = led.check(record=False)
    assert (t.inputs, t.answered, t.failed, t.lost, t.duplicated) == (3, 2, 1, 0, 0)


@pytest.mark.parametrize("fault", ["lost", "duplicated", "swapped", "unclear", "cancelled", "prefix"])
def test_every_violation_is_caught(fault: str) -> None:
    led = Ledger("harness self-check", errors=(APIConnectionError,))
    a, b = led.new_ids(2)
    if fault == "lost":
        led.record(a, _ok(a))
    elif fault == "duplicated":
        led.record_all([a, b], [_ok(a), _ok(b)])
        led.record(a, APIConnectionError("late second outcome"))
    elif fault == "swapped":
        led.record_all([a, b], [_ok(b), _ok(a)])
    elif fault == "unclear":
        led.record_all([a, b], [_ok(a), KeyError("choices")])
    elif fault == "cancelled":  # not allowed unless the test cancels on purpose
        led.record_all([a, b], [_ok(a), asyncio.CancelledError()])
    else:  # item-000001 must not pass for item-0000010 or a truncated id
        led.record_all([a, b], [_ok(a), AIMessage(content=f"[sim] {b}0 x")])
    with pytest.raises(AssertionError):
        led.check(record=False)
