"""The dispatcher: admission per replica, fair queueing between callers, coalescing, the wire mode.

Admission counts *sequences* on the server (one per chat request, one per prompt of a
``/v1/completions`` list) and never lets more than a replica's limit run there at once (an optional
total caps the sum; ``_replicas.py``). What does not fit waits in its caller's flow
(``_scheduler.py``: one FIFO queue per batch, single call or stream, served in turn by sequences,
higher priority first), so memory is one small :class:`Item` per pending input and no task per
item. A pump moves items whenever capacity frees up:

- chat items (and streams) go out one request each, at once, to the replica routing picks;
- completions items coalesce into a list of up to ``max_batch_size`` prompts with the same
  sampling parameters (from their own flow first, then from other flows), capped by
  ``max_batch_tokens`` and the chosen replica's free capacity; the list goes whole to that one
  replica. An idle dispatcher sends at once (no added latency); a busy one waits up to
  ``max_wait_ms`` for a list to fill.

A list the server rejects as a whole (one bad prompt makes vLLM answer 400 for all) is split in
halves and re-sent until the bad prompt stands alone, so its neighbours still succeed. Every
task's outcome lands in its items' futures; nothing a task does can raise into the pump, and the
pump itself logs and carries on, so the dispatcher cannot die (ray#66140). A cancelled future is
skipped in the queue, and an in-flight request whose every item was cancelled is cancelled
too (ray#50046: no hang on cancel). When every replica is down, what waits fails at once with
one error naming each replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_qwen_fast._convert import chat_response_to_result, completion_choice_to_result, split_completions
from langchain_qwen_fast._dispatch.item import Item
from langchain_qwen_fast._dispatch.scheduler import Flow, FlowPolicy, Scheduler
from langchain_qwen_fast._errors import BadRequestError, ClientClosedError, ContextLengthError
from langchain_qwen_fast._stats import DispatchStats
from langchain_qwen_fast._upstream.affinity import prefix_keys
from langchain_qwen_fast._upstream.replicas import Lease, Replica
from langchain_qwen_fast._upstream.transport import Transport, deadline_for

log = logging.getLogger("langchain_qwen_fast")
_SPLITTABLE = (BadRequestError, ContextLengthError)
_DONE_PAYLOAD: dict[str, Any] = {}  # what a finished Item keeps instead of its request body


@dataclass(frozen=True)
class DispatchConfig:
    """How lists are formed. Admission limits live with the replicas (``_replicas.ReplicaSet``)."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_batch_tokens: int = 32768
    flows: FlowPolicy = field(default_factory=FlowPolicy)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_batch_tokens < 1 or self.max_wait_ms < 0:
            raise ValueError("max_batch_size and max_batch_tokens must be >= 1 and max_wait_ms >= 0")


