"""End-to-end: BatchedChatQwen in LCEL, LangGraph and structured output against real vLLM on CPU.

The server (tests/vllm_tier/conftest.py) serves the tiny scripted Qwen3 (docs/vllm-cpu-tier.md):
thinking off answers "Hello!"; thinking on reasons "Hmm" first; JSON strings are "Hello!" and
integers 3; a tool is called only when ``tool_choice`` forces one. Its output ignores the prompt,
so where a test needs to tell inputs apart it reads the prompt's token count (``input_tokens``).

Covers: chat_models.py, _qwen.py, _convert.py.
"""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from support import tokenize

from langchain_qwen_fast import BatchedChatQwen, render_chatml
from langchain_qwen_fast._convert import messages_to_dicts

MODEL = "Qwen-0.6B"
# Token ids of the real Qwen BPE / Qwen3 specials.
IM_START, NL, ASSISTANT = 151644, 198, 77091
EMPTY_THINK_IDS = [151667, 271, 151668, 271]  # "<think>\n\n</think>\n\n"


def qwen(server: Any, **kw: Any) -> BatchedChatQwen:
    """A model on the tier server: greedy, with max_tokens set so the completions wire may apply."""
    params: dict[str, Any] = {
        "model": MODEL,
        "base_url": server.base_url,
        "api_key": "EMPTY",
        "temperature": 0,
        "max_tokens": 64,
        "timeout": 120,
    }
    params.update(kw)
    return BatchedChatQwen(**params)


def list_requests(before: dict[str, Any], after: dict[str, Any]) -> dict[int, int]:
    """Batch sizes (prompts per request) sent between two ``stats()`` snapshots: size -> count."""
    b, a = before["batch_size_histogram"], after["batch_size_histogram"]
    return {k: a[k] - b.get(k, 0) for k in a if a[k] - b.get(k, 0)}


def joined(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    return total


@tool
def get_weather(city: str, days: int) -> str:
    """Weather forecast for a city."""
    return f"Sunny in {city} for {days} days."


@tool
def magic_function(input: int) -> int:
    """Applies a magic function to an input."""
    return input + 2


class Person(BaseModel):
    """A person."""

    name: str = Field(description="the person's name")
    age: int = Field(description="age in years")


# -- (a) LCEL over abatch, in order, through completions lists -----------------------------------
async def test_lcel_chain_abatch_of_200_is_ordered_and_rides_completions_lists(
    vllm_server: Any,
) -> None:
    model = qwen(vllm_server, max_tokens=16)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You greet people."), ("human", "Say hello{pad}")]
    )
    chain = prompt | model | StrOutputParser()
    inputs = [{"pad": " hello" * i} for i in range(200)]

    before = model.stats()
    answers = await chain.abatch(inputs)
    after = model.stats()
    assert answers == ["Hello!"] * 200
    sizes = list_requests(before, after)
    assert sum(size * n for size, n in sizes.items()) == 200
    assert max(sizes) > 1, f"no list request was sent: {sizes}"
    assert sum(sizes.values()) < 200  # fewer HTTP requests than inputs

    # Order: the answers cannot tell inputs apart, the prompt length can (a token per " hello").
    messages = await (prompt | model).abatch(inputs)
    counts = [m.usage_metadata["input_tokens"] for m in messages]  # type: ignore[index]
    assert counts == [counts[0] + i for i in range(200)]
    assert all(
        m.content == "Hello!" and m.response_metadata["finish_reason"] == "stop" for m in messages
    )


# -- (b) LangGraph ---------------------------------------------------------------------------------
def _forced_turns(model: BatchedChatQwen) -> Any:
    """A dynamic model for create_react_agent: get_weather, then magic_function, then no tool."""
    tools = [get_weather, magic_function]
    choices = ["get_weather", "magic_function", "none"]

    def pick(state: Any, runtime: Any) -> Any:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return model.bind_tools(tools, tool_choice=choices[min(turn, 2)])

    return pick


def _react_agent(model: BatchedChatQwen) -> Any:
    with (
        warnings.catch_warnings()
    ):  # prebuilt's agent is deprecated for langchain.agents, not installed here
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        return create_react_agent(_forced_turns(model), [get_weather, magic_function])


