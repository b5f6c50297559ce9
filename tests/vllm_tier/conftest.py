"""Fixtures for the real-vLLM-on-CPU tier; every test under tests/vllm_tier gets ``vllm``.

Session fixtures:
- ``vllm_server``: vLLM with the full flags (hermes tool parser + auto tool choice, qwen3 reasoning
  parser, xgrammar structured outputs) serving the tiny scripted Qwen3 (see docs/vllm-cpu-tier.md).
- ``vllm_server_bare``: the same without tool parser / auto tool choice and without reasoning
  parser. Started lazily, only by tests that ask for it.

Both are ``tests/servers/vllm_server.VllmCpuServer`` objects (``.base_url`` ends in /v1,
``.root_url``, ``.model``, ``.pid``, ``.log_path``). On 2 cores at most ``QWEN_VLLM_MAX_SERVERS``
(default 1) servers run at once: starting one stops the other, and a test whose server was stopped
gets it restarted on the same port before it runs. Tests using ``vllm_server_bare`` are moved to the
end of the session so that this happens at most once, and each server is stopped right after the
last test that uses it. Not meant for pytest-xdist (each worker would start its own servers).

If ``.venv-vllm`` or the model is missing, the fixtures FAIL (never skip) and say what to run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from vllm_server import VllmCpuServer, VllmServerError, VllmTierNotReady  # tests/servers (stdlib only)

HERE = Path(__file__).resolve().parent

KINDS = {
    "vllm_server": {"tools": True, "reasoning": True},
    "vllm_server_bare": {"tools": False, "reasoning": False},
}


class ServerPool:
    """At most ``max_alive`` tier servers at once; remembers failures so later tests fail fast."""

    def __init__(self, max_alive: int) -> None:
        self.max_alive = max(1, max_alive)
        self.servers: dict[str, VllmCpuServer] = {}
        self.failures: dict[str, str] = {}
        self.starts: list[tuple[str, float, int]] = []  # (fixture, seconds to /health, RSS bytes)
        self.needed_now: frozenset[str] = frozenset()  # server fixtures of the test being set up

    def get(self, name: str, keep: frozenset[str] = frozenset()) -> VllmCpuServer:
        if name in self.failures:
            pytest.fail(self.failures[name], pytrace=False)
        server = self.servers.get(name)
        if server is None:
            server = self.servers[name] = VllmCpuServer(**KINDS[name])
        if server.running:
            return server
        others = [n for n, s in self.servers.items() if s.running and n != name and n not in keep]
        while others and sum(s.running for s in self.servers.values()) >= self.max_alive:
            self.servers[others.pop()].stop()
        try:
            server.start()
        except VllmTierNotReady as exc:
            msg = f"real vLLM tier not installed: {exc}"
            self.failures.update({n: msg for n in KINDS})
            pytest.fail(msg, pytrace=False)
        except VllmServerError as exc:
            self.failures[name] = f"{name} could not start: {exc}"
            pytest.fail(self.failures[name], pytrace=False)
        self.starts.append((name, server.startup_seconds or 0.0, server.rss_bytes()))
        return server

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()


_POOL_KEY = pytest.StashKey[ServerPool]()
_LAST_USER_KEY = pytest.StashKey[dict[str, str]]()  # server fixture -> nodeid of its last test


def _pool(config: pytest.Config) -> ServerPool:
    if _POOL_KEY not in config.stash:
        config.stash[_POOL_KEY] = ServerPool(int(os.environ.get("QWEN_VLLM_MAX_SERVERS", "1")))
    return config.stash[_POOL_KEY]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.vllm)
    # Bare-server tests last: the full server is then stopped (if needed) once, never restarted.
    uses_bare = [i for i in items if "vllm_server_bare" in getattr(i, "fixturenames", ())]
    if uses_bare:
        items[:] = [i for i in items if i not in uses_bare] + uses_bare


def pytest_collection_finish(session: pytest.Session) -> None:
    last: dict[str, str] = {}
    for item in session.items:
        for name in KINDS:
            if name in getattr(item, "fixturenames", ()):
                last[name] = item.nodeid
    session.config.stash[_LAST_USER_KEY] = last


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # A session fixture is created once; if its server was stopped to make room for the other one,
    # bring it back (same port, same URL) before a test that needs it runs.
    needed = frozenset(n for n in KINDS if n in getattr(item, "fixturenames", ()))
    if not needed:
        return
    pool = _pool(item.config)
    pool.needed_now = needed
    for name in needed:
        if name in pool.servers:
            pool.get(name, keep=needed)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # Free the ~3.4 GiB (and the cores) as soon as no later test needs a server; a rerun of a test
    # brings it back through pytest_runtest_setup.
    pool = item.config.stash.get(_POOL_KEY, None)
    if pool is None:
        return
    for name, nodeid in item.config.stash.get(_LAST_USER_KEY, {}).items():
        if nodeid == item.nodeid and name in pool.servers:
            pool.servers[name].stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _POOL_KEY in config.stash:
        config.stash[_POOL_KEY].close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    pool = terminalreporter.config.stash.get(_POOL_KEY, None)
    if pool is None or not pool.starts:
        return
    terminalreporter.section("real vLLM CPU tier")
    for name, seconds, rss in pool.starts:
        terminalreporter.write_line(
            f"{name}: /health after {seconds:.1f} s, RSS {rss / 2**30:.2f} GiB"
        )


@pytest.fixture(scope="session")
def vllm_server(request: pytest.FixtureRequest) -> Iterator[VllmCpuServer]:
    """vLLM CPU with tool parser (hermes, auto tool choice) and reasoning parser (qwen3)."""
    pool = _pool(request.config)
    yield pool.get("vllm_server", keep=pool.needed_now)
    pool.servers["vllm_server"].stop()


@pytest.fixture(scope="session")
def vllm_server_bare(request: pytest.FixtureRequest) -> Iterator[VllmCpuServer]:
    """vLLM CPU WITHOUT tool parser / auto tool choice and WITHOUT reasoning parser."""
    pool = _pool(request.config)
    yield pool.get("vllm_server_bare", keep=pool.needed_now)
    pool.servers["vllm_server_bare"].stop()


@pytest.fixture(scope="module")
def http(vllm_server: VllmCpuServer) -> Iterator[httpx.Client]:
    """A plain httpx client at the server's root (``/tokenize``, ``/health``, ``/v1/...``)."""
    with httpx.Client(base_url=vllm_server.root_url, timeout=120) as client:
        yield client
