"""The dispatcher: admission, coalescing and the wire mode, with one future per item.

Admission counts *sequences* on the server (one per chat request, one per prompt of a
``/v1/completions`` list) and never lets more than ``max_concurrency`` run at once; what does not
fit waits in one FIFO queue, so memory is one small :class:`Item` per pending input and no task
per item. A pump moves items from the queue whenever capacity frees up:

- chat items (and streams) go out one request each, at once;
- completions items coalesce into a list of up to ``max_batch_size`` prompts with the same
  sampling parameters, capped by ``max_batch_tokens``. An idle dispatcher sends at once (no added
  latency); a busy one waits up to ``max_wait_ms`` for a list to fill.

A list the server rejects as a whole (one bad prompt makes vLLM answer 400 for all) is split in
halves and re-sent until the bad prompt stands alone, so its neighbours still succeed. Every
task's outcome lands in its items' futures; nothing a task does can raise into the pump, and the
pump itself logs and carries on, so the dispatcher cannot die (ray#66140). A cancelled future is
skipped in the queue, and an in-flight request whose every item was cancelled is cancelled
too (ray#50046: no hang on cancel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_qwen_fast._convert import chat_response_to_result, completion_choice_to_result, split_completions
from langchain_qwen_fast._errors import BadRequestError, ClientClosedError, ContextLengthError
from langchain_qwen_fast._stats import DispatchStats
from langchain_qwen_fast._transport import Transport, deadline_for

log = logging.getLogger("langchain_qwen_fast")
_SPLITTABLE = (BadRequestError, ContextLengthError)
_DONE_PAYLOAD: dict[str, Any] = {}  # what a finished Item keeps instead of its request body


@dataclass(frozen=True)
class DispatchConfig:
    max_concurrency: int = 512
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_batch_tokens: int = 32768


@dataclass(eq=False)
class Item:
    """One input on its way: the chat payload, and the rendered prompt when a list may carry it."""

    payload: dict[str, Any]
    headers: Mapping[str, str]
    deadline_s: float | None
    model: str
    prompt: str | None = None
    key: bytes | None = None  # completions items with equal keys may share a list
    list_params: dict[str, Any] | None = None
    est_tokens: int = 0
    stream_slot: bool = False
    future: asyncio.Future[Any] = field(default=None)  # type: ignore[arg-type]  # set by submit()
    enqueued: float = 0.0
    task: asyncio.Task[Any] | None = None


class Dispatcher:
    def __init__(self, transport: Transport, config: DispatchConfig) -> None:
        self.transport = transport
        self.config = config
        self.stats = DispatchStats()
        self.inflight = 0
        self.max_inflight_seen = 0
        self.closed = False
        self._queue: deque[Item] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task_items: dict[asyncio.Task[Any], list[Item]] = {}  # list requests only
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- entry points (called on the runtime loop) -----------------------------------------
    def submit(self, item: Item) -> asyncio.Future[Any]:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        item.future = loop.create_future()
        if self.closed:
            item.future.set_exception(ClientClosedError("the model's pool is closed"))
            return item.future
        item.enqueued = time.monotonic()
        self.stats.items += 1
        item.future.add_done_callback(lambda f, it=item: self._on_item_done(it, f))  # type: ignore[misc]
        self._queue.append(item)
        if not self._pump_scheduled:
            self._pump_scheduled = True
            loop.call_soon(self._pump)
        return item.future

    async def stream_slot(self) -> None:
        """Wait for admission of one streamed request; pair with :meth:`release_slot`."""
        item = Item(payload={}, headers={}, deadline_s=None, model="", stream_slot=True)
        fut = self.submit(item)
        try:
            await fut
        except asyncio.CancelledError:
            # Cancelled after the pump admitted us but before this task resumed: the slot was
            # counted, and nobody would release it (a permanent leak of admission capacity).
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._finish(1)
            raise

    def release_slot(self) -> None:
        self._finish(1)

    # -- the pump ----------------------------------------------------------------------------
    def _pump(self) -> None:
        self._pump_scheduled = False
        try:
            self._pump_inner()
        except Exception:  # pragma: no cover - a bug here must not stop the dispatcher
            log.exception("qwen-fast dispatcher pump failed; continuing")

    def _pump_inner(self) -> None:
        q, cfg = self._queue, self.config
        while q and self.inflight < cfg.max_concurrency:
            head = q[0]
            if head.future.done():
                q.popleft()
                continue
            if head.prompt is None:
                q.popleft()
                self._admit([head])
                if head.stream_slot:
                    head.future.set_result(None)
                else:
                    self._spawn(self._run_chat(head), [head])
                continue
            if self.inflight > 0 and len(q) < cfg.max_batch_size:
                wait = head.enqueued + cfg.max_wait_ms / 1000.0 - time.monotonic()
                if wait > 0:
                    self._arm_timer(wait)
                    return
            batch = self._collect(cfg.max_concurrency - self.inflight)
            self._admit(batch)
            self._spawn(self._run_list(batch), batch)

    def _arm_timer(self, delay: float) -> None:
        if self._timer is None and self._loop is not None:
            def fire() -> None:
                self._timer = None
                self._pump()

            self._timer = self._loop.call_later(delay, fire)

    def _collect(self, capacity: int) -> list[Item]:
        """Take the head plus later items with its key, within size, capacity and token budget."""
        cfg, q = self.config, self._queue
        head = q.popleft()
        batch, tokens = [head], head.est_tokens
        limit = min(cfg.max_batch_size, capacity)
        skipped: list[Item] = []
        scanned = 0
        while q and len(batch) < limit and scanned < 4 * cfg.max_batch_size:
            it = q.popleft()
            scanned += 1
            if it.future.done():
                continue
            if it.key == head.key and it.prompt is not None and tokens + it.est_tokens <= cfg.max_batch_tokens:
                batch.append(it)
                tokens += it.est_tokens
            else:
                skipped.append(it)
        q.extendleft(reversed(skipped))
        return batch

    def _admit(self, items: list[Item]) -> None:
        now = time.monotonic()
        for it in items:
            self.stats.queue_wait.add(now - it.enqueued)
        self.inflight += len(items)
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)

    def _finish(self, n: int) -> None:
        self.inflight -= n
        if self._queue and not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _spawn(self, coro: Any, items: list[Item]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        if len(items) > 1:
            self._task_items[task] = items
        # Accounting lives in a done-callback, not in the coroutine's ``finally``: a task cancelled
        # before its first step (close() right after the pump spawned it) never runs its body,
        # and its items would wait forever while their slots stayed taken.
        task.add_done_callback(lambda t, its=items: self._on_task_done(t, its))  # type: ignore[misc]
        for it in items:
            it.task = task

    def _on_task_done(self, task: asyncio.Task[Any], items: list[Item]) -> None:
        self._tasks.discard(task)
        self._task_items.pop(task, None)
        for it in items:
            if it.future.done():
                continue
            if task.cancelled():
                self._abandon(it)
            else:  # the coroutine ended without an outcome for this item: a bug, but never a hang
                exc = task.exception() or RuntimeError("qwen-fast: the request ended without a result")
                self._settle(it, exc=exc)
        self._finish(len(items))

    def _on_item_done(self, item: Item, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            self.stats.cancelled += 1
            task = item.task
            # Cancel the HTTP request only when nobody else waits on it (a list may carry others):
            # otherwise a list whose callers all left would hold its admission slots until the
            # server answered or the deadline passed.
            if task is not None and not task.done():
                others = self._task_items.get(task, ())
                if all(it.future.done() for it in others):
                    task.cancel()
        else:
            self.stats.item_latency.add(time.monotonic() - item.enqueued)
            if fut.exception() is not None:
                self.stats.items_failed += 1
        # The request body is never needed again; a caller's batch keeps its Items until the
        # whole batch is done, so drop the bodies now (100k pending items: ~1 KB each).
        item.payload = _DONE_PAYLOAD
        if item.prompt is not None:
            item.prompt = ""

    # -- the work ----------------------------------------------------------------------------
    @staticmethod
    def _deadline(items: list[Item]) -> tuple[float, float | None]:
        timeout = items[0].deadline_s
        return deadline_for(timeout), timeout

    @staticmethod
    def _settle(item: Item, result: Any = None, exc: BaseException | None = None) -> None:
        if item.future.done():
            return  # cancelled meanwhile: the answer is discarded, never delivered twice
        if exc is not None:
            item.future.set_exception(exc)
        else:
            item.future.set_result(result)

    def _abandon(self, item: Item) -> None:
        """The request was cancelled: by its caller (cancel the future) or by close() (say so)."""
        if item.future.done():
            return
        if self.closed:
            item.future.set_exception(ClientClosedError("the model was closed while this call was in flight"))
        else:
            item.future.cancel()

    async def _run_chat(self, item: Item) -> None:
        deadline, timeout = self._deadline([item])
        try:
            resp = await self.transport.post_json("/chat/completions", item.payload, item.headers, deadline, timeout)
            self._settle(item, chat_response_to_result(resp, item.model))
        except asyncio.CancelledError:
            self._abandon(item)
            raise
        except Exception as e:
            self._settle(item, exc=e)
        finally:
            self.stats.batches += 1
            self.stats.batch_sizes[1] += 1

    async def _run_list(self, items: list[Item]) -> None:
        try:
            await self._send_list(items)
        except BaseException as e:  # never leave an item without an outcome
            for it in items:
                if isinstance(e, asyncio.CancelledError):
                    self._abandon(it)
                else:
                    self._settle(it, exc=e)
            if isinstance(e, asyncio.CancelledError):
                raise

    async def _send_list(self, items: list[Item]) -> None:
        live = [it for it in items if not it.future.done()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.batch_sizes[len(live)] += 1
        payload = dict(live[0].list_params or {})
        payload["prompt"] = [it.prompt for it in live] if len(live) > 1 else live[0].prompt
        deadline, timeout = self._deadline(live)
        try:
            resp = await self.transport.post_json("/completions", payload, live[0].headers, deadline, timeout)
        except _SPLITTABLE as e:
            if len(live) == 1:
                self._settle(live[0], exc=e)
                return
            self.stats.splits += 1
            mid = len(live) // 2
            await asyncio.gather(self._send_list(live[:mid]), self._send_list(live[mid:]))
            return
        except Exception as e:
            for it in live:
                self._settle(it, exc=e)
            return
        try:
            parts = split_completions(resp, len(live))
        except Exception as e:
            for it in live:
                self._settle(it, exc=e)
            return
        for it, (choice, usage) in zip(live, parts, strict=True):
            self._settle(it, completion_choice_to_result(resp, choice, usage, it.model))

    # -- lifecycle -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        snap.update(in_flight=self.inflight, max_in_flight=self.max_inflight_seen, queued=len(self._queue))
        return snap

    async def aclose(self) -> None:
        """Fail what waits, cancel what runs, close the engine. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        err = ClientClosedError("the model was closed while this call was pending")
        while self._queue:
            it = self._queue.popleft()
            self._settle(it, exc=err)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.engine.aclose()