async def test_langgraph_agent_runs_both_tools_with_parsed_args_and_ends_with_an_answer(
    vllm_server: Any,
) -> None:
    agent = _react_agent(qwen(vllm_server))
    state = await agent.ainvoke(
        {"messages": [HumanMessage("Weather in Paris for 3 days, then magic(3)?")]}
    )
    msgs: list[BaseMessage] = state["messages"]
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    first, second, final = msgs[1], msgs[3], msgs[5]
    assert (
        isinstance(first, AIMessage)
        and isinstance(second, AIMessage)
        and isinstance(final, AIMessage)
    )
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [
        ("get_weather", {"city": "Hello!", "days": 3})
    ]
    assert [(c["name"], c["args"]) for c in second.tool_calls] == [("magic_function", {"input": 3})]
    # The tools ran on the model's parsed arguments; their results went back under the calls' ids.
    tool_results = [m for m in msgs if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_results] == ["Sunny in Hello! for 3 days.", "5"]
    assert [m.tool_call_id for m in tool_results] == [
        first.tool_calls[0]["id"],
        second.tool_calls[0]["id"],
    ]
    assert final.content == "Hello!" and not final.tool_calls
    assert final.response_metadata["finish_reason"] == "stop"


def test_langgraph_agent_runs_synchronously_too(vllm_server: Any) -> None:
    agent = _react_agent(qwen(vllm_server))
    state = agent.invoke({"messages": [HumanMessage("Weather?")]})
    assert [type(m).__name__ for m in state["messages"]][-1] == "AIMessage"
    assert state["messages"][-1].content == "Hello!"
    assert sum(isinstance(m, ToolMessage) for m in state["messages"]) == 2


async def test_langgraph_messages_stream_yields_model_chunks_from_astream(vllm_server: Any) -> None:
    agent = _react_agent(qwen(vllm_server))
    by_node: dict[str, list[Any]] = {}
    async for message, meta in agent.astream(
        {"messages": [HumanMessage("Weather?")]}, stream_mode="messages"
    ):
        by_node.setdefault(meta["langgraph_node"], []).append(message)
    model_msgs = by_node["agent"]
    assert model_msgs and all(isinstance(m, AIMessageChunk) for m in model_msgs)
    assert len(model_msgs) > 3  # token deltas, not one chunk per turn
    tool_call_names = [
        tc["name"] for m in model_msgs for tc in m.tool_call_chunks if tc.get("name")
    ]
    assert tool_call_names == ["get_weather", "magic_function"]
    text = "".join(m.content for m in model_msgs if isinstance(m.content, str))
    assert text == "Hello!"
    assert [type(m).__name__ for m in by_node["tools"]] == ["ToolMessage", "ToolMessage"]


# -- (c) structured output -------------------------------------------------------------------------
async def test_structured_output_default_json_schema_gives_a_validated_instance(
    vllm_server: Any,
) -> None:
    person = (
        await qwen(vllm_server).with_structured_output(Person).ainvoke("Who is Ada? Reply as JSON.")
    )
    assert person == Person(name="Hello!", age=3)


def test_structured_output_function_calling_gives_a_validated_instance(vllm_server: Any) -> None:
    structured = qwen(vllm_server).with_structured_output(Person, method="function_calling")
    assert structured.invoke("Who is Ada?") == Person(name="Hello!", age=3)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_include_raw_keeps_the_message(vllm_server: Any, method: str) -> None:
    out = (
        qwen(vllm_server)
        .with_structured_output(Person, method=method, include_raw=True)
        .invoke("Ada?")
    )
    assert set(out) == {"raw", "parsed", "parsing_error"}
    assert out["parsed"] == Person(name="Hello!", age=3)
    assert out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)
    assert out["raw"].usage_metadata is not None
    if method == "function_calling":
        assert out["raw"].tool_calls[0]["name"] == "Person"
    else:
        assert out["raw"].content == '{"name":"Hello!","age":3}'


def test_structured_output_json_mode_parse_failure_is_reported_with_include_raw(
    vllm_server: Any,
) -> None:
    # json_object gives "{}" from this model: under include_raw the failure is data, not an error.
    out = (
        qwen(vllm_server)
        .with_structured_output(Person, method="json_mode", include_raw=True)
        .invoke("Ada?")
    )
    assert out["raw"].content == "{}"
    assert out["parsed"] is None
    assert out["parsing_error"] is not None


