"""How a batch is fed: callback runs started chunk by chunk, requests out before the last input is
started, one callback manager for a shared config, results handed over per loop iteration.

Covers: _calls/batch.py, _calls/prepare.py, _loop/bridge.py, _dispatch/feed.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body, last_user_text
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from langchain_qwen_fast._loop import bridge as _bridge

pytestmark = pytest.mark.timeout(30)


class _Starts(BaseCallbackHandler):
    """Counts started runs; each start takes ``pause`` seconds (a slow tracer, say)."""

    def __init__(self, pause: float = 0.0, fail_at: int | None = None) -> None:
        self.pause, self.fail_at = pause, fail_at
        self.raise_error = fail_at is not None
        self.started = 0
        self.batch_sizes: list[int] = []
        self.ended = self.errored = 0
        self.lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
        with self.lock:
            self.started += 1
            self.batch_sizes.append(kw.get("batch_size"))
            n = self.started
        if self.fail_at is not None and n == self.fail_at:
            raise RuntimeError(f"tracer broke at input {n}")
        if self.pause:
            time.sleep(self.pause)

    def on_llm_end(self, response: Any, **kw: Any) -> None:
        with self.lock:
            self.ended += 1

    def on_llm_error(self, error: BaseException, **kw: Any) -> None:
        with self.lock:
            self.errored += 1


def _first_request_sees(starts: _Starts) -> tuple[list[int], Any]:
    """A responder that notes how many runs had been started when the first request arrived."""
    seen: list[int] = []

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if not seen:
            seen.append(starts.started)
        return httpx.Response(200, json=chat_body(f"echo:{last_user_text(payload)}"))

    return seen, respond


def test_first_requests_leave_before_the_last_input_is_started(mock_model: Any) -> None:
    n = 400
    starts = _Starts(pause=0.001)  # 400 inputs take >= 0.4 s to start
    seen, respond = _first_request_sees(starts)
    model, rec = mock_model(respond)
    results = model.batch([f"q-{i}" for i in range(n)], config={"callbacks": [starts]})
    assert [r.content for r in results] == [f"echo:q-{i}" for i in range(n)]
    assert rec.count == n and starts.ended == n
    # The first chunk is 32 inputs; the thread that sends may need a few more to get the GIL.
    assert seen[0] < n // 2, f"first request only after {seen[0]} of {n} runs were started"


async def test_abatch_first_requests_leave_before_the_last_input_is_started(mock_model: Any) -> None:
    n = 300
    started: list[int] = []

    class SlowAsync(AsyncCallbackHandler):
        async def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
            started.append(1)
            await asyncio.sleep(0.001)

    first: list[int] = []

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if not first:
            first.append(len(started))
        return httpx.Response(200, json=chat_body(f"echo:{last_user_text(payload)}"))

    model, _ = mock_model(respond)
    results = await model.abatch([f"q-{i}" for i in range(n)], config={"callbacks": [SlowAsync()]})
    assert [r.content for r in results] == [f"echo:q-{i}" for i in range(n)]
    assert len(started) == n
    assert first[0] < n // 2, f"first request only after {first[0]} of {n} runs were started"


def test_one_config_for_the_batch_configures_callbacks_once(mock_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.callbacks import CallbackManager

    calls: list[int] = []
    real = CallbackManager.configure.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, *a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(cls, *a, **kw)

    monkeypatch.setattr(CallbackManager, "configure", classmethod(counting))
    starts = _Starts()
    model, _ = mock_model()
    model.batch([f"q-{i}" for i in range(70)], config={"callbacks": [starts]})
    assert len(calls) == 1  # not once per input (95 us each)
    assert starts.batch_sizes == [1] * 70  # as ChatOpenAI.batch reports each run
    calls.clear()
    model.batch([f"q-{i}" for i in range(70)], config=[{"callbacks": [starts]} for _ in range(70)])
    assert len(calls) == 70  # a list of configs (an LCEL chain's children): one manager each


def test_a_config_per_input_starts_one_run_each(mock_model: Any) -> None:
    starts = _Starts()
    model, _ = mock_model()
    out = model.batch([f"q-{i}" for i in range(70)], config=[{"callbacks": [starts]} for _ in range(70)])
    assert [r.content for r in out] == [f"echo:q-{i}" for i in range(70)]
    assert starts.batch_sizes == [1] * 70


def test_a_run_id_in_a_shared_config_belongs_to_the_first_input_only(mock_model: Any) -> None:
    import uuid

    class Runs(BaseCallbackHandler):
        def __init__(self) -> None:
            self.ids: list[uuid.UUID] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
            self.ids.append(run_id)

    rid, tracer = uuid.uuid4(), Runs()
    model, _ = mock_model()
    with pytest.warns(RuntimeWarning, match="run_id"):
        model.batch(["a", "b", "c"], config={"callbacks": [tracer], "run_id": rid})
    assert tracer.ids[0] == rid
    assert len(set(tracer.ids)) == 3


def test_a_callback_failing_mid_batch_raises_and_cancels_what_was_sent(mock_model: Any) -> None:
    gate = threading.Event()

    async def held(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        while not gate.is_set():  # keep the first chunk in flight until the batch has given up
            await asyncio.sleep(0.005)
        return httpx.Response(200, json=chat_body("late"))

    starts = _Starts(fail_at=100)
    model, rec = mock_model(held)
    with pytest.raises(RuntimeError, match="tracer broke at input 100"):
        model.batch([f"q-{i}" for i in range(200)], config={"callbacks": [starts]})
    gate.set()
    assert rec.count < 100  # only chunks started before the failure were ever sent
    _settled(model)  # the sent chunks were cancelled, not left holding slots
    assert model.batch(["after"])[0].content == "late"  # the pool still works


async def test_results_of_one_loop_iteration_are_handed_over_together() -> None:
    got: list[list[Any]] = []
    sink = _bridge._Coalesce(got.append)
    for half in (range(16), range(16, 32)):  # two lists' answers settle in the same iteration
        sink([(i, f"r{i}", None) for i in half])
    await asyncio.sleep(0)
    sink([(32, None, ValueError("x"))])
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [len(b) for b in got] == [32, 1]
    assert [t[0] for b in got for t in b] == list(range(33))


def _settled(model: Any) -> None:
    deadline = time.monotonic() + 5
    while model.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.stats()["in_flight"] == 0


BAD_AT = {0, 31, 32, 95, 96, 97, 480, 599}


def _mixed(n: int) -> list[Any]:
    from langchain_core.messages import HumanMessage

    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    return [[image] if i in BAD_AT else f"q-{i}" for i in range(n)]


def test_bad_inputs_across_chunk_boundaries_are_per_item_errors(mock_model: Any) -> None:
    starts = _Starts()
    model, rec = mock_model()
    out = model.batch(_mixed(600), config={"callbacks": [starts]}, return_exceptions=True)
    assert len(out) == 600
    for i, r in enumerate(out):
        if i in BAD_AT:
            assert isinstance(r, ValueError) and "image_url" in str(r), (i, r)
        else:
            assert r.content == f"echo:q-{i}", (i, r)
    assert rec.count == 600 - len(BAD_AT)
    assert starts.started == starts.ended == 600 - len(BAD_AT)  # no run for an input never sent


async def test_abatch_bad_inputs_across_chunk_boundaries_are_per_item_errors(mock_model: Any) -> None:
    model, rec = mock_model()
    out = await model.abatch(_mixed(600), return_exceptions=True)
    assert [i for i, r in enumerate(out) if isinstance(r, ValueError)] == sorted(BAD_AT)
    assert all(r.content == f"echo:q-{i}" for i, r in enumerate(out) if i not in BAD_AT)
    assert rec.count == 600 - len(BAD_AT)


def test_a_bad_input_after_the_first_chunk_raises_and_ends_every_started_run(mock_model: Any) -> None:
    from langchain_core.messages import HumanMessage

    gate = threading.Event()

    async def held(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        while not gate.is_set():
            await asyncio.sleep(0.005)
        return httpx.Response(200, json=chat_body("late"))

    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    inputs: list[Any] = [f"q-{i}" for i in range(300)]
    inputs[200] = [image]
    starts = _Starts()
    model, rec = mock_model(held)
    with pytest.raises(ValueError, match="image_url"):
        model.batch(inputs, config={"callbacks": [starts]})
    gate.set()
    assert 0 < starts.started <= 200  # the chunks before the bad input had started
    assert starts.errored == starts.started and starts.ended == 0  # ... and every one of them was ended
    assert rec.count <= starts.started
    _settled(model)


def test_a_callback_failing_on_a_result_ends_the_other_runs(mock_model: Any) -> None:
    class FailsOnEnd(_Starts):
        def on_llm_end(self, response: Any, **kw: Any) -> None:
            super().on_llm_end(response, **kw)
            if self.ended == 10:
                raise RuntimeError("handler broke on a result")

    h = FailsOnEnd()
    h.raise_error = True
    model, _ = mock_model()
    with pytest.raises(RuntimeError, match="handler broke on a result"):
        model.batch([f"q-{i}" for i in range(100)], config={"callbacks": [h]})
    assert h.started == 100
    assert h.ended == 10 and h.errored == 90  # nothing left open, nothing ended twice
    _settled(model)


def test_a_handler_failing_at_start_leaves_no_other_run_open(mock_model: Any) -> None:
    starts = _Starts(fail_at=100)
    model, _ = mock_model()
    with pytest.raises(RuntimeError, match="tracer broke at input 100"):
        model.batch([f"q-{i}" for i in range(300)], config={"callbacks": [starts]})
    # the run whose start raised never got a manager (as in LangChain's own generate); all others are ended
    assert starts.started == 100
    assert starts.ended + starts.errored == 99
    _settled(model)


async def test_a_cancelled_abatch_ends_its_runs_and_stops_quickly(mock_model: Any) -> None:
    async def slow(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=chat_body("ok"))

    starts = _Starts()
    model, _ = mock_model(slow, max_concurrency=64)
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.abatch([f"q-{i}" for i in range(3000)], config={"callbacks": [starts]}), 0.3)
    assert time.monotonic() - t0 < 1.5
    assert starts.started > 0
    assert starts.started - starts.ended - starts.errored <= 1  # at most the one whose start was interrupted
    deadline = time.monotonic() + 5
    while model.stats()["in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert model.stats()["in_flight"] == 0


def test_a_failed_batch_stops_sending_before_its_error_callbacks_run(mock_model: Any) -> None:
    from langchain_core.messages import HumanMessage

    async def answer(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return httpx.Response(200, json=chat_body("ok"))

    model, rec = mock_model(answer)
    sent_during_errors: list[int] = []

    class SlowErrors(_Starts):
        def on_llm_error(self, error: BaseException, **kw: Any) -> None:
            sent_during_errors.append(rec.count)
            time.sleep(0.002)
            super().on_llm_error(error, **kw)

    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    inputs: list[Any] = [f"q-{i}" for i in range(1000)]
    inputs[990] = [image]
    h = SlowErrors()
    with pytest.raises(ValueError, match="image_url"):
        model.batch(inputs, config={"callbacks": [h], "max_concurrency": 20})
    # Hundreds of started runs are ended one by one (~1 s); meanwhile no new request may leave
    # (20 at a time every 10 ms would be hundreds). Those already on the wire may still arrive.
    assert len(sent_during_errors) > 100
    assert sent_during_errors[-1] - sent_during_errors[0] <= 20, sent_during_errors[:: len(sent_during_errors) // 5]
    assert h.errored == h.started - h.ended
    _settled(model)
