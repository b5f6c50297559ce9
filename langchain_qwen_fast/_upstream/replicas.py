"""The servers behind ``base_url``: admission per replica, routing, live health, prefix affinity.

Admission is counted per replica, in sequences (a list of 32 prompts is 32): each server gets up to
``max_concurrency`` of its own, so N engines hold N times the work in flight that one does (with one
limit shared by all, three engines on one GPU reached only 0.73-0.82x of their raw ceiling). An
optional total caps the sum.

Routing picks, among replicas that can take work now, the one with the fewest sequences in flight;
ties rotate. A faster replica frees its slots sooner and so receives more. With
``routing="prefix_affinity"`` a request whose conversation shares a leading part (system prompt,
few-shot turns) with earlier ones goes where that part went before, while that replica's load is
within a bound of the least-loaded one, so the server's prefix cache hits; past the bound it falls
back to least-outstanding and the prefix gains a second home. This is the client's small version of
the SGLang router's cache-aware policy (balance thresholds, a prefix table per worker).

Health is live:
- A refused connection is known at once (nothing was sent): the replica is ejected immediately.
- Resets, 5xx other than 503 and garbage bodies count; ``eject_after`` in a row eject it.
- A 503 is backpressure (vLLM answers it when its queue is full): the replica is not ejected but
  takes no new work for a short, growing pause.
- An ejected replica is probed (``/health``, falling back to ``/v1/models``) with backoff and rejoins
  when it answers, without a restart of anything.
- When every replica has been ejected for ``fail_after_s`` (a brief restart of the only server
  should not fail a whole batch), what waits fails at once with one error that names each URL and
  the last error seen there, and so does every new call until a probe brings one back. A retry
  that finds every replica ejected waits for a probe to bring one back, for at most the rest of
  that time, and then fails with that same error.
- Except for a model's only server that has never answered since the pool was created: nothing was
  restarted there (a wrong URL, or a server not started), so nothing is held for it. Its calls fail
  after their own retries, and what waits at once, with "cannot connect to URL" and the doctor
  command to check it, in no replica's words (the user gave one URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_qwen_fast._errors import (
    AllReplicasDownError,
    APIConnectionError,
    InvalidResponseError,
    ServerError,
    server_down,
)
from langchain_qwen_fast._stats import EndpointStats
from langchain_qwen_fast._upstream.affinity import AffinityTable
from langchain_qwen_fast._urls import check_distinct, redact_url

log = logging.getLogger("langchain_qwen_fast")
ROUTINGS = ("least_outstanding", "prefix_affinity")


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When a replica is ejected, how it is probed back, and how long a 503 keeps work away."""

    eject_after: int = 3
    probe_first_s: float = 0.1
    probe_max_s: float = 0.5
    probe_timeout_s: float = 2.0
    busy_first_s: float = 0.25
    busy_max_s: float = 4.0
    fail_after_s: float = 3.0

    def __post_init__(self) -> None:
        if self.eject_after < 1:
            raise ValueError(f"eject_after must be >= 1, got {self.eject_after}")
        for name in ("probe_first_s", "probe_max_s", "probe_timeout_s", "busy_first_s", "busy_max_s",
                     "fail_after_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """How a replica is chosen. The balance bounds are in sequences, as admission is.

    ``prefix_affinity`` keeps a prefix on its replica while that replica's load is at most
    ``balance_abs`` sequences above the least-loaded one's, or at most ``balance_rel`` times it.
    """

    mode: str = "least_outstanding"
    balance_abs: int = 64
    balance_rel: float = 1.5
    table_size: int = 16384

    def __post_init__(self) -> None:
        if self.mode not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.mode!r}")
        if self.balance_abs < 0 or self.balance_rel < 1 or self.table_size < 1:
            raise ValueError("balance_abs must be >= 0, balance_rel >= 1 and table_size >= 1")


class Replica:
    """One server behind base_url.

    ``inflight`` counts sequences the dispatcher admitted here (what admission bounds);
    ``outstanding`` counts HTTP requests on the wire (what the stats show).
    """

    __slots__ = ("answered", "base", "busy_streak", "busy_until", "ejected", "failures", "inflight", "last_error",
                 "limit", "lists", "name", "outstanding", "stats")

    def __init__(self, base: str, limit: int) -> None:
        self.base = base.rstrip("/")
        self.name = redact_url(self.base)
        self.limit = limit
        self.inflight = 0
        self.outstanding = 0
        self.failures = 0
        self.ejected = False
        self.last_error: str | None = None
        self.busy_until = 0.0
        self.busy_streak = 0
        self.answered = False  # an HTTP answer came from it since the pool was created
        self.stats = EndpointStats()
        #: Whether it takes a completions list (a ``prompt`` that is a list): None until a list was refused once
        #: and the dispatcher checked, False when it refuses them (vLLM's Rust front end): it gets chat requests.
        self.lists: bool | None = None

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "outstanding": self.outstanding,
            "in_flight": self.inflight,
            "limit": self.limit,
            "healthy": not self.ejected,
            "ejected": self.ejected,
            "busy": self.busy_until > now,
            "last_error": self.last_error,
            "lists": "refused: sent chat requests instead" if self.lists is False else "accepted",
        }


class Lease:
    """Sequences admitted on one replica; a retry on another replica moves them there."""

    __slots__ = ("replica", "seqs")

    def __init__(self, replica: Replica, seqs: int) -> None:
        self.replica, self.seqs = replica, seqs


#: ``await prober(base_url, timeout)``: None when the server answers again, else the reason it does not
#: (``probe.HealthProbe`` over the pool's engine).
Prober = Callable[[str, float], Awaitable[str | None]]


class ReplicaSet:
    """The replicas of one pool. ``prober`` asks an ejected replica whether it answers again (without one,
    only a call that gets through brings it back); :meth:`bind` names who is woken when one does."""

    def __init__(
        self, urls: Sequence[str], limit: int, total: int | None = None, headroom: int = 0,
        health: HealthPolicy | None = None, routing: RoutingPolicy | None = None, prober: Prober | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one base_url is needed")
        if limit < 1 or (total is not None and total < 1):
            raise ValueError("admission limits must be >= 1")
        self.replicas = [Replica(u, limit) for u in urls]
        self.total = total
        self.headroom = headroom
        self.interactive_until = 0.0  # headroom is kept while single calls or streams came recently
        self.health = health or HealthPolicy()
        self.routing = routing or RoutingPolicy()
        # With one replica a prefix has nowhere else to go: affinity would only keep its table, and its list
        # filter (belongs) would find no home recorded and send every prompt in a list of its own.
        self.affinity = self.routing.mode == "prefix_affinity" and len(self.replicas) > 1
        self._table = AffinityTable[Replica](self.routing.table_size)
        self.inflight = 0
        self._rr = 0
        self.prober = prober
        self.on_change: Callable[[], None] | None = None  # set once by bind()
        self._probes: dict[Replica, asyncio.Task[None]] = {}
        self.down_since: float | None = None  # when the last healthy replica was ejected
        self._waiters: list[asyncio.Future[None]] = []  # retries waiting for any replica to return
        self.closed = False
        check_distinct(urls)

    def bind(self, on_change: Callable[[], None]) -> None:
        """The dispatcher that admits work here: ``on_change()`` is called (on the loop) whenever a replica
        takes work again, so work that waited for one moves at once. One dispatcher per set."""
        if self.on_change is not None and self.on_change != on_change:
            raise RuntimeError("this ReplicaSet is bound to another dispatcher already")
        self.on_change = on_change

    # -- capacity and choice -------------------------------------------------------------
    def capacity(self) -> int:
        """Sequences all replicas together may hold (what a batch needs prepared to keep them busy)."""
        whole = sum(r.limit for r in self.replicas)
        return whole if self.total is None else min(whole, self.total)

    def interactive_seen(self, window_s: float = 2.0) -> None:
        """A single call or stream arrived: keep the headroom for the next ``window_s`` seconds."""
        self.interactive_until = time.monotonic() + window_s

    def free(self, r: Replica, bulk: bool) -> int:
        """Sequences ``r`` can still take. While single calls or streams keep coming, bulk work leaves
        ``headroom`` of each replica's limit for them (at most a quarter of it, so a small limit still
        serves bulk work); without them it may use the whole limit."""
        reserve = 0
        if bulk and self.headroom and time.monotonic() < self.interactive_until:
            reserve = min(self.headroom, r.limit // 4)
        room = r.limit - r.inflight - reserve
        if self.total is not None:
            room = min(room, self.total - self.inflight - min(reserve, self.total // 4))
        return room

    def _open(self, now: float, bulk: bool) -> list[Replica]:
        return [r for r in self.replicas if not r.ejected and r.busy_until <= now and self.free(r, bulk) > 0]

    def choose(self, bulk: bool, keys: Sequence[int] = ()) -> Replica | None:
        """The replica for the next request, or None when none can take work now."""
        now = time.monotonic()
        reps = self.replicas
        if len(reps) == 1:
            r = reps[0]
            return r if not r.ejected and r.busy_until <= now and self.free(r, bulk) > 0 else None
        open_ = self._open(now, bulk)
        if not open_:
            return None
        n = len(open_)
        self._rr = (self._rr + 1) % n
        least = min((open_[(self._rr + i) % n] for i in range(n)), key=lambda r: r.inflight)
        if not (self.affinity and keys):
            return least
        held = [r for r in self._table.holders(keys) if r in open_]
        pick = least
        if held:
            best = min(held, key=lambda r: r.inflight)
            lo = least.inflight
            if best.inflight - lo <= self.routing.balance_abs or best.inflight <= self.routing.balance_rel * lo:
                pick = best
        self._table.record(keys, pick)
        return pick

    def belongs(self, r: Replica, keys: Sequence[int]) -> bool:
        """Whether a prompt with these prefix keys may ride in a list going to ``r``: it has no shared
        prefix, or its prefix lives on ``r``. A prefix not seen yet waits to head a list of its own, so
        that it gets a home by load rather than by riding along."""
        return not keys or r in self._table.holders(keys)

    def next_open_at(self) -> float | None:
        """When the earliest paused (503) replica takes work again, if any is paused."""
        now = time.monotonic()
        waits = [r.busy_until for r in self.replicas if not r.ejected and r.busy_until > now]
        return min(waits) if waits else None

    def all_down(self) -> bool:
        return self.down_since is not None

    def never_answered(self) -> bool:
        """The model has one server and it has not answered since the pool was created: a refusal there
        is a wrong URL or a server not started, not a restart to wait for."""
        return len(self.replicas) == 1 and not self.replicas[0].answered

    def fail_fast_in(self) -> float | None:
        """None while some replica is healthy; else seconds until waiting calls fail (0: now)."""
        if self.down_since is None:
            return None
        if self.never_answered():
            return 0.0
        return max(0.0, self.down_since + self.health.fail_after_s - time.monotonic())

    def down_error(self) -> APIConnectionError:
        """What calls fail with while every replica is down: for one server, about that server."""
        if len(self.replicas) == 1:
            r = self.replicas[0]
            return server_down(r.base, r.last_error or "ejected", answered=r.answered)
        parts = "; ".join(f"{r.name}: {r.last_error or 'ejected'}" for r in self.replicas)
        return AllReplicasDownError(f"all {len(self.replicas)} replicas are down, calls fail until one answers "
                                    f"again ({parts})")

    # -- admission -------------------------------------------------------------------------
    def admit(self, r: Replica, n: int) -> Lease:
        r.inflight += n
        self.inflight += n
        return Lease(r, n)

    def release(self, lease: Lease) -> None:
        lease.replica.inflight -= lease.seqs
        self.inflight -= lease.seqs
        lease.seqs = 0

    def move(self, lease: Lease, to: Replica) -> None:
        """A retry on another replica: its sequences are counted there now (it may go over its
        limit for the retry, so a retry never waits behind new work)."""
        if lease.replica is not to:
            lease.replica.inflight -= lease.seqs
            to.inflight += lease.seqs
            lease.replica = to

    def for_retry(self, failed: Replica | None) -> Replica:
        """Where a retry goes: never the replica that just failed while another is healthy. With
        every replica ejected, the one that failed (the retry then waits its backoff and probes it)."""
        now = time.monotonic()
        healthy = [r for r in self.replicas if not r.ejected]
        if not healthy:
            return failed if failed is not None else self.replicas[0]
        others = [r for r in healthy if r is not failed] or healthy
        ready = [r for r in others if r.busy_until <= now] or others
        return min(ready, key=lambda r: (r.busy_until > now, r.inflight / r.limit))

    # -- outcomes ------------------------------------------------------------------------------
    def succeeded(self, r: Replica, seconds: float) -> None:
        r.failures = 0
        r.busy_streak = 0
        r.answered = True
        r.stats.ok(seconds)
        if r.ejected:  # a retry got through before the probe did
            self._restore(r)

    def failed(self, r: Replica, exc: BaseException) -> None:
        r.stats.error(type(exc).__name__)
        status = getattr(exc, "status_code", None)
        if status is not None:  # an HTTP status came back: the server is there
            r.answered = True
        if isinstance(exc, ServerError) and status == 503:
            r.busy_streak += 1
            pause = min(self.health.busy_max_s, self.health.busy_first_s * 2 ** (r.busy_streak - 1))
            r.busy_until = time.monotonic() + pause
            log.debug("replica %s answered 503: no new work for %.2fs", r.name, pause)
            return
        if isinstance(exc, APIConnectionError) and not exc.retryable:
            r.last_error = _reason(exc)  # a certificate that fails verification: a setting, not health
        elif isinstance(exc, APIConnectionError) and not exc.maybe_sent:
            self._eject(r, exc)  # refused, DNS: nothing reached the server
        elif isinstance(exc, (APIConnectionError, ServerError, InvalidResponseError)):
            r.failures += 1
            r.last_error = _reason(exc)
            if r.failures >= self.health.eject_after:
                self._eject(r, exc)

    def _eject(self, r: Replica, exc: BaseException) -> None:
        r.last_error = _reason(exc)
        if r.ejected:
            return
        r.ejected = True
        if all(x.ejected for x in self.replicas):
            self.down_since = time.monotonic()
        if self.affinity:
            self._table.forget(r)
        log.debug("ejecting replica %s after %s", r.name, type(exc).__name__)
        if self.prober is not None and not self.closed:
            with contextlib.suppress(RuntimeError):  # no running loop: nobody to probe for
                self._probes[r] = asyncio.get_running_loop().create_task(self._probe_loop(r))

    async def _probe_loop(self, r: Replica) -> None:
        delay = self.health.probe_first_s
        try:
            while r.ejected and not self.closed and self.prober is not None:
                await asyncio.sleep(delay)
                why = await self.prober(r.base, self.health.probe_timeout_s)
                if not r.ejected:
                    return
                if why is None:
                    self._restore(r)
                    return
                r.last_error = why
                delay = min(self.health.probe_max_s, delay * 2)
        finally:
            self._probes.pop(r, None)

    async def wait_healthy(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until some replica is healthy; True when one is."""
        if self.down_since is None:
            return True
        if timeout <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
        return self.down_since is None

    def _restore(self, r: Replica) -> None:
        r.ejected, r.failures, r.busy_streak = False, 0, 0
        r.answered = True
        self.down_since = None
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        log.debug("replica %s answers again; it takes work", r.name)
        if self.on_change is not None:
            self.on_change()

    async def aclose(self) -> None:
        self.closed = True
        tasks = list(self._probes.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {r.name: r.snapshot(now) for r in self.replicas}


def _reason(exc: BaseException) -> str:
    """A short, credential-free description of a failure for the all-down error and stats: for a connection
    that failed, what the HTTP library said (the message names the server)."""
    if isinstance(exc, APIConnectionError) and exc.detail:
        return _clip(exc.detail)
    return f"{type(exc).__name__}: {_clip(str(exc))}"


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
