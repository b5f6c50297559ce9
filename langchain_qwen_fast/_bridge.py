"""Carrying work from a caller (any thread, any event loop) to the runtime loop and results back.

A batch of N inputs is ONE submission: the caller's thread (or loop) receives ``(index, result,
exception)`` triples as items finish, so callbacks such as progress bars fire as work completes,
not at the end. Abandoning the iteration (an exception, KeyboardInterrupt, a cancelled task)
cancels what has not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_qwen_fast._batcher import Dispatcher, Item, Submission
from langchain_qwen_fast._errors import ClientClosedError
from langchain_qwen_fast._runtime import Runtime

Triple = tuple[int, Any, BaseException | None]
_END = object()


def run_items(rt: Runtime, disp: Dispatcher, items: list[Item], limit: int | None) -> Iterator[Triple]:
    """Blocking: yields one triple per item in completion order."""
    if rt.in_loop_thread():
        raise RuntimeError("sync BatchedChatQwen calls cannot run on the qwen-fast loop thread; use the async API")
    q: queue.SimpleQueue[Triple] = queue.SimpleQueue()
    sub = Submission(disp, items, limit, lambda i, r, e: q.put((i, r, e)))
    rt.call_soon(sub.start)
    received = 0
    try:
        while received < len(items):
            triple = q.get()
            received += 1
            yield triple
    finally:
        if received < len(items):
            rt.call_soon(sub.cancel)


async def arun_items(rt: Runtime, disp: Dispatcher, items: list[Item], limit: int | None) -> AsyncIterator[Triple]:
    """Awaitable from any loop: yields one triple per item in completion order."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Triple] = asyncio.Queue()

    def sink(i: int, r: Any, e: BaseException | None) -> None:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the caller's loop closed under us: nobody is listening
                loop.call_soon_threadsafe(q.put_nowait, (i, r, e))

    sub = Submission(disp, items, limit, sink)
    rt.call_soon(sub.start)
    received = 0
    try:
        while received < len(items):
            triple = await q.get()
            received += 1
            yield triple
    finally:
        if received < len(items):
            rt.call_soon(sub.cancel)


def call_one(rt: Runtime, disp: Dispatcher, item: Item) -> Any:
    for _, result, exc in run_items(rt, disp, [item], None):
        if exc is not None:
            raise exc
        return result
    raise AssertionError("unreachable")  # pragma: no cover


async def acall_one(rt: Runtime, disp: Dispatcher, item: Item) -> Any:
    async for _, result, exc in arun_items(rt, disp, [item], None):
        if exc is not None:
            raise exc
        return result
    raise AssertionError("unreachable")  # pragma: no cover


class _StreamPipe:
    """Runs an event stream on the runtime loop and hands its events to one consumer."""

    def __init__(self, rt: Runtime, disp: Dispatcher, open_events: Callable[[], AsyncIterator[Any]]) -> None:
        self.rt, self.disp, self.open_events = rt, disp, open_events
        self.task: asyncio.Task[None] | None = None

    async def produce(self, put: Callable[[Any], None]) -> None:
        self.task = asyncio.current_task()  # type: ignore[assignment]
        admitted = False
        try:
            await self.disp.stream_slot()
            admitted = True
            async for event in self.open_events():
                put(event)
            put(_END)
        except asyncio.CancelledError:
            # Either the consumer stopped reading (then nobody sees this) or the runtime is shutting
            # down: a stream cut short must never look like one that finished.
            put(ClientClosedError("the stream was cancelled before it finished"))
            raise
        except BaseException as e:
            put(e)
        finally:
            if admitted:
                self.disp.release_slot()

    def cancel(self) -> None:
        def _c() -> None:
            if self.task is not None and not self.task.done():
                self.task.cancel()

        self.rt.call_soon(_c)


def stream_events(rt: Runtime, disp: Dispatcher, open_events: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    pipe = _StreamPipe(rt, disp, open_events)
    fut = rt.submit(pipe.produce(q.put))
    finished = False
    try:
        while True:
            ev = q.get()
            if ev is _END:
                finished = True
                return
            if isinstance(ev, BaseException):
                finished = True
                raise ev
            yield ev
    finally:
        if not finished:
            fut.cancel()
            pipe.cancel()


async def astream_events(
    rt: Runtime, disp: Dispatcher, open_events: Callable[[], AsyncIterator[Any]]
) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Any] = asyncio.Queue()

    def put(ev: Any) -> None:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(q.put_nowait, ev)

    pipe = _StreamPipe(rt, disp, open_events)
    fut = rt.submit(pipe.produce(put))
    finished = False
    try:
        while True:
            ev = await q.get()
            if ev is _END:
                finished = True
                return
            if isinstance(ev, BaseException):
                finished = True
                raise ev
            yield ev
    finally:
        if not finished:
            fut.cancel()
            pipe.cancel()
