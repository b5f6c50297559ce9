"""Where a batch behaved or behaves differently from ``ChatOpenAI``'s, each beside what ChatOpenAI does on the same
canned answer, so that neither side changes unnoticed:

- made to match: a fast batch's ``on_llm_end`` sees the finished message (its id and ``response_metadata`` set, as
  LangChain's ``_generate_with_cache`` sets them before it); it used to see it unfinished;
- made to match: ``abatch`` under ``astream_events`` streams each input, as ChatOpenAI's does (a handler that wants
  tokens as they come sends the batch through LangChain's own path);
- still different: ``on_llm_error``'s ``response`` has no generation carrying the HTTP status and body;
- an input that cannot be sent (an image) gets no run in a fast batch, where ``invoke`` of it (and ChatOpenAI's
  batch, which invokes per input) records a run ending in ``on_llm_error``.

Covers: _calls/batch.py, _calls/prepare.py, _errors.py."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from support import ENTRY_POINTS, run_entry_point

pytestmark = pytest.mark.timeout(60)

WIRES = ("completions", "chat")


def _end_message(log: Any, text: str) -> Any:
    return log.ends[log.run_of(text)].generations[0][0].message


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_a_fast_batch_ends_each_run_with_the_finished_message_as_chatopenai_does(
    wire: str, entry: str, canned_model: Any, canned_chatopenai: Any, run_log: Any
) -> None:
    model, _ = canned_model(wire)
    texts = ["q0", "q1"]
    theirs, invoked, ours = run_log(), run_log(), run_log(async_handler=entry.startswith("a"))
    canned_chatopenai(max_tokens=16)[0].batch(texts, {"callbacks": [theirs]})
    for t in texts:
        model.invoke(t, {"callbacks": [invoked]})
    out = run_entry_point(model, entry, texts, {"callbacks": [ours]})
    for text, msg in zip(texts, out, strict=True):
        for log in (theirs, invoked):  # LangChain's per-call path: the finished message
            seen = _end_message(log, text)
            assert seen.id == f"lc_run--{log.run_of(text)}-0" and seen.response_metadata["finish_reason"] == "stop"
        seen = _end_message(ours, text)
        assert seen.id == f"lc_run--{ours.run_of(text)}-0" == msg.id  # finished first, as LangChain's path does
        assert seen.response_metadata == msg.response_metadata == _end_message(invoked, text).response_metadata | {
            "id": seen.response_metadata["id"]}
        mine, inv = ours.ends[ours.run_of(text)], invoked.ends[invoked.run_of(text)]
        assert mine.llm_output == inv.llm_output
        assert mine.generations[0][0].generation_info == inv.generations[0][0].generation_info
        assert seen.content == _end_message(invoked, text).content == f"echo:{text}"


@pytest.mark.parametrize("wire", WIRES)
def test_abatch_under_astream_events_streams_as_chatopenais_does(
    wire: str, canned_model: Any, canned_chatopenai: Any
) -> None:
    model, _ = canned_model(wire)

    def counted(llm: Any) -> tuple[Counter[str], list[tuple[str, str]]]:
        async def step(texts: list[str]) -> list[str]:
            return [m.content for m in await llm.abatch(texts)]

        async def events() -> list[dict[str, Any]]:
            return [ev async for ev in RunnableLambda(step).astream_events(["q0", "q1", "q2"], version="v2")]

        evs = asyncio.run(events())
        ends = [(str(e["run_id"]), e["data"]["output"].id) for e in evs if e["event"] == "on_chat_model_end"]
        return Counter(e["event"] for e in evs), ends

    ours, our_ends = counted(model)
    theirs, their_ends = counted(canned_chatopenai(max_tokens=16)[0])
    assert ours["on_chat_model_start"] == theirs["on_chat_model_start"] == 3
    assert ours["on_chat_model_end"] == theirs["on_chat_model_end"] == 3
    assert ours["on_chat_model_stream"] >= 3  # each input streamed for the event stream
    assert theirs["on_chat_model_stream"] >= 3  # ChatOpenAI streams each input for the event stream
    assert all(mid == f"lc_run--{rid}" for rid, mid in our_ends)  # a streamed message's id, as theirs
    assert all(mid == f"lc_run--{rid}" for rid, mid in their_ends)


@pytest.mark.parametrize("wire", WIRES)
def test_on_llm_error_gets_no_generation_with_the_http_status(
    wire: str, canned_model: Any, canned_chatopenai: Any, run_log: Any
) -> None:
    from langchain_core.outputs import LLMResult

    model, _ = canned_model(wire, max_retries=0)
    bad = "q [[fault:status=400]]"
    ours, theirs = run_log(), run_log()
    (error,) = model.batch([bad], {"callbacks": [ours]}, return_exceptions=True)
    canned_chatopenai(max_tokens=16)[0].batch([bad], {"callbacks": [theirs]}, return_exceptions=True)
    (our_error, our_response), (_, their_response) = ours.errors[ours.run_of(bad)], theirs.errors[theirs.run_of(bad)]
    assert our_error is error and error.status_code == 400 and f"rejected {bad}" in error.body
    assert our_response == LLMResult(generations=[[]])  # today: nothing from the HTTP answer
    their_meta = their_response.generations[0][0].message.response_metadata
    assert their_meta["status_code"] == 400 and their_meta["body"]["error"]["message"] == f"rejected {bad}"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_an_input_that_cannot_be_sent_gets_no_run_in_a_batch_but_a_failed_run_in_invoke(
    entry: str, canned_model: Any, run_log: Any
) -> None:
    from langchain_core.messages import HumanMessage

    model, server = canned_model()
    image = [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])]
    invoked, batched = run_log(), run_log(async_handler=entry.startswith("a"))
    with pytest.raises(ValueError, match="image_url") as raised:
        model.invoke(image, {"callbacks": [invoked]})
    assert len(invoked.starts) == 1 and [e for e, _ in invoked.errors.values()] == [raised.value]
    out = run_entry_point(model, entry, ["q0", image], {"callbacks": [batched]}, return_exceptions=True)
    assert isinstance(out[1], ValueError) and "image_url" in str(out[1])
    assert [s["messages"][0][-1].content for s in batched.starts.values()] == ["q0"]  # today: none for the image
    assert not batched.errors and server.texts == ["q0"]
