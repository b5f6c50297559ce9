"""Cancelling ainvoke/abatch: the caller is freed at once, the request dropped, the model lives.

Covers: _loop/bridge.py, _dispatch/feed.py, _dispatch/dispatcher.py, _dispatch/outcomes.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body, last_user_text

pytestmark = pytest.mark.timeout(30)


class SlowForSome:
    """Answers 'slow…' prompts after ``delay`` s, others at once; notes dropped requests."""

    def __init__(self, delay: float = 10.0) -> None:
        self.delay = delay
        self.started = threading.Event()
        self.dropped = threading.Event()
        self.dropped_count = 0
        self._lock = threading.Lock()

    async def __call__(self, payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        text = last_user_text(payload)
        if text.startswith("slow"):
            self.started.set()
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                with self._lock:
                    self.dropped_count += 1
                self.dropped.set()
                raise
        return httpx.Response(200, json=chat_body(f"echo:{text}"))


async def _wait_for(event: threading.Event, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not event.is_set():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        await asyncio.sleep(0.005)


async def test_cancelled_ainvoke_frees_caller_quickly_and_model_keeps_working(
    mock_model: Any,
) -> None:
    server = SlowForSome()
    model, _ = mock_model(server)
    before = model.stats()["cancelled"]

    task = asyncio.create_task(model.ainvoke("slow question"))
    await _wait_for(server.started)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 0.5

    # The request itself was dropped (the server-side handler saw the cancellation).
    await _wait_for(server.dropped, 2.0)
    assert model.stats()["cancelled"] == before + 1

    # And the model keeps working.
    assert (await model.ainvoke("fast one")).content == "echo:fast one"
    # The slot is released in the request task's done-callback, just after the answer is delivered;
    # give that bookkeeping a moment, but it must come back to zero (a leak never would).
    deadline = time.monotonic() + 2.0
    while model.stats()["in_flight"] != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert model.stats()["in_flight"] == 0


async def test_cancel_ainvoke_with_wait_for_timeout_then_call_again(mock_model: Any) -> None:
    server = SlowForSome()
    model, _ = mock_model(server)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.ainvoke("slow one"), 0.2)
    await _wait_for(server.dropped, 2.0)
    assert (await model.ainvoke("after")).content == "echo:after"


async def test_cancelled_abatch_does_not_hang_and_later_calls_work(mock_model: Any) -> None:
    server = SlowForSome()
    model, _ = mock_model(server)
    inputs = [f"fast-{i}" if i % 3 else f"slow-{i}" for i in range(30)]
    task = asyncio.create_task(model.abatch(inputs, config={"max_concurrency": 8}))
    await _wait_for(server.started)
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - t0 < 1.0

    await _wait_for(server.dropped, 2.0)
    # Nothing of the cancelled batch stays in flight or queued.
    deadline = time.monotonic() + 2.0
    while model.stats()["in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stats = model.stats()
    assert stats["in_flight"] == 0
    assert stats["queued"] == 0

    results = await model.abatch(["fast-a", "fast-b"])
    assert [r.content for r in results] == ["echo:fast-a", "echo:fast-b"]


async def test_cancelling_one_caller_does_not_affect_a_concurrent_one(mock_model: Any) -> None:
    server = SlowForSome(delay=0.3)
    model, _ = mock_model(server)
    victim = asyncio.create_task(model.ainvoke("slow victim"))
    survivor = asyncio.create_task(model.ainvoke("slow survivor"))
    await _wait_for(server.started)
    victim.cancel()
    assert (await survivor).content == "echo:slow survivor"
    with pytest.raises(asyncio.CancelledError):
        await victim
