"""Fixtures for the queue-worker tier (tests/integrations); the helpers are in ``queue_tier.py``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from queue_tier import SIM_MODEL, RedisServer, WorkerProcess

from langchain_qwen_fast._process import ChildProcess


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.alive(), "redis-server still running after stop()"


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """``start_worker(redis_url, base_urls, *extra_args)``: a worker subprocess, stopped (SIGTERM) at the end."""
    made: list[ChildProcess] = []

    def start(redis_url: str, base_urls: list[str], *extra: str, stream: str = "jobs",
              group: str = "qwen", model: str | None = SIM_MODEL, ready: str = "WORKER_READY",
              env: dict[str, str] | None = None) -> WorkerProcess:
        """``ready``: the stdout line to wait for (``WORKER_HTTP``: /health is up, the worker may not be ready);
        ``model=None`` passes no ``--model``."""
        named = ["--model", model] if model is not None else []
        argv = [sys.executable, "-m", "langchain_qwen_fast.cli", "worker", "--redis", redis_url,
                "--stream", stream, "--group", group, "--base-url", ",".join(base_urls), *named,
                "--max-tokens", "16", "--http-port", "0", "--log-level", "WARNING", *extra]
        holder: list[ChildProcess] = []
        child = ChildProcess(argv, ready=lambda: ready in holder[0].output(), name="qwen-fast worker",
                             startup_timeout=60, die_with_parent=True, env=env)
        holder.append(child)
        made.append(child)
        child.start()
        return WorkerProcess(child)

    yield start
    for child in made:
        child.stop(timeout=15)


