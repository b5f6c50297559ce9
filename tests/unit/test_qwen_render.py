"""render_chatml against hand-written golden strings; can_render; split_reasoning edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from langchain_qwen_fast import render_chatml
from langchain_qwen_fast._qwen import can_render, split_reasoning

_DATA = json.loads((Path(__file__).parent / "golden" / "render_chatml.json").read_text())
_DATA.pop("_doc")


@pytest.mark.parametrize("case", sorted(_DATA))
def test_render_chatml_matches_golden(case: str) -> None:
    spec = _DATA[case]
    assert can_render(spec["messages"])
    assert (
        render_chatml(spec["messages"], enable_thinking=spec["enable_thinking"]) == spec["expected"]
    )


def test_render_does_not_mutate_messages() -> None:
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>x</think>b"},
        {"role": "user", "content": "c"},
    ]
    snapshot = json.dumps(msgs)
    render_chatml(msgs, enable_thinking=False)
    assert json.dumps(msgs) == snapshot


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([], "empty"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "ends with assistant",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "user", "content": "b"},
            ],
            "system not first",
        ),
        (
            [
                {"role": "tool", "content": "r", "tool_call_id": "1"},
                {"role": "user", "content": "a"},
            ],
            "tool role",
        ),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}]}], "list content"),
        ([{"role": "user", "content": "a", "name": "bob"}], "extra key"),
        (
            [
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "user", "content": "a"},
            ],
            "tool calls / None content",
        ),
    ],
)
def test_can_render_rejects_what_the_template_renders_differently(
    messages: list[dict[str, Any]], why: str
) -> None:
    assert not can_render(messages), why


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain answer", (None, "plain answer")),
        ("", (None, "")),
        ("<think>\nstep one\nstep two\n</think>\n\nAnswer.", ("step one\nstep two", "Answer.")),
        ("<think>\n\n</think>\n\nHello", ("", "Hello")),
        # vLLM's template already opened <think> in the prompt: only the close arrives.
        ("reasoning here\n</think>\n\nThe answer", ("reasoning here", "The answer")),
        # max_tokens cut the think block: all of it is reasoning.
        ("<think>\nstill thinking", ("still thinking", "")),
        ("  \n<think>x</think>y", ("x", "y")),
        # A <think> in the middle of ordinary text is not a think block.
        ("use the <think> tag like this", (None, "use the <think> tag like this")),
        ("<think>a</think>b</think>c", ("a", "b</think>c")),
    ],
)
def test_split_reasoning_edge_cases(text: str, expected: tuple[str | None, str]) -> None:
    assert split_reasoning(text) == expected
