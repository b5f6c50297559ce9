"""The shared pool behind a model: one dispatcher per distinct endpoint settings, leased per instance.

Instances with the same endpoints, engine, limits, retry, health, routing and dispatch settings share
one dispatcher (so one admission limit per server and one connection pool). Each instance holds a
reference; ``close()`` drops it, and the last one closes the pool. Built from a frozen
:class:`PoolSettings`, so this module never needs the model class (layers point down).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from langchain_qwen_fast._batcher import DispatchConfig, Dispatcher
from langchain_qwen_fast._engines import Limits, make_engine
from langchain_qwen_fast._errors import ClientClosedError
from langchain_qwen_fast._replicas import HealthPolicy, ReplicaSet, RoutingPolicy
from langchain_qwen_fast._runtime import Runtime, get_runtime
from langchain_qwen_fast._transport import RetryPolicy, Transport


@dataclass(frozen=True)
class PoolSettings:
    """Everything that decides which pool a model uses; equal settings share one."""

    urls: tuple[str, ...]
    engine: str
    per_replica: int
    total: int | None
    headroom: int
    dispatch: DispatchConfig
    limits: Limits
    retry: RetryPolicy
    health: HealthPolicy
    routing: RoutingPolicy
    async_client: Any = field(default=None, compare=False)
    sync_client: Any = field(default=None, compare=False)

    def key(self) -> tuple[Any, ...]:
        return ("dispatcher", self, id(self.async_client), id(self.sync_client))

    def build(self) -> Dispatcher:
        replicas = ReplicaSet(self.urls, self.per_replica, self.total, self.headroom, self.health, self.routing)
        engine = make_engine(self.engine, self.limits, self.async_client, self.sync_client)
        return Dispatcher(Transport(replicas, engine, self.retry), self.dispatch)


class _Lease:
    __slots__ = ("closed", "disp", "key", "rt")

    def __init__(self, rt: Runtime, key: Any, disp: Dispatcher) -> None:
        self.rt, self.key, self.disp, self.closed = rt, key, disp, False


class ModelPool:
    """One model instance's hold on its shared dispatcher (thread-safe, re-leased after fork)."""

    def __init__(self) -> None:
        self._lease: _Lease | None = None
        self._closed = False
        self._lock = threading.Lock()

    def get(self, settings: Any) -> tuple[Runtime, Dispatcher]:
        """The runtime and dispatcher; ``settings`` is a zero-argument callable that builds
        :class:`PoolSettings` (called only when a new lease is needed)."""
        lease = self._lease
        rt = get_runtime()
        if lease is not None and not lease.closed and lease.rt is rt:
            return rt, lease.disp
        with self._lock:
            if self._closed:
                raise ClientClosedError("this BatchedChatQwen was closed; create a new instance to call it again")
            lease = self._lease  # another thread may have leased the pool while this one waited for the lock
            if lease is not None and not lease.closed and lease.rt is rt:
                return rt, lease.disp
            s: PoolSettings = settings()
            key = s.key()
            disp = rt.acquire(key, s.build)
            self._lease = _Lease(rt, key, disp)  # type: ignore[arg-type]
            return rt, disp  # type: ignore[return-value]

    def _end(self) -> _Lease | None:
        """Close this hold: the lease to release, or None when there is nothing (left) to release."""
        with self._lock:
            self._closed = True
            lease, self._lease = self._lease, None
        if lease is None or lease.closed:
            return None
        lease.closed = True
        return lease

    def close(self) -> None:
        if (lease := self._end()) is not None:
            lease.rt.release_sync(lease.key)

    async def aclose(self) -> None:
        if (lease := self._end()) is not None and (pending := lease.rt.release(lease.key)) is not None:
            await pending
