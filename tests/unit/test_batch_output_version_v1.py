"""Pins ``output_version="v1"`` on every batch entry point: the content is LangChain's standard content blocks of
the message the default version returns (a reasoning block first when thinking is on), ``response_metadata`` ends
with ``output_version: "v1"``, and the blocks are ChatOpenAI's for the same answer (ChatOpenAI drops vLLM's
reasoning, README.md: what differs, so it lacks the reasoning block).

Covers: _calls/batch.py, _convert.py, chat_models.py."""

from __future__ import annotations

from typing import Any

import pytest
from support import ENTRY_POINTS, run_entry_point

pytestmark = pytest.mark.timeout(60)

WIRES = ("completions", "chat")
TEXTS = ["plain question", "a long one [[length]]"]


def _views(msgs: list[Any]) -> list[dict[str, Any]]:
    return [{"content": m.content, "additional_kwargs": m.additional_kwargs, "usage_metadata": m.usage_metadata,
             "response_metadata": list(m.response_metadata.items()), "fields_set": m.model_fields_set} for m in msgs]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_v1_content_is_the_standard_blocks_of_the_default_message(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    v1, _ = canned_model(wire, output_version="v1")
    v0, _ = canned_model(wire)
    for thinking in (False, True):
        log = run_log(async_handler=entry.startswith("a"))
        got = run_entry_point(v1, entry, TEXTS, {"callbacks": [log]}, enable_thinking=thinking)
        plain = run_entry_point(v0, entry, TEXTS, enable_thinking=thinking)
        expected = []
        for text, msg in zip(TEXTS, plain, strict=True):
            blocks = [{"type": "text", "text": msg.content}]
            if thinking:
                blocks.insert(0, {"type": "reasoning", "reasoning": f"thought about {text}"})
            assert msg.content_blocks == blocks
            msg.content = blocks
            msg.response_metadata = {**msg.response_metadata, "output_version": "v1"}
            expected.append(msg)
        assert _views(got) == _views(expected)
        assert [m.content_blocks for m in got] == [m.content for m in got]
        assert [m.id for m in got] == [f"lc_run--{log.run_of(t)}-0" for t in TEXTS]
        assert [m.response_metadata["finish_reason"] for m in got] == ["stop", "length"]


@pytest.mark.parametrize("wire", WIRES)
def test_v1_blocks_are_chatopenais_for_the_same_answer(wire: str, canned_model: Any, canned_chatopenai: Any) -> None:
    ours, _ = canned_model(wire, output_version="v1")
    for thinking in (False, True):  # ChatOpenAI asks for thinking as its users do: through extra_body
        theirs, sent = canned_chatopenai(max_tokens=16, output_version="v1",
                                         extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
        mine, their = ours.batch(TEXTS, enable_thinking=thinking), theirs.batch(TEXTS)
        assert [p["chat_template_kwargs"] for p in sent] == [{"enable_thinking": thinking}] * len(TEXTS)
        for text, m, t in zip(TEXTS, mine, their, strict=True):
            reasoning = [{"type": "reasoning", "reasoning": f"thought about {text}"}] if thinking else []
            assert m.content == reasoning + t.content
            assert t.content == [{"type": "text", "text": "echo:cut" if "[[length]]" in text else f"echo:{text}"}]
            assert m.response_metadata["output_version"] == t.response_metadata["output_version"] == "v1"
            assert m.response_metadata["finish_reason"] == t.response_metadata["finish_reason"]
            if wire == "chat":  # the same answer: the same metadata and usage, but the provider
                assert {**m.response_metadata, "model_provider": "openai"} == t.response_metadata
                assert m.usage_metadata == t.usage_metadata
