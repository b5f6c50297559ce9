"""Every LangChain entry point at full concurrency: ``batch_as_completed``, ``abatch_as_completed`` and
``run_batch`` over thread-bound compositions (``RunnableParallel``, ``RunnableLambda``, a compiled LangGraph
agent), counted at a loopback server.

The server holds each request ``DELAY`` seconds, long enough that all 300 are sent before the first
answer even on a busy 2-core machine; LangChain's thread-bound defaults keep 6 or 12 in flight, so the
thresholds (at least 200) leave room for timing and still tell the two apart.

Covers: _calls/batch.py, _loop/run_batch.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda, RunnableParallel

from langchain_qwen_fast import BatchedChatQwen, run_batch, run_batch_as_completed

N = 300
DELAY = 0.2
FULL = 200  # "full concurrency": far above LangChain's 6-12 threads, below N for a loaded machine


def model_for(server: Any, **fields: Any) -> BatchedChatQwen:
    # chat wire: one request per input, so requests in flight at the server are sequences in flight
    return BatchedChatQwen(base_url=f"http://127.0.0.1:{server.port}/v1", model="m", wire_mode="chat", **fields)


class Ends(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ended = 0
        self.lock = threading.Lock()

    def on_llm_end(self, response: Any, **kw: Any) -> None:
        with self.lock:
            self.ended += 1


def test_batch_as_completed_keeps_every_input_in_flight_and_yields_each_once(local_server: Any) -> None:
    server = local_server(delay=DELAY)
    llm = model_for(server)
    ends = Ends()
    prompts = [f"q-{i}" for i in range(N)]
    seen: dict[int, Any] = {}
    for i, out in llm.batch_as_completed(prompts, config={"callbacks": [ends]}):
        assert i not in seen
        seen[i] = out
    assert sorted(seen) == list(range(N))
    assert all(seen[i].content == f"echo:q-{i}" for i in range(N))
    assert server.max_in_flight >= FULL, server.max_in_flight  # LangChain's default kept 6
    assert ends.ended == N
    llm.close()


async def test_abatch_as_completed_keeps_every_input_in_flight(local_server: Any) -> None:
    server = local_server(delay=DELAY)
    llm = model_for(server)
    got = {i: out async for i, out in llm.abatch_as_completed([f"q-{i}" for i in range(N)])}
    assert sorted(got) == list(range(N)) and got[7].content == "echo:q-7"
    assert server.max_in_flight >= FULL, server.max_in_flight
    await llm.aclose()


def test_as_completed_honours_max_concurrency_and_return_exceptions(local_server: Any) -> None:
    server = local_server(delay=0.02)

    def respond(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        text = payload["messages"][-1]["content"]
        if text.endswith("-13"):
            return 400, {"error": {"message": "no thirteen", "code": 400}}
        return 200, {"id": "c", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"echo:{text}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    server.respond = respond
    llm = model_for(server)
    outs = dict(llm.batch_as_completed([f"q-{i}" for i in range(100)], config={"max_concurrency": 20},
                                       return_exceptions=True))
    assert len(outs) == 100 and "no thirteen" in str(outs[13])
    assert server.max_in_flight <= 20
    with pytest.raises(Exception, match="no thirteen"):
        for _ in llm.batch_as_completed([f"q-{i}" for i in range(30)]):
            pass
    llm.close()


def test_leaving_batch_as_completed_early_cancels_the_rest(local_server: Any) -> None:
    server = local_server(delay=0.2)
    llm = model_for(server, max_concurrency=10)
    it = llm.batch_as_completed([f"q-{i}" for i in range(200)])
    next(it)
    it.close()  # the caller stopped reading
    t_end = time.monotonic() + 5
    # The cancel reaches the loop a moment later: wait for nothing in flight and nothing queued (in flight alone
    # can read 0 between one wave of answers and the next wave's sending).
    while (llm.stats()["in_flight"] or llm.stats()["queued"]) and time.monotonic() < t_end:
        time.sleep(0.01)
    assert llm.stats()["in_flight"] == 0 and llm.stats()["queued"] == 0
    # Cancelled, not drained: the 190 inputs still queued were never sent (sending them takes 3.8 s at 10 in flight).
    assert server.count <= 30, server.count
    assert server.count < 60  # nothing more was sent after the close
    llm.close()


def test_run_batch_drives_a_runnable_parallel_at_full_concurrency(local_server: Any) -> None:
    server = local_server(delay=DELAY)
    llm = model_for(server)
    both = RunnableParallel(a=llm, b=llm)
    outs = run_batch(both, [f"q-{i}" for i in range(N)])
    assert len(outs) == N and outs[5]["a"].content == "echo:q-5" and outs[5]["b"].content == "echo:q-5"
    # 600 requests: the model's admission limit (512) is the bound, not LangChain's thread pool (12)
    assert server.max_in_flight >= 2 * FULL, server.max_in_flight
    llm.close()


def test_run_batch_drives_a_sync_runnable_lambda_in_many_threads(local_server: Any) -> None:
    server = local_server(delay=DELAY)
    llm = model_for(server)
    chain = RunnableLambda(lambda q: llm.invoke(q).content.upper())
    outs = run_batch(chain, [f"q-{i}" for i in range(N)])
    assert outs[9] == "ECHO:Q-9"
    assert server.max_in_flight >= FULL, server.max_in_flight  # the runtime's sync pool (256), not asyncio's 6
    llm.close()


def test_run_batch_as_completed_yields_every_index_once_and_keeps_order_of_values(local_server: Any) -> None:
    server = local_server(delay=DELAY)
    llm = model_for(server)
    pairs = list(run_batch_as_completed(llm | RunnableLambda(lambda m: m.content), [f"q-{i}" for i in range(N)]))
    assert sorted(i for i, _ in pairs) == list(range(N))
    assert all(v == f"echo:q-{i}" for i, v in pairs)
    assert server.max_in_flight >= FULL
    llm.close()


def test_run_batch_returns_per_item_exceptions_and_raises_without_them(local_server: Any) -> None:
    server = local_server()
    llm = model_for(server)

    def maybe(q: str) -> str:
        if q == "bad":
            raise ValueError("bad input here")
        return llm.invoke(q).content

    outs = run_batch(RunnableLambda(maybe), ["a", "bad", "c"], return_exceptions=True)
    assert outs[0] == "echo:a" and isinstance(outs[1], ValueError) and outs[2] == "echo:c"
    with pytest.raises(ValueError, match="bad input here"):
        run_batch(RunnableLambda(maybe), ["a", "bad"])
    llm.close()


def test_blocking_entry_points_on_the_loop_thread_raise_instead_of_hanging(local_server: Any) -> None:
    """A sync call made on the package's own loop thread (a callback or tool running there) would wait for
    the loop it blocks: invoke, stream and run_batch_as_completed each raise at once instead."""
    from langchain_qwen_fast._loop.runtime import get_runtime

    model = model_for(local_server())

    async def on_the_loop() -> list[str]:
        said = []
        for call in (lambda: model.invoke("hi"), lambda: next(iter(model.stream("hi"))),
                     lambda: next(run_batch_as_completed(model, ["hi"]))):
            with pytest.raises(RuntimeError, match="qwen-fast loop") as e:
                call()
            said.append(str(e.value))
        return said

    said = get_runtime().submit(on_the_loop()).result(timeout=10)
    assert "run_batch_as_completed blocks" in said[2] and "use the async API" in said[1]
    model.close()


def _tool_calling_server(server: Any) -> None:
    """The agent's model: a call whose last message is a tool result answers; any other calls the tool."""

    def respond(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        last = payload["messages"][-1]
        if last["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": f"{last['content']} words"}
        else:
            message = {"role": "assistant", "content": "", "tool_calls": [{
                "id": f"call-{last['content']}", "type": "function",
                "function": {"name": "word_count", "arguments": json.dumps({"text": last["content"]})}}]}
        return 200, {"id": "c", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    server.respond = respond


def _agent(llm: BatchedChatQwen) -> Any:
    """A hand-built ReAct agent with one tool, as the LangGraph tutorials write it (a sync model node)."""
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def word_count(text: str) -> int:
        """Count the words in a text."""
        return len(text.split())

    model = llm.bind_tools([word_count])
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", ToolNode([word_count]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


def test_run_batch_keeps_the_model_calls_of_200_langgraph_agent_runs_in_flight(local_server: Any) -> None:
    server = local_server(delay=DELAY)
    _tool_calling_server(server)
    llm = model_for(server)
    agent = _agent(llm)
    runs = 200
    outs = run_batch(agent, [{"messages": [("user", f"q {i} x")]} for i in range(runs)])
    assert [o["messages"][-1].content for o in outs[:3]] == ["3 words"] * 3
    assert [m.type for m in outs[7]["messages"]] == ["human", "ai", "tool", "ai"]
    assert server.count == 2 * runs  # the tool call, then the answer, for every run
    assert server.max_in_flight > 32, server.max_in_flight
    llm.close()


def test_a_compiled_graphs_own_batch_is_bound_to_langchains_thread_pool(local_server: Any) -> None:
    """What README.md tells users to avoid: the graph's sync .batch keeps at most min(32, cpu+4) runs going."""
    server = local_server(delay=0.1)
    _tool_calling_server(server)
    llm = model_for(server)
    threads = min(32, (os.cpu_count() or 1) + 4)
    outs = _agent(llm).batch([{"messages": [("user", f"q {i}")]} for i in range(threads + 4)])
    assert outs[0]["messages"][-1].content == "2 words"
    assert server.max_in_flight <= threads, server.max_in_flight
    llm.close()
