"""Per-flow queues: which caller is served when admission capacity frees.

With one FIFO queue for every caller, one ``invoke`` behind a 6,000-item ``.batch`` on another
instance of the same pool waited 10.3 s (0.09 s on an idle model). Here each ``batch``/``abatch``
submission, each single call and each stream is a *flow* with its own FIFO queue, and the pump
asks :class:`Scheduler` which flow goes next:

- Within a priority level, flows take turns by deficit round robin counted in sequences: a flow
  at the head of the ring may take up to ``quantum`` sequences (one full list), then goes to the
  back. A lone call therefore waits for at most one list of each busy flow, and two bulk batches
  progress at the same rate.
- Across levels, the higher priority is served first; a lower level that has work waiting gets one
  grant after ``starve_after`` grants to higher levels, so it always progresses.

Memory stays one :class:`Item` per pending input plus one small record per flow. A flow that
empties leaves the ring lazily (when it reaches the head), so removal costs nothing; cancelling a
whole flow empties its queue in one step.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_qwen_fast._dispatch.item import Item

KINDS = ("batch", "single", "stream")


@dataclass(frozen=True, slots=True)
class FlowPolicy:
    """Per-flow queues; ``quantum`` counts sequences, as admission does."""

    quantum: int = 32
    starve_after: int = 8

    def __post_init__(self) -> None:
        if self.quantum < 1:
            raise ValueError(f"quantum must be >= 1, got {self.quantum}")
        if self.starve_after < 1:
            raise ValueError(f"starve_after must be >= 1, got {self.starve_after}")


class Flow:
    """One caller's queue: a batch submission, a single call or a stream."""

    __slots__ = ("deficit", "in_ring", "kind", "priority", "queue")

    def __init__(self, kind: str, priority: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"flow kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.priority = priority
        self.queue: deque[Item] = deque()
        self.deficit = 0
        self.in_ring = False

    @property
    def bulk(self) -> bool:
        return self.kind == "batch"


#: How many other flows' heads a list may be topped up from. One pump step stays bounded however many callers
#: wait (a flow per thread calling ``invoke``: hundreds), while two full rounds of 32 single calls still fit.
OTHER_FLOWS = 64


class Scheduler:
    """Whose turn it is, and the queued items on offer. Which items may share a list is the dispatcher's rule
    (``take`` asks it through ``fits``); the scheduler only keeps order, turns and its count of queued items,
    which changes in ``_queued`` alone."""

    def __init__(self, policy: FlowPolicy | None = None) -> None:
        self.policy = policy or FlowPolicy()
        self._rings: dict[int, deque[Flow]] = {}
        self._skipped: dict[int, int] = {}  # grants given to higher levels while this one waited
        self.queued = 0  # items in every flow's queue (cancelled ones until they are dropped)

    def _queued(self, delta: int) -> None:
        self.queued += delta

    # -- queueing ------------------------------------------------------------------------------
    def push(self, flow: Flow, item: Item) -> None:
        flow.queue.append(item)
        self._queued(1)
        self._enter(flow)

    def push_many(self, flow: Flow, items: Iterable[Item], now: float) -> int:
        """:meth:`push` for each item, stamped with ``now`` and ``flow`` (what the dispatcher records); their count."""
        q = flow.queue
        before = len(q)
        for it in items:
            it.enqueued, it.flow = now, flow
            q.append(it)
        n = len(q) - before
        if n:
            self._queued(n)
            self._enter(flow)
        return n

    def _enter(self, flow: Flow) -> None:
        """A flow with work joins its priority's ring (once; it leaves lazily when found empty)."""
        if not flow.in_ring:
            flow.in_ring = True
            flow.deficit = self.policy.quantum
            ring = self._rings.get(flow.priority)
            if ring is None:
                ring = self._rings[flow.priority] = deque()
                self._skipped.setdefault(flow.priority, 0)
            ring.append(flow)

    def __len__(self) -> int:
        return self.queued

    def head(self, flow: Flow) -> Item | None:
        """The first item of ``flow`` still waited for (finished and cancelled ones are dropped here)."""
        q = flow.queue
        dropped = 0
        while q and q[0].done:
            q.popleft()
            dropped += 1
        if dropped:
            self._queued(-dropped)
        return q[0] if q else None

    def flows(self) -> Iterator[Flow]:
        for prio in sorted(self._rings, reverse=True):
            yield from self._rings[prio]

    # -- who is next -----------------------------------------------------------------------------
    def _head_of(self, prio: int) -> Flow | None:
        ring = self._rings[prio]
        while ring:
            f = ring[0]
            if self.head(f) is not None:
                return f
            ring.popleft()  # emptied (taken by another flow's list, cancelled, or served): leaves now
            f.in_ring = False
        del self._rings[prio]
        self._skipped.pop(prio, None)
        return None

    def current(self, accept: Callable[[Flow], bool] | None = None) -> Flow | None:
        """The flow to serve next, optionally the first one ``accept`` allows (e.g. non-bulk when bulk
        work has no capacity left). Does not remove anything."""
        levels = sorted(self._rings, reverse=True)
        heads: list[Flow] = []
        for prio in levels:
            f = self._head_of(prio)
            if f is not None:
                heads.append(f)
        if not heads:
            return None
        if accept is not None:  # highest priority first, as flows() walks them
            return next((f for f in self.flows() if self.head(f) is not None and accept(f)), None)
        starving = [f for f in heads[1:] if self._skipped.get(f.priority, 0) >= self.policy.starve_after]
        return starving[0] if starving else heads[0]

    def charge(self, flow: Flow, n: int, served: bool = True) -> None:
        """Account ``n`` sequences taken from ``flow``. ``served``: this flow was the one granted
        (not one whose items only filled another flow's list)."""
        flow.deficit -= n
        ring = self._rings.get(flow.priority)
        if served:
            for prio in self._skipped:
                if prio < flow.priority:
                    self._skipped[prio] += 1
            self._skipped[flow.priority] = 0
        if ring and ring[0] is flow and flow.deficit <= 0:
            flow.deficit += self.policy.quantum
            ring.rotate(-1)

    # -- taking items ------------------------------------------------------------------------------
    def pop(self, flow: Flow) -> Item:
        """The head of ``flow`` (after :meth:`head` found it), charged one sequence."""
        item = flow.queue.popleft()
        self._queued(-1)
        self.charge(flow, 1)
        return item

    def take(self, flow: Flow, limit: int, window: int, fits: Callable[[Item], bool]) -> list[Item]:
        """The head of ``flow``, then up to ``limit`` items in all that ``fits`` accepts: later items of ``flow``
        (at most ``window`` looked at; the ones passed over keep their order), then the heads of other flows (at
        most :data:`OTHER_FLOWS` of them), each flow charged for what it gave. ``fits`` is asked once per
        candidate, in order, and every item it accepts is taken."""
        q = flow.queue
        before = len(q)
        taken = [q.popleft()]
        passed: list[Item] = []
        looked = 0
        while q and len(taken) < limit and looked < window:
            it = q.popleft()
            looked += 1
            if it.done:
                continue
            if fits(it):
                taken.append(it)
            else:
                passed.append(it)
        q.extendleft(reversed(passed))
        self._queued(len(q) - before)
        self.charge(flow, len(taken))
        if len(taken) < limit:
            # A bounded snapshot: charging a flow may rotate its ring.
            others = [f for f in itertools.islice(self.flows(), OTHER_FLOWS + 1) if f is not flow]
            for other in others[:OTHER_FLOWS]:
                if len(taken) >= limit:
                    break
                got = self._take_heads(other, limit - len(taken), fits)
                if got:
                    taken.extend(got)
                    self.charge(other, len(got), served=False)
        return taken

    def _take_heads(self, flow: Flow, limit: int, fits: Callable[[Item], bool]) -> list[Item]:
        """Leading items of ``flow`` that ``fits`` accepts, up to ``limit``; stops at the first it refuses."""
        q = flow.queue
        before = len(q)
        got: list[Item] = []
        while q and len(got) < limit:
            it = q[0]
            if it.done:
                q.popleft()
                continue
            if not fits(it):
                break
            got.append(q.popleft())
        self._queued(len(q) - before)
        return got

    def drop(self, flow: Flow) -> list[Item]:
        """Empty a cancelled flow's queue at once; the caller settles the items returned."""
        items = list(flow.queue)
        flow.queue.clear()
        self._queued(-len(items))
        return items

    def drain(self) -> list[Item]:
        """Every queued item, for close()."""
        items: list[Item] = []
        for f in self.flows():
            items.extend(f.queue)
            f.queue.clear()
            f.in_ring = False
        self._rings.clear()
        self._skipped.clear()
        self._queued(-self.queued)
        return items

    def snapshot(self) -> dict[str, Any]:
        by_kind = {k: {"flows": 0, "queued": 0} for k in KINDS}
        for f in self.flows():
            if f.queue:
                by_kind[f.kind]["flows"] += 1
                by_kind[f.kind]["queued"] += len(f.queue)
        return by_kind
