"""The dispatcher: admission per replica, fair queueing between callers, lists, the wire mode.

Admission counts *sequences* on the server (one per chat request, one per prompt of a
``/v1/completions`` list) and never lets more than a replica's limit run there at once (an optional
total caps the sum; ``_upstream/replicas.py``). What does not fit waits in its caller's flow
(``scheduler.py``: one FIFO queue per batch, single call or stream, served in turn by sequences,
higher priority first), so memory is one small :class:`~item.Item` per pending input and no task per
item. A pump moves items whenever capacity frees up, one grant at a time: :meth:`Dispatcher._next_grant`
decides whose turn it is and which replica takes it (or why nothing can go now), :meth:`Dispatcher._send`
sends it according to the head item's kind:

- a chat item goes out as one request, at once, to the replica routing picks; a stream item is handed the
  admission (its owner sends the request);
- a list item heads a ``/v1/completions`` list of up to ``max_batch_size`` prompts that share its list key
  (sampling parameters, headers, deadline), from its own flow first, then from other flows, capped by
  ``max_batch_tokens`` and the chosen replica's free capacity (:class:`_ListRule`); the list goes whole to
  that one replica. An idle dispatcher sends at once (no added latency); a busy one waits up to
  ``max_wait_ms`` for a list to fill.

A list the server rejects as a whole (one bad prompt makes vLLM answer 400 for all) is split in
halves and re-sent until the bad prompt stands alone, so its neighbours still succeed. Every
task's outcome reaches its items' sinks exactly once; nothing a task does can raise into the pump, and the
pump itself logs and carries on, so the dispatcher cannot die (ray#66140). A cancelled item is
skipped in the queue, and an in-flight request whose every item was cancelled is cancelled
too (ray#50046: no hang on cancel). When every replica is down, what waits fails at once with
one error naming each replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_qwen_fast._dispatch.item import LIST, STREAM, Item, Outcome
from langchain_qwen_fast._dispatch.outcomes import Outcomes
from langchain_qwen_fast._dispatch.requests import Requests
from langchain_qwen_fast._dispatch.scheduler import Flow, FlowPolicy, Scheduler
from langchain_qwen_fast._errors import ClientClosedError
from langchain_qwen_fast._stats import DispatchStats
from langchain_qwen_fast._upstream.affinity import prefix_keys
from langchain_qwen_fast._upstream.replicas import Lease, Replica
from langchain_qwen_fast._upstream.transport import Transport, deadline_for

log = logging.getLogger("langchain_qwen_fast")


@dataclass(frozen=True)
class DispatchConfig:
    """How lists are formed. Admission limits live with the replicas (``_upstream.replicas.ReplicaSet``)."""

    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_batch_tokens: int = 32768
    flows: FlowPolicy = field(default_factory=FlowPolicy)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_batch_tokens < 1 or self.max_wait_ms < 0:
            raise ValueError("max_batch_size and max_batch_tokens must be >= 1 and max_wait_ms >= 0")


@dataclass(slots=True)
class _Grant:
    """The pump's decision: ``flow``'s head goes to ``replica`` now."""

    flow: Flow
    head: Item
    replica: Replica


class _ListRule:
    """Which queued items may ride in the list ``head`` heads: a list item with the same list key (sampling
    parameters, headers, deadline: two instances with different api keys share a dispatcher, never a request),
    within the token cap, and, with prefix affinity, one whose prefix lives on the replica chosen (or that has no
    shared part): a list of 32 prompts with mixed system prompts would scatter every prefix over every replica."""

    __slots__ = ("accept", "cap", "key", "tokens")

    def __init__(self, head: Item, cap: int, accept: Callable[[Item], bool] | None) -> None:
        self.key, self.tokens, self.cap, self.accept = head.list_key, head.est_tokens, cap, accept

    def __call__(self, it: Item) -> bool:
        if it.kind != LIST or it.list_key != self.key or self.tokens + it.est_tokens > self.cap:
            return False
        if self.accept is not None and not self.accept(it):
            return False
        self.tokens += it.est_tokens
        return True


class Dispatcher:
    def __init__(self, transport: Transport, config: DispatchConfig) -> None:
        self.transport = transport
        self.replicas = transport.replicas
        self.replicas.bind(self._wake)
        self.config = config
        self.sched = Scheduler(config.flows)
        self.stats = DispatchStats()
        self.outcomes = Outcomes(self.stats)
        self.requests = Requests(transport, self.stats, self.outcomes)
        self.max_inflight_seen = 0
        self._tasks: dict[asyncio.Task[Any], list[Item]] = {}  # request -> the items it carries
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self.outcomes.closed

    @property
    def inflight(self) -> int:
        return self.replicas.inflight

    # -- entry points (called on the runtime loop) -----------------------------------------
    def submit(self, items: Iterable[Item], flow: Flow) -> None:
        """Queue ``items`` (each with its ``sink`` set) in ``flow``; every one hears its outcome once."""
        self._loop = self._loop or asyncio.get_running_loop()
        if self.closed:
            err = ClientClosedError("the model's pool is closed")
            self.outcomes.deliver([(it, None, err) for it in items])
            return
        if not flow.bulk:
            self.replicas.interactive_seen()
        self.stats.items += self.sched.push_many(flow, items, time.monotonic())
        self._wake()

    def cancel(self, items: Iterable[Item]) -> None:
        """The caller left: drop these items (their sinks hear ``CancelledError``), and cancel a request on the wire
        when nobody else waits on it, so a list whose callers all left does not hold its slots until it ends."""
        items = [it for it in items if not it.done]
        self.outcomes.settle_many([(it, None, asyncio.CancelledError()) for it in items])
        for task in dict.fromkeys(it.task for it in items if it.task is not None):  # each request once
            if not task.done() and all(o.done for o in self._tasks.get(task, ())):
                task.cancel()

    def cancel_flow(self, flow: Flow) -> None:
        """Drop what ``flow`` still has queued, at once (a caller that left)."""
        self.cancel(self.sched.drop(flow))

    async def stream(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str], timeout: float | None, flow: Flow
    ) -> AsyncIterator[dict[str, Any]]:
        """One streamed request: wait for admission in ``flow``, stream from the replica chosen, release."""
        granted: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()

        def on_grant(outcomes: list[Outcome]) -> None:
            ((_, lease, exc),) = outcomes
            if granted.done():  # the waiter left after the grant was made: nobody else would release it
                if lease is not None:
                    self._release(lease)
            elif exc is not None:
                granted.set_exception(exc)
            else:
                granted.set_result(lease)

        item = Item(STREAM, headers, timeout, "", sink=on_grant)
        self.submit((item,), flow)
        try:
            lease = await granted
        except asyncio.CancelledError:
            # Still queued: it leaves the queue. Granted after the waiter left: on_grant released it. Granted just
            # before the waiter was cancelled (the result set, the resume not yet run): release it here, or the
            # slot would stay counted for good.
            self.cancel((item,))
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self._release(granted.result())
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
            if self.sched and self.replicas.all_down():
                self._hold_or_fail_all()
                return
            while self.sched and (grant := self._next_grant()) is not None:
                self._send(grant)
        except Exception:  # pragma: no cover - a bug here must not stop the dispatcher
            log.exception("qwen-fast dispatcher pump failed; continuing")

    def _hold_or_fail_all(self) -> None:
        """Every replica is down: hold the queue briefly for a probe to bring one back, then fail what waits."""
        left = self.replicas.fail_fast_in()
        if left:
            self._arm_timer(left)
            return
        err = self.replicas.down_error()
        self.outcomes.settle_many([(it, None, err) for it in self.sched.drain()])

    def _next_grant(self) -> _Grant | None:
        """Whose turn it is and which replica takes it; None when nothing can go now (then a release, a
        probe or the timer armed here wakes the pump again)."""
        sched, reps = self.sched, self.replicas
        flow = sched.current()
        if flow is None:
            return None
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
            return None
        if head.kind == LIST and self.inflight > 0 and len(sched) < self.config.max_batch_size:
            wait = head.enqueued + self.config.max_wait_ms / 1000.0 - time.monotonic()
            if wait > 0:  # busy and the list is not full yet: wait a little for it to fill
                self._arm_timer(wait)
                return None
        return _Grant(flow, head, rep)

    def _send(self, g: _Grant) -> None:
        """Admit the grant's items on its replica and start what carries them."""
        if g.head.kind != LIST or g.replica.lists is False:  # a server that refuses lists gets a chat request
            item = self.sched.pop(g.flow).as_chat()
            lease = self._admit(g.replica, [item])
            if item.kind == STREAM:
                self.outcomes.settle(item, lease)
            else:
                self._spawn(self.requests.send_chat(item, lease), [item], lease)
            return
        cfg, reps = self.config, self.replicas
        accept = (lambda it, r=g.replica: reps.belongs(r, self._keys(it))) if reps.affinity else None
        members = self.sched.take(g.flow, min(cfg.max_batch_size, reps.free(g.replica, g.flow.bulk)),
                                  4 * cfg.max_batch_size, _ListRule(g.head, cfg.max_batch_tokens, accept))
        lease = self._admit(g.replica, members)
        self._spawn(self.requests.send_list(members, lease), members, lease)

    def _keys(self, item: Item) -> tuple[int, ...]:
        if not self.replicas.affinity:
            return ()
        if item.pkeys is None:
            item.pkeys = prefix_keys(item.prompt, (item.payload or {}).get("messages") if item.prompt is None else None)
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
        self.stats.waited(time.monotonic(), items)
        lease = self.replicas.admit(rep, len(items))
        self.max_inflight_seen = max(self.max_inflight_seen, self.inflight)
        return lease

    def _release(self, lease: Lease) -> None:
        if lease.seqs:
            self.replicas.release(lease)
        self._wake()

    def _spawn(self, coro: Any, items: list[Item], lease: Lease) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = items
        # Accounting lives in a done-callback, not in the coroutine's ``finally``: a task cancelled
        # before its first step (close() right after the pump spawned it) never runs its body,
        # and its items would wait forever while their slots stayed taken.
        task.add_done_callback(lambda t, ls=lease: self._on_task_done(t, ls))  # type: ignore[misc]
        for it in items:
            it.task = task

    def _on_task_done(self, task: asyncio.Task[Any], lease: Lease) -> None:
        for it in self._tasks.pop(task, ()):
            if it.done:
                continue
            if task.cancelled():
                self.outcomes.abandon(it)
            else:  # the coroutine ended without an outcome for this item: a bug, but never a hang
                err = task.exception() or RuntimeError("qwen-fast: the request ended without a result")
                self.outcomes.settle(it, exc=err)
        self._release(lease)

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
        self.outcomes.closed = True
        if self._timer is not None:
            self._timer.cancel()
        err = ClientClosedError("the model was closed while this call was pending")
        self.outcomes.settle_many([(it, None, err) for it in self.sched.drain()])
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.transport.aclose()
