"""Drop-in parity: one canned server response through ChatOpenAI and through BatchedChatQwen."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _qwen_fakes import MOCK_URL, MODEL, chat_body
from langchain_openai import ChatOpenAI

PARITY_KEYS = ("finish_reason", "model_name", "id", "system_fingerprint")

RESPONSES: dict[str, dict[str, Any]] = {
    "plain_with_cache_usage": chat_body(
        "Hello there",
        id="chatcmpl-p1",
        system_fingerprint="fp_vllm",
        usage={
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    ),
    "no_fingerprint": chat_body(
        "x", id="chatcmpl-p2", usage={"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
    ),
    "length_with_reasoning_tokens": chat_body(
        "truncated answ",
        id="chatcmpl-p3",
        finish_reason="length",
        model="served-name",
        usage={
            "prompt_tokens": 7,
            "completion_tokens": 8,
            "total_tokens": 15,
            "completion_tokens_details": {"reasoning_tokens": 5},
        },
    ),
    "tool_calls": chat_body(
        None,
        id="chatcmpl-p4",
        finish_reason="tool_calls",
        tool_calls=[
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    ),
}


def _handler(body: dict[str, Any], seen: list[dict[str, Any]]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=body)

    return handle


def _compare(ours: Any, theirs: Any) -> None:
    assert ours.content == theirs.content
    assert ours.usage_metadata == theirs.usage_metadata
    assert ours.tool_calls == theirs.tool_calls
    for key in PARITY_KEYS:
        assert ours.response_metadata.get(key) == theirs.response_metadata.get(key), key
    assert ours.response_metadata["model_provider"] == "qwen"


@pytest.mark.parametrize("case", sorted(RESPONSES))
def test_invoke_matches_chatopenai_on_same_response(case: str, mock_model: Any) -> None:
    body = RESPONSES[case]
    seen_theirs: list[dict[str, Any]] = []
    openai = ChatOpenAI(
        model=MODEL,
        base_url=MOCK_URL,
        api_key="sk-test",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(_handler(body, seen_theirs))),
    )
    ours, rec = mock_model(lambda p, r: httpx.Response(200, json=body), api_key="sk-test")
    _compare(ours.invoke("hi"), openai.invoke("hi"))
    # Both actually asked the server, with the same messages.
    assert rec.count == 1 and len(seen_theirs) == 1
    assert rec.last["messages"] == seen_theirs[0]["messages"]


@pytest.mark.parametrize("case", ["plain_with_cache_usage", "tool_calls"])
async def test_ainvoke_matches_chatopenai_on_same_response(case: str, mock_model: Any) -> None:
    body = RESPONSES[case]
    seen: list[dict[str, Any]] = []
    openai = ChatOpenAI(
        model=MODEL,
        base_url=MOCK_URL,
        api_key="sk-test",
        max_retries=0,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(_handler(body, seen))),
    )
    ours, _ = mock_model(lambda p, r: httpx.Response(200, json=body), api_key="sk-test")
    _compare(await ours.ainvoke("hi"), await openai.ainvoke("hi"))


def test_ls_params_have_chatopenai_shape(mock_model: Any) -> None:
    ours, _ = mock_model(temperature=0.3, max_tokens=17, stop=["END"])
    openai = ChatOpenAI(
        model=MODEL,
        base_url=MOCK_URL,
        api_key="sk-test",
        temperature=0.3,
        max_tokens=17,
        stop=["END"],
    )
    a, b = ours._get_ls_params(), openai._get_ls_params()
    assert a["ls_provider"] == "qwen"
    for key in ("ls_model_name", "ls_model_type", "ls_temperature", "ls_max_tokens", "ls_stop"):
        assert a.get(key) == b.get(key), key


def test_sync_http_client_is_used_like_chatopenai(mock_model: Any) -> None:
    """``http_client`` (a sync httpx.Client) is honoured for invoke, batch and stream."""
    from langchain_qwen_fast import BatchedChatQwen

    seen: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        seen.append(payload)
        if payload.get("stream"):
            chunk = {
                "id": "s",
                "model": MODEL,
                "choices": [
                    {"index": 0, "delta": {"content": "streamed"}, "finish_reason": "stop"}
                ],
            }
            return httpx.Response(
                200,
                content=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(),
                headers={"content-type": "text/event-stream"},
            )
        return httpx.Response(200, json=chat_body(f"sync:{payload['messages'][-1]['content']}"))

    with BatchedChatQwen(
        base_url=MOCK_URL, http_client=httpx.Client(transport=httpx.MockTransport(handle))
    ) as m:
        assert m.invoke("a").content == "sync:a"
        assert [r.content for r in m.batch(["b", "c"])] == ["sync:b", "sync:c"]
        assert "".join(str(c.content) for c in m.stream("d")) == "streamed"
    assert len(seen) == 4