# -- (d) thinking on and off -----------------------------------------------------------------------
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("thinking", [False, True])
def test_server_prompt_ends_with_empty_think_block_only_when_thinking_is_off(
    http: httpx.Client, thinking: bool
) -> None:
    ids = tokenize(
        http,
        MODEL,
        messages=CONV,
        add_generation_prompt=True,
        chat_template_kwargs={"enable_thinking": thinking},
    )
    if thinking:
        assert ids[-3:] == [IM_START, ASSISTANT, NL]
    else:
        assert ids[-4:] == EMPTY_THINK_IDS
        assert ids[-7:-4] == [IM_START, ASSISTANT, NL]


@pytest.mark.parametrize("wire_mode", ["chat", "completions"])
async def test_thinking_on_puts_reasoning_in_additional_kwargs_and_answer_in_content(
    vllm_server: Any, wire_mode: str
) -> None:
    model = qwen(vllm_server, enable_thinking=True, wire_mode=wire_mode)
    before = model.stats()
    msg = await model.ainvoke("Hi")
    sizes = list_requests(before, model.stats())
    assert msg.additional_kwargs["reasoning_content"] == "Hmm"
    # vLLM's qwen3 parser leaves the template's "\n\n" after </think>; the client drops it, so
    # chat, completions and streaming agree.
    assert msg.content == "Hello!"
    assert any(b["type"] == "reasoning" and b["reasoning"] == "Hmm" for b in msg.content_blocks)
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] == 7
    assert sizes == {1: 1}


async def test_thinking_off_by_default_gives_no_reasoning(vllm_server: Any) -> None:
    msg = await qwen(vllm_server, wire_mode="chat").ainvoke("Hi")
    assert msg.content == "Hello!"
    assert "reasoning_content" not in msg.additional_kwargs
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] == 3
    on = await qwen(vllm_server, wire_mode="chat").ainvoke("Hi", enable_thinking=True)  # per call
    assert on.additional_kwargs["reasoning_content"] == "Hmm"


async def test_streaming_with_thinking_sends_reasoning_deltas_in_additional_kwargs(
    vllm_server: Any,
) -> None:
    chunks = [c async for c in qwen(vllm_server, enable_thinking=True).astream("Hi")]
    reasoning_chunks = [c for c in chunks if c.additional_kwargs.get("reasoning_content")]
    assert reasoning_chunks and all(not c.content for c in reasoning_chunks)
    total = joined(chunks)
    assert total.additional_kwargs["reasoning_content"] == "Hmm"
    assert total.content == "Hello!"
    assert (
        total.usage_metadata is not None
        and total.usage_metadata["output_token_details"]["reasoning"] == 1
    )


# -- (e) the completions wire renders exactly the server's chat template ---------------------------
CONVERSATIONS: dict[str, list[BaseMessage]] = {
    "system+user": [SystemMessage("You are a helpful assistant."), HumanMessage("Hello")],
    "user only": [HumanMessage("What is 2+2?")],
    "multi-turn": [
        SystemMessage("Be terse."),
        HumanMessage("Hi"),
        AIMessage("Hello! How can I help?"),
        HumanMessage("Tell me a joke."),
        AIMessage("Why did the chicken cross the road?"),
        HumanMessage("Why?"),
    ],
    "history with reasoning": [
        HumanMessage("2+2?"),
        AIMessage("<think>\nSimple sum.\n</think>\n\n4"),
        HumanMessage("And 3+3?"),
    ],
    "chinese": [
        SystemMessage("你是一个乐于助人的助手。"),
        HumanMessage("你好，请介绍一下北京。"),  # noqa: RUF001
        AIMessage("北京是中国的首都。"),
        HumanMessage("上海呢？"),  # noqa: RUF001
    ],
    "whitespace and symbols": [
        HumanMessage("  leading and trailing  \n\n"),
        AIMessage("\n"),
        HumanMessage('tabs\there, emoji 🙂, code `x = {1: [2]}` and "quotes"'),
    ],
}


