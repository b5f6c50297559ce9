"""Drop-in parity: one canned server response through ChatOpenAI and through BatchedChatQwen.

Covers: _convert.py, _calls/prepare.py, _calls/streams.py."""

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


# -- key by key, on vLLM-shaped answers ---------------------------------------------------------------
# ChatOpenAI reads these through the openai SDK, which (a) always has certain keys and (b) fills the
# fields of nested objects (usage details, logprobs) with None where the server sent none. (a) is
# matched; (b) depends on the SDK version (openai 3.57 has five prompt-token detail fields), so the
# comparison drops None-valued fields inside nested objects. README.md lists what differs on purpose.


def vllm_body(
    content: str | None = "Hello there",
    *,
    usage: dict[str, Any] | None = None,
    logprobs: Any = None,
    finish_reason: str = "length",
    **message: Any,
) -> dict[str, Any]:
    """A chat completion as vLLM 0.24 sends it (and the simulator copies): every field, mostly null."""
    msg = {"role": "assistant", "content": content, "refusal": None, "annotations": None, "audio": None,
           "function_call": None, "tool_calls": [], "reasoning": None, **message}
    return {
        "id": "chatcmpl-v1", "object": "chat.completion", "created": 1_700_000_000, "model": MODEL,
        "choices": [{"index": 0, "message": msg, "logprobs": logprobs, "finish_reason": finish_reason,
                     "stop_reason": None}],
        "service_tier": None, "system_fingerprint": None,
        "usage": usage if usage is not None else {"prompt_tokens": 14, "total_tokens": 30, "completion_tokens": 16,
                                                  "prompt_tokens_details": None},
        "prompt_logprobs": None, "kv_transfer_params": None,
    }


LOGPROBS = {"content": [{"token": "Hello", "logprob": -0.25, "bytes": [72, 101, 108, 108, 111],
                         "top_logprobs": [{"token": "Hello", "logprob": -0.25, "bytes": [72, 101, 108, 108, 111]}]}]}