class Dispatcher:
    def __init__(self, transport: Transport, config: DispatchConfig) -> None:
        self.transport = transport
        self.replicas = transport.replicas
        self.replicas.bind(self._wake)
        self.config = config
        self.sched = Scheduler(config.flows)
        self.stats = DispatchStats()
        self.max_inflight_seen = 0
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task_items: dict[asyncio.Task[Any], list[Item]] = {}  # list requests only
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def inflight(self) -> int:
        return self.replicas.inflight

    # -- entry points (called on the runtime loop) -----------------------------------------
    def submit(self, item: Item, flow: Flow | None = None) -> asyncio.Future[Any]:
        """Queue ``item`` in ``flow`` (a flow of its own when none is given)."""
        flow = flow or Flow("single")
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        item.future = loop.create_future()
        if self.closed:
            item.future.set_exception(ClientClosedError("the model's pool is closed"))
            return item.future
        item.enqueued = time.monotonic()
        item.flow = flow
        if not flow.bulk:
            self.replicas.interactive_seen()
        self.stats.items += 1
        item.future.add_done_callback(lambda f, it=item: self._on_item_done(it, f))  # type: ignore[misc]
        self.sched.push(flow, item)
        self._wake()
        return item.future

    def cancel_flow(self, flow: Flow) -> None:
        """Drop what ``flow`` still has queued, at once (a caller that left)."""
        for it in self.sched.drop(flow):
            if not it.future.done():
                it.future.cancel()

    async def stream(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str], timeout: float | None, flow: Flow
    ) -> AsyncIterator[dict[str, Any]]:
        """One streamed request: wait for admission in ``flow``, stream from the replica chosen, release."""
        item = Item(payload={}, headers={}, deadline_s=None, model="", stream_slot=True)
        fut = self.submit(item, flow)
        try:
            lease: Lease = await fut
        except asyncio.CancelledError:
            # Cancelled after the pump admitted us but before this task resumed: the slot was
            # counted, and nobody else would release it (a permanent leak of admission capacity).
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())
            raise
        try:
            async for event in self.transport.sse_events(path, payload, headers, deadline_for(timeout), timeout, lease):
                yield event
        finally:
            self._release(lease)

    # -- the pump ----------------------------------------------------------------------------
    def _wake(self) -> None:
        if not self._pump_scheduled and self._loop is not None and self.sched:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        try:
            self._pump_inner()
        except Exception:  # pragma: no cover - a bug here must not stop the dispatcher
            log.exception("qwen-fast dispatcher pump failed; continuing")

    def _pump_inner(self) -> None:
        sched, reps, cfg = self.sched, self.replicas, self.config
        if sched and reps.all_down():
            left = reps.fail_fast_in()
            if left:  # every replica went down just now: hold the queue briefly for a probe to succeed
                self._arm_timer(left)
                return
            err = reps.down_error()
            for it in sched.drain():
                self._settle(it, exc=err)
            return
        while sched:
            flow = sched.current()
            if flow is None:
                return
            head = sched.head(flow)
            assert head is not None  # current() only returns flows with a live head
            rep = reps.choose(flow.bulk, self._keys(head))
            if rep is None and flow.bulk and reps.headroom:  # bulk is full: single calls may use the headroom
                alt = sched.current(accept=lambda f: not f.bulk)
                if alt is not None:
                    flow, head = alt, sched.head(alt)
                    assert head is not None
                    rep = reps.choose(False, self._keys(head))
            if rep is None:  # no capacity: a release wakes us; a 503 pause ends by the clock
                reopen = reps.next_open_at()
                if reopen is not None:
                    self._arm_timer(reopen - time.monotonic())
                return
            if head.prompt is None:
                sched.pop(flow)
                sched.charge(flow, 1)
                lease = self._admit(rep, [head])
                if head.stream_slot:
                    head.future.set_result(lease)
                else:
                    self._spawn(self._run_chat(head, lease), [head], lease)
                continue
            if self.inflight > 0 and len(sched) < cfg.max_batch_size:
                wait = head.enqueued + cfg.max_wait_ms / 1000.0 - time.monotonic()
                if wait > 0:
                    self._arm_timer(wait)
                    return
            limit = min(cfg.max_batch_size, reps.free(rep, flow.bulk))
            # With prefix affinity a list takes only prompts whose prefixes live on the replica chosen for
            # it: a list of 32 prompts with mixed system prompts would scatter every prefix over every replica.
            accept = (lambda it, r=rep: reps.belongs(r, self._keys(it))) if reps.affinity else None
            batch = sched.collect(flow, limit, cfg.max_batch_tokens, 4 * cfg.max_batch_size, accept)
            lease = self._admit(rep, batch)
            self._spawn(self._run_list(batch, lease), batch, lease)

    def _keys(self, item: Item) -> tuple[int, ...]:
        if not self.replicas.affinity:
            return ()
        if item.pkeys is None:
            item.pkeys = prefix_keys(item.prompt, None if item.prompt is not None else item.payload.get("messages"))
        return item.pkeys

    def _arm_timer(self, delay: float) -> None:
        if self._loop is None:
            return
        at = time.monotonic() + max(0.0, delay)
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()

        def fire() -> None:
            self._timer = None
            self._pump()

        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, delay), fire)

    def _admit(self, rep: Replica, items: list[Item]) -> Lease:
        now = time.monotonic()
        for it in items:
            self.stats.waited(now - it.enqueued, it.flow)
        lease = self.replicas.admit(rep, len(items))
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        return lease

    def _release(self, lease: Lease) -> None:
        if lease.seqs:
            self.replicas.release(lease)
        self._wake()

    def _spawn(self, coro: Any, items: list[Item], lease: Lease) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        if len(items) > 1:
            self._task_items[task] = items
        # Accounting lives in a done-callback, not in the coroutine's ``finally``: a task cancelled
        # before its first step (close() right after the pump spawned it) never runs its body,
        # and its items would wait forever while their slots stayed taken.
        task.add_done_callback(lambda t, its=items, ls=lease: self._on_task_done(t, its, ls))  # type: ignore[misc]
        for it in items:
            it.task = task

    def _on_task_done(self, task: asyncio.Task[Any], items: list[Item], lease: Lease) -> None:
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
        self._release(lease)

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
        # The request body is never needed again; drop it now (100k pending items: ~1 KB each).
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

    async def _run_chat(self, item: Item, lease: Lease) -> None:
        deadline, timeout = self._deadline([item])
        try:
            resp = await self.transport.post_json("/chat/completions", item.payload, item.headers, deadline, timeout,
                                                  lease)
            self._settle(item, chat_response_to_result(resp, item.model))
        except asyncio.CancelledError:
            self._abandon(item)
            raise
        except Exception as e:
            self._settle(item, exc=e)
        finally:
            self.stats.batches += 1
            self.stats.batch_sizes[1] += 1

    async def _run_list(self, items: list[Item], lease: Lease) -> None:
        try:
            await self._send_list(items, lease)
        except BaseException as e:  # never leave an item without an outcome
            for it in items:
                if isinstance(e, asyncio.CancelledError):
                    self._abandon(it)
                else:
                    self._settle(it, exc=e)
            if isinstance(e, asyncio.CancelledError):
                raise

    async def _send_list(self, items: list[Item], lease: Lease) -> None:
        live = [it for it in items if not it.future.done()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.batch_sizes[len(live)] += 1
        payload = dict(live[0].list_params or {})
        payload["prompt"] = [it.prompt for it in live] if len(live) > 1 else live[0].prompt
        deadline, timeout = self._deadline(live)
        try:
            resp = await self.transport.post_json("/completions", payload, live[0].headers, deadline, timeout, lease)
        except _SPLITTABLE as e:
            if len(live) == 1:
                self._settle(live[0], exc=e)
                return
            self.stats.splits += 1
            mid = len(live) // 2
            await asyncio.gather(self._send_list(live[:mid], lease), self._send_list(live[mid:], lease))
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
        snap.update(in_flight=self.inflight, max_in_flight=self.max_inflight_seen, queued=len(self.sched))
        for kind, counts in self.sched.snapshot().items():
            snap["flows"].setdefault(kind, {}).update(counts)
        snap["endpoints"] = self.replicas.snapshot()
        snap["capacity"] = self.replicas.capacity()  # what all replicas admit at once (per-replica and total limits)
        return snap

    async def aclose(self) -> None:
        """Fail what waits, cancel what runs, close the engine. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        err = ClientClosedError("the model was closed while this call was pending")
        for it in self.sched.drain():
            self._settle(it, exc=err)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.aclose()
