"""``qwen-fast worker``'s readiness: Redis answers, and the replicas serve the model the worker's calls carry.

A worker whose servers serve another model name reads every job and fails each one with a 404, while a
plain "does /v1/models answer" check calls it ready. So readiness asks each replica what it serves
(``GET {base_url}/models``, with the model's own headers) and applies the client's rule for the name
(``_served.py``: a name given is used as given; a model nobody named takes the one model served):

- ready: Redis answers PING, at least one replica serves the name, and no replica that answers lists
  models without it (a replica that does not answer at all is the client's to route around, as before);
- otherwise ``/health`` answers 503 with the reason, and the worker does not start reading jobs until
  the check passes (:meth:`Readiness.wait`, checking every second, logging each new reason once at
  WARNING), so it becomes ready by itself when the server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from langchain_qwen_fast._served import ENV, Served, choose, describe, is_named, listed_models
from langchain_qwen_fast._urls import redact_url

log = logging.getLogger("langchain_qwen_fast.worker")


def _worker_fix(name: str) -> str:
    return f"start the worker with --model {name} (or {ENV}={name})"


class Readiness:
    """The /health answer (cached 1 s), and the wait before the worker says ready."""

    def __init__(self, worker: Any, model: Any, headers: dict[str, str], every_s: float = 1.0) -> None:
        self.worker, self.model, self.every_s = worker, model, every_s
        self.urls: list[str] = list(model.base_urls)
        self.headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._at = 0.0
        self._last: tuple[bool, dict[str, Any]] = (False, {})
        self._session: Any = None
        self._told: str | None = None

    async def _models(self, url: str) -> list[str] | str:
        """The ids ``url`` serves, or why there are none."""
        import aiohttp

        try:
            async with self._session.get(url.rstrip("/") + "/models", headers=self.headers) as r:
                if r.status != 200:
                    return f"GET /models answered HTTP {r.status}"
                ids = listed_models(await r.json(content_type=None))
                return "GET /models answered without a model list" if ids is None else ids
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            return f"GET /models failed ({type(e).__name__})"

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, detail)``: detail has ``reason`` (when not ready), ``model``, ``redis`` and, per
        replica (URL without credentials), whether it serves the model."""
        if time.monotonic() - self._at < 1.0:
            return self._last
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0), trust_env=False)
        broker, *answers = await asyncio.gather(self.worker.healthy(), *(self._models(u) for u in self.urls))
        shown = [redact_url(u) for u in self.urls]
        served: Served = {u: (a if isinstance(a, list) else None) for u, a in zip(shown, answers, strict=True)}
        name, reason = self._name(served)
        detail: dict[str, Any] = {"model": name, "redis": broker}
        detail.update({u: name is not None and a is not None and name in a for u, a in served.items()})
        if not broker:
            reason = reason or "Redis does not answer PING"
        elif reason is None and not any(detail[u] for u in shown):
            why = "; ".join(f"{u}: {a}" for u, a in zip(shown, answers, strict=True) if isinstance(a, str))
            reason = f"no replica serves {name}: {why or describe(served)}"
        ready = reason is None
        if reason is not None:
            detail["reason"] = reason
        self._at, self._last = time.monotonic(), (ready, detail)
        return self._last

    def _name(self, served: Served) -> tuple[str | None, str | None]:
        """The name the model's calls carry, and why the replicas that answer are not ready for it."""
        requested: str = self.model.model_name
        if is_named(requested):
            name = requested
        else:
            choice = choose(requested, served)
            if choice.name is None:
                return None, choice.detail
            name = choice.name
        wrong = {u: ids for u, ids in served.items() if ids is not None and name not in ids}
        if wrong:
            first = next((ids[0] for ids in wrong.values() if ids), None)
            how = _worker_fix(first) if first else "start the server with the model"
            return name, f"{name} is not served: {describe(wrong, by_url=len(served) > 1)}; {how}"
        return name, None

    async def wait(self, stop: asyncio.Event) -> bool:
        """Until ready (True) or ``stop`` (False); each new reason is logged once at WARNING."""
        while not stop.is_set():
            ready, detail = await self.check()
            if ready:
                if self._told is not None:
                    log.warning("ready now: every replica that answers serves %s", detail["model"])
                return True
            if detail["reason"] != self._told:
                self._told = detail["reason"]
                log.warning("not ready (checking every %g s): %s", self.every_s, self._told)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
