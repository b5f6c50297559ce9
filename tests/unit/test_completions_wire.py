"""wire_mode="completions": plain prompts go to /v1/completions as ChatML lists, by index.

Covers: _calls/request.py, _qwen.py, _dispatch/dispatcher.py, _convert.py."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body, last_user_text
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from langchain_qwen_fast import BadRequestError

pytestmark = pytest.mark.timeout(30)

_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
THINK_OFF_TAIL = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def _user_of(prompt: str) -> str:
    return _USER.findall(prompt)[-1]


def _prompts(payload: dict[str, Any]) -> list[str]:
    p = payload["prompt"]
    return p if isinstance(p, list) else [p]


def completions_server(
    *, reverse: bool = True, token_ids: bool = False, reject: str | None = None, text: Any = None
) -> Any:
    """Chat requests echo; completions requests echo each prompt's user text, choices reversed."""

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            return httpx.Response(200, json=chat_body(f"chat:{last_user_text(payload)}"))
        prompts = _prompts(payload)
        if reject is not None and any(reject in p for p in prompts):
            return httpx.Response(400, json={"error": {"message": "prompt rejected", "code": 400}})
        choices = []
        for i, p in enumerate(prompts):
            c: dict[str, Any] = {
                "index": i,
                "text": text(p) if text else f"list:{_user_of(p)}",
                "logprobs": None,
                "finish_reason": "length",
            }
            if token_ids:
                c["prompt_token_ids"] = list(range(10 + i))
                c["token_ids"] = list(range(3))
            choices.append(c)
        if reverse:
            choices.reverse()
        n = len(prompts)
        return httpx.Response(
            200,
            json={
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": payload["model"],
                "choices": choices,
                "usage": {
                    "prompt_tokens": 10 * n,
                    "completion_tokens": 3 * n,
                    "total_tokens": 13 * n,
                },
            },
        )

    return respond


def test_batch_goes_to_completions_as_lists_with_chatml_prompts(mock_model: Any) -> None:
    model, rec = mock_model(completions_server(), wire_mode="completions", max_tokens=8)
    inputs = [f"question {i}" for i in range(6)]
    results = model.batch(inputs)
    assert [r.content for r in results] == [f"list:question {i}" for i in range(6)]

    assert {r["path"] for r in rec.requests} == {"/v1/completions"}
    assert len(rec.requests) < 6  # coalesced
    sent: list[str] = []
    for payload in rec.payloads:
        assert isinstance(payload["prompt"], list) and len(payload["prompt"]) >= 2
        assert payload["max_tokens"] == 8
        assert "messages" not in payload and "chat_template_kwargs" not in payload
        sent += payload["prompt"]
    assert sorted(sent) == sorted(
        f"<|im_start|>user\nquestion {i}<|im_end|>\n{THINK_OFF_TAIL}" for i in range(6)
    )
    for p in sent:
        assert p.endswith(THINK_OFF_TAIL)


def test_answers_are_matched_by_index_when_choices_come_reversed(mock_model: Any) -> None:
    model, _ = mock_model(completions_server(reverse=True), wire_mode="completions", max_tokens=8)
    results = model.batch([f"p{i}" for i in range(10)])
    assert [r.content for r in results] == [f"list:p{i}" for i in range(10)]


def test_system_prompt_is_rendered_into_the_chatml_prompt(mock_model: Any) -> None:
    model, rec = mock_model(completions_server(), wire_mode="completions", max_tokens=8)
    conv = [SystemMessage("Be brief."), HumanMessage("hi")]
    model.batch([conv, conv])
    assert _prompts(rec.last)[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" + THINK_OFF_TAIL
    )


def test_per_prompt_usage_comes_from_token_ids(mock_model: Any) -> None:
    model, rec = mock_model(
        completions_server(reverse=False, token_ids=True), wire_mode="completions", max_tokens=8
    )
    results = model.batch(["a", "b", "c"])
    assert rec.last.get("return_token_ids") is True
    by_pos = {i: r.usage_metadata for i, r in enumerate(results)}
    for i in range(3):
        assert by_pos[i]["input_tokens"] == 10 + i
        assert by_pos[i]["output_tokens"] == 3
        assert by_pos[i]["total_tokens"] == 13 + i


def test_thinking_on_in_completions_mode_leaves_open_prompt_and_splits_reasoning(
    mock_model: Any,
) -> None:
    model, rec = mock_model(
        completions_server(text=lambda p: "<think>\nponder\n</think>\n\nanswer"),
        wire_mode="completions",
        max_tokens=8,
        enable_thinking=True,
    )
    results = model.batch(["x", "y"])
    for p in _prompts(rec.last):
        assert p.endswith("<|im_start|>assistant\n")
        assert "<think>" not in p
    assert [r.content for r in results] == ["answer", "answer"]
    assert results[0].additional_kwargs["reasoning_content"] == "ponder"


def test_single_invoke_in_completions_mode_uses_completions(mock_model: Any) -> None:
    model, rec = mock_model(completions_server(), wire_mode="completions", max_tokens=8)
    assert model.invoke("solo").content == "list:solo"
    assert rec.requests[0]["path"] == "/v1/completions"


class Weather(BaseModel):
    """Get the weather."""

    city: str


