"""What the real vLLM tier showed about conversions, pinned offline.

- vLLM's qwen3 reasoning parser leaves the template's "\\n\\n" after ``</think>`` on the answer
  (``content == "\\n\\nHello!"``); the completions wire and the inline split drop it, so the parsed
  path drops it too and every path gives the same content.
- A history from another provider (Anthropic ``tool_use`` parts) or from ``output_version="v1"``
  (``tool_call`` blocks) carries its calls twice: in ``tool_calls`` and in the content. The content
  copy is dropped, as ChatOpenAI does, instead of failing as an unsupported part.

Covers: _convert.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from langchain_qwen_fast._convert import StreamAssembler, dict_to_ai_message, message_to_dict


def test_parsed_reasoning_answer_loses_the_template_newlines() -> None:
    msg = dict_to_ai_message({"content": "\n\nHello!", "reasoning": "Hmm"})
    assert msg.content == "Hello!"
    assert msg.additional_kwargs["reasoning_content"] == "Hmm"


def test_answer_without_reasoning_keeps_its_leading_newlines() -> None:
    assert dict_to_ai_message({"content": "\n\nHello!"}).content == "\n\nHello!"


def _delta(**delta: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


def test_streamed_parsed_reasoning_then_answer_matches_invoke() -> None:
    asm = StreamAssembler("m")
    deltas = [
        _delta(role="assistant", content=""),
        _delta(reasoning="Hmm"),
        _delta(content="\n\n"),
        _delta(content="Hello"),
        _delta(content="\n!"),
    ]
    chunks = [c.message for d in deltas if (c := asm.convert(d)) is not None]
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert isinstance(total, AIMessageChunk)
    assert total.content == "Hello\n!"  # only the newlines right after the think block go
    assert total.additional_kwargs["reasoning_content"] == "Hmm"


def test_streamed_answer_without_reasoning_is_untouched() -> None:
    asm = StreamAssembler("m")
    out = [asm.convert(_delta(content=t)) for t in ["\n\n", "Hi"]]
    assert [c.message.content for c in out if c is not None] == ["\n\n", "Hi"]


CALL = {"name": "add", "args": {"a": 1}, "id": "abc", "type": "tool_call"}


@pytest.mark.parametrize(
    "part",
    [
        {"type": "tool_use", "id": "abc", "name": "add", "input": {"a": 1}},
        {"type": "tool_call", "id": "abc", "name": "add", "args": {"a": 1}},
    ],
    ids=["anthropic-tool_use", "v1-tool_call"],
)
def test_tool_call_parts_in_ai_content_are_dropped_and_the_call_is_sent_once(
    part: dict[str, Any],
) -> None:
    out = message_to_dict(
        AIMessage([{"type": "text", "text": "some text"}, part], tool_calls=[CALL])
    )
    assert out["content"] == "some text"
    assert [c["function"]["name"] for c in out["tool_calls"]] == ["add"]


def test_ai_content_of_only_tool_call_parts_is_sent_as_null_content() -> None:
    out = message_to_dict(AIMessage([{"type": "tool_call", **CALL}], tool_calls=[CALL]))
    assert out["content"] is None
    assert out["tool_calls"][0]["function"]["arguments"] == '{"a":1}'


def test_image_parts_are_still_rejected() -> None:
    with pytest.raises(ValueError, match="text-only"):
        message_to_dict(AIMessage([{"type": "image_url", "image_url": {"url": "data:,"}}]))
