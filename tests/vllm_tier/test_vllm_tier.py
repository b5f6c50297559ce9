"""The real-vLLM-on-CPU tier works: plain httpx against vLLM 0.32 CPU serving the tiny scripted
Qwen3.

The model's script (tests/servers/build_tiny_qwen3.py, docs/vllm-cpu-tier.md): thinking off answers
"Hello!", thinking on reasons "Hmm" and then answers, grammar-constrained output is short valid JSON
(strings "Hello!", integers 3).

Covers: tests/servers/.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import tokenize
from vllm_server import VllmCpuServer, serve_args

ROOT = Path(__file__).resolve().parents[2]

# Token ids of the real Qwen BPE / Qwen3 specials.
IM_START, IM_END, THINK, END_THINK = 151644, 151645, 151667, 151668
NL, NL2, HELLO, BANG, HMM, ASSISTANT = 198, 271, 9707, 0, 80022, 77091
EMPTY_THINK_IDS = [THINK, NL2, END_THINK, NL2]  # "<think>\n\n</think>\n\n"

OFF = {"enable_thinking": False}
ON = {"enable_thinking": True}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
MAGIC = {
    "type": "function",
    "function": {
        "name": "magic_function",
        "description": "Applies a magic function to an input.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "integer"}},
            "required": ["input"],
        },
    },
}
TOOLS = [WEATHER, MAGIC]
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


# -- helpers ---------------------------------------------------------------------------------------
def chat(http: httpx.Client, content: str = "Say hello.", **body: Any) -> dict[str, Any]:
    payload = {
        "model": "Qwen-0.6B",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 256,
        **body,
    }
    r = http.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def reasoning_of(message: dict[str, Any]) -> str | None:
    return message.get("reasoning") or message.get("reasoning_content")


def sse_events(http: httpx.Client, path: str, payload: dict[str, Any]) -> list[Any]:
    """The JSON payloads of a Server-Sent-Events response, then the literal "[DONE]"."""
    events: list[Any] = []
    with http.stream("POST", path, json=payload) as r:
        assert r.status_code == 200, r.read().decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_matches_schema(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Tiny JSON-schema check (type, properties, required, additionalProperties: false, items)."""
    kinds = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "object": dict,
        "array": list,
        "null": type(None),
    }
    expected = schema.get("type")
    if expected is not None:
        ok = isinstance(value, kinds[expected]) and not (
            expected in ("integer", "number") and isinstance(value, bool)
        )
        assert ok, f"{where}: {value!r} is not {expected}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: missing {sorted(missing)} in {value!r}"
        if schema.get("additionalProperties") is False:
            extra = set(value) - set(props)
            assert not extra, f"{where}: unexpected {sorted(extra)}"
        for key, sub in props.items():
            if key in value:
                assert_matches_schema(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            assert_matches_schema(item, schema["items"], f"{where}[{i}]")


# -- the scripted chain ----------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, 0.7, None])
def test_thinking_off_answers_hello(http: httpx.Client, temperature: float | None) -> None:
    extra = (
        {} if temperature is None else {"temperature": temperature}
    )  # None: generation_config's 0.6
    data = chat(http, chat_template_kwargs=OFF, **extra)
    choice = data["choices"][0]
    assert choice["message"]["content"] == "Hello!"
    assert not reasoning_of(choice["message"])
    assert choice["finish_reason"] == "stop"
    assert data["model"] == "Qwen-0.6B"
    assert data["usage"]["completion_tokens"] == 3  # Hello ! <|im_end|>


def test_thinking_on_reasons_hmm_then_answers(http: httpx.Client) -> None:
    data = chat(http, chat_template_kwargs=ON, temperature=0.7)
    message = data["choices"][0]["message"]
    assert reasoning_of(message) == "Hmm"
    # vLLM's qwen3 parser keeps the "\n\n" after </think> in the content, as with the real model.
    assert message["content"] == "\n\nHello!"
    assert data["usage"]["completion_tokens"] == 7  # <think> Hmm </think> \n\n Hello ! <|im_end|>
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1


def test_models_endpoint(http: httpx.Client) -> None:
    models = http.get("/v1/models").json()["data"]
    assert [(m["id"], m["max_model_len"]) for m in models] == [("Qwen-0.6B", 2048)]


# -- the chat template, token for token ------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "<think>\nhidden\n</think>\n\nHello!"},  # reasoning is dropped
    {"role": "user", "content": "And again, in 中文?"},
]
CHATML = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAnd again, in 中文?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    ("kwargs", "suffix"), [(OFF, "<think>\n\n</think>\n\n"), (ON, ""), ({}, "")]
)
def test_server_template_equals_plain_chatml(
    http: httpx.Client, kwargs: dict[str, Any], suffix: str
) -> None:
    templated = tokenize(
        http, "Qwen-0.6B", messages=CONVERSATION, add_generation_prompt=True, chat_template_kwargs=kwargs
    )
    rendered = tokenize(http, "Qwen-0.6B", prompt=CHATML + suffix, add_special_tokens=False)
    assert templated == rendered
    if kwargs == OFF:
        assert templated[-4:] == EMPTY_THINK_IDS
    else:
        assert templated[-3:] == [IM_START, ASSISTANT, NL]


