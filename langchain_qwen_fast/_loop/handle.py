"""The shared pool behind a model: one dispatcher per distinct endpoint settings, held per instance.

Instances with the same endpoints, engine, limits, retry, health, routing and dispatch settings share
one dispatcher (so one admission limit per server and one connection pool). Each instance holds a
reference; ``close()`` drops it, and the last one closes the pool. Built from a frozen
:class:`DispatcherSettings`, so this module never needs the model class (layers point down).

The handle also decides the model name for a model nobody named: it asks the shared dispatcher what
its replicas serve (``_upstream/models.py``, the rule in ``_served.py``) and keeps why (``choice``,
for ``stats()``). A sync caller blocks for that lookup as it blocks for its call; an async caller
awaits it, never blocking its own loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_qwen_fast._dispatch.dispatcher import DispatchConfig, Dispatcher
from langchain_qwen_fast._engines import Limits, make_engine
from langchain_qwen_fast._errors import ClientClosedError, model_not_chosen
from langchain_qwen_fast._loop.runtime import Runtime, get_runtime
from langchain_qwen_fast._served import Choice
from langchain_qwen_fast._upstream.probe import HealthProbe
from langchain_qwen_fast._upstream.replicas import HealthPolicy, ReplicaSet, RoutingPolicy
from langchain_qwen_fast._upstream.transport import RetryPolicy, Transport


@dataclass(frozen=True)
class DispatcherSettings:
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
        engine = make_engine(self.engine, self.limits, self.async_client, self.sync_client)
        replicas = ReplicaSet(self.urls, self.per_replica, self.total, self.headroom, self.health, self.routing,
                              prober=HealthProbe(engine))
        return Dispatcher(Transport(replicas, engine, self.retry), self.dispatch)


class _Hold:
    __slots__ = ("closed", "disp", "key", "rt")

    def __init__(self, rt: Runtime, key: Any, disp: Dispatcher) -> None:
        self.rt, self.key, self.disp, self.closed = rt, key, disp, False


class DispatcherHandle:
    """One model instance's hold on its shared dispatcher (thread-safe, re-held after fork)."""

    def __init__(self) -> None:
        self._hold: _Hold | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.choice: Choice | None = None  # how the name of a model nobody named was chosen

    # -- the model name ---------------------------------------------------------------------
    def decide_model(self, settings: Any, default: str, headers: Callable[[], Mapping[str, str]]) -> tuple[str, bool]:
        """``(name, settled)`` for a model nobody named; blocks the calling thread for the lookup. Not settled:
        a replica did not answer, so the next call asks again."""
        rt, disp = self.get(settings)
        return self._keep(*rt.run(disp.transport.models.choose(default, headers())))

    async def adecide_model(self, settings: Any, default: str, headers: Callable[[], Mapping[str, str]]
                            ) -> tuple[str, bool]:
        """As :meth:`decide_model`, awaited: on the runtime loop directly, from another loop through it."""
        rt, disp = self.get(settings)
        lookup = disp.transport.models.choose(default, headers())
        return self._keep(*await (lookup if rt.in_loop_thread() else rt.run_async(lookup)))

    def _keep(self, choice: Choice, settled: bool) -> tuple[str, bool]:
        self.choice = choice
        if choice.name is None:
            raise model_not_chosen(choice.detail)
        return choice.name, settled

    def get(self, settings: Any) -> tuple[Runtime, Dispatcher]:
        """The runtime and dispatcher; ``settings`` is a zero-argument callable that builds
        :class:`DispatcherSettings` (called only when a new hold is needed)."""
        hold = self._hold
        rt = get_runtime()
        if hold is not None and not hold.closed and hold.rt is rt:
            return rt, hold.disp
        with self._lock:
            if self._closed:
                raise ClientClosedError("this BatchedChatQwen was closed; create a new instance to call it again")
            hold = self._hold  # another thread may have held the pool while this one waited for the lock
            if hold is not None and not hold.closed and hold.rt is rt:
                return rt, hold.disp
            s: DispatcherSettings = settings()
            key = s.key()
            disp = rt.acquire(key, s.build)
            self._hold = _Hold(rt, key, disp)  # type: ignore[arg-type]
            return rt, disp  # type: ignore[return-value]

    def _end(self) -> _Hold | None:
        """Close this hold: the hold to release, or None when there is nothing (left) to release."""
        with self._lock:
            self._closed = True
            hold, self._hold = self._hold, None
        if hold is None or hold.closed:
            return None
        hold.closed = True
        return hold

    def close(self) -> None:
        if (hold := self._end()) is not None:
            hold.rt.release_sync(hold.key)

    async def aclose(self) -> None:
        if (hold := self._end()) is not None and (pending := hold.rt.release(hold.key)) is not None:
            await pending
