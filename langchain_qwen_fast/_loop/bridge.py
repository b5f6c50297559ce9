"""Carrying work from a caller (any thread, any event loop) to the runtime loop and results back.

A batch of N inputs is ONE submission, fed in chunks as the caller prepares them: the caller's
thread (or loop) receives ``(index, result, exception)`` triples as items finish, so callbacks
such as progress bars fire as work completes, not at the end. Abandoning the iteration (an
exception, KeyboardInterrupt, a cancelled task) cancels what has not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_qwen_fast._dispatch.dispatcher import Dispatcher
from langchain_qwen_fast._dispatch.feed import Submission
from langchain_qwen_fast._dispatch.item import Item
from langchain_qwen_fast._dispatch.scheduler import Flow
from langchain_qwen_fast._errors import ClientClosedError
from langchain_qwen_fast._loop.runtime import Runtime

Triple = tuple[int, Any, BaseException | None]
_END = object()


#: Why a blocking call on the loop thread is refused: it would wait for the loop it is blocking.
ON_LOOP_THREAD = "sync BatchedChatQwen calls cannot run on the qwen-fast loop thread; use the async API"


def _putter(q: asyncio.Queue[Any]) -> Callable[[Any], None]:
    """A put for ``q`` (owned by the running loop) that any thread may call; dropped once that loop is closed."""
    loop = asyncio.get_running_loop()

    def put(x: Any) -> None:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the caller's loop closed under us: nobody is listening
                loop.call_soon_threadsafe(q.put_nowait, x)

    return put


class _Coalesce:
    """A result sink on the runtime loop that hands results over once per loop iteration.

    The 32 answers of one ``/v1/completions`` list settle in the same iteration (and arrive here in one
    call); lists that end in the same iteration arrive in several. Handing all of them to the caller's
    thread (or loop) as one list costs one wake-up instead of one per answer.
    """

    def __init__(self, deliver: Callable[[list[Triple]], None]) -> None:
        self.deliver = deliver
        self.pending: list[Triple] = []

    def __call__(self, triples: list[Triple]) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.extend(triples)

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        self.deliver(batch)


class _Run:
    """One batch on its way: ``add`` hands a chunk of items over (they start at once; each keeps the
    ``tag`` its caller gave it, and its result comes back with that tag); leaving before every result
    was read (an exception, KeyboardInterrupt, a cancelled task) cancels what has not finished."""

    def __init__(
        self, rt: Runtime, disp: Dispatcher, limit: int | None, deliver: Callable[[list[Triple]], None], flow: Flow
    ) -> None:
        self.rt = rt
        self.sub = Submission(disp, limit, _Coalesce(deliver), flow)
        self.total = self.received = 0

    def add(self, items: list[Item]) -> None:
        self.total += len(items)
        self.rt.call_soon(self.sub.add, items)

    def close(self) -> None:
        if self.received < self.total:
            self.rt.call_soon(self.sub.cancel)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchRun(_Run):
    """For a blocking caller: ``results`` yields one triple per item in completion order."""

    def __init__(self, rt: Runtime, disp: Dispatcher, limit: int | None, flow: Flow) -> None:
        if rt.in_loop_thread():
            raise RuntimeError(ON_LOOP_THREAD)
        self.q: queue.SimpleQueue[list[Triple]] = queue.SimpleQueue()
        super().__init__(rt, disp, limit, self.q.put, flow)

    def results(self) -> Iterator[Triple]:
        while self.received < self.total:
            yield from self.take()

    def take(self) -> list[Triple]:
        """Block for the next delivery (the results that settled in one loop iteration)."""
        got = self.q.get()
        self.received += len(got)
        return got


class ABatchRun(_Run):
    """For a caller on any event loop: ``results`` is the async twin of :meth:`BatchRun.results`."""

    def __init__(self, rt: Runtime, disp: Dispatcher, limit: int | None, flow: Flow) -> None:
        self.q: asyncio.Queue[list[Triple]] = asyncio.Queue()
        super().__init__(rt, disp, limit, _putter(self.q), flow)

    async def results(self) -> AsyncIterator[Triple]:
        while self.received < self.total:
            for triple in await self.take():
                yield triple

    async def take(self) -> list[Triple]:
        got = await self.q.get()
        self.received += len(got)
        return got


def call_one(rt: Runtime, disp: Dispatcher, item: Item, priority: int = 0) -> Any:
    """One item's result (an ``Answer``), for a blocking caller."""
    with BatchRun(rt, disp, None, Flow("single", priority)) as run:
        run.add([item])
        for _, result, exc in run.results():
            if exc is not None:
                raise exc
            return result
    raise AssertionError("unreachable")  # pragma: no cover


async def acall_one(rt: Runtime, disp: Dispatcher, item: Item, priority: int = 0) -> Any:
    """One item's result (an ``Answer``), for a caller on any event loop."""
    with ABatchRun(rt, disp, None, Flow("single", priority)) as run:
        run.add([item])
        async for _, result, exc in run.results():
            if exc is not None:
                raise exc
            return result
    raise AssertionError("unreachable")  # pragma: no cover


class _StreamPipe:
    """Runs an event stream on the runtime loop and hands its events to one consumer.

    ``open_events`` is called on the runtime loop; it returns the dispatcher's stream (admission,
    the request, release), so the pipe only carries events and the outcome across the threads.
    """

    def __init__(self, rt: Runtime, open_events: Callable[[], AsyncIterator[Any]]) -> None:
        self.rt, self.open_events = rt, open_events
        self.task: asyncio.Task[None] | None = None

    async def produce(self, put: Callable[[Any], None]) -> None:
        self.task = asyncio.current_task()  # type: ignore[assignment]
        try:
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

    def cancel(self) -> None:
        def _c() -> None:
            if self.task is not None and not self.task.done():
                self.task.cancel()

        self.rt.call_soon(_c)


def stream_events(
    rt: Runtime, open_events: Callable[[], AsyncIterator[Any]], on_loop_thread: str = ""
) -> Iterator[Any]:
    """The events of ``open_events()`` (run on the loop) for a blocking reader; on the loop thread itself
    it raises ``RuntimeError(on_loop_thread or ON_LOOP_THREAD)``, since waiting there would never end."""
    if rt.in_loop_thread():
        raise RuntimeError(on_loop_thread or ON_LOOP_THREAD)
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    pipe = _StreamPipe(rt, open_events)
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


async def astream_events(rt: Runtime, open_events: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
    q: asyncio.Queue[Any] = asyncio.Queue()
    put = _putter(q)
    pipe = _StreamPipe(rt, open_events)
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