@pytest.mark.parametrize("thinking", [False, True], ids=["thinking-off", "thinking-on"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_render_chatml_tokenizes_exactly_like_the_server_chat_template(
    http: httpx.Client, name: str, thinking: bool
) -> None:
    dicts = messages_to_dicts(CONVERSATIONS[name])
    prompt = render_chatml(dicts, enable_thinking=thinking)
    # As /v1/completions tokenizes our prompt (add_special_tokens at its default) ...
    ours = tokenize(http, MODEL, prompt=prompt)
    # ... and as /v1/chat/completions renders the same messages through the model's template.
    theirs = tokenize(
        http,
        MODEL,
        messages=dicts,
        add_generation_prompt=True,
        chat_template_kwargs={"enable_thinking": thinking},
    )
    assert ours == theirs


# -- (f) streaming ------------------------------------------------------------------------------
def test_stream_yields_chunks_with_usage_and_position_last_on_the_final_one(
    vllm_server: Any,
) -> None:
    chunks = list(qwen(vllm_server).stream("Hi"))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert all(c.chunk_position is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata is not None
    assert all(c.usage_metadata is None for c in chunks[:-1])
    total = joined(chunks)
    assert total.content == "Hello!"
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 3
    assert total.response_metadata["finish_reason"] == "stop"
    assert total.response_metadata["model_name"] == MODEL


async def test_astream_yields_chunks_with_usage_and_position_last_on_the_final_one(
    vllm_server: Any,
) -> None:
    chunks = [c async for c in qwen(vllm_server).astream("Hi")]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].usage_metadata is not None
    assert joined(chunks).content == "Hello!"


@pytest.mark.parametrize("tool_choice", ["get_weather", "any"])
async def test_streamed_forced_tool_call_assembles_into_a_valid_call(
    vllm_server: Any, tool_choice: str
) -> None:
    bound = qwen(vllm_server).bind_tools([get_weather], tool_choice=tool_choice)
    chunks = [c async for c in bound.astream("Weather in Paris?")]
    assert sum(1 for c in chunks if c.tool_call_chunks) >= 1
    total = joined(chunks)
    assert total.chunk_position == "last"
    assert total.invalid_tool_calls == []
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [
        ("get_weather", {"city": "Hello!", "days": 3})
    ]
    assert total.tool_calls[0]["id"]
    invoked = await bound.ainvoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in invoked.tool_calls] == [
        ("get_weather", {"city": "Hello!", "days": 3})
    ]


# -- (g) completions wire equals chat wire --------------------------------------------------------
@pytest.mark.parametrize("thinking", [False, True], ids=["thinking-off", "thinking-on"])
def test_sync_batch_over_completions_lists_equals_chat_answers(
    vllm_server: Any, thinking: bool
) -> None:
    n = 50 if not thinking else 16
    inputs: list[list[BaseMessage]] = [
        [SystemMessage("Be brief."), HumanMessage("Say hello" + " hello" * i)] for i in range(n)
    ]
    lists = qwen(vllm_server, enable_thinking=thinking)
    chat = qwen(vllm_server, enable_thinking=thinking, wire_mode="chat")
    before = lists.stats()
    via_lists = lists.batch(inputs)
    sizes = list_requests(before, lists.stats())
    assert max(sizes) > 1 and sum(k * v for k, v in sizes.items()) == n
    via_chat = chat.batch(inputs)

    def view(m: AIMessage) -> tuple[Any, ...]:
        u = m.usage_metadata or {}
        return (
            m.content,
            m.additional_kwargs.get("reasoning_content"),
            m.response_metadata["finish_reason"],
            u.get("input_tokens"),
            u.get("output_tokens"),
            m.response_metadata["model_name"],
        )

    assert [view(m) for m in via_lists] == [view(m) for m in via_chat]
    assert via_lists[0].content == "Hello!"
    assert [m.usage_metadata["input_tokens"] for m in via_lists] == [  # type: ignore[index]
        via_lists[0].usage_metadata["input_tokens"] + i
        for i in range(n)  # type: ignore[index]
    ]


# -- the bare server (no reasoning / tool parser): inline <think> is split by the client ----------
async def test_bare_server_inline_think_block_is_split_by_the_client(vllm_server_bare: Any) -> None:
    model = qwen(vllm_server_bare, enable_thinking=True, wire_mode="chat")
    msg = await model.ainvoke("Hi")
    assert msg.additional_kwargs["reasoning_content"] == "Hmm"
    assert msg.content == "Hello!"
    total = joined([c async for c in model.astream("Hi")])
    assert total.additional_kwargs["reasoning_content"] == "Hmm"
    assert total.content == "Hello!"
    assert total.chunk_position == "last"
