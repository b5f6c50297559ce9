"""Helpers of the queue-worker tier: a real ``redis-server`` and real ``qwen-fast worker`` processes.

Redis listens on a unix socket in the test's temporary folder (no port to collide with another test or a
system daemon), with the append-only file there too (``--appendfsync always``: a reply is sent only after
its write is on disk, so a SIGKILLed server restarts with everything it acknowledged). Every process is
a ``ChildProcess``: its own process group, stopped by PID, killed at exit if a test failed half-way.

Outside CI a machine without ``redis-server`` skips these tests and says how to install it; in CI
(``CI=true``) that is a failure, because ``make test`` installs it (``make queue-tier``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from langchain_qwen_fast._process import ChildProcess

SIM_MODEL = "Qwen/Qwen3-0.6B"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def need_redis() -> str:
    path = shutil.which("redis-server")
    if path is None:
        msg = "redis-server is not installed: bash tests/servers/redis.sh install (or make queue-tier)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; CI must have it", pytrace=False)
        pytest.skip(msg)
    return path


class RedisServer:
    """One redis-server on a unix socket; ``restart(kill=True)`` SIGKILLs it and starts it on its own files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sock = folder / "redis.sock"
        self.child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def _answers(self) -> bool:
        if not self.sock.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.sock))
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")  # "-LOADING" while the append-only file is read back
        except OSError:
            return False

    def start(self) -> RedisServer:
        argv = [need_redis(), "--port", "0", "--unixsocket", str(self.sock), "--unixsocketperm", "700",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--loglevel", "warning"]
        self.child = ChildProcess(argv, ready=self._answers, name="redis-server", startup_timeout=30,
                                  die_with_parent=True).start()
        return self

    def kill(self) -> None:
        assert self.child is not None
        self.child.kill()

    def restart(self, *, kill: bool) -> None:
        assert self.child is not None
        if kill:
            self.child.kill()
        else:
            self.child.stop()
        self.start()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()


class WorkerProcess:
    """A ``qwen-fast worker`` child; ``http`` is its /health and /metrics address (its ``WORKER_HTTP`` line);
    ``consumer`` and ``capacity`` come from its ``WORKER_READY`` line, once it has printed one."""

    def __init__(self, child: ChildProcess) -> None:
        self.child = child
        m = re.search(r"WORKER_HTTP http=(\S+)", child.output())
        assert m, child.output_tail()
        self.http = m.group(1)
        self.consumer, self.capacity = "", 0
        self.read_ready()

    def read_ready(self) -> bool:
        """Whether the worker said it is ready (reading jobs); fills ``consumer`` and ``capacity`` when so."""
        m = re.search(r"WORKER_READY consumer=(\S+) capacity=(\d+)", self.child.output())
        if m:
            self.consumer, self.capacity = m.group(1), int(m.group(2))
        return m is not None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with _OPENER.open(self.http + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value, from /metrics."""
        status, text = self.get("/metrics")
        assert status == 200, text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        status, text = self.get("/health")
        return status, json.loads(text)


async def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``check`` (sync or async) until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
