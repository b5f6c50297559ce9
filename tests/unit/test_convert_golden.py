"""Golden-JSON tests of the conversions: messages -> request dicts, response JSON -> AIMessage.

The expected values live in ``tests/unit/golden/`` and were written by hand from the OpenAI wire
format (and checked against what ChatOpenAI produces), not generated from the code under test.

Covers: _convert.py.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_openai.chat_models.base import _create_usage_metadata

from langchain_qwen_fast._convert import (
    dict_to_ai_message,
    message_to_dict,
    messages_to_dicts,
    usage_to_metadata,
)

GOLDEN = Path(__file__).parent / "golden"


def _load(name: str) -> dict[str, Any]:
    data = json.loads((GOLDEN / name).read_text())
    data.pop("_doc", None)
    return data


REQUEST_GOLDEN = _load("messages_to_request.json")
RESPONSE_GOLDEN = _load("responses_to_message.json")

MESSAGES: dict[str, BaseMessage] = {
    "system": SystemMessage("You are terse."),
    "human": HumanMessage("hi"),
    "human_text_parts": HumanMessage(
        content=[{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
    ),
    "human_single_text_part": HumanMessage(content=[{"type": "text", "text": "only part"}]),
    "human_bare_string_parts": HumanMessage(content=["bare", {"type": "text", "text": "dict"}]),
    "ai_plain": AIMessage("hello"),
    "ai_tool_calls": AIMessage(
        "",
        tool_calls=[
            {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"},
            {"name": "get_time", "args": {"tz": "CET", "hour24": True}, "id": "call_2"},
        ],
    ),
    "ai_tool_calls_with_text_and_invalid": AIMessage(
        "checking",
        tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}],
        invalid_tool_calls=[
            {"name": "broken", "args": '{"city": Par', "id": "call_9", "error": "bad json"}
        ],
    ),
    "ai_raw_tool_calls_in_additional_kwargs": AIMessage(
        "",
        additional_kwargs={
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ]
        },
    ),
    "ai_reasoning_part_dropped": AIMessage(
        content=[{"type": "reasoning", "reasoning": "hmm"}, {"type": "text", "text": "answer"}]
    ),
    "tool": ToolMessage("22C and sunny", tool_call_id="call_1"),
    "tool_text_parts": ToolMessage(
        content=[{"type": "text", "text": "line a"}, {"type": "text", "text": "line b"}],
        tool_call_id="call_2",
    ),
    "chat_user": ChatMessage(role="user", content="from ChatMessage"),
    "chat_system": ChatMessage(role="system", content="sys via ChatMessage"),
    "chat_assistant": ChatMessage(role="assistant", content="assistant via ChatMessage"),
    "chat_developer": ChatMessage(role="developer", content="developer maps to system"),
    "chat_human_alias": ChatMessage(role="human", content="human alias"),
    "chat_ai_alias": ChatMessage(role="ai", content="ai alias"),
}


def _normalise(d: dict[str, Any]) -> dict[str, Any]:
    """Compare tool-call arguments as parsed JSON (spacing is not part of the contract)."""
    d = json.loads(json.dumps(d))
    for tc in d.get("tool_calls") or []:
        with contextlib.suppress(ValueError):  # invalid arguments must pass through byte for byte
            tc["function"]["arguments"] = json.loads(tc["function"]["arguments"])
    return d


def test_golden_covers_every_message_case() -> None:
    assert set(MESSAGES) == set(REQUEST_GOLDEN)


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_message_converts_to_golden_request_dict(case: str) -> None:
    got = message_to_dict(MESSAGES[case])
    assert _normalise(got) == _normalise(REQUEST_GOLDEN[case])


def test_tool_call_arguments_are_sent_as_json_strings() -> None:
    got = message_to_dict(MESSAGES["ai_tool_calls"])
    for tc in got["tool_calls"]:
        assert isinstance(tc["function"]["arguments"], str)
    invalid = message_to_dict(MESSAGES["ai_tool_calls_with_text_and_invalid"])["tool_calls"][1]
    assert invalid["function"]["arguments"] == '{"city": Par'


def test_conversation_converts_in_order() -> None:
    names = ["system", "human", "ai_tool_calls", "tool", "human_text_parts"]
    got = messages_to_dicts([MESSAGES[n] for n in names])
    assert [_normalise(d) for d in got] == [_normalise(REQUEST_GOLDEN[n]) for n in names]


@pytest.mark.parametrize("case", sorted(RESPONSE_GOLDEN))
def test_server_response_becomes_golden_ai_message(case: str, mock_model: Any) -> None:
    import httpx

    spec = RESPONSE_GOLDEN[case]
    model, _ = mock_model(lambda p, r: httpx.Response(200, json=spec["response"]))
    msg = model.invoke("question")
    exp = spec["expected"]
    assert isinstance(msg, AIMessage)
    assert msg.content == exp["content"]
    assert msg.additional_kwargs == exp["additional_kwargs"]
    assert msg.tool_calls == exp["tool_calls"]
    invalid = [dict(tc) for tc in msg.invalid_tool_calls]
    for tc in invalid:
        error = tc.pop("error")
        assert isinstance(error, str) and tc["name"] in error
    assert invalid == exp["invalid_tool_calls"]
    assert msg.usage_metadata == exp["usage_metadata"]
    meta = {k: msg.response_metadata.get(k) for k in exp["response_metadata"]}
    assert meta == exp["response_metadata"]


@pytest.mark.parametrize(
    "case", sorted(c for c in RESPONSE_GOLDEN if "usage" in RESPONSE_GOLDEN[c]["response"])
)
def test_usage_metadata_equals_chatopenai_mapping(case: str) -> None:
    usage = RESPONSE_GOLDEN[case]["response"]["usage"]
    assert usage_to_metadata(usage) == _create_usage_metadata(usage)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        {"prompt_tokens": 5, "completion_tokens": 2},  # no total: summed
        {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
        {
            "prompt_tokens": 30,
            "completion_tokens": 9,
            "total_tokens": 39,
            "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0},
        },
        {
            "prompt_tokens": 30,
            "completion_tokens": 9,
            "total_tokens": 39,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 22},
        },
        {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "total_tokens": 4,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
    ],
)
def test_usage_metadata_mapping_matches_chatopenai_for_edge_usages(usage: dict[str, Any]) -> None:
    assert usage_to_metadata(usage) == _create_usage_metadata(usage)


def test_invalid_tool_json_becomes_invalid_tool_call_not_exception() -> None:
    msg = dict_to_ai_message(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "x",
                    "type": "function",
                    "function": {"name": "f", "arguments": "not json {"},
                }
            ],
        }
    )
    assert msg.tool_calls == []
    assert len(msg.invalid_tool_calls) == 1
    assert msg.invalid_tool_calls[0]["args"] == "not json {"
    assert msg.invalid_tool_calls[0]["id"] == "x"


def test_refusal_lands_in_additional_kwargs() -> None:
    msg = dict_to_ai_message({"role": "assistant", "content": "", "refusal": "I can't"})
    assert msg.additional_kwargs["refusal"] == "I can't"
