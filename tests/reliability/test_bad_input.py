"""Bad input gets a clear error: before anything is sent where the client can tell, otherwise from
the server's answer, never retried when retrying cannot help.

Covers: _calls/request.py, _convert.py, _errors.py, _upstream/transport.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from harness import SIM_MODEL, Ledger, served_requests
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, ToolMessage
from pydantic import ValidationError

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._errors import (
    ContextLengthError,
    InvalidResponseError,
    NotFoundError,
    ServerError,
)
from langchain_qwen_fast.testing import SimServer

WIRES = ["chat", "completions"]
MakeModel = Callable[..., BatchedChatQwen]


def _empty(p: str) -> list[BaseMessage]:
    return []


def _image(p: str) -> list[BaseMessage]:
    return [
        HumanMessage(
            content=[
                {"type": "text", "text": p},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]
        )
    ]


def _raw_tool_call_dict_arguments(p: str) -> list[BaseMessage]:
    ai = AIMessage(
        content="",
        additional_kwargs={
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": {"q": "x"}},
                }
            ]
        },
    )
    return [HumanMessage(p), ai, ToolMessage("42", tool_call_id="call_1")]


def _tool_call_args_not_a_dict(p: str) -> list[BaseMessage]:
    ai = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "call_1"}])
    ai.tool_calls[0]["args"] = '{"q": "x"}'  # type: ignore[typeddict-item]  # (AIMessage() itself refuses it)
    return [HumanMessage(p), ai, ToolMessage("42", tool_call_id="call_1")]


def _unknown_role(p: str) -> list[BaseMessage]:
    return [ChatMessage(role="wizard", content=p)]


CASES: dict[str, tuple[Callable[[str], list[BaseMessage]], str]] = {
    "empty message list": (_empty, r"empty message list"),
    "image content part": (_image, r"unsupported content part of type 'image_url'.*text-only"),
    "raw tool call, dict arguments": (
        _raw_tool_call_dict_arguments,
        r"non-string 'arguments' \(dict\)",
    ),
    "tool call args not a dict": (_tool_call_args_not_a_dict, r"args must be a dict"),
    "unknown role": (_unknown_role, r"unknown role 'wizard'"),
}


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_messages_fail_before_anything_is_sent(
    zero: SimServer, make_model: MakeModel, case: str, wire: str
) -> None:
    build, pattern = CASES[case]
    model = make_model(zero, wire_mode=wire)
    led = Ledger(f"bad input: {case} ({wire})", errors=(ValueError,))
    (a, b, c), prompts = led.prompts(3)

    with pytest.raises(ValueError, match=pattern):
        model.invoke(build(prompts[0]))
    with pytest.raises(ValueError, match=pattern):
        asyncio.run(model.ainvoke(build(prompts[0])))
    assert served_requests(zero) == 0  # nothing was sent

    # in a batch: the bad input fails alone, its neighbours are answered
    outs = model.batch([prompts[1], build(prompts[0]), prompts[2]], return_exceptions=True)
    led.record_all([b, a, c], outs)
    assert re.search(pattern, str(outs[1])), outs[1]
    led.check(min_answered=2, min_failed=1)
    assert served_requests(zero) == model.stats()["batches"] <= 2  # only the good ones went out


@pytest.mark.parametrize("value", [0, -3])
def test_max_tokens_not_positive_fails_before_anything_is_sent(
    zero: SimServer, make_model: MakeModel, value: int
) -> None:
    led = Ledger(f"bad input: max_tokens={value}", errors=(ValueError,))
    with pytest.raises(ValidationError, match="max_tokens"):
        BatchedChatQwen(base_url=zero.base_url, model=SIM_MODEL, max_tokens=value)
    model = make_model(zero)
    ids, prompts = led.prompts(5)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer") as ei:
        model.invoke(prompts[0], max_tokens=value)
    led.record(ids[0], ei.value)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer") as ei:
        asyncio.run(model.ainvoke(prompts[1], max_completion_tokens=value))
    led.record(ids[1], ei.value)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer") as ei:
        model.batch(prompts[2:], max_tokens=value, return_exceptions=True)  # a call-level error
    for i in ids[2:]:
        led.record(i, ei.value)
    led.check(max_answered=0, min_failed=5)
    assert served_requests(zero) == 0


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "localhost:8000/v1", "gpu-box/v1", "ftp://gpu-box/v1"])
def test_base_url_without_http_scheme_is_a_constructor_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"no http:// or https:// scheme"):
        BatchedChatQwen(base_url=url, model=SIM_MODEL)


@pytest.mark.parametrize("wire", WIRES)
def test_base_url_without_v1_is_a_404_naming_the_fix(zero: SimServer, make_model: MakeModel, wire: str) -> None:
    model = make_model(zero.url, wire_mode=wire)  # http://127.0.0.1:PORT, no /v1
    led = Ledger(f"base_url without /v1 ({wire})", errors=(NotFoundError,))
    ids, prompts = led.prompts(4)
    with pytest.raises(NotFoundError) as ei:
        model.invoke(prompts[0])
    led.record(ids[0], ei.value)
    led.record_all(ids[1:], model.batch(prompts[1:], return_exceptions=True))
    led.check(max_answered=0, min_failed=4)
    msg = str(ei.value)
    assert f'nothing answers under {zero.url}' in msg and f'use base_url="{zero.url}/v1"' in msg, msg


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("status", [200, 502])
def test_html_from_a_proxy_is_a_clear_error_quoting_the_body(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, status: int, wire: str
) -> None:
    model = make_model(zero, wire_mode=wire)  # default max_retries=2
    expected = InvalidResponseError if status == 200 else ServerError
    led = Ledger(f"HTML body with status {status} ({wire})", errors=(expected,))
    (one,), (p,) = led.prompts(1, f"[[fault:html={status}]]")
    with pytest.raises(expected) as ei:
        model.invoke(p)
    led.record(one, ei.value)
    led.check(max_answered=0, min_failed=1)
    msg = str(ei.value)
    assert "<html><body>Bad Gateway" in msg, msg  # the first bytes, quoted
    assert f"HTTP {status}" in msg and zero.base_url in msg
    # a 200 that is not JSON is not retried (the same proxy answers the same); a 502 page is
    assert served_requests(zero) == (1 if status == 200 else 3)


@pytest.mark.parametrize("wire", WIRES)
def test_prompt_longer_than_the_context_is_context_overflow_in_one_request(
    zero: SimServer, make_model: MakeModel, wire: str
) -> None:
    model = make_model(zero, wire_mode=wire)  # default max_retries=2: a 400 must not use them
    led = Ledger(f"prompt longer than the context ({wire})", errors=(ContextOverflowError,))
    (a, b), prompts = led.prompts(2, "word " * 3000)
    errs: list[Any] = []
    with pytest.raises(ContextOverflowError) as ei:
        model.invoke(prompts[0])
    errs.append(ei.value)
    assert served_requests(zero) == 1
    with pytest.raises(ContextOverflowError) as ei:
        asyncio.run(model.ainvoke(prompts[1]))
    errs.append(ei.value)
    assert served_requests(zero) == 2
    led.record_all([a, b], errs)
    led.check(max_answered=0, min_failed=2)
    assert all(isinstance(e, ContextLengthError) and "maximum context length is 2048" in str(e) for e in errs)
