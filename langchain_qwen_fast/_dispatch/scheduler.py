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
from collections.abc import Callable, Iterator
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


class Scheduler:
    def __init__(self, policy: FlowPolicy | None = None) -> None:
        self.policy = policy or FlowPolicy()
        self._rings: dict[int, deque[Flow]] = {}
        self._skipped: dict[int, int] = {}  # grants given to higher levels while this one waited
        self.queued = 0  # items in every flow's queue (cancelled ones until they are dropped)

    # -- queueing ------------------------------------------------------------------------------
    def push(self, flow: Flow, item: Item) -> None:
        flow.queue.append(item)
        self.queued += 1
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
        """The first item of ``flow`` still waited for (cancelled ones are dropped here)."""
        q = flow.queue
        while q and q[0].future.done():
            q.popleft()
            self.queued -= 1
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
        self.queued -= 1
        return flow.queue.popleft()

    def collect(
        self, flow: Flow, limit: int, token_cap: int, window: int, accept: Callable[[Item], bool] | None = None
    ) -> list[Item]:
        """The head of ``flow`` plus later items with its list key (and that ``accept`` takes, when given):
        first from ``flow`` (scanning at most ``window`` items, order kept for the ones skipped), then from
        the heads of other flows."""
        q = flow.queue
        before = len(q)
        head = q.popleft()
        batch, tokens = [head], head.est_tokens
        key = head.list_key

        def fits(it: Item) -> bool:  # may ride in this list: same key, a prompt, within the token cap
            return (it.list_key == key and it.prompt is not None and tokens + it.est_tokens <= token_cap
                    and (accept is None or accept(it)))

        skipped: list[Item] = []
        scanned = 0
        while q and len(batch) < limit and scanned < window:
            it = q.popleft()
            scanned += 1
            if it.future.done():
                continue
            if fits(it):
                batch.append(it)
                tokens += it.est_tokens
            else:
                skipped.append(it)
        q.extendleft(reversed(skipped))
        self.queued -= before - len(q)
        self.charge(flow, len(batch))
        if len(batch) >= limit:
            return batch
        # A bounded snapshot: charging a flow may rotate its ring.
        others = [f for f in itertools.islice(self.flows(), 65) if f is not flow]
        for other in others:
            if len(batch) >= limit:
                break
            taken = 0
            oq = other.queue
            while oq and len(batch) < limit:
                it = oq[0]
                if it.future.done():
                    oq.popleft()
                    self.queued -= 1
                    continue
                if not fits(it):
                    break
                batch.append(oq.popleft())
                self.queued -= 1
                tokens += it.est_tokens
                taken += 1
            if taken:
                self.charge(other, taken, served=False)
        return batch

    def drop(self, flow: Flow) -> list[Item]:
        """Empty a cancelled flow's queue at once; the caller settles the items returned."""
        items = list(flow.queue)
        flow.queue.clear()
        self.queued -= len(items)
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
        self.queued = 0
        return items

    def snapshot(self) -> dict[str, Any]:
        by_kind = {k: {"flows": 0, "queued": 0} for k in KINDS}
        for f in self.flows():
            if f.queue:
                by_kind[f.kind]["flows"] += 1
                by_kind[f.kind]["queued"] += len(f.queue)
        return by_kind