class Submission:
    """One caller's batch, fed to the dispatcher as it arrives and at most ``limit`` items at a time.

    ``add`` may be called several times: a large batch is prepared in chunks, and the first
    requests go out while later inputs are still being prepared. ``on_result(index, result,
    exception)`` fires once per item, in completion order; ``index`` counts across all ``add`` calls.
    """

    def __init__(
        self, dispatcher: Dispatcher, limit: int | None, on_result: Callable[[int, Any, BaseException | None], None]
    ) -> None:
        self.dispatcher, self.on_result = dispatcher, on_result
        self.limit = limit if limit and limit > 0 else None
        self.items: list[Item] = []
        self._next = 0  # items[:_next] have been handed to the dispatcher
        self._active = 0  # ... and of those, this many have no outcome yet
        self.cancelled = False

    def add(self, items: list[Item]) -> None:
        if self.cancelled:  # the caller has gone; nobody would read these results
            return
        self.items.extend(items)
        self._fill()

    def _fill(self) -> None:
        while self._next < len(self.items) and (self.limit is None or self._active < self.limit):
            i = self._next
            self._next += 1
            self._active += 1
            fut = self.dispatcher.submit(self.items[i])
            fut.add_done_callback(lambda f, i=i: self._done(i, f))  # type: ignore[misc]

    def _done(self, index: int, fut: asyncio.Future[Any]) -> None:
        self._active -= 1
        if fut.cancelled():
            exc: BaseException | None = asyncio.CancelledError()
            result = None
        else:
            exc = fut.exception()
            result = None if exc else fut.result()
        try:
            self.on_result(index, result, exc)
        except Exception:  # a broken sink must not stop the feed
            log.exception("qwen-fast result sink failed")
        if not self.cancelled:
            self._fill()

    def cancel(self) -> None:
        self.cancelled = True
        for it in self.items[: self._next]:
            if it.future is not None and not it.future.done():
                it.future.cancel()
