"""Helpers shared by the test tiers (on ``sys.path`` through ``pythonpath`` in pyproject.toml): free loopback
ports, the doctor report's statuses, and vLLM's ``/tokenize``. Standard library only at import time, so the
vLLM tier's server helper (``tests/servers/vllm_server.py``) may use it too."""

from __future__ import annotations

import random
import socket
from typing import Any


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
