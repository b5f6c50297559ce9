"""Streaming over SSE (MockTransport): chunk types, last chunk, usage, reasoning, tool calls.

Covers: _upstream/transport.py, _upstream/sse.py, _calls/streams.py, _convert.py, _loop/bridge.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessageChunk

from langchain_qwen_fast import APIConnectionError, BadRequestError, ServerError

pytestmark = pytest.mark.timeout(30)

MODEL = "Qwen/Qwen3-0.6B"
USAGE = {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}


def _chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    choices: bool = True,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [],
    }
    if choices:
        body["choices"] = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        ]
    if usage is not None:
        body["usage"] = usage
    return body


def sse(events: list[dict[str, Any]], done: bool = True) -> bytes:
    out = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    if done:
        out += "data: [DONE]\n\n"
    return out.encode()


def sse_server(events: list[dict[str, Any]], done: bool = True) -> Any:
    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=sse(events, done), headers={"content-type": "text/event-stream"}
        )

    return respond


REASONING_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "Let me "}),
    _chunk({"reasoning": "think."}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo"}),
    _chunk({}, "stop"),
    _chunk(choices=False, usage=USAGE),
]

TOOL_STREAM = [
    _chunk({"role": "assistant", "content": None}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "CET"}'},
                }
            ]
        }
    ),
    _chunk({}, "tool_calls"),
    _chunk(choices=False, usage=USAGE),
]


def _sum(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


def _check_reasoning_stream(chunks: list[Any]) -> None:
    assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert all(c.chunk_position != "last" for c in chunks[:-1])
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata["input_tokens"] == 9
    assert all(c.usage_metadata is None for c in chunks[:-1])  # usage arrives at the end
    total = _sum(chunks)
    assert total.content == "Hello"
    assert total.additional_kwargs["reasoning_content"] == "Let me think."
    assert total.usage_metadata == {
        "input_tokens": 9,
        "output_tokens": 6,
        "total_tokens": 15,
        "input_token_details": {},
        "output_token_details": {},
    }
    assert total.response_metadata["finish_reason"] == "stop"
    assert total.response_metadata["model_name"] == MODEL


def test_stream_yields_ai_message_chunks_with_last_usage_and_reasoning(mock_model: Any) -> None:
    model, rec = mock_model(sse_server(REASONING_STREAM))
    _check_reasoning_stream(list(model.stream("hi", enable_thinking=True)))
    sent = rec.last
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}


async def test_astream_yields_ai_message_chunks_with_last_usage_and_reasoning(
    mock_model: Any,
) -> None:
    model, _ = mock_model(sse_server(REASONING_STREAM))
    _check_reasoning_stream([c async for c in model.astream("hi")])


def test_stream_usage_false_sends_no_stream_options(mock_model: Any) -> None:
    model, rec = mock_model(sse_server(REASONING_STREAM[:-1]), stream_usage=False)
    list(model.stream("hi"))
    assert "stream_options" not in rec.last


def test_streamed_tool_call_deltas_assemble_into_full_tool_calls(mock_model: Any) -> None:
    model, _ = mock_model(sse_server(TOOL_STREAM))
    chunks = list(model.stream("weather?"))
    total = _sum(chunks)
    assert total.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"},
        {"name": "get_time", "args": {"tz": "CET"}, "id": "call_2", "type": "tool_call"},
    ]
    assert total.invalid_tool_calls == []
    assert total.response_metadata["finish_reason"] == "tool_calls"


async def test_astreamed_tool_call_deltas_assemble(mock_model: Any) -> None:
    model, _ = mock_model(sse_server(TOOL_STREAM))
    total = _sum([c async for c in model.astream("weather?")])
    assert [tc["name"] for tc in total.tool_calls] == ["get_weather", "get_time"]
    assert total.tool_calls[0]["args"] == {"city": "Paris"}


def test_inline_think_tokens_stream_as_reasoning_and_content_matches_invoke(
    mock_model: Any,
) -> None:
    # A server without a reasoning parser streams the think block token by token.
    tokens = ["<think>", "\n", "hmm", "\n", "</think>", "\n\n", "Hi", "!"]
    events = [_chunk({"role": "assistant", "content": ""})] + [
        _chunk({"content": t}) for t in tokens
    ]
    events += [_chunk({}, "stop")]
    model, _ = mock_model(sse_server(events))
    total = _sum(list(model.stream("hi", enable_thinking=True)))
    assert "<think>" not in total.content and "</think>" not in total.content
    assert total.additional_kwargs["reasoning_content"].strip() == "hmm"
    assert total.content == "Hi!"  # same as invoke() gives for the same text


def test_truncated_stream_without_done_raises_clear_error(mock_model: Any) -> None:
    model, _ = mock_model(sse_server(REASONING_STREAM[:4], done=False))
    with pytest.raises(APIConnectionError, match=r"\[DONE\]"):
        list(model.stream("hi"))


async def test_truncated_astream_without_done_raises_clear_error(mock_model: Any) -> None:
    model, _ = mock_model(sse_server(REASONING_STREAM[:4], done=False))
    with pytest.raises(APIConnectionError, match=r"\[DONE\]"):
        [c async for c in model.astream("hi")]


def test_stream_http_error_raises_mapped_error(mock_model: Any) -> None:
    model, rec = mock_model(
        lambda p, r: httpx.Response(400, json={"error": {"message": "bad stream", "code": 400}})
    )
    with pytest.raises(BadRequestError, match="bad stream"):
        list(model.stream("hi"))
    assert rec.count == 1


def test_stream_error_event_raises_mapped_error(mock_model: Any) -> None:
    events = [_chunk({"content": "par"}), {"error": {"message": "engine died", "code": 500}}]
    model, _ = mock_model(sse_server(events, done=False))
    with pytest.raises(ServerError, match="engine died"):
        list(model.stream("hi"))


def test_model_usable_after_abandoned_stream(mock_model: Any) -> None:
    model, _ = mock_model(sse_server(REASONING_STREAM))
    it = model.stream("hi")
    next(it)
    it.close()  # the caller stops reading early
    assert _sum(list(model.stream("again"))).content == "Hello"
    assert model.stats()["in_flight"] == 0


def test_streaming_field_makes_invoke_stream_and_aggregate(mock_model: Any) -> None:
    model, rec = mock_model(sse_server(REASONING_STREAM), streaming=True)
    msg = model.invoke("hi")
    assert rec.last["stream"] is True
    assert msg.content == "Hello"
    assert msg.usage_metadata is not None and msg.usage_metadata["total_tokens"] == 15


def test_invoke_does_not_stream_by_default(mock_model: Any) -> None:
    from _qwen_fakes import chat_body

    model, rec = mock_model(lambda p, r: httpx.Response(200, json=chat_body("plain")))
    assert model.invoke("hi").content == "plain"
    assert "stream" not in rec.last or rec.last["stream"] is False
