"""close()/aclose()/context managers, no leaked tasks or threads, and the stats() snapshot.

Covers: chat_models.py, _loop/handle.py, _stats.py, _dispatch/dispatcher.py, _engines/asyncio_engine.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body, last_user_text

from langchain_qwen_fast import BatchedChatQwen, ClientClosedError
from langchain_qwen_fast._engines import AsyncioEngine
from langchain_qwen_fast._loop.runtime import get_runtime

pytestmark = pytest.mark.timeout(30)


def _runtime_tasks() -> set[asyncio.Task[Any]]:
    rt = get_runtime()

    async def snapshot() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    return asyncio.run_coroutine_threadsafe(snapshot(), rt.loop).result(5)


async def _slow(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
    if last_user_text(payload).startswith("slow"):
        await asyncio.sleep(10)
    return httpx.Response(200, json=chat_body(f"echo:{last_user_text(payload)}"))


# -- close ----------------------------------------------------------------------------------------


def test_call_after_close_raises_client_closed(mock_model: Any) -> None:
    model, rec = mock_model()
    assert model.invoke("before").content == "echo:before"
    model.close()
    with pytest.raises(ClientClosedError):
        model.invoke("after")
    with pytest.raises(ClientClosedError):
        model.batch(["a", "b"])
    assert rec.count == 1


async def test_acall_after_aclose_raises_client_closed(mock_model: Any) -> None:
    model, rec = mock_model()
    await model.ainvoke("before")
    await model.aclose()
    with pytest.raises(ClientClosedError):
        await model.ainvoke("after")
    with pytest.raises(ClientClosedError):
        await model.abatch(["a"])
    assert rec.count == 1


def test_close_is_idempotent_and_works_on_an_unused_model(mock_model: Any) -> None:
    model, _ = mock_model()
    model.close()
    model.close()
    with pytest.raises(ClientClosedError):
        model.invoke("x")


def test_sync_context_manager_closes(mock_model: Any) -> None:
    model, _ = mock_model()
    with model as m:
        assert m is model
        assert m.invoke("in").content == "echo:in"
    with pytest.raises(ClientClosedError):
        model.invoke("out")


async def test_async_context_manager_closes(mock_model: Any) -> None:
    model, _ = mock_model()
    async with model as m:
        assert (await m.ainvoke("in")).content == "echo:in"
    with pytest.raises(ClientClosedError):
        await model.ainvoke("out")


def test_closing_one_instance_leaves_another_on_the_same_pool_working(local_server: Any) -> None:
    server = local_server()
    a = BatchedChatQwen(base_url=server.base_url)
    b = BatchedChatQwen(base_url=server.base_url)
    try:
        assert a.invoke("a").content == "echo:a"
        assert b.invoke("b").content == "echo:b"
        a.close()
        assert b.invoke("b2").content == "echo:b2"
        assert b.batch(["b3", "b4"])[1].content == "echo:b4"
    finally:
        a.close()
        b.close()


def test_queued_call_on_closed_model_fails_with_clear_error(mock_model: Any) -> None:
    model, _ = mock_model(_slow, max_concurrency=1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(model.invoke, "slow-1")
        time.sleep(0.1)
        queued = pool.submit(model.invoke, "slow-2")
        time.sleep(0.1)
        model.close()
        with pytest.raises(ClientClosedError):
            queued.result(timeout=3)
        with pytest.raises(BaseException):  # noqa: B017 - the in-flight one: see the next tests
            first.result(timeout=3)


def test_in_flight_sync_call_on_closed_model_fails_with_client_closed_error(
    mock_model: Any,
) -> None:
    model, _ = mock_model(_slow)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(model.invoke, "slow-1")
        time.sleep(0.15)
        model.close()
        t0 = time.monotonic()
        try:
            pending.result(timeout=3)
        except BaseException as e:
            err: BaseException = e
        else:  # pragma: no cover
            pytest.fail("the call should have failed")
        assert time.monotonic() - t0 < 2.0  # no hang
    assert isinstance(err, ClientClosedError), f"got {type(err).__name__}: {err!r}"


async def test_in_flight_async_call_on_closed_model_fails_with_client_closed_error(
    mock_model: Any,
) -> None:
    model, _ = mock_model(_slow)
    task = asyncio.create_task(model.ainvoke("slow-1"))
    await asyncio.sleep(0.15)
    await model.aclose()
    done, _ = await asyncio.wait({task}, timeout=3)
    assert done, "the pending call hung after aclose()"
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    assert isinstance(exc, ClientClosedError), f"got {type(exc).__name__}: {exc!r}"


def _engine_is_closed(engine: Any) -> bool:
    """No connection left open: the asyncio engine's count, the aiohttp engine's session."""
    if isinstance(engine, AsyncioEngine):
        return engine.connections == 0
    return engine._session is None or engine._session.closed  # type: ignore[no-any-return]


@pytest.mark.parametrize("engine", ["asyncio", "aiohttp"])
def test_close_leaks_no_tasks_no_threads_and_closes_the_engines_connections(local_server: Any, engine: str) -> None:
    server = local_server(delay=0.01)
    get_runtime()  # the one background thread exists before the baseline
    threads_before = threading.active_count()
    tasks_before = _runtime_tasks()

    models = [BatchedChatQwen(base_url=server.base_url, max_concurrency=10 + i, http_engine=engine) for i in range(4)]
    engines = []
    for m in models:
        assert m.invoke("x").content == "echo:x"
        assert len(m.batch(["a", "b", "c"])) == 3
        _, disp = m._dispatcher()
        engines.append(disp.transport.engine)
    assert not any(_engine_is_closed(e) for e in engines)  # the check below can fail
    assert threading.active_count() == threads_before  # no thread per model or per call
    for m in models:
        m.close()

    deadline = time.monotonic() + 2
    while _runtime_tasks() - tasks_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not (_runtime_tasks() - tasks_before)
    assert all(_engine_is_closed(e) for e in engines)
    assert threading.active_count() == threads_before


# -- stats ----------------------------------------------------------------------------------------

STAT_KEYS = {
    "items",
    "items_failed",
    "cancelled",
    "batches",
    "list_splits",
    "batch_size_histogram",
    "queue_wait_s",
    "latency_s",
    "in_flight",
    "max_in_flight",
    "queued",
    "endpoints",
}
SUMMARY_KEYS = {"count", "mean", "p50", "p95", "p99", "max"}
ENDPOINT_KEYS = {"requests", "retries", "errors", "latency_s", "outstanding", "ejected"}


def test_stats_has_documented_keys(mock_model: Any) -> None:
    model, _ = mock_model()
    model.invoke("x")
    s = model.stats()
    assert set(s) >= STAT_KEYS
    assert set(s["latency_s"]) >= SUMMARY_KEYS and set(s["queue_wait_s"]) >= SUMMARY_KEYS
    (ep,) = s["endpoints"].values()
    assert set(ep) >= ENDPOINT_KEYS
    assert set(ep["latency_s"]) >= SUMMARY_KEYS


def test_stats_count_requests_batches_retries_and_errors(
    mock_model: Any, fast_backoff: None
) -> None:
    flaky_left = {"n": 2}
    lock = threading.Lock()

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        text = last_user_text(payload)
        if text == "bad":
            return httpx.Response(400, json={"error": {"message": "no", "code": 400}})
        if text == "flaky":
            with lock:
                if flaky_left["n"] > 0:
                    flaky_left["n"] -= 1
                    return httpx.Response(503, json={"error": {"message": "busy", "code": 503}})
        return httpx.Response(200, json=chat_body(f"echo:{text}"))

    model, rec = mock_model(respond, max_retries=2)
    model.invoke("ok-1")
    model.invoke("ok-2")
    model.batch(["ok-3", "ok-4"])
    with pytest.raises(Exception):  # noqa: B017
        model.invoke("bad")
    assert model.invoke("flaky").content == "echo:flaky"

    s = model.stats()
    assert rec.count == 8
    assert s["items"] == 6
    assert s["items_failed"] == 1
    assert s["batches"] == 6
    assert s["batch_size_histogram"] == {1: 6}
    assert s["latency_s"]["count"] == 6
    assert s["in_flight"] == 0 and s["queued"] == 0
    (ep,) = s["endpoints"].values()
    assert ep["requests"] == 8
    assert ep["retries"] == 2
    assert ep["errors"] == {"BadRequestError": 1, "ServerError": 2}
    assert ep["latency_s"]["count"] == 5
    assert ep["outstanding"] == 0


def test_stats_count_completions_lists_in_the_histogram(mock_model: Any) -> None:
    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        prompts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
        return httpx.Response(
            200,
            json={
                "id": "c",
                "model": "m",
                "choices": [
                    {"index": i, "text": "t", "finish_reason": "length"}
                    for i in range(len(prompts))
                ],
            },
        )

    model, rec = mock_model(respond, wire_mode="completions", max_tokens=4)
    model.batch([f"p{i}" for i in range(5)])
    s = model.stats()
    assert s["items"] == 5
    assert s["batches"] == rec.count
    assert sum(k * v for k, v in s["batch_size_histogram"].items()) == 5
    assert max(s["batch_size_histogram"]) >= 2
