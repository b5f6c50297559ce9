"""Pins batches run inside other runs: a ``RunnableLambda`` (sync or async) that calls a batch entry point hands
its handlers down, each input's chat model run is parented to the lambda's run; ``astream_events(version="v2")`` of
a chain whose async step calls ``abatch`` reports one ``on_chat_model_start`` and one ``on_chat_model_end`` per
input, under the step's run, with the right outputs.

Covers: _calls/batch.py, _calls/prepare.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableLambda
from support import ENTRY_POINTS, arun_entry_point, run_entry_point

pytestmark = pytest.mark.timeout(60)

WIRES = ("completions", "chat")
TEXTS = ["q0", "q1", "q2"]


class ChainRuns(BaseCallbackHandler):
    """The run ids of chain (lambda, sequence) starts, and each one's input."""

    def __init__(self) -> None:
        self.chains: list[Any] = []
        self.inputs: dict[Any, Any] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kw: Any) -> None:
        self.chains.append(run_id)
        self.inputs[run_id] = inputs


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_a_lambda_calling_a_batch_parents_each_input_run_to_the_lambdas(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    """A sync lambda for the sync entry points, an async one for the async ones; the model gets no config."""
    model, _ = canned_model(wire)
    log, chains = run_log(async_handler=entry.startswith("a")), ChainRuns()
    config = {"callbacks": [log, chains], "tags": ["outer"]}
    if entry.startswith("a"):

        async def astep(texts: list[str]) -> list[str]:
            return [m.content for m in await arun_entry_point(model, entry, texts)]

        out = asyncio.run(RunnableLambda(astep).ainvoke(TEXTS, config))
    else:
        out = RunnableLambda(lambda texts: [m.content for m in run_entry_point(model, entry, texts)]).invoke(
            TEXTS, config)
    (lambda_run,) = chains.chains
    assert out == [f"echo:{t}" for t in TEXTS]
    assert sorted(s["messages"][0][-1].content for s in log.starts.values()) == TEXTS  # one run per input
    assert {s["parent_run_id"] for s in log.starts.values()} == {lambda_run}
    assert [log.ends[log.run_of(t)].generations[0][0].text for t in TEXTS] == out
    assert all("outer" in s["tags"] for s in log.starts.values())  # the outer config's tags are inherited too
    log.assert_every_run_ended_once()


@pytest.mark.parametrize("entry", ["batch", "abatch"])
@pytest.mark.parametrize("wire", WIRES)
def test_a_chain_batch_parents_each_chat_model_run_to_its_inputs_chain_run(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    """An LCEL chain's batch hands the model one config per input, each with its own child callbacks."""
    model, _ = canned_model(wire)
    log, chains = run_log(async_handler=entry == "abatch"), ChainRuns()
    chain = RunnableLambda(lambda text: text.strip()) | model
    padded = [f" {t} " for t in TEXTS]
    config = {"callbacks": [log, chains], "tags": ["outer"]}
    out = chain.batch(padded, config) if entry == "batch" else asyncio.run(chain.abatch(padded, config))
    assert [m.content for m in out] == [f"echo:{t}" for t in TEXTS]
    assert len(log.starts) == 3
    for text, padded_text, msg in zip(TEXTS, padded, out, strict=True):
        rid = log.run_of(text)
        parent = log.starts[rid]["parent_run_id"]
        assert chains.inputs[parent] == padded_text  # the sequence run of this very input
        assert msg.id == f"lc_run--{rid}-0" and "outer" in log.starts[rid]["tags"]
    log.assert_every_run_ended_once()


@pytest.mark.parametrize("wire", WIRES)
def test_astream_events_reports_a_start_and_an_end_per_input_of_an_abatch_step(wire: str, canned_model: Any) -> None:
    model, _ = canned_model(wire)

    async def step(texts: list[str]) -> list[str]:
        return [m.content for m in await model.abatch(texts)]

    async def events() -> list[dict[str, Any]]:
        return [ev async for ev in RunnableLambda(step).astream_events(TEXTS, version="v2")]

    evs = asyncio.run(events())
    (chain_start,) = [e for e in evs if e["event"] == "on_chain_start"]
    starts = [e for e in evs if e["event"] == "on_chat_model_start"]
    ends = [e for e in evs if e["event"] == "on_chat_model_end"]
    assert len(starts) == len(ends) == 3
    assert {e["run_id"] for e in starts} == {e["run_id"] for e in ends} and len({e["run_id"] for e in ends}) == 3
    for e in starts + ends:
        assert e["parent_ids"] == [chain_start["run_id"]] and e["name"] == "BatchedChatQwen"
    by_run = {e["run_id"]: e for e in ends}
    for start in starts:
        (text,) = [m.content for m in start["data"]["input"]["messages"][0]]
        output = by_run[start["run_id"]]["data"]["output"]
        assert output.content == f"echo:{text}"
        assert output.id == f"lc_run--{start['run_id']}"  # streamed, as ChatOpenAI's: a streamed message's id
    (final,) = [e for e in evs if e["event"] == "on_chain_end"]
    assert final["data"]["output"] == [f"echo:{t}" for t in TEXTS]
    # Under astream_events the abatch streams each input, as ChatOpenAI's does (test_batch_chatopenai_differences.py):
    # one stream event per chunk the canned server sends (role, content, usage).
    counts = Counter(e["event"] for e in evs)
    assert counts.pop("on_chat_model_stream") == 3 * 3
    assert counts == Counter(
        {"on_chain_start": 1, "on_chat_model_start": 3, "on_chat_model_end": 3, "on_chain_stream": 1, "on_chain_end": 1}
    )
