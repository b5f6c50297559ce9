"""The simulator itself, through plain HTTP clients: shapes, equivalence, faults, latency model.

Covers: testing/."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from langchain_qwen_fast.testing import SimConfig, SimServer
from langchain_qwen_fast.testing.responses import count_tokens
from langchain_qwen_fast.testing.sim_engine import SimEngine, VirtualClockLoop

pytestmark = pytest.mark.sim

def chat_body(text: str, **kw: Any) -> dict[str, Any]:
    """A chat request with thinking off (the client's default) unless overridden."""
    body: dict[str, Any] = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": text}],
                            "chat_template_kwargs": {"enable_thinking": False}}
    body.update(kw)
    return body


def chatml(messages: list[tuple[str, str]], thinking: bool) -> str:
    """The Qwen3 ChatML rendering, written independently of the simulator's own renderer."""
    out = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in messages)
    out += "<|im_start|>assistant\n"
    return out if thinking else out + "<think>\n\n</think>\n\n"


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> None:
    """A tiny JSON-schema checker for the keywords the simulator claims to honour (no new dep)."""
    root = root or schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#").strip("/").split("/"):
            node = node[part] if part else node
        return validate(value, node, root)
    if "const" in schema:
        assert value == schema["const"]
    if "enum" in schema:
        assert value in schema["enum"], (value, schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        errors = 0
        opts = schema.get("anyOf") or schema.get("oneOf")
        for sub in opts:
            try:
                validate(value, sub, root)
            except AssertionError:
                errors += 1
        assert errors < len(opts), (value, opts)
    for sub in schema.get("allOf", []):
        validate(value, sub, root)
    typ = schema.get("type")
    types = typ if isinstance(typ, list) else [typ] if typ else []
    py = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if types:
        ok = any(
            (t == "integer" and isinstance(value, int) and not isinstance(value, bool))
            or (t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (t in py and isinstance(value, py[t]))
            for t in types
        )
        assert ok, (value, types)
    if isinstance(value, dict):
        for k in schema.get("required", []):
            assert k in value, (k, value)
        for k, v in value.items():
            if k in schema.get("properties", {}):
                validate(v, schema["properties"][k], root)
            else:
                assert schema.get("additionalProperties", True) is not False, k
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0)
        assert len(value) <= schema.get("maxItems", len(value))
        if schema.get("uniqueItems"):
            assert len({repr(v) for v in value}) == len(value)
        if isinstance(schema.get("items"), dict):
            for v in value:
                validate(v, schema["items"], root)
    if isinstance(value, str):
        assert schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert value >= schema.get("minimum", value) and value <= schema.get("maximum", value)
        if "exclusiveMinimum" in schema:
            assert value > schema["exclusiveMinimum"]
        if "exclusiveMaximum" in schema:
            assert value < schema["exclusiveMaximum"]
    return None


def sse_events(text: str) -> list[Any]:
    """Parse an SSE body into JSON events, keeping the literal "[DONE]"."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather.",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "minLength": 2},
               "days": {"type": "integer", "minimum": 1, "maximum": 7},
               "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}
SEARCH = {"type": "function", "function": {"name": "web_search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"},
                                     "top_k": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
    "required": ["query"], "additionalProperties": False}}}


# ------------------------------------------------------------------------------------------ basics
def test_health_models_and_unknown_paths(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "Qwen/Qwen3-0.6B"
    assert models["data"][0]["max_model_len"] == 2048
    assert client.get("/nope").status_code == 404
    assert client.get("/v1/chat/completions").status_code == 405


def test_chat_echoes_last_user_message_with_exact_usage(client: httpx.Client) -> None:
    text = "What is quantum entanglement?"
    r = client.post("/v1/chat/completions", json=chat_body(text)).json()
    assert r["id"].startswith("chatcmpl-") and r["object"] == "chat.completion"
    assert r["system_fingerprint"] is None and r["model"] == "Qwen/Qwen3-0.6B"
    choice = r["choices"][0]
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["content"].startswith("[sim] " + text)
    assert msg["tool_calls"] == [] and msg["reasoning"] is None
    assert choice["finish_reason"] == "stop"
    usage = r["usage"]
    assert 8 <= usage["completion_tokens"] <= 48
    assert usage["completion_tokens"] == count_tokens(msg["content"])
    assert usage["prompt_tokens"] == count_tokens(chatml([("user", text)], False))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = client.post("/v1/chat/completions", json=chat_body(text)).json()
    assert again["choices"][0]["message"]["content"] == msg["content"]  # deterministic


def test_answers_are_not_swapped_between_different_prompts(client: httpx.Client) -> None:
    for i in range(5):
        text = f"question number {i} about topic {i * 7}"
        content = client.post("/v1/chat/completions", json=chat_body(text)).json()[
            "choices"][0]["message"]["content"]
        assert content.startswith(f"[sim] {text}")


@pytest.mark.parametrize("max_tokens", [1, 8, 16, 128])
def test_ignore_eos_generates_exactly_max_tokens(client: httpx.Client, max_tokens: int) -> None:
    body = chat_body("Recommend three Python books.", max_tokens=max_tokens, ignore_eos=True)
    r = client.post("/v1/chat/completions", json=body).json()
    content = r["choices"][0]["message"]["content"]
    assert r["usage"]["completion_tokens"] == max_tokens == count_tokens(content)
    assert r["choices"][0]["finish_reason"] == "length"
    if max_tokens >= 8:
        assert content.startswith("[sim] Recommend")


def test_small_max_tokens_truncates_with_length(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions",
                    json=chat_body("Supercalifragilistic words go here", max_tokens=8)).json()
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["choices"][0]["message"]["content"].startswith("[sim] Supercalifragilistic")
    assert r["usage"]["completion_tokens"] == 8


def test_stop_string_cuts_the_answer(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions",
                    json=chat_body("alpha beta gamma delta", stop=["gamma"])).json()
    assert r["choices"][0]["message"]["content"] == "[sim] alpha beta "
    assert r["choices"][0]["finish_reason"] == "stop"


def test_n_choices(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=chat_body("hello", n=3)).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"].startswith("[sim] hello") for c in r["choices"])
    assert r["usage"]["completion_tokens"] == sum(
        count_tokens(c["message"]["content"]) for c in r["choices"])


# ---------------------------------------------------------------------------------------- thinking
@pytest.mark.parametrize("fixture,field", [("zero", "reasoning"), ("zero_rc", "reasoning_content")])
def test_thinking_defaults_on_and_goes_to_the_reasoning_field(
    request: pytest.FixtureRequest, fixture: str, field: str
) -> None:
    srv: SimServer = request.getfixturevalue(fixture)
    body = {"messages": [{"role": "user", "content": "Explain tides briefly"}]}  # no kwargs
    msg = httpx.post(srv.base_url + "/chat/completions", json=body).json()["choices"][0]["message"]
    assert msg[field] == "Let me think about: Explain tides briefly"
    assert msg["content"].startswith("[sim] Explain tides briefly")
    other = "reasoning_content" if field == "reasoning" else "reasoning"
    assert other not in msg
    body["chat_template_kwargs"] = {"enable_thinking": False}
    msg = httpx.post(srv.base_url + "/chat/completions", json=body).json()["choices"][0]["message"]
    assert msg[field] is None


def test_thinking_tokens_are_counted(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Explain tides"}]}
    r = client.post("/v1/chat/completions", json=body).json()
    msg = r["choices"][0]["message"]
    expected = count_tokens(msg["reasoning"]) + count_tokens(msg["content"]) + 5
    assert r["usage"]["completion_tokens"] == expected


def test_thinking_budget_exhausted_inside_reasoning(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Explain tides"}], "max_tokens": 4}
    r = client.post("/v1/chat/completions", json=body).json()
    msg = r["choices"][0]["message"]
    assert msg["content"] is None and msg["reasoning"] == "Let me"
    assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 4


# ------------------------------------------------------------------------------------- completions
@pytest.mark.parametrize("thinking", [False, True])
def test_completions_list_matches_chat_answers_in_index_order(
    client: httpx.Client, thinking: bool
) -> None:
    convs = [[("user", f"Tell me fact {i} about the sea")] for i in range(6)]
    convs[2] = [("system", "You are terse."), ("user", "Name a colour"), ("assistant", "Blue."),
                ("user", "Another one?")]
    history = "<think>\nold reasoning\n</think>\n\nGreen."  # the template drops old reasoning
    convs[3] = [("user", "Name a colour"), ("assistant", history), ("user", "And another?")]
    prompts = [chatml(c, thinking) for c in convs]
    prompts[3] = prompts[3].replace(history, "Green.")
    r = client.post("/v1/completions", json={"model": "Qwen/Qwen3-0.6B", "prompt": prompts,
                                               "max_tokens": 200}).json()
    assert r["id"].startswith("cmpl-") and r["object"] == "text_completion"
    assert [c["index"] for c in r["choices"]] == list(range(6))
    total_completion = 0
    for conv, prompt, choice in zip(convs, prompts, r["choices"], strict=True):
        messages = [{"role": role, "content": text} for role, text in conv]
        chat = client.post("/v1/chat/completions", json={
            "messages": messages, "max_tokens": 200,
            "chat_template_kwargs": {"enable_thinking": thinking}}).json()
        msg = chat["choices"][0]["message"]
        expected = f"<think>\n{msg['reasoning']}\n</think>\n\n{msg['content']}" if thinking else msg["content"]
        assert choice["text"] == expected
        assert choice["finish_reason"] == chat["choices"][0]["finish_reason"]
        assert chat["usage"]["prompt_tokens"] == count_tokens(prompt)
        total_completion += chat["usage"]["completion_tokens"]
    assert r["usage"]["completion_tokens"] == total_completion
    assert r["usage"]["prompt_tokens"] == sum(count_tokens(p) for p in prompts)


def test_completions_n_and_token_ids(client: httpx.Client) -> None:
    prompts = [chatml([("user", "a b c")], False), chatml([("user", "d e f")], False)]
    r = client.post("/v1/completions", json={"prompt": prompts, "n": 2, "max_tokens": 12,
                                               "ignore_eos": True, "return_token_ids": True}).json()
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    assert r["choices"][0]["text"].startswith("[sim] a b c")
    assert r["choices"][2]["text"].startswith("[sim] d e f")
    for c, p in zip(r["choices"], [prompts[0], prompts[0], prompts[1], prompts[1]], strict=True):
        assert len(c["token_ids"]) == 12 and len(c["prompt_token_ids"]) == count_tokens(p)
    assert r["usage"]["completion_tokens"] == 48


def test_completions_plain_string_prompt_defaults_to_16_tokens(client: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "ignore_eos": True}
    r = client.post("/v1/completions", json=body).json()
    assert len(r["choices"]) == 1 and r["choices"][0]["text"].startswith("[sim] Once upon a time")
    assert r["usage"]["completion_tokens"] == 16


# --------------------------------------------------------------------------------------- streaming
def test_chat_stream_shape_matches_non_streaming(client: httpx.Client) -> None:
    body = chat_body("Stream me something", max_tokens=40, ignore_eos=True)
    plain = client.post("/v1/chat/completions", json=body).json()
    body.update(stream=True, stream_options={"include_usage": True})
    r = client.post("/v1/chat/completions", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {(c["object"], c["id"]) for c in chunks} == {("chat.completion.chunk", chunks[0]["id"])}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    deltas = [c["choices"][0] for c in chunks[1:-1]]
    assert len(deltas) >= 3
    assert [d["finish_reason"] for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    assert deltas[-1]["finish_reason"] == "length"
    content = "".join(d["delta"].get("content", "") for d in deltas)
    assert content == plain["choices"][0]["message"]["content"]


def test_chat_stream_reasoning_comes_first_and_no_usage_unless_asked(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "Think then answer"}], "stream": True}
    events = sse_events(client.post("/v1/chat/completions", json=body).text)
    kinds = [k for e in events[1:-1] for k in e["choices"][0]["delta"]]
    assert kinds.index("reasoning") < kinds.index("content")
    assert "reasoning" not in kinds[kinds.index("content"):]
    assert all("usage" not in e for e in events[:-1])
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning", "") for e in events[1:-1])
    assert reasoning == "Let me think about: Think then answer"


def test_completions_stream(client: httpx.Client) -> None:
    prompts = [chatml([("user", "first")], False), chatml([("user", "second")], False)]
    plain = client.post("/v1/completions", json={"prompt": prompts, "max_tokens": 30}).json()
    r = client.post("/v1/completions", json={"prompt": prompts, "max_tokens": 30, "stream": True,
                                               "stream_options": {"include_usage": True}})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"] == plain["usage"]
    texts = ["", ""]
    for e in events[:-2]:
        for c in e["choices"]:
            texts[c["index"]] += c["text"]
    assert texts == [c["text"] for c in plain["choices"]]


# ------------------------------------------------------------------------------------------- tools
def _call(client: httpx.Client, text: str, **kw: Any) -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json=chat_body(text, tools=[WEATHER, SEARCH], **kw))
    assert r.status_code == 200, r.text
    return r.json()


def _check_calls(calls: list[dict[str, Any]], names: list[str]) -> None:
    assert [c["function"]["name"] for c in calls] == names
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, SEARCH)}
    for c in calls:
        assert c["id"].startswith("chatcmpl-tool-") and c["type"] == "function"
        validate(json.loads(c["function"]["arguments"]), schemas[c["function"]["name"]])


def test_tool_choice_auto_calls_only_a_mentioned_tool(client: httpx.Client) -> None:
    r = _call(client, "Please use get_weather for Paris")
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    assert r["choices"][0]["message"]["content"] is None
    _check_calls(r["choices"][0]["message"]["tool_calls"], ["get_weather"])
    r = _call(client, "Just chat with me")
    assert r["choices"][0]["message"]["tool_calls"] == []
    assert r["choices"][0]["message"]["content"].startswith("[sim] Just chat")


def test_tool_choice_none_never_calls(client: httpx.Client) -> None:
    r = _call(client, "use get_weather", tool_choice="none")
    assert r["choices"][0]["message"]["tool_calls"] == []


def test_tool_choice_required_and_parallel(client: httpx.Client) -> None:
    r = _call(client, "anything", tool_choice="required")
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    _check_calls(r["choices"][0]["message"]["tool_calls"], ["get_weather"])
    r = _call(client, "web_search then get_weather", tool_choice="required")
    _check_calls(r["choices"][0]["message"]["tool_calls"], ["get_weather", "web_search"])
    r = _call(client, "web_search then get_weather", tool_choice="required",
              parallel_tool_calls=False)
    _check_calls(r["choices"][0]["message"]["tool_calls"], ["get_weather"])


def test_tool_choice_named(client: httpx.Client) -> None:
    named = {"type": "function", "function": {"name": "web_search"}}
    r = _call(client, "what is new", tool_choice=named)
    _check_calls(r["choices"][0]["message"]["tool_calls"], ["web_search"])
    assert r["choices"][0]["finish_reason"] == "stop"  # vLLM's quirk for a named tool choice
    bad = {"type": "function", "function": {"name": "nope"}}
    r2 = client.post("/v1/chat/completions", json=chat_body("x", tools=[WEATHER], tool_choice=bad))
    assert r2.status_code == 400 and "nope" in r2.json()["error"]["message"]


def test_tool_result_last_answers_with_text(client: httpx.Client) -> None:
    first = _call(client, "use get_weather")["choices"][0]["message"]
    messages = [{"role": "user", "content": "use get_weather"},
                {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
                {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"],
                 "content": "sunny, 21 degrees"}]
    r = client.post("/v1/chat/completions", json={
        "messages": messages, "tools": [WEATHER],
        "chat_template_kwargs": {"enable_thinking": False}})
    msg = r.json()["choices"][0]["message"]
    assert msg["tool_calls"] == []
    assert msg["content"].startswith("[sim] tool said: sunny, 21 degrees")


def test_streamed_tool_call_deltas_assemble(client: httpx.Client) -> None:
    body = chat_body("web_search and get_weather", tools=[WEATHER, SEARCH], stream=True)
    events = sse_events(client.post("/v1/chat/completions", json=body).text)
    calls: dict[int, dict[str, Any]] = {}
    for e in events[1:-1]:
        for tc in e["choices"][0]["delta"].get("tool_calls", []):
            if "id" in tc:
                assert tc["function"]["arguments"] == ""
                calls[tc["index"]] = {"id": tc["id"], "name": tc["function"]["name"], "args": ""}
            else:
                calls[tc["index"]]["args"] += tc["function"]["arguments"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["get_weather", "web_search"]
    validate(json.loads(calls[1]["args"]), SEARCH["function"]["parameters"])


# -------------------------------------------------------------------------------- structured output
SCHEMA = {
    "type": "object", "title": "Person",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
        "pet": {"anyOf": [{"$ref": "#/$defs/Pet"}, {"type": "null"}]},
        "kind": {"enum": ["a", "b"]}, "ok": {"type": "boolean"}, "when": {"type": "string",
                                                                           "format": "date"},
        "alias": {"type": ["string", "null"], "minLength": 30},
        "parts": {"allOf": [{"$ref": "#/$defs/Pet"}, {"type": "object",
                                                       "properties": {"x": {"const": 3}}}]},
    },
    "required": ["name", "age", "tags"], "additionalProperties": False,
    "$defs": {"Pet": {"type": "object", "properties": {"species": {"type": "string"},
                                                       "legs": {"type": "integer",
                                                                "multipleOf": 2}},
                      "required": ["species"]}},
}


def test_json_schema_response_is_valid(client: httpx.Client) -> None:
    rf = {"type": "json_schema",
          "json_schema": {"name": "Person", "schema": SCHEMA, "strict": True}}
    r = client.post("/v1/chat/completions", json=chat_body("Alice is thirty", response_format=rf))
    msg = r.json()["choices"][0]["message"]
    value = json.loads(msg["content"])
    validate(value, SCHEMA)
    assert r.json()["usage"]["completion_tokens"] == count_tokens(msg["content"])


def test_json_object_response(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions",
                    json=chat_body("hello json", response_format={"type": "json_object"}))
    value = json.loads(r.json()["choices"][0]["message"]["content"])
    assert value["answer"].startswith("[sim] hello json")


# ------------------------------------------------------------------------------------------ errors
def test_over_long_prompt_is_rejected_like_vllm(client: httpx.Client) -> None:
    long_text = "word " * 2100
    r = client.post("/v1/chat/completions", json=chat_body(long_text, max_tokens=10))
    assert r.status_code == 400
    err = r.json()["error"]
    p = count_tokens(chatml([("user", long_text)], False))
    assert err["message"] == (
        f"This model's maximum context length is 2048 tokens. However, you requested {p + 10} "
        f"tokens ({p} in the messages, 10 in the completion). Please reduce the length of the "
        "messages or completion.")
    assert err["type"] == "BadRequestError" and err["code"] == 400 and err["param"] is None
    ok = chatml([("user", "short")], False)
    r = client.post("/v1/completions", json={"prompt": [ok, chatml([("user", long_text)], False)],
                                               "max_tokens": 10})
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]


def test_bad_requests(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
    r = client.post("/v1/chat/completions", json=chat_body("x", model="gpt-4"))
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json=chat_body("x", max_tokens=0)).status_code == 400
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 400
    r = client.post("/v1/chat/completions", json=chat_body("x", tool_choice="required"))
    assert r.status_code == 400
    assert client.post("/v1/completions", json={"prompt": []}).status_code == 400
    body = chat_body("x", logprobs=True, top_logprobs=2)
    assert client.post("/v1/chat/completions", json=body).status_code == 200  # ignored, no crash


# ------------------------------------------------------------------------------------------ faults
def _fault_post(srv: SimServer, spec: str, **kw: Any) -> httpx.Response:
    with httpx.Client(base_url=srv.url, timeout=10.0) as c:
        return c.post("/v1/chat/completions", json=chat_body("fault test", **kw),
                      headers={"x-sim-fault": spec})


def test_fault_429_has_retry_after_and_vllm_error_body(zero: SimServer) -> None:
    r = _fault_post(zero, "status=429")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "RateLimitError" and r.json()["error"]["code"] == 429
    r = _fault_post(zero, "status=429:retry_after=2.5")
    assert r.headers["retry-after"] == "2.5"


@pytest.mark.parametrize("status", [400, 401, 404, 500, 503])
def test_fault_status_codes(zero: SimServer, status: int) -> None:
    r = _fault_post(zero, f"status={status}")
    assert r.status_code == status and r.json()["error"]["code"] == status
    assert "retry-after" not in r.headers


def test_fault_burst_with_count_then_recovery(faulty: SimServer) -> None:
    faulty.set_faults(["status=503#3", "status=500:on=completions"])
    with httpx.Client(base_url=faulty.url, timeout=10.0) as c:
        codes = [c.post("/v1/chat/completions", json=chat_body("x")).status_code for _ in range(5)]
        assert codes == [503, 503, 503, 200, 200]
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 500
    stats = faulty.stats()
    assert stats["faults"] == {"status_503": 3, "status_500": 1}
    assert stats["fault_list"][0]["remaining"] == 0
    assert stats["served"] == {"chat": 2} and stats["requests"]["chat"] == 5
    faulty.set_faults([])
    faulty.reset()
    assert faulty.stats()["faults"] == {} and faulty.stats()["requests"] == {}


def test_fault_rate_is_deterministic_for_a_seed(faulty: SimServer) -> None:
    patterns = []
    for _ in range(2):
        faulty.set_faults(["status=500@0.4"])  # replacing the list reseeds its RNG
        with httpx.Client(base_url=faulty.url, timeout=10.0) as c:
            patterns.append([c.post("/v1/chat/completions", json=chat_body("x")).status_code
                             for _ in range(40)])
    assert patterns[0] == patterns[1]
    assert 6 <= patterns[0].count(500) <= 26


def test_bad_fault_list_is_rejected(faulty: SimServer) -> None:
    with pytest.raises(Exception, match="400"):
        faulty.set_faults(["explode"])
    r = _fault_post(faulty, "status")  # a bad header spec is a 400 too, not a crash
    assert r.status_code == 400 and "fault" in r.json()["error"]["message"]


def test_fault_reset_before_is_not_served_reset_after_is(faulty: SimServer) -> None:
    with pytest.raises(httpx.TransportError):
        _fault_post(faulty, "reset_before")
    stats = faulty.stats()
    assert stats["requests"]["chat"] == 1 and stats["prompts_served"] == 0
    with pytest.raises(httpx.TransportError):
        _fault_post(faulty, "reset_after")
    stats = faulty.stats()
    assert stats["requests"]["chat"] == 2 and stats["prompts_served"] == 1
    assert stats["faults"] == {"reset_before": 1, "reset_after": 1}
    with pytest.raises(httpx.TransportError):
        _fault_post(faulty, "reset_after", stream=True)
    assert faulty.stats()["prompts_served"] == 2


def test_fault_stall_and_slow_body(zero: SimServer) -> None:
    t0 = time.perf_counter()
    assert _fault_post(zero, "stall=0.4").status_code == 200
    assert time.perf_counter() - t0 >= 0.38
    with httpx.Client(base_url=zero.url, timeout=10.0) as c:
        t0 = time.perf_counter()
        with c.stream("POST", "/v1/chat/completions", json=chat_body("slow one"),
                      headers={"x-sim-fault": "slow_body=0.5"}) as r:
            first = time.perf_counter() - t0
            body = r.read()
        total = time.perf_counter() - t0
    assert first < 0.3 and total >= 0.45  # headers at once, body dribbled
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("[sim] slow one")
    t0 = time.perf_counter()
    r = _fault_post(zero, "slow_body=0.4", stream=True)
    assert time.perf_counter() - t0 >= 0.35 and sse_events(r.text)[-1] == "[DONE]"


def test_fault_stall_longer_than_the_client_timeout(zero: SimServer) -> None:
    with httpx.Client(base_url=zero.url, timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/chat/completions", json=chat_body("x"), headers={"x-sim-fault": "stall=3600"})


def test_fault_truncated_json(zero: SimServer) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        _fault_post(zero, "truncated_json")


def test_fault_truncated_sse_has_no_finish_and_no_done(zero: SimServer) -> None:
    lines = []
    body = chat_body("cut me", max_tokens=64, ignore_eos=True, stream=True)
    with (
        httpx.Client(base_url=zero.url, timeout=10.0) as c,
        pytest.raises(httpx.RemoteProtocolError),
        c.stream("POST", "/v1/chat/completions", json=body,
                 headers={"x-sim-fault": "truncated_sse"}) as r,
    ):
        for line in r.iter_lines():
            lines.append(line)
    events = sse_events("\n\n".join(lines) + "\n\n")
    assert len(events) >= 2 and "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_fault_html_proxy_page(zero: SimServer) -> None:
    r = _fault_post(zero, "html")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert "Bad Gateway" in r.text
    assert _fault_post(zero, "html=200").status_code == 200


def test_fault_marker_in_one_prompt_rejects_the_whole_list(faulty: SimServer) -> None:
    prompts = [chatml([("user", f"p{i}")], False) for i in range(4)]
    prompts[2] = chatml([("user", "bad one [[fault:status=400]]")], False)
    r = httpx.post(faulty.base_url + "/completions", json={"prompt": prompts})
    assert r.status_code == 400
    r = httpx.post(faulty.base_url + "/chat/completions",
                   json=chat_body("hi [[fault:status=503#1]]"))
    assert r.status_code == 503
    assert faulty.stats()["prompts_served"] == 0


def test_fault_delay_option_and_cli_faults() -> None:
    with SimServer(SimConfig(latency="zero", faults=("status=503:delay=0.3#1",))) as srv:
        url = srv.base_url + "/chat/completions"
        t0 = time.perf_counter()
        assert httpx.post(url, json=chat_body("x")).status_code == 503
        assert time.perf_counter() - t0 >= 0.28
        assert httpx.post(url, json=chat_body("x")).status_code == 200


# ----------------------------------------------------------------------------------- latency model
def modelled_wall(srv_cfg: SimConfig, n: int, prompt_tokens: int, tokens: int) -> tuple[float, int]:
    """What the model predicts for n concurrent single-prompt requests (wall, max batch), in
    virtual time."""
    params = srv_cfg.latency_params()
    assert params is not None

    async def scenario() -> tuple[float, int]:
        eng = SimEngine(params)

        async def one() -> None:
            await eng.admit(1)
            await eng.submit([prompt_tokens], [tokens])

        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(*(one() for _ in range(n)))
        await eng.close()
        return asyncio.get_running_loop().time() - t0, eng.max_running

    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


async def _burst(url: str, n: int, body: dict[str, Any]) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n + 4)) as s:

        async def one() -> None:
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
                await r.read()

        await one()  # open one connection, warm the path
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0


def test_h100_latency_model_timing_and_counters() -> None:
    cfg = SimConfig(latency="h100", speed=0.5)  # slowed down: timer noise stays small relative
    body = chat_body("What is quantum entanglement?", max_tokens=32, ignore_eos=True)
    p = count_tokens(chatml([("user", "What is quantum entanglement?")], False))
    with SimServer(SimConfig(latency="zero")) as zero:  # what 200 requests cost the two processes on this machine
        overhead = asyncio.run(_burst(zero.url, 200, body))
    with SimServer(cfg) as srv:
        single = asyncio.run(_burst(srv.url, 1, body))
        srv.reset()
        wall = asyncio.run(_burst(srv.url, 200, body))
        stats = srv.stats()
    (expect_1, _), (expect_200, batch) = (modelled_wall(cfg, n, p, 32) for n in (1, 200))
    assert 0.9 * expect_1 <= single <= 1.3 * expect_1 + 0.03, (single, expect_1)
    # The lower bound shows the model is applied. Above it, the simulator's own CPU per request (each request
    # is parsed for real, then charged its modelled front-end cost) adds to the model when the machine is busy:
    # 1.59 s and 1.66 s against a model of 1.13 s in two runs on a slow 2-core machine (the same burst cost
    # 0.19 s without the model). So the upper bound is the stream test's 1.5x plus that burst, measured here.
    assert 0.9 * expect_200 <= wall <= 1.5 * expect_200 + overhead, (wall, expect_200, overhead)
    assert stats["max_inflight"] == 200 and stats["max_inflight_prompts"] == 200
    # the serial front-end admits one request per ~4 ms here, so the batch never holds all 200
    assert 0.8 * batch <= stats["max_running_seqs"] <= 1.2 * batch < 200
    assert stats["engine"]["running"] == 0 and stats["prompts_served"] == 201  # + the warm-up


def test_h100_stream_is_paced_by_the_engine() -> None:
    body = chat_body("pace me", max_tokens=96, ignore_eos=True, stream=True)
    with SimServer(SimConfig(latency="h100")) as srv, httpx.Client(timeout=10) as c:
        stamps = []
        t0 = time.perf_counter()
        with c.stream("POST", srv.base_url + "/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    stamps.append(time.perf_counter() - t0)
    step = 2.6e-3 + 36e-6  # one running sequence
    assert len(stamps) >= 10
    assert stamps[0] < 0.05  # the role chunk goes out before any decoding
    assert 0.9 * 96 * step <= stamps[-1] <= 1.5 * 96 * step + 0.05
    assert stamps[len(stamps) // 2] < 0.75 * stamps[-1]  # deltas arrive over time, not at the end


def test_engine_respects_max_num_seqs() -> None:
    cfg = SimConfig(latency="h100", speed=20.0, max_num_seqs=16)
    with SimServer(cfg) as srv:
        prompts = [chatml([("user", f"q{i}")], False) for i in range(40)]
        r = httpx.post(srv.base_url + "/completions",
                       json={"prompt": prompts, "max_tokens": 64, "ignore_eos": True}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 40 * 64
        stats = srv.stats()
    assert stats["max_running_seqs"] == 16 and stats["max_inflight_prompts"] == 40


def test_list_batching_beats_chat_at_32_tokens_like_the_anchors() -> None:
    """The anchors' shape: at 32 tokens the serial front-end caps chat; lists amortise it."""
    n = 768
    prompt = chatml([("user", "What is quantum entanglement?")], False)
    body = chat_body("What is quantum entanglement?", max_tokens=32, ignore_eos=True)

    async def chat_rate(url: str) -> float:
        sem = asyncio.Semaphore(256)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=260)) as s:

            async def one() -> None:
                async with sem, s.post(url + "/v1/chat/completions", json=body) as r:
                    await r.read()

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return n / (time.perf_counter() - t0)

    async def list_rate(url: str) -> float:
        sem = asyncio.Semaphore(16)
        lbody = {"prompt": [prompt] * 32, "max_tokens": 32, "ignore_eos": True}
        async with aiohttp.ClientSession() as s:

            async def one() -> None:
                async with sem, s.post(url + "/v1/completions", json=lbody) as r:
                    await r.read()

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n // 32)))
            return n / (time.perf_counter() - t0)

    with SimServer(SimConfig(latency="h100", speed=2.0)) as srv:
        chat, lists = asyncio.run(chat_rate(srv.url)), asyncio.run(list_rate(srv.url))
    # speed 2 doubles the anchors' 320-380 (chat) and 584 (lists) req/s
    assert 500 <= chat <= 800 and lists >= 1.3 * chat, (chat, lists)


