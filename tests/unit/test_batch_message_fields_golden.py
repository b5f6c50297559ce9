"""Pins the messages a batch returns, field by field and key by key in order, against a snapshot of today's
(``golden/batch_messages.json``): message id, ``response_metadata``, ``usage_metadata``, ``additional_kwargs`` and
``model_fields_set`` (only the fields that carry data, as README.md documents), for a plain, a reasoning (thinking
on) and a truncated (finish_reason "length") answer, in both wire modes, through the four batch entry points and
through ``invoke``/``ainvoke`` (LangChain's own per-call path), which must all agree.

Covers: _calls/batch.py, _calls/prepare.py, _convert.py, chat_models.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from support import ENTRY_POINTS, run_entry_point, run_invoke

pytestmark = pytest.mark.timeout(60)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "batch_messages.json").read_text())
WIRES = ("completions", "chat")
CALLS = (*ENTRY_POINTS, "invoke", "ainvoke")


def _view(msg: Any, run_id: Any) -> dict[str, Any]:
    """The message as the golden file writes it (``{run_id}`` for the run's id)."""
    return {
        "type": msg.type, "content": msg.content, "additional_kwargs": msg.additional_kwargs,
        "response_metadata": msg.response_metadata, "usage_metadata": msg.usage_metadata,
        "tool_calls": msg.tool_calls, "invalid_tool_calls": msg.invalid_tool_calls, "name": msg.name,
        "id": msg.id.replace(str(run_id), "{run_id}") if msg.id else msg.id,
        "model_fields_set": sorted(msg.model_fields_set),
    }


def _ordered(value: Any) -> Any:
    """Dicts as lists of (key, value) pairs, all the way down: equal only with the same keys in the same order."""
    if isinstance(value, dict):
        return [(k, _ordered(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    return value


def _call(model: Any, call: str, texts: list[str], log: Any, **kwargs: Any) -> list[Any]:
    config = {"callbacks": [log]}
    if call in ("invoke", "ainvoke"):
        return [run_invoke(model, call, t, config, **kwargs) for t in texts]
    return run_entry_point(model, call, texts, config, **kwargs)


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("wire", WIRES)
def test_results_equal_the_golden_messages_key_by_key(wire: str, call: str, canned_model: Any, run_log: Any) -> None:
    model, _ = canned_model(wire)
    golden = GOLDEN[wire]
    log = run_log(async_handler=call.startswith("a"))
    off = [name for name, case in golden.items() if not case["enable_thinking"]]
    on = [name for name, case in golden.items() if case["enable_thinking"]]
    assert off and on
    got = dict(zip(off, _call(model, call, [golden[n]["input"] for n in off], log), strict=True))
    got.update(zip(on, _call(model, call, [golden[n]["input"] for n in on], log, enable_thinking=True), strict=True))
    for name, msg in got.items():
        assert type(msg) is AIMessage
        view = _view(msg, log.run_of(golden[name]["input"]))
        expected = golden[name]["message"]
        assert _ordered(view) == _ordered(expected), (
            f"{wire}/{name} through {call}:\n got      {json.dumps(view)}\n expected {json.dumps(expected)}"
        )


def test_the_golden_cases_are_what_they_say() -> None:
    """The snapshot covers what it claims: a plain, a reasoning and a truncated answer per wire mode."""
    for wire in WIRES:
        cases = {name: case["message"] for name, case in GOLDEN[wire].items()}
        assert cases["plain"]["response_metadata"]["finish_reason"] == "stop"
        assert cases["truncated"]["response_metadata"]["finish_reason"] == "length"
        assert "reasoning_content" in cases["reasoning"]["additional_kwargs"]
        assert GOLDEN[wire]["reasoning"]["enable_thinking"] is True
        assert all(c["id"] == "lc_run--{run_id}-0" for c in cases.values())