KEY_CASES: dict[str, dict[str, Any]] = {
    "plain": vllm_body(),
    "cached_and_reasoning_token_details": vllm_body(usage={
        "prompt_tokens": 14, "completion_tokens": 16, "total_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 8}, "completion_tokens_details": {"reasoning_tokens": 5}}),
    "no_usage": {k: v for k, v in vllm_body().items() if k != "usage"},
    "logprobs": vllm_body(logprobs=LOGPROBS),
    "tool_calls": vllm_body(None, finish_reason="tool_calls", tool_calls=[
        {"id": "chatcmpl-tool-1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]),
    "refusal": vllm_body(None, finish_reason="stop", refusal="I can't help with that."),
    "fingerprint_and_service_tier": {**vllm_body(), "system_fingerprint": "fp_1", "service_tier": "default"},
}


def _no_sdk_nones(value: Any, depth: int = 0) -> Any:
    """Drop None-valued fields below the top level (what the SDK adds to nested objects)."""
    if isinstance(value, dict):
        return {k: _no_sdk_nones(v, depth + 1) for k, v in value.items() if depth == 0 or v is not None}
    if isinstance(value, list):
        return [_no_sdk_nones(v, depth + 1) for v in value]
    return value


def _normal(rm: dict[str, Any]) -> dict[str, Any]:
    # token_usage's own fields are matched, None included; below them, and in logprobs, the SDK's Nones go
    return {k: _no_sdk_nones(v, 0 if k == "token_usage" else 1) for k, v in rm.items()}


def _metadata(msg: Any, provider: str) -> dict[str, Any]:
    rm = dict(msg.response_metadata)
    assert rm.pop("model_provider") == provider
    return _normal(rm)


def _kwargs(msg: Any) -> dict[str, Any]:
    """additional_kwargs without ChatOpenAI's ``refusal: None`` (the SDK message always has the field;
    ours carries ``refusal`` only when the server refused: README.md, what differs)."""
    return {k: v for k, v in msg.additional_kwargs.items() if not (k == "refusal" and v is None)}


def _openai(respond: Any, **fields: Any) -> ChatOpenAI:
    transport = httpx.MockTransport(respond)
    return ChatOpenAI(model=MODEL, base_url=MOCK_URL, api_key="sk-test", max_retries=0,
                      http_client=httpx.Client(transport=transport), **fields)


@pytest.mark.parametrize("case", sorted(KEY_CASES))
@pytest.mark.parametrize("wire", ["chat", "completions"])
def test_response_metadata_and_additional_kwargs_match_chatopenai_key_by_key(
    case: str, wire: str, mock_model: Any
) -> None:
    body = KEY_CASES[case]
    theirs = _openai(_handler(body, [])).invoke("hi")
    ours, rec = mock_model(lambda p, r: httpx.Response(200, json=body), api_key="sk-test", wire_mode=wire)
    mine = ours.invoke("hi")
    assert rec.last.get("messages"), "plain text without max_tokens goes as chat in both wire modes"
    assert _metadata(mine, "qwen") == _metadata(theirs, "openai")  # every key and value but the provider
    assert mine.additional_kwargs == _kwargs(theirs)
    assert mine.usage_metadata == theirs.usage_metadata
    assert (mine.content, mine.tool_calls, mine.invalid_tool_calls) == (
        theirs.content, theirs.tool_calls, theirs.invalid_tool_calls)


@pytest.mark.parametrize("wire", ["chat", "completions"])
def test_fields_set_names_only_what_carries_data_and_model_dump_is_chatopenais(wire: str, mock_model: Any) -> None:
    """A result names in ``model_fields_set`` only the fields that carry data, so pydantic's per-instance set
    stays small (216 bytes, against 728 with all seven: a fifth of a result's memory, docs/architecture.md).
    The values, ``model_dump()`` and equality are ChatOpenAI's; only ``exclude_unset`` dumps omit the empties."""
    body = vllm_body("answer")
    theirs = _openai(_handler(body, [])).invoke("hi")
    ours, _ = mock_model(lambda p, r: httpx.Response(200, json=body), api_key="sk-test", wire_mode=wire)
    mine = ours.invoke("hi")
    assert mine.model_fields_set == {"content", "id", "response_metadata", "usage_metadata"}
    assert len(mine.__pydantic_fields_set__) <= 4  # the size class the memory figure depends on
    assert theirs.model_fields_set >= mine.model_fields_set  # ChatOpenAI also names the empty ones
    dumped, their_dump = mine.model_dump(), theirs.model_dump()
    assert set(dumped) == set(their_dump)
    for key in ("tool_calls", "invalid_tool_calls", "usage_metadata", "content", "type", "name"):
        assert dumped[key] == their_dump[key], key
    assert type(mine)(**mine.model_dump(exclude_unset=True)) == mine  # what was left out is the default


def test_a_result_with_tool_calls_names_them_as_set(mock_model: Any) -> None:
    body = RESPONSES["tool_calls"]
    ours, _ = mock_model(lambda p, r: httpx.Response(200, json=body), api_key="sk-test")
    mine = ours.invoke("hi")
    assert "tool_calls" in mine.model_fields_set and mine.tool_calls[0]["name"] == "get_weather"
    assert "invalid_tool_calls" not in mine.model_fields_set


def test_a_completions_list_answer_has_the_keys_of_a_chat_answer(mock_model: Any) -> None:
    """``/v1/completions`` lists (max_tokens set, plain text) are shaped like ChatOpenAI's chat answers:
    the same keys; the id is the list request's ("cmpl-"), token_usage is the prompt's own share."""
    completions = {
        "id": "cmpl-l1", "object": "text_completion", "created": 1, "model": MODEL,
        "choices": [{"index": i, "text": f"answer {i}", "logprobs": None, "finish_reason": "length",
                     "stop_reason": None, "prompt_logprobs": None,
                     "prompt_token_ids": [1] * (10 + i), "token_ids": [2] * 16} for i in range(2)],
        "service_tier": None, "system_fingerprint": None,
        "usage": {"prompt_tokens": 21, "total_tokens": 53, "completion_tokens": 32, "prompt_tokens_details": None},
    }
    theirs = _openai(_handler(vllm_body("answer 0"), [])).invoke("q0")
    ours, rec = mock_model(lambda p, r: httpx.Response(200, json=completions), max_tokens=16, max_wait_ms=50)
    a, b = ours.batch(["q0", "q1"])
    assert rec.count == 1 and rec.last["prompt"] and len(rec.last["prompt"]) == 2  # one list of two
    assert set(a.response_metadata) == set(theirs.response_metadata)
    assert set(a.additional_kwargs) == set(_kwargs(theirs))
    assert a.response_metadata["id"] == b.response_metadata["id"] == "cmpl-l1"  # one request, one id
    assert set(a.response_metadata["token_usage"]) == set(theirs.response_metadata["token_usage"])
    assert a.response_metadata["token_usage"]["prompt_tokens"] == 10
    assert b.usage_metadata is not None and b.usage_metadata["input_tokens"] == 11


def test_reasoning_is_the_one_additional_kwargs_key_chatopenai_does_not_have(mock_model: Any) -> None:
    body = vllm_body("Paris.", finish_reason="stop", reasoning="The capital of France is Paris.")
    theirs = _openai(_handler(body, [])).invoke("hi")
    ours, _ = mock_model(lambda p, r: httpx.Response(200, json=body))
    mine = ours.invoke("hi")
    reasoning = {"reasoning_content": "The capital of France is Paris."}
    assert mine.additional_kwargs == {**_kwargs(theirs), **reasoning}
    assert _metadata(mine, "qwen") == _metadata(theirs, "openai")


def _stream_events(*, logprobs: Any = None) -> list[dict[str, Any]]:
    def ev(delta: dict[str, Any] | None, finish: str | None = None, **top: Any) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": logprobs if delta else None,
                                             "finish_reason": finish}]
        return {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                "choices": choices, **top}

    return [
        ev({"role": "assistant", "content": ""}),
        ev({"content": "Hello"}),
        ev({"content": " there"}, "stop"),
        ev(None, usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}),
    ]


def _sse_handler(events: list[dict[str, Any]]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=body.encode(), headers={"content-type": "text/event-stream"})

    return handle


def _chunk_view(c: Any, provider: str) -> tuple[Any, ...]:
    rm = dict(c.response_metadata)
    has_provider = rm.pop("model_provider", None) == provider
    rm.pop("id", None)  # ours only: the server's id on the finishing chunk, as invoke has it
    return c.content, has_provider, _normal(rm), c.additional_kwargs, c.usage_metadata, c.tool_call_chunks


@pytest.mark.parametrize("logprobs", [None, LOGPROBS], ids=["plain", "logprobs"])
def test_stream_chunks_match_chatopenai_chunk_by_chunk(logprobs: Any) -> None:
    from langchain_qwen_fast import BatchedChatQwen

    events = _stream_events(logprobs=logprobs)
    theirs = list(_openai(_sse_handler(events), stream_usage=True).stream("hi"))
    with BatchedChatQwen(model=MODEL, base_url=MOCK_URL,
                         http_client=httpx.Client(transport=httpx.MockTransport(_sse_handler(events)))) as m:
        mine = list(m.stream("hi"))
    # ChatOpenAI ends with an empty chunk marked last; ours marks the usage chunk last.
    assert theirs[-1].content == "" and theirs[-1].chunk_position == "last" and theirs[-1].usage_metadata is None
    assert mine[-1].chunk_position == "last" and mine[-1].usage_metadata is not None
    assert [_chunk_view(c, "qwen") for c in mine] == [_chunk_view(c, "openai") for c in theirs[:-1]]
    assert mine[2].response_metadata["id"] == "chatcmpl-s1"
    total_mine, total_theirs = mine[0], theirs[0]
    for c in mine[1:]:
        total_mine += c
    for c in theirs[1:]:
        total_theirs += c
    assert _metadata(total_mine, "qwen") == {**_metadata(total_theirs, "openai"), "id": "chatcmpl-s1"}
    assert total_mine.usage_metadata == total_theirs.usage_metadata
    assert total_mine.content == total_theirs.content == "Hello there"


def test_structured_output_raw_lacks_only_chatopenais_parsed_copy(mock_model: Any) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str

    body = vllm_body('{"name": "Paris"}', finish_reason="stop")
    theirs = _openai(_handler(body, [])).with_structured_output(City, include_raw=True).invoke("hi")
    ours, _ = mock_model(lambda p, r: httpx.Response(200, json=body))
    mine = ours.with_structured_output(City, include_raw=True).invoke("hi")
    assert mine["parsed"] == theirs["parsed"] == City(name="Paris")
    assert theirs["raw"].additional_kwargs.pop("parsed") == City(name="Paris")
    assert mine["raw"].additional_kwargs == _kwargs(theirs["raw"])
    assert _metadata(mine["raw"], "qwen") == _metadata(theirs["raw"], "openai")
