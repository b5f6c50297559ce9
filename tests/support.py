"""Helpers shared by the test tiers (on ``sys.path`` through ``pythonpath`` in pyproject.toml): free loopback
ports, the doctor report's statuses, vLLM's ``/tokenize``, a model's four batch entry points run alike. Standard
library only at import time, so the vLLM tier's server helper (``tests/servers/vllm_server.py``) may use it too."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

#: A chat model's batch entry points: each takes (inputs, config, return_exceptions=..., **kwargs).
ENTRY_POINTS = ("batch", "abatch", "batch_as_completed", "abatch_as_completed")


def free_port() -> int:
    """A loopback port nothing listens on right now (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (for a launcher that takes a first port)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def statuses(report: Any) -> dict[str, str]:
    """A doctor report as ``{check name: status}``."""
    return {c.name: c.status for c in report.checks}


def check(report: Any, name: str) -> Any:
    """The doctor report's check called ``name``."""
    return next(c for c in report.checks if c.name == name)


def tokenize(http: Any, model: str, **body: Any) -> list[int]:
    """vLLM's ``POST /tokenize`` through an ``httpx.Client`` whose base URL is the server's root."""
    r = http.post("/tokenize", json={"model": model, **body})
    assert r.status_code == 200, r.text
    tokens: list[int] = r.json()["tokens"]
    return tokens


def run_entry_point(model: Any, entry: str, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
    """``model.<entry>(inputs, config, **kwargs)`` (one of :data:`ENTRY_POINTS`) from sync code, its outputs in input
    order. The ``_as_completed`` forms must yield each index exactly once."""
    if entry.startswith("a"):
        return asyncio.run(arun_entry_point(model, entry, inputs, config, **kwargs))
    if entry == "batch":
        return list(model.batch(inputs, config, **kwargs))
    if entry != "batch_as_completed":
        raise ValueError(f"unknown entry point {entry!r}; one of {ENTRY_POINTS}")
    return _in_order(list(model.batch_as_completed(inputs, config, **kwargs)), len(inputs))


async def arun_entry_point(model: Any, entry: str, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
    """:func:`run_entry_point` for the async entry points, from a running event loop."""
    if entry == "abatch":
        return list(await model.abatch(inputs, config, **kwargs))
    if entry != "abatch_as_completed":
        raise ValueError(f"not an async entry point: {entry!r}; one of {ENTRY_POINTS}")
    return _in_order([pair async for pair in model.abatch_as_completed(inputs, config, **kwargs)], len(inputs))


def _in_order(pairs: list[tuple[int, Any]], n: int) -> list[Any]:
    indexes = sorted(i for i, _ in pairs)
    assert indexes == list(range(n)), f"yielded indexes {indexes} for {n} inputs"
    by_index = dict(pairs)
    return [by_index[i] for i in range(n)]


def run_invoke(model: Any, entry: str, text: Any, config: Any = None, **kwargs: Any) -> Any:
    """What LangChain's per-call path gives ``text`` beside an entry point: ``invoke`` for a sync one, ``ainvoke``
    (under ``asyncio.run``) for an async one."""
    if entry.startswith("a"):
        return asyncio.run(model.ainvoke(text, config, **kwargs))
    return model.invoke(text, config, **kwargs)
