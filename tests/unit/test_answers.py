"""Answers become the same LangChain objects either way: the final message built directly (``to_message``, no
pydantic revalidation) equals, field by field and in order, the one LangChain's path gives
(``finish(to_result(...))``: a validated ``AIMessage`` in a ``ChatResult``, finished as ``_generate_with_cache``
finishes it), for every answer shape.

Covers: _answers.py, _convert.py."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import pytest
from langchain_core.load import dumpd

from langchain_qwen_fast._answers import (
    FAST_MESSAGES,
    chat_answer,
    fast_ai_message,
    finish,
    list_answers,
    to_message,
    to_result,
)
from langchain_qwen_fast._errors import InvalidResponseError


def _list_resp(texts: list[str], *, usage: bool = True, **top: Any) -> dict[str, Any]:
    choices = []
    for i, t in enumerate(texts):
        c: dict[str, Any] = {"index": i, "text": t, "finish_reason": "length" if i % 2 else "stop", "logprobs": None}
        if usage:
            c["prompt_token_ids"] = list(range(5 + i))
            c["token_ids"] = list(range(3 + i))
        choices.append(c)
    return {"id": "cmpl-1", "object": "text_completion", "model": "Qwen/Qwen3-0.6B", "choices": choices,
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}, **top}


def _chat_resp(message: dict[str, Any], *, usage: bool = True, n: int = 1, **top: Any) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "Qwen/Qwen3-0.6B",
        "choices": [{"index": i, "message": {"role": "assistant", **message}, "finish_reason": "stop",
                     "logprobs": None} for i in range(n)],
        **top,
    }
    if usage:
        resp["usage"] = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16,
                         "prompt_tokens_details": {"cached_tokens": 2}}
    return resp


LIST_CASES = {
    "plain": _list_resp(["Hello!", "Bonjour"]),
    "no usage": _list_resp(["Hello!"], usage=False),
    "one prompt, list usage": _list_resp(["Hi"], usage=False) | {"usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                                                            "total_tokens": 4}},
    "inline think": _list_resp(["<think>\nHmm\n</think>\n\nHello!", "</think>\n\nlate close"]),
    "fingerprint and tier": _list_resp(["x"], system_fingerprint="fp-1", service_tier="default"),
    "no id, no model": {k: v for k, v in _list_resp(["x"]).items() if k not in ("id", "model")},
    "empty text": _list_resp([""]),
    "chinese": _list_resp(["你好，世界"]),  # noqa: RUF001
}
CHAT_CASES = {
    "plain": _chat_resp({"content": "Hello!"}),
    "reasoning": _chat_resp({"content": "\n\nHello!", "reasoning": "Hmm"}),
    "reasoning_content": _chat_resp({"content": "Hello!", "reasoning_content": "Hmm"}),
    "refusal": _chat_resp({"content": "", "refusal": "I can't"}),
    "no usage": _chat_resp({"content": "ok"}, usage=False),
    "null content": _chat_resp({"content": None}),
    "tool call": _chat_resp({"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}),
    "bad tool json": _chat_resp({"content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{nope"}}]}),
    "two choices": _chat_resp({"content": "a"}, n=2),
}


def _state(m: Any) -> tuple[Any, ...]:
    return (list(m.__dict__.items()), m.model_fields_set, m.__pydantic_extra__, m.__pydantic_private__)


def _same(fast: Any, slow: Any) -> None:
    assert type(fast) is type(slow)
    assert _state(fast) == _state(slow)
    assert fast == slow
    assert dumpd(fast) == dumpd(slow)
    assert _state(pickle.loads(pickle.dumps(fast))) == _state(slow)
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)


def test_the_fast_message_path_is_on_for_this_langchain_core() -> None:
    assert FAST_MESSAGES


@pytest.mark.parametrize("case", sorted(LIST_CASES))
def test_a_list_answer_gives_the_message_langchains_path_gives(case: str) -> None:
    resp = LIST_CASES[case]
    run_id = uuid.uuid4()
    for a in list_answers(resp, len(resp["choices"]), "fallback-model"):
        _same(to_message(a, run_id), finish(to_result(a), run_id))


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
def test_a_chat_answer_gives_the_message_langchains_path_gives(case: str) -> None:
    a = chat_answer(CHAT_CASES[case], "fallback-model")
    run_id = uuid.uuid4()
    _same(to_message(a, run_id), finish(to_result(a), run_id))


def test_the_message_carries_the_run_id_and_the_merged_metadata_in_langchains_order() -> None:
    (a,) = list_answers(_list_resp(["Hello!"]), 1, "m")
    msg = to_message(a, "0190-run")
    assert msg.id == "lc_run--0190-run-0"
    assert list(msg.response_metadata) == ["token_usage", "model_provider", "model_name", "system_fingerprint",
                                           "id", "finish_reason", "logprobs"]
    assert msg.usage_metadata == {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
                                  "input_token_details": {}, "output_token_details": {}}
    assert msg.model_fields_set == {"content", "id", "response_metadata", "usage_metadata"}


def test_a_fast_message_with_reasoning_marks_additional_kwargs_set() -> None:
    msg = fast_ai_message("x", {"reasoning_content": "r"}, {}, "lc_run--1-0", None)
    assert msg.model_fields_set == {"content", "additional_kwargs", "id", "response_metadata"}
    assert msg.usage_metadata is None and msg.tool_calls == [] and msg.invalid_tool_calls == []


def test_a_list_answer_missing_a_prompt_or_a_bad_chat_body_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponseError, match="no choices for prompt indexes"):
        list_answers(_list_resp(["only one"]), 2, "m")
    with pytest.raises(InvalidResponseError):
        chat_answer({"choices": []}, "m")
    with pytest.raises(InvalidResponseError):
        chat_answer({"choices": [{"message": {}}], "usage": [1]}, "m")
