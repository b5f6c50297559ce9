"""Pins the callback runs a batch starts, as LangChain's per-input path (``invoke``) starts them for ChatOpenAI:
a config per input reaches only its own handler with its own tags, metadata, run name and run id (the message id is
``lc_run--{run_id}-0``); one shared config starts one run per input with distinct ids and ``batch_size`` 1; the
LangSmith ``ls_*`` metadata of every run is ChatOpenAI's (but the provider).

Every start is compared with the start ``invoke`` gives the same input and config: invocation params, options,
messages, tags, metadata (with the model's own tags and metadata), name, batch size and parent.

Covers: _calls/batch.py, _calls/prepare.py, chat_models.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from support import ENTRY_POINTS, run_entry_point, run_invoke

pytestmark = pytest.mark.timeout(60)

WIRES = ("completions", "chat")
MODEL_FIELDS = {"tags": ["model-tag"], "metadata": {"owner": "pins"}}


def _invoke_start(model: Any, entry: str, text: str, config: dict[str, Any], run_log: Any) -> dict[str, Any]:
    """The start record ``invoke`` (``ainvoke`` for the async entry points) gives ``text`` under ``config``."""
    log = run_log(async_handler=entry.startswith("a"))
    run_invoke(model, entry, text, {**config, "callbacks": [log]})
    (start,) = log.starts.values()
    return start


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_each_input_config_reaches_only_its_own_handler_with_its_tags_metadata_name_and_run_id(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    model, _ = canned_model(wire, **MODEL_FIELDS)
    texts = ["q0", "q1", "q2"]
    logs = [run_log(async_handler=entry.startswith("a")) for _ in texts]
    run_ids = [uuid.uuid4() for _ in texts]
    configs = [
        {"callbacks": [logs[i]], "tags": [f"t{i}"], "metadata": {"i": i}, "run_name": f"n{i}", "run_id": run_ids[i]}
        for i in range(len(texts))
    ]
    out = run_entry_point(model, entry, texts, configs)
    assert [m.content for m in out] == ["echo:q0", "echo:q1", "echo:q2"]
    for i, (log, rid, msg) in enumerate(zip(logs, run_ids, out, strict=True)):
        assert list(log.starts) == [rid] and list(log.ends) == [rid] and not log.errors  # its own run only
        start = log.starts[rid]
        assert start["messages"][0][-1].content == texts[i]
        assert start["name"] == f"n{i}"
        assert sorted(start["tags"]) == sorted(["model-tag", f"t{i}"])
        assert start["metadata"]["i"] == i and start["metadata"]["owner"] == "pins"
        assert start["metadata"]["ls_provider"] == "qwen"
        assert start["batch_size"] == 1 and start["parent_run_id"] is None
        assert log.ends[rid].generations[0][0].text == f"echo:q{i}"
        assert msg.id == f"lc_run--{rid}-0"  # as LangChain names a run's message
        assert start == _invoke_start(model, entry, texts[i], configs[i], run_log)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_one_shared_config_starts_one_run_per_input_with_distinct_ids(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    model, _ = canned_model(wire, **MODEL_FIELDS)
    texts = [f"q{i}" for i in range(5)]
    log = run_log(async_handler=entry.startswith("a"))
    shared = {"tags": ["shared"], "metadata": {"m": 1}, "run_name": "named"}
    out = run_entry_point(model, entry, texts, {**shared, "callbacks": [log]})
    assert len(log.starts) == len(set(log.starts)) == 5 and len(log.ends) == 5
    log.assert_every_run_ended_once()
    assert [s["batch_size"] for s in log.starts.values()] == [1] * 5  # as ChatOpenAI.batch (invoke per input)
    for text, msg in zip(texts, out, strict=True):
        rid = log.run_of(text)
        assert msg.id == f"lc_run--{rid}-0"
        assert log.ends[rid].generations[0][0].text == f"echo:{text}"
        start = log.starts[rid]
        assert start["name"] == "named" and "shared" in start["tags"] and start["metadata"]["m"] == 1
        assert start == _invoke_start(model, entry, text, shared, run_log)


LS_CASES = {
    "defaults": ({"max_tokens": None}, {}),
    "model_fields": ({"temperature": 0.3, "max_tokens": 17, "stop": ["END"]}, {}),
    "call_kwargs": ({"temperature": 0.3, "max_tokens": 17}, {"stop": ["X"], "max_tokens": 5, "temperature": 0.9}),
}


@pytest.mark.parametrize("case", sorted(LS_CASES))
@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_every_run_carries_chatopenais_langsmith_params(
    wire: str, entry: str, case: str, canned_model: Any, canned_chatopenai: Any, run_log: Any
) -> None:
    fields, kwargs = LS_CASES[case]
    model, _ = canned_model(wire, **fields)
    theirs, _ = canned_chatopenai(**fields)
    their_log, log = run_log(), run_log(async_handler=entry.startswith("a"))
    theirs.batch(["a", "b"], {"callbacks": [their_log]}, **kwargs)
    run_entry_point(model, entry, ["a", "b"], {"callbacks": [log]}, **kwargs)

    def ls(record: Any, text: str) -> dict[str, Any]:
        meta = record.starts[record.run_of(text)]["metadata"]
        return {k: v for k, v in meta.items() if k.startswith("ls_")}

    for text in ("a", "b"):
        mine, their = ls(log, text), ls(their_log, text)
        assert mine.pop("ls_provider") == "qwen" and their.pop("ls_provider") == "openai"
        assert mine == their, text
        assert list(mine) == list(their)
        assert {"ls_model_name", "ls_model_type", "ls_temperature"} <= set(mine)
    if case == "call_kwargs":
        assert mine["ls_stop"] == ["X"] and mine["ls_max_tokens"] == 5 and mine["ls_temperature"] == 0.9
