"""Any caller: repeated asyncio.run(), uvloop, and many threads sharing one instance.

Covers: _loop/runtime.py, _loop/bridge.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from langchain_qwen_fast import BatchedChatQwen

pytestmark = pytest.mark.timeout(30)


def test_two_asyncio_run_calls_in_a_row_with_one_instance(mock_model: Any) -> None:
    model, rec = mock_model()

    async def once(tag: str) -> str:
        return str((await model.ainvoke(tag)).content)

    assert asyncio.run(once("first")) == "echo:first"
    assert asyncio.run(once("second")) == "echo:second"  # no "Event loop is closed"
    assert asyncio.run(once("third")) == "echo:third"
    assert rec.count == 3


def test_repeated_asyncio_run_with_the_default_engine(local_server: Any) -> None:
    server = local_server()
    with BatchedChatQwen(base_url=server.base_url) as model:

        async def once(tag: str) -> list[str]:
            out = [str((await model.ainvoke(tag)).content)]
            out += [str(m.content) for m in await model.abatch([tag + "-b1", tag + "-b2"])]
            return out

        assert asyncio.run(once("a")) == ["echo:a", "echo:a-b1", "echo:a-b2"]
        assert asyncio.run(once("b")) == ["echo:b", "echo:b-b1", "echo:b-b2"]
        assert model.invoke("sync").content == "echo:sync"
    assert server.count == 7


def test_uvloop_runner_twice_then_plain_asyncio(local_server: Any) -> None:
    uvloop = pytest.importorskip("uvloop")
    server = local_server()
    with BatchedChatQwen(base_url=server.base_url) as model:

        async def once(tag: str, expect_uvloop: bool) -> str:
            assert ("uvloop" in type(asyncio.get_running_loop()).__module__) is expect_uvloop
            return str((await model.ainvoke(tag)).content)

        for tag in ("u1", "u2"):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                assert runner.run(once(tag, True)) == f"echo:{tag}"
        assert asyncio.run(once("plain", False)) == "echo:plain"
    assert server.count == 3


def test_uvloop_with_mock_transport_client(mock_model: Any) -> None:
    uvloop = pytest.importorskip("uvloop")
    model, _ = mock_model()

    async def once(tag: str) -> list[str]:
        res = await model.abatch([f"{tag}-{i}" for i in range(5)])
        return [str(m.content) for m in res]

    for tag in ("x", "y"):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            assert runner.run(once(tag)) == [f"echo:{tag}-{i}" for i in range(5)]


def test_32_threads_invoking_at_once_get_their_own_answers(mock_model: Any) -> None:
    model, rec = mock_model()
    barrier = threading.Barrier(32)

    def call(i: int) -> str:
        barrier.wait(5)
        return str(model.invoke(f"thread-{i}").content)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, range(32)))
    assert answers == [f"echo:thread-{i}" for i in range(32)]
    assert rec.count == 32


def test_32_threads_on_real_server_share_one_pool(local_server: Any) -> None:
    server = local_server(delay=0.05)
    barrier = threading.Barrier(32)
    with BatchedChatQwen(base_url=server.base_url) as model:

        def call(i: int) -> str:
            barrier.wait(5)
            return str(model.invoke(f"t-{i}").content)

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(call, range(32)))
        assert answers == [f"echo:t-{i}" for i in range(32)]
        stats = model.stats()
    assert server.max_in_flight > 8  # the threads' calls overlap on the shared loop
    assert stats["items"] >= 32


async def test_sync_invoke_and_batch_work_inside_a_running_event_loop(mock_model: Any) -> None:
    """As in Jupyter, where a loop is already running in the caller's thread."""
    model, _ = mock_model()
    assert model.invoke("nb").content == "echo:nb"
    assert [m.content for m in model.batch(["x", "y"])] == ["echo:x", "echo:y"]
