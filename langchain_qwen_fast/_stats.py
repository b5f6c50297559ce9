"""Counters behind ``BatchedChatQwen.stats()``: cheap to update on the hot path, copied on read."""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

_RING = 8192


class Ring:
    """The last ``_RING`` samples; percentiles are taken over those on read."""

    __slots__ = ("_buf", "_i", "count", "total")

    def __init__(self) -> None:
        self._buf: list[float] = []
        self._i = 0
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if len(self._buf) < _RING:
            self._buf.append(value)
        else:
            self._buf[self._i] = value
            self._i = (self._i + 1) % _RING

    def extend(self, values: list[float]) -> None:
        """``add`` for each value (a list's items at once)."""
        self.count += len(values)
        self.total += sum(values)
        buf = self._buf
        room = _RING - len(buf)
        if room > 0:
            buf.extend(values[:room])
            values = values[room:]
        while values:  # full: overwrite the oldest, in slices up to the end of the buffer
            k = min(len(values), _RING - self._i)
            buf[self._i : self._i + k] = values[:k]
            self._i = (self._i + k) % _RING
            values = values[k:]

    def summary(self) -> dict[str, float | int | None]:
        data = sorted(self._buf)

        def pct(p: float) -> float | None:
            if not data:
                return None
            return data[min(len(data) - 1, int(p * len(data)))]

        return {
            "count": self.count,
            "mean": (self.total / self.count) if self.count else None,
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": data[-1] if data else None,
        }


class Histogram:
    """Counts per upper bound (the last one is +inf) and the sum of what was counted: a Prometheus histogram kept as
    plain numbers, so ``stats()`` hands them out as a dict and a collector copies them on scrape.

    A histogram, not a :class:`Ring`, where several processes' numbers must add up (a queue worker's job time:
    Prometheus sums buckets across workers, and quantiles of a per-process window cannot be summed).
    prometheus-client's own ``Histogram`` fixes its metric name when it is made and takes a lock per observation;
    the collectors name their metrics and read only on scrape (``integrations/prometheus.py``).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must increase, got {list(bounds)}")
        self.bounds = tuple(bounds) if bounds and bounds[-1] == math.inf else (*bounds, math.inf)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float, n: int = 1) -> None:
        """Count ``value`` (``n`` times) in the first bucket whose bound is at least it."""
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.total += value * n

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": {upper bound: count in that bucket alone}, "sum": total}``."""
        return {"buckets": dict(zip(self.bounds, self.counts, strict=True)), "sum": self.total}


class EndpointStats:
    __slots__ = ("errors", "latency", "requests", "retries")

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.errors: Counter[str] = Counter()
        self.latency = Ring()

    def ok(self, seconds: float) -> None:
        self.requests += 1
        self.latency.add(seconds)

    def error(self, kind: str) -> None:
        self.requests += 1
        self.errors[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "errors": dict(self.errors),
            "latency_s": self.latency.summary(),
        }


class DispatchStats:
    __slots__ = ("cancelled", "flow_wait", "item_latency", "items", "items_failed", "list_sizes", "priority_wait",
                 "queue_wait", "requests", "splits")

    def __init__(self) -> None:
        self.items = 0
        self.items_failed = 0
        self.cancelled = 0
        self.requests = 0  # HTTP requests sent: lists and chat requests
        self.splits = 0
        self.list_sizes: Counter[int] = Counter()  # prompts per request (a chat request is 1)
        self.queue_wait = Ring()
        self.item_latency = Ring()
        self.flow_wait: defaultdict[str, Ring] = defaultdict(Ring)  # by flow kind: batch, single, stream
        self.priority_wait: defaultdict[int, Ring] = defaultdict(Ring)

    def waited(self, now: float, items: Sequence[Any]) -> None:
        """Queue wait of items admitted at ``now`` (every queued item has its flow: ``Dispatcher.submit``),
        overall, by its flow's kind and by its priority."""
        waits = [now - it.enqueued for it in items]
        self.queue_wait.extend(waits)
        flow = items[0].flow
        if all(it.flow is flow for it in items):  # the common case: one flow's items (a list of its own)
            self.flow_wait[flow.kind].extend(waits)
            self.priority_wait[flow.priority].extend(waits)
            return
        for it, seconds in zip(items, waits, strict=True):
            self.flow_wait[it.flow.kind].add(seconds)
            self.priority_wait[it.flow.priority].add(seconds)

    def sent(self, prompts: int) -> None:
        """One request went out carrying ``prompts`` prompts."""
        self.requests += 1
        self.list_sizes[prompts] += 1

    def snapshot(self) -> dict[str, Any]:
        sizes = dict(sorted(self.list_sizes.items()))
        return {
            "items": self.items,
            "items_failed": self.items_failed,
            "cancelled": self.cancelled,
            "requests": self.requests,
            "list_splits": self.splits,
            "list_size_histogram": sizes,
            # the names before "list" had one meaning; kept for a release (docs/configuration.md, stats())
            "batches": self.requests,
            "batch_size_histogram": sizes,
            "queue_wait_s": self.queue_wait.summary(),
            "latency_s": self.item_latency.summary(),
            "flows": {k: {"queue_wait_s": r.summary()} for k, r in sorted(self.flow_wait.items())},
            "priorities": {p: {"queue_wait_s": r.summary()} for p, r in sorted(self.priority_wait.items())},
        }
