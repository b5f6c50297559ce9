"""Concurrency hazards: cancelled callers, repeated ``asyncio.run``, ``close()`` under load,
interpreter exit with work pending, callback handlers that raise.

Covers: _loop/runtime.py, _loop/bridge.py, _loop/handle.py, _dispatch/dispatcher.py."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import CLEAR_ERRORS, Ledger, note, served_requests
from langchain_core.callbacks import BaseCallbackHandler

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._errors import ClientClosedError
from langchain_qwen_fast._loop.runtime import get_runtime
from langchain_qwen_fast.testing import SimServer

WIRES = ["chat", "completions"]
MakeModel = Callable[..., BatchedChatQwen]
REPO = Path(__file__).resolve().parents[2]


async def _loop_tasks() -> int:
    """Tasks alive on the runtime's background loop (the counting task itself excluded)."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    fut = asyncio.run_coroutine_threadsafe(count(), get_runtime().loop)
    return await asyncio.wrap_future(fut)


async def _eventually(pred: Callable[[], Any], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def _drained(model: BatchedChatQwen) -> bool:
    st = model.stats()
    return st["in_flight"] == 0 and st["queued"] == 0


async def _astream_text(model: BatchedChatQwen, prompt: str) -> Any:
    msg = None
    async for c in model.astream(prompt):
        msg = c if msg is None else msg + c
    return msg


# -- cancellation ----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("wire", WIRES)
async def test_cancelling_half_of_the_awaiting_callers(h100: SimServer, make_model: MakeModel, wire: str) -> None:
    model = make_model(h100, wire_mode=wire, max_tokens=48, max_concurrency=64)
    await model.ainvoke(Ledger.prompt("item-999999"))  # warm: pool, dispatcher, connection
    baseline = await _loop_tasks()
    led = Ledger(f"50% of 240 awaiting callers cancelled at random ({wire})", allow_cancelled=True)
    ids, prompts = led.prompts(200)
    sids, sprompts = led.prompts(40)
    tasks = [asyncio.create_task(model.ainvoke(p)) for p in prompts]
    tasks += [asyncio.create_task(_astream_text(model, p)) for p in sprompts]
    await asyncio.sleep(0.15)
    victims = random.Random(20240).sample(tasks, len(tasks) // 2)
    for t in victims:
        t.cancel()
    outs = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    led.record_all(ids + sids, outs)
    tally = led.check(min_answered=len(tasks) - len(victims))
    assert tally.cancelled >= len(victims) // 2, "the callers finished before the cancel: nothing was tested"
    # nothing stuck: the dispatcher drains, the loop is back to its idle task count, calls work
    await _eventually(lambda: _drained(model), 10, f"dispatcher drained: {model.stats()}")
    await _eventually(lambda: _loop_tasks_is(baseline), 10, "runtime loop back to its baseline task count")
    # The dispatcher saw the cancellations (not all: a caller cancelled just after its answer
    # arrived gets CancelledError, and the answer is discarded, as asked).
    assert model.stats()["cancelled"] > 0
    later = Ledger(f"calls after the cancellations ({wire})")
    ids, prompts = later.prompts(30)
    later.record_all(ids, await model.abatch(prompts, return_exceptions=True))
    later.check(min_answered=30)


async def _loop_tasks_is(n: int) -> bool:
    return await _loop_tasks() == n


@pytest.mark.timeout(60)
async def test_cancelled_callers_of_a_stalled_list_free_its_admission_slots(
    scratch_sim: Callable[..., SimServer], make_model: MakeModel
) -> None:
    srv = scratch_sim()
    model = make_model(srv, wire_mode="completions", timeout=120.0)
    led = Ledger("every caller of a stalled /v1/completions list cancelled", allow_cancelled=True)
    ids, prompts = led.prompts(8, "[[fault:stall=3600]]")
    tasks = [asyncio.create_task(model.ainvoke(p)) for p in prompts]
    await _eventually(lambda: srv.stats()["inflight"] >= 1, 5, "the stalled request reached the server")
    await asyncio.sleep(0.1)
    assert model.stats()["in_flight"] == 8
    for t in tasks:
        t.cancel()
    outs = await asyncio.gather(*tasks, return_exceptions=True)
    led.record_all(ids, outs)
    led.check(max_answered=0)
    # Without cancelling the request itself, the 8 slots would stay taken until the 120 s deadline.
    await _eventually(lambda: _drained(model), 3, f"slots freed: {model.stats()}")


# -- event loops -----------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("wire", WIRES)
def test_asyncio_run_twenty_times_with_one_model(zero: SimServer, make_model: MakeModel, wire: str) -> None:
    model = make_model(zero, wire_mode=wire)
    led = Ledger(f"asyncio.run() x20, one model instance ({wire})")

    async def once() -> None:
        ids, prompts = led.prompts(4)
        led.record(ids[0], await model.ainvoke(prompts[0]))
        led.record_all(ids[1:3], await model.abatch(prompts[1:3], return_exceptions=True))
        led.record(ids[3], await _astream_text(model, prompts[3]))

    for _ in range(20):
        asyncio.run(once())
    # and the sync API from the same thread in between
    ids, prompts = led.prompts(3)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    led.check(min_answered=83)


# -- close() while 64 threads call -----------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("wire", WIRES)
def test_threads_invoking_while_another_thread_closes(h100: SimServer, make_model: MakeModel, wire: str) -> None:
    model = make_model(h100, wire_mode=wire, max_tokens=32, max_wait_ms=2.5)  # a pool of its own
    led = Ledger(f"64 threads invoking, model.close() from another ({wire})")
    # First use from one thread, so this test is about close() racing calls; threads racing into the
    # very first call are test_threads_racing_into_the_first_call_take_one_pool_reference.
    model.invoke(Ledger.prompt("item-999999"))
    answered_before_close = threading.Event()
    stop = threading.Event()

    def worker() -> None:
        for _ in range(500):
            (one,), (p,) = led.prompts(1)
            try:
                out: Any = model.invoke(p)
                answered_before_close.set()
            except Exception as e:
                out = e
            led.record(one, out)
            if isinstance(out, BaseException) or stop.is_set():
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(64)]
    for t in threads:
        t.start()
    assert answered_before_close.wait(20)
    time.sleep(0.3)
    model.close()
    stop.set()
    end = time.monotonic() + 15
    for t in threads:
        t.join(max(0.1, end - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    assert hung == 0, f"{hung} threads still blocked 15 s after close()"
    tally = led.check(min_answered=1, min_failed=1)
    assert set(tally.errors) == {"ClientClosedError"}, tally.errors
    with pytest.raises(ClientClosedError):
        model.invoke("after close")


# -- interpreter exit with work pending ------------------------------------------------------------
_EXIT_SCRIPT = textwrap.dedent("""
    import asyncio, atexit, json, sys, threading, time, urllib.request

    base_url, wire, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    model = None

    def late_calls():
        # Registered before the package is imported, so atexit runs it AFTER the runtime's own
        # shutdown hook: a caller that arrives after the shutdown must get ClientClosedError.
        from langchain_qwen_fast._errors import ClientClosedError
        from langchain_qwen_fast._loop.runtime import get_runtime
        try:
            get_runtime()
            print("LATE get_runtime: returned a runtime", flush=True)
        except ClientClosedError:
            print("LATE get_runtime: ClientClosedError", flush=True)
        try:
            model.invoke("item-000000 late")
            print("LATE invoke: answered", flush=True)
        except ClientClosedError:
            print("LATE invoke: ClientClosedError", flush=True)
        except Exception as e:
            print("LATE invoke:", type(e).__name__, flush=True)

    atexit.register(late_calls)
    from langchain_qwen_fast import BatchedChatQwen

    model = BatchedChatQwen(base_url=base_url, model="Qwen/Qwen3-0.6B", max_tokens=64, wire_mode=wire)
    prompts = [f"item-{i:06d} pending at exit" for i in range(5000)]
    started = threading.Event()

    def work():
        started.set()
        try:
            if mode == "batch":
                model.batch(prompts)
            elif mode == "batch_return_exceptions":
                model.batch(prompts, return_exceptions=True)
            elif mode == "abatch":
                asyncio.run(model.abatch(prompts))
            else:
                while True:
                    model.invoke(prompts[0])
        except Exception:
            pass  # the caller's own business; the library must not print anything itself

    for _ in range(8 if mode == "invoke" else 1):
        threading.Thread(target=work, daemon=True).start()
    started.wait()
    root = base_url[: -len("/v1")]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:  # exit only once work is on the server and more is queued
        stats = json.loads(opener.open(root + "/sim/stats", timeout=5).read())
        if stats["served"] and stats["inflight"]:
            break
        time.sleep(0.02)
    print("INFLIGHT", stats["inflight"], flush=True)
    print("EXITING", time.monotonic(), flush=True)
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["batch", "batch_return_exceptions", "abatch", "invoke"])
def test_interpreter_exit_with_work_pending(h100: SimServer, mode: str) -> None:
    wire = "chat" if mode == "invoke" else "completions"
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, h100.base_url, wire, mode],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ended = time.monotonic()
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, f"rc={proc.returncode}\n{out}\n{err}"
    exiting = [float(line.split()[1]) for line in out.splitlines() if line.startswith("EXITING")]
    assert exiting, out
    assert ended - exiting[0] < 5.0, f"exit took {ended - exiting[0]:.1f}s"
    note(f"interpreter exit, pending {mode}: exited {ended - exiting[0]:.2f} s after main returned")
    for bad in ("Traceback", "Task was destroyed", "Exception ignored", "Unclosed", "Error"):
        assert bad not in err, f"stderr has {bad!r}:\n{err[-3000:]}"
    inflight = [int(line.split()[1]) for line in out.splitlines() if line.startswith("INFLIGHT")]
    assert inflight and inflight[0] > 0, "no work was in flight at exit: nothing was tested"
    led = Ledger(f"interpreter exit with a pending {mode}: calls after the atexit shutdown")
    ids = led.new_ids(2)
    for i, kind in zip(ids, ("get_runtime", "invoke"), strict=True):
        line = next((x for x in out.splitlines() if x.startswith(f"LATE {kind}:")), "")
        led.record(i, ClientClosedError(line) if line.endswith("ClientClosedError") else line)
    led.check(max_answered=0, min_failed=2)


# -- callback handlers that raise ------------------------------------------------------------------
class _Boom(BaseCallbackHandler):
    def __init__(self, raise_error: bool, where: str) -> None:
        self.raise_error = raise_error
        self.where = where
        self.calls = 0

    def _boom(self) -> None:
        self.calls += 1
        raise RuntimeError(f"boom from a callback handler ({self.where})")

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        if self.where == "start":
            self._boom()

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        if self.where == "end":
            self._boom()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["start", "end"])
@pytest.mark.parametrize("raise_error", [False, True])
def test_a_callback_handler_that_raises(
    zero: SimServer,
    make_model: MakeModel,
    caplog: pytest.LogCaptureFixture,
    raise_error: bool,
    where: str,
) -> None:
    model = make_model(zero)
    led = Ledger(
        f"callback handler raising in on_{'chat_model_start' if where == 'start' else 'llm_end'}, "
        f"raise_error={raise_error}",
        errors=(*CLEAR_ERRORS, RuntimeError),
    )
    handler = _Boom(raise_error, where)
    cfg = {"callbacks": [handler]}

    def call(fn: Callable[[], Any], ids: list[str]) -> None:
        try:
            outs = fn()
        except RuntimeError as e:
            assert raise_error and "boom from a callback handler" in str(e)
            outs = [e] * len(ids)
        led.record_all(ids, outs if isinstance(outs, list) else [outs])

    caplog.set_level(logging.WARNING)
    (one,), (p,) = led.prompts(1)
    call(lambda: model.invoke(p, config=cfg), [one])
    ids, prompts = led.prompts(40)
    call(lambda: model.batch(prompts, config=cfg, return_exceptions=True), ids)
    (two,), (p2,) = led.prompts(1)
    call(lambda: asyncio.run(model.ainvoke(p2, config=cfg)), [two])
    ids, prompts = led.prompts(40)
    call(lambda: asyncio.run(model.abatch(prompts, config=cfg, return_exceptions=True)), ids)
    t = led.check()
    assert handler.calls >= 4
    if raise_error:
        assert t.answered == 0 and t.errors == {"RuntimeError": 82}
        if where == "start":
            assert served_requests(zero) == 0  # it raised before anything was sent
    else:
        assert t.answered == 82
        assert "boom from a callback handler" in caplog.text  # LangChain logged it, and carried on

    # Whatever the handler did, the dispatcher keeps working.
    _wait(lambda: _drained(model), 10, f"dispatcher drained: {model.stats()}")
    after = Ledger("calls after a raising handler", errors=CLEAR_ERRORS)
    ids, prompts = after.prompts(20)
    after.record_all(ids, model.batch(prompts, return_exceptions=True))
    after.check(min_answered=20, record=False)


_NEVER = object()


# -- a request task cancelled before its first step -----------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("how", ["close", "cancel"])
def test_a_request_cancelled_before_it_started_still_settles_and_frees_its_slot(
    zero: SimServer, make_model: MakeModel, wire: str, how: str
) -> None:
    """The pump spawns a request task; close() (or any cancel) can reach it before its first step.

    A coroutine cancelled before it starts never runs its body, so cleanup written in its
    ``finally`` never happens: the caller would wait forever and the slot would stay taken. Found
    by the 64-threads-and-close() test above (a few threads hung); pinned here deterministically.
    """
    from langchain_core.messages import HumanMessage

    from langchain_qwen_fast._calls.request import make_item
    from langchain_qwen_fast._dispatch.scheduler import Flow

    model = make_model(zero, wire_mode=wire, max_wait_ms=3.5)  # a dispatcher of its own
    rt, disp = model._dispatcher()
    led = Ledger(f"request task cancelled before its first step, by {how} ({wire})")
    ids, prompts = led.prompts(3)
    items = [make_item(model._spec(None, {}), [HumanMessage(p)]) for p in prompts]

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in items]

        def sink_for(fut: asyncio.Future[Any]) -> Any:
            def sink(outcomes: list[Any]) -> None:
                ((_item, result, exc),) = outcomes
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                elif exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            return sink

        for it, fut in zip(items, futs, strict=True):
            it.sink = sink_for(fut)
            disp.submit([it], Flow("single"))  # each a call of its own, as invoke submits it
        await asyncio.sleep(0)  # the pump runs and spawns the request task(s); none has started
        tasks = {it.task for it in items}
        assert None not in tasks and not any(t.done() for t in tasks)  # type: ignore[union-attr]
        if how == "close":
            await disp.aclose()  # awaited directly: it cancels before the tasks get their first step
        else:
            for t in tasks:
                t.cancel()  # type: ignore[union-attr]
        done, _ = await asyncio.wait(futs, timeout=3)
        await asyncio.sleep(0.05)
        outs: list[Any] = []
        for f in futs:
            if f not in done:
                outs.append(_NEVER)  # never settled: not recorded, so the harness counts it lost
            elif f.cancelled():
                outs.append(asyncio.CancelledError())
            else:
                outs.append(f.exception() or f.result())
        return outs

    outs = asyncio.run_coroutine_threadsafe(scenario(), rt.loop).result(10)
    led.allow_cancelled = how == "cancel"
    for i, o in zip(ids, outs, strict=True):
        if o is not _NEVER:
            led.record(i, o)
    led.check(max_answered=0)
    if how == "close":
        assert all(isinstance(o, ClientClosedError) for o in outs), outs
    assert disp.inflight == 0, "the admission slot leaked"


@pytest.mark.timeout(60)
def test_threads_racing_into_the_first_call_take_one_pool_reference(
    zero: SimServer, make_model: MakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from langchain_qwen_fast._loop import handle as _handle

    real = _handle.get_runtime

    def slow_get_runtime() -> Any:  # widens the window a cold start has (the loop thread starting)
        time.sleep(0.05)
        return real()

    monkeypatch.setattr(_handle, "get_runtime", slow_get_runtime)
    model = make_model(zero, max_wait_ms=4.5)  # a pool of its own
    led = Ledger("16 threads making a model's first call together, then close()")
    barrier = threading.Barrier(16)

    def first_call() -> None:
        (one,), (p,) = led.prompts(1)
        barrier.wait()
        try:
            led.record(one, model.invoke(p))
        except Exception as e:
            led.record(one, e)

    threads = [threading.Thread(target=first_call, daemon=True) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    led.check(min_answered=16, record=False)
    rt, key = real(), model._handle._hold.key  # type: ignore[union-attr]
    refs = rt._shared[key][1]
    model.close()
    assert refs == 1 and key not in rt._shared, f"{refs} references for one model; pool left open"
