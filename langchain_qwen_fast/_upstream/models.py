"""What the replicas of one dispatcher serve (``GET {base_url}/models``), looked up on the runtime loop.

Two readers, both rare: a model nobody named takes its name from here once per instance
(:meth:`ServedModels.choose`, the rule in ``_served.py``), and a 404 whose message names the model
is completed with what the replicas do serve and the change to make (:meth:`ServedModels.explain`).
Neither is on a request's path: a named model never asks, and a chosen name is kept by the instance.

One lookup at a time per dispatcher (concurrent askers share it), one ``GET`` per replica, kept
:data:`TTL_S` seconds; a replica that did not answer (refused, timed out, 5xx) is asked again after
:data:`RETRY_S`, so a server that comes up later is seen without a request storm meanwhile. The
lookups are not health probes: they never eject a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from langchain_qwen_fast._engines import HttpEngine
from langchain_qwen_fast._served import Choice, Served, choose, listed_models, mentions, not_served
from langchain_qwen_fast._upstream.replicas import ReplicaSet
from langchain_qwen_fast._urls import redact_url

log = logging.getLogger("langchain_qwen_fast")
TTL_S = 60.0
RETRY_S = 1.0
TIMEOUT_S = 5.0


class _Listing:
    """One replica's answer: its model ids, or None with the reason; ``final`` when a retry would say the same."""

    __slots__ = ("at", "final", "ids", "why")

    def __init__(self, ids: list[str] | None, why: str, final: bool) -> None:
        self.at, self.ids, self.why, self.final = time.monotonic(), ids, why, final

    def fresh(self) -> bool:
        return time.monotonic() - self.at < (TTL_S if self.final else RETRY_S)


def _read(status: int, body: bytes) -> _Listing:
    if status == 200:
        try:
            ids = listed_models(orjson.loads(body))
        except orjson.JSONDecodeError:
            ids = None
        if ids is not None:
            return _Listing(ids, "", True)
        return _Listing(None, "GET /models answered 200 without a model list", True)
    if status >= 500:
        return _Listing(None, f"GET /models answered HTTP {status}", False)
    return _Listing(None, f"GET /models answered HTTP {status}", True)  # 401/404/...: asking again says the same


class ServedModels:
    def __init__(self, replicas: ReplicaSet, engine: HttpEngine, timeout_s: float = TIMEOUT_S) -> None:
        self._bases = [r.base for r in replicas.replicas]
        self._engine = engine
        self._timeout = timeout_s
        self._listings: dict[str, _Listing] = {}
        self._pending: asyncio.Future[Any] | None = None
        self.choice: Choice | None = None  # the last conclusion for a model nobody named (stats)
        self._told: str | None = None  # the name last logged, so the INFO line comes once per change

    async def _get(self, base: str, headers: Mapping[str, str]) -> None:
        try:
            raw = await asyncio.wait_for(self._engine.get(base + "/models", headers, self._timeout), self._timeout)
            listing = _read(raw.status, raw.body)
        except asyncio.TimeoutError:
            listing = _Listing(None, f"GET /models timed out after {self._timeout:g} s", False)
        except Exception as e:  # refused, reset, not HTTP: the calls themselves will say it in full
            listing = _Listing(None, f"GET /models failed: {type(e).__name__}", False)
        self._listings[base] = listing

    async def served(self, headers: Mapping[str, str]) -> Served:
        """Each replica's model ids (None where it listed none), by URL without credentials."""
        for _ in range(2):  # a lookup already running may cover fewer replicas than are stale now
            stale = [b for b in self._bases if (x := self._listings.get(b)) is None or not x.fresh()]
            if not stale:
                break
            if self._pending is None or self._pending.done():
                hdrs = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                self._pending = asyncio.gather(*(self._get(b, hdrs) for b in stale))
            await asyncio.shield(self._pending)
        return {redact_url(b): x.ids if (x := self._listings.get(b)) is not None else None for b in self._bases}

    def settled(self) -> bool:
        """Whether every replica gave an answer that asking again would not change."""
        return all((x := self._listings.get(b)) is not None and x.final for b in self._bases)

    async def choose(self, default: str, headers: Mapping[str, str]) -> tuple[Choice, bool]:
        """The name a model nobody named uses, and whether that is settled (else ask again next call)."""
        choice = choose(default, await self.served(headers))
        self.choice = choice
        if choice.how == "discovered" and choice.name != self._told:
            self._told = choice.name
            log.info("qwen-fast: %s: calls use it", choice.detail)
        return choice, self.settled()

    async def explain(self, exc: BaseException, model: Any, headers: Mapping[str, str]) -> None:
        """Complete a 404 that names ``model`` with what the replicas serve and the fix (in place, once)."""
        if not isinstance(model, str) or getattr(exc, "_served_told", False) or not mentions(str(exc), model):
            return
        with contextlib.suppress(Exception):  # the 404 itself is the error; this only adds to its message
            served = await self.served(headers)
            if any(ids is not None for ids in served.values()):
                exc.args = (f"{exc} -- {not_served(model, served)}", *exc.args[1:])
        with contextlib.suppress(AttributeError):
            exc._served_told = True  # type: ignore[attr-defined]  # a list's items share one exception

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for b in self._bases:
            x = self._listings.get(b)
            out[redact_url(b)] = None if x is None else (x.ids if x.ids is not None else x.why)
        return out

    async def aclose(self) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            with contextlib.suppress(BaseException):
                await self._pending