# ----------------------------------------------------------------------------------------- process
def test_restart_keeps_the_port_and_kill_drops_connections() -> None:
    with SimServer(SimConfig(latency="zero")) as srv:
        port, pid = srv.port, srv.pid
        srv.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/health")
        srv.restart()
        assert srv.port == port and srv.pid != pid
        assert httpx.get(srv.url + "/health").status_code == 200
        assert srv.base_url == f"http://127.0.0.1:{port}/v1"
        srv.restart()
        assert srv.port == port and httpx.get(srv.url + "/health").status_code == 200
    assert not srv.running


def test_start_failure_reports_the_child_output() -> None:
    with SimServer(SimConfig(latency="zero")) as first:
        clash = SimServer(SimConfig(latency="zero"), port=first.port, startup_timeout=10)
        with pytest.raises(RuntimeError, match="simulator"):
            clash.start()
        assert not clash.running


def test_config_round_trips_through_the_command_line() -> None:
    from langchain_qwen_fast.testing.sim_engine import build_parser

    cfg = SimConfig(latency="h100", seed=5, max_model_len=4096, reasoning_field="reasoning_content",
                    model_name="m", faults=("status=429@0.5", "reset_after#2"), speed=3.0,
                    step_a=0.001, fe_per_token=1e-5, max_num_seqs=64)
    assert SimConfig.from_args(build_parser().parse_args(cfg.to_argv())) == cfg
    assert cfg.latency_params().step_a == 0.001  # type: ignore[union-attr]
    assert SimConfig(latency="zero").latency_params() is None
    with pytest.raises(ValueError):
        SimConfig(latency="a100")


def test_python_dash_m_entry_point_serves(tmp_path: Path) -> None:
    """The documented command line itself (SimServer uses a bootstrap that skips the package's
    __init__, so this path needs its own check)."""
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "langchain_qwen_fast.testing.server", "--port", "0",
             "--latency", "zero", "--exit-with-parent"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "SIM_LISTENING" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url = log.read_text().split("SIM_LISTENING ", 1)[1].split()[0]
        assert httpx.get(url + "/health").status_code == 200
        r = httpx.post(url + "/v1/chat/completions", json=chat_body("via -m"))
        assert r.json()["choices"][0]["message"]["content"].startswith("[sim] via -m")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
