"""render_chatml against hand-written golden strings; can_render; split_reasoning edge cases.

The comparison with Qwen3's official template itself is in ``test_qwen_render_official.py``.

Covers: _qwen.py.
"""

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


_TR = "<|im_start|>user\n<tool_response>\nobs\n</tool_response><|im_end|>\n"


@pytest.mark.parametrize(
    ("second_user", "expected_assistant"),
    [
        # A tool result sent back as user text is not a query: the assistant turn before it belongs to the
        # loop after the last real query and keeps its reasoning.
        ("<tool_response>\nobs\n</tool_response>", "<think>\nplan\n</think>\n\nAction: look"),
        # Not wholly wrapped: a real query, so the reasoning before it is dropped.
        ("<tool_response>\nobs\n</tool_response>\n", "Action: look"),
        (" <tool_response>\nobs\n</tool_response>", "Action: look"),
        ("thanks", "Action: look"),
    ],
)
def test_reasoning_is_kept_only_after_the_last_real_user_query(second_user: str, expected_assistant: str) -> None:
    msgs = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>\n\nplan\n</think>\n\n\nAction: look"},
        {"role": "user", "content": second_user},
    ]
    assert can_render(msgs)
    assert render_chatml(msgs, enable_thinking=False) == (
        f"<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n{expected_assistant}<|im_end|>\n"
        f"<|im_start|>user\n{second_user}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<think>\n\n</think>\n\nAction", "Action"),  # empty reasoning: no think block at all
        ("<think> </think>Action", "<think>\n \n</think>\n\nAction"),  # only newlines count as empty
        # reasoning: after the last <think> before the first </think>; content: after the last </think>
        ("<think>a<think>b</think>c</think>\nd", "<think>\nb\n</think>\n\nd"),
        ("<think>\nunclosed", "<think>\nunclosed"),  # no </think>: nothing is split
        ("Action", "Action"),
    ],
)
def test_react_loop_reasoning_is_split_as_the_template_splits_it(content: str, expected: str) -> None:
    msgs = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": content},
            {"role": "user", "content": "<tool_response>\nobs\n</tool_response>"}]
    assert render_chatml(msgs, enable_thinking=True) == (
        f"<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n{expected}<|im_end|>\n{_TR}<|im_start|>assistant\n"
    )


def test_no_real_query_keeps_no_reasoning() -> None:
    # Only tool results: the template takes the final turn as the query, so no assistant turn follows it.
    msgs = [{"role": "user", "content": "<tool_response>\na\n</tool_response>"},
            {"role": "assistant", "content": "<think>r</think>c"},
            {"role": "user", "content": "<tool_response>\nobs\n</tool_response>"}]
    assert "<think>" not in render_chatml(msgs, enable_thinking=True)


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