def test_tokenizer_basics(http: httpx.Client) -> None:
    assert tokenize(http, "Qwen-0.6B", prompt="\n\n", add_special_tokens=False) == [NL2]
    assert tokenize(http, "Qwen-0.6B", prompt="\n", add_special_tokens=False) == [NL]
    assert tokenize(http, "Qwen-0.6B", prompt="Hello!Hmm", add_special_tokens=False) == [HELLO, BANG, HMM]
    r = http.post("/detokenize", json={"model": "Qwen-0.6B", "tokens": EMPTY_THINK_IDS})
    assert r.json()["prompt"] == "<think>\n\n</think>\n\n"


# -- structured output and tools -------------------------------------------------------------------
@pytest.mark.parametrize("thinking", [OFF, ON], ids=["think-off", "think-on"])
def test_json_schema_response_format(http: httpx.Client, thinking: dict[str, Any]) -> None:
    data = chat(
        http,
        "Describe a person as JSON.",
        chat_template_kwargs=thinking,
        temperature=0.7,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop"
    person = json.loads(choice["message"]["content"])
    assert_matches_schema(person, PERSON)
    assert isinstance(person["name"], str) and type(person["age"]) is int
    assert person == {"name": "Hello!", "age": 3}  # the script's strings and integers


RICH = {
    "type": "object",
    "properties": {
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "nums": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
        "score": {"type": "number"},
        "nested": {
            "type": "object",
            "properties": {
                "x": {"type": "integer"},
                "y": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["x", "y"],
        },
        "note": {"type": "string"},
    },
    "required": ["flag", "tags", "nums", "score", "nested"],
}


def test_json_schema_nested_arrays_optional(http: httpx.Client) -> None:
    data = chat(
        http,
        "JSON please.",
        chat_template_kwargs=OFF,
        temperature=0.7,
        response_format={"type": "json_schema", "json_schema": {"name": "rich", "schema": RICH}},
    )
    value = json.loads(data["choices"][0]["message"]["content"])
    assert_matches_schema(value, RICH)
    assert value == {
        "flag": True,
        "tags": ["Hello!"],
        "nums": [3, 3],
        "score": 3,
        "nested": {"x": 3, "y": "Hello!"},
    }  # the optional "note" (last) is left out


def test_json_object_response_format(http: httpx.Client) -> None:
    data = chat(
        http, "JSON please.", chat_template_kwargs=OFF, response_format={"type": "json_object"}
    )
    assert json.loads(data["choices"][0]["message"]["content"]) == {}


@pytest.mark.parametrize("thinking", [OFF, ON], ids=["think-off", "think-on"])
@pytest.mark.parametrize(
    "tool_choice",
    [
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "function", "function": {"name": "magic_function"}},
        "required",
    ],
    ids=["named-weather", "named-magic", "required"],
)
def test_forced_tool_calls_are_valid(
    http: httpx.Client, tool_choice: Any, thinking: dict[str, Any]
) -> None:
    data = chat(
        http,
        "What is the weather in Paris? Use the tool.",
        tools=TOOLS,
        tool_choice=tool_choice,
        chat_template_kwargs=thinking,
        temperature=0.7,
    )
    choice = data["choices"][0]
    message = choice["message"]
    calls = message["tool_calls"]
    assert len(calls) == 1, message  # the script closes after one call
    assert choice["finish_reason"] in ("tool_calls", "stop")  # vLLM: "stop" for a named tool choice
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for call in calls:
        assert call["type"] == "function" and call["id"]
        name = call["function"]["name"]
        if isinstance(tool_choice, dict):
            assert name == tool_choice["function"]["name"]
        assert name in by_name
        args = json.loads(call["function"]["arguments"])
        assert_matches_schema(args, by_name[name])
    if thinking == ON:
        assert reasoning_of(message) == "Hmm"


def test_auto_tool_choice_answers_in_text(http: httpx.Client) -> None:
    # The script cannot see the tools (attention is zeroed), so "auto" never calls one.
    data = chat(
        http, "Weather in Paris?", tools=TOOLS, tool_choice="auto", chat_template_kwargs=OFF
    )
    message = data["choices"][0]["message"]
    assert message["content"] == "Hello!"
    assert not message.get("tool_calls")


def test_tool_result_turn_is_accepted(http: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "days": 1}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    data = chat(http, messages=messages, tools=TOOLS, chat_template_kwargs=OFF)
    assert data["choices"][0]["message"]["content"] == "Hello!"
    templated = tokenize(
        http, "Qwen-0.6B", messages=messages, tools=TOOLS, add_generation_prompt=True, chat_template_kwargs=OFF
    )
    tail = tokenize(
        http,
        "Qwen-0.6B",
        add_special_tokens=False,
        prompt=(
            '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris", "days": 1}}\n</tool_call><|im_end|>\n'
            "<|im_start|>user\n<tool_response>\nsunny\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ),
    )
    assert templated[-len(tail) :] == tail


# -- streaming -------------------------------------------------------------------------------------
@pytest.mark.parametrize("thinking", [OFF, ON], ids=["think-off", "think-on"])
def test_streaming_sse_with_usage_last(http: httpx.Client, thinking: dict[str, Any]) -> None:
    events = sse_events(
        http,
        "/v1/chat/completions",
        {
            "model": "Qwen-0.6B",
            "messages": [{"role": "user", "content": "Say hello."}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "chat_template_kwargs": thinking,
        },
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == (3 if thinking == OFF else 7)
    assert all(c.get("usage") is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    reasoning = "".join(d.get("reasoning") or d.get("reasoning_content") or "" for d in deltas)
    assert content.lstrip("\n") == "Hello!"
    assert reasoning == ("" if thinking == OFF else "Hmm")
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_streamed_tool_call_assembles_to_valid_json(http: httpx.Client) -> None:
    events = sse_events(
        http,
        "/v1/chat/completions",
        {
            "model": "Qwen-0.6B",
            "messages": [{"role": "user", "content": "Weather?"}],
            "stream": True,
            "tools": [WEATHER],
            "tool_choice": "required",
            "chat_template_kwargs": OFF,
            "stream_options": {"include_usage": True},
        },
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in events[:-1]:
        for choice in chunk["choices"]:
            finish = choice.get("finish_reason") or finish
            for tc in choice["delta"].get("tool_calls") or []:
                slot = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
    assert finish == "tool_calls"
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    assert_matches_schema(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


# -- /v1/completions with a list of prompts --------------------------------------------------------
def test_completions_list_of_prompts(http: httpx.Client) -> None:
    prompts = [
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nA much longer question about "
        "many things?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        "<|im_start|>user\nThink first.<|im_end|>\n<|im_start|>assistant\n",
    ]
    r = http.post(
        "/v1/completions", json={"model": "Qwen-0.6B", "prompt": prompts, "max_tokens": 16}
    )
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert sorted(c["index"] for c in choices) == [0, 1, 2]
    text = {c["index"]: c["text"] for c in choices}
    assert text[0] == text[1] == "Hello!"
    assert (
        text[2] == "<think>Hmm</think>\n\nHello!"
    )  # completions keep <think> (not a special token)
    assert all(c["finish_reason"] == "stop" for c in choices)


# -- the helper itself -----------------------------------------------------------------------------
def test_serve_flags_match_shell_script() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "tests/servers/vllm_cpu.sh"), "serve-args", "8123"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.splitlines() == serve_args(8123)


def test_bare_server_has_no_parsers(vllm_server_bare: VllmCpuServer) -> None:
    assert "--reasoning-parser" not in vllm_server_bare.command()
    assert "--tool-call-parser" not in vllm_server_bare.command()
    with httpx.Client(base_url=vllm_server_bare.base_url, timeout=120) as client:
        body = {
            "model": "Qwen-0.6B",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 32,
        }
        data = client.post("/chat/completions", json=body).json()
        message = data["choices"][0]["message"]
        assert (
            message["content"] == "<think>Hmm</think>\n\nHello!"
        )  # no reasoning parser: inline think
        assert not reasoning_of(message)
        # vLLM 0.32 refuses every tool_choice but "none" without --tool-call-parser (400).
        for choice in (
            "auto",
            "required",
            {"type": "function", "function": {"name": "magic_function"}},
        ):
            r = client.post(
                "/chat/completions", json={**body, "tools": TOOLS, "tool_choice": choice}
            )
            assert r.status_code == 400, r.text
            assert "tool-call-parser" in r.text or "tool-choice" in r.text, r.text
        # Structured output needs no parser; without a reasoning parser the grammar starts at once.
        r = client.post(
            "/chat/completions",
            json={
                **body,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "person", "schema": PERSON},
                },
            },
        )
        assert json.loads(r.json()["choices"][0]["message"]["content"]) == {
            "name": "Hello!",
            "age": 3,
        }