@pytest.mark.parametrize(
    "case",
    ["tools_bound", "max_tokens_unset", "response_format", "list_content", "tool_history"],
)
def test_ineligible_calls_go_to_chat(case: str, mock_model: Any) -> None:
    fields: dict[str, Any] = {"wire_mode": "completions"}
    if case != "max_tokens_unset":
        fields["max_tokens"] = 8
    model, rec = mock_model(completions_server(), **fields)
    runnable: Any = model
    inputs: list[Any] = ["one", "two"]
    if case == "tools_bound":
        runnable = model.bind_tools([Weather])
    elif case == "response_format":
        runnable = model.bind(response_format={"type": "json_object"})
    elif case == "list_content":
        inputs = [
            [HumanMessage(content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])]
        ] * 2
    elif case == "tool_history":
        from langchain_core.messages import AIMessage, ToolMessage

        conv = [
            HumanMessage("w?"),
            AIMessage("", tool_calls=[{"name": "Weather", "args": {"city": "x"}, "id": "c1"}]),
            ToolMessage("sunny", tool_call_id="c1"),
            HumanMessage("so?"),
        ]
        inputs = [conv, conv]
    runnable.batch(inputs)
    assert {r["path"] for r in rec.requests} == {"/v1/chat/completions"}
    assert all("messages" in p for p in rec.payloads)


def test_rejected_list_is_split_until_bad_prompt_stands_alone(mock_model: Any) -> None:
    model, rec = mock_model(
        completions_server(reject="POISON"), wire_mode="completions", max_tokens=8
    )
    inputs = [f"ok {i}" for i in range(8)]
    inputs[5] = "POISON pill"
    results = model.batch(inputs, return_exceptions=True)
    assert isinstance(results[5], BadRequestError)
    assert "prompt rejected" in str(results[5])
    for i, r in enumerate(results):
        if i != 5:
            assert not isinstance(r, BaseException), (i, r)
            assert r.content == f"list:ok {i}"
    alone = [
        p
        for p in rec.payloads
        if _prompts(p) and len(_prompts(p)) == 1 and "POISON" in _prompts(p)[0]
    ]
    assert alone, "the bad prompt was never sent on its own"
    # Every good prompt was answered exactly once.
    answered = [
        _user_of(x)
        for p in rec.payloads
        if not any("POISON" in q for q in _prompts(p))
        for x in _prompts(p)
    ]
    assert sorted(answered) == sorted(f"ok {i}" for i in range(8) if i != 5)
    assert model.stats()["list_splits"] >= 1


async def test_with_prefix_affinity_each_system_prompt_keeps_one_replica_even_in_lists(mock_model: Any) -> None:
    import asyncio as _asyncio
    from collections import defaultdict

    from langchain_core.messages import HumanMessage, SystemMessage

    async def slow(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await _asyncio.sleep(0.02)  # lists pile up behind the first ones, so they are filled from a mixed queue
        return completions_server(reverse=False)(payload, request)

    urls = [f"http://127.0.0.{i}:9/v1" for i in (1, 2, 3)]
    # room for everything on every replica: only the lists' make-up decides where a prefix goes
    model, rec = mock_model(slow, base_url=urls, routing="prefix_affinity", wire_mode="completions", max_tokens=8)
    systems = [f"You are shop assistant {k}. " + "Be brief. " * 40 for k in range(6)]
    inputs = [[SystemMessage(systems[i % 6]), HumanMessage(f"q-{i}")] for i in range(600)]
    outs = await model.abatch(inputs)
    assert [o.content for o in outs[:3]] == ["list:q-0", "list:q-1", "list:q-2"]
    homes: dict[int, set[str]] = defaultdict(set)
    sizes = []
    for r in rec.requests:
        prompts = _prompts(r["json"])
        sizes.append(len(prompts))
        for p in prompts:
            homes[next(k for k in range(6) if f"assistant {k}." in p)].add(httpx.URL(r["url"]).host)
    assert all(len(h) == 1 for h in homes.values()), dict(homes)  # one replica per system prompt
    assert len(set().union(*homes.values())) == 3  # and all three replicas used
    assert max(sizes) > 8  # still lists: the prompts of one prefix share them


async def test_with_prefix_affinity_one_replica_still_fills_its_lists(mock_model: Any) -> None:
    """With one replica there is nowhere else for a prefix to go: lists fill as without affinity (they held
    one prompt each when the list filter asked a prefix table that a single replica never wrote)."""
    import asyncio as _asyncio

    from langchain_core.messages import HumanMessage, SystemMessage

    async def slow(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await _asyncio.sleep(0.02)
        return completions_server(reverse=False)(payload, request)

    model, rec = mock_model(slow, base_url="http://127.0.0.1:9/v1", routing="prefix_affinity",
                            wire_mode="completions", max_tokens=8)
    system = "You are a shop assistant. " + "Be brief. " * 40
    outs = await model.abatch([[SystemMessage(system), HumanMessage(f"q-{i}")] for i in range(200)])
    assert [o.content for o in outs[:3]] == ["list:q-0", "list:q-1", "list:q-2"]
    sizes = [len(_prompts(r["json"])) for r in rec.requests]
    assert sum(sizes) == 200
    assert max(sizes) > 8 and len(sizes) < 50, sizes  # lists, not one request per prompt
