"""Reliability tier: faults, concurrency hazards, backpressure, bad input and secrets, all against
the simulator (``langchain_qwen_fast.testing``) running as its own process on loopback.

Every test runs its inputs through ``harness.Ledger`` (each input: exactly one outcome); the rows
are printed as one markdown table at the end of the session. The soak (``test_soak.py``, marked
``soak``) runs only with ``--run-soak`` (``make soak``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import harness
import pytest

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast.testing import SimConfig, SimServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-soak",
        action="store_true",
        default=False,
        help="run the reliability soak (tests/reliability/test_soak.py; SOAK_SECONDS, default 600)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak", default=False):
        return
    skip = pytest.mark.skip(reason="soak: pass --run-soak (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = harness.RESULTS
    if not rows:
        return
    terminalreporter.write_sep("=", "reliability: outcome per input, by fault (lost and duplicated must be 0)")
    for line in harness.markdown_table(rows):
        terminalreporter.write_line(line)
    for line in harness.NOTES:
        terminalreporter.write_line(line)


# -- servers ---------------------------------------------------------------------------------------
def _sim(cfg: SimConfig) -> SimServer:
    """A SimServer whose child writes its stdout buffered.

    Works around a start-up race in ``SimServer`` (testing/process.py): the child's stdout is a
    temporary file whose offset the parent shares and moves (``seek(0)`` to read it). With
    ``PYTHONUNBUFFERED=1`` in the environment the child's ``print`` is two writes, and a seek
    between them makes the newline overwrite the "S" of ``SIM_LISTENING``: the parent never sees
    the line and start-up times out after 30 s. Buffered, the line is one write.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return SimServer(cfg, env=env)


@pytest.fixture(scope="session")
def sim_zero_session() -> Iterator[SimServer]:
    with _sim(SimConfig(latency="zero", seed=11)) as srv:
        yield srv


@pytest.fixture
def zero(sim_zero_session: SimServer) -> Iterator[SimServer]:
    """The shared zero-latency server with no faults and zeroed counters (restored afterwards)."""
    srv = sim_zero_session
    if not srv.running:  # a test killed it
        srv.start()
    srv.set_faults([])
    srv.reset()
    yield srv
    if srv.running:
        srv.set_faults([])


@pytest.fixture(scope="session")
def sim_h100_session() -> Iterator[SimServer]:
    """Like an H100 (continuous batching, real waiting), four times faster."""
    with _sim(SimConfig(latency="h100", speed=4.0, seed=5)) as srv:
        yield srv


@pytest.fixture
def h100(sim_h100_session: SimServer) -> Iterator[SimServer]:
    srv = sim_h100_session
    if not srv.running:
        srv.start()
    srv.set_faults([])
    srv.reset()
    yield srv
    if srv.running:
        srv.set_faults([])


@pytest.fixture
def scratch_sim() -> Iterator[Callable[..., SimServer]]:
    """``scratch_sim(**SimConfig fields)``: a server of the test's own (stalls, kills)."""
    made: list[SimServer] = []

    def start(**cfg: Any) -> SimServer:
        cfg.setdefault("latency", "zero")
        srv = _sim(SimConfig(**cfg)).start()
        made.append(srv)
        return srv

    yield start
    for s in made:
        s.stop()


# -- models ----------------------------------------------------------------------------------------
@pytest.fixture
def make_model() -> Iterator[Callable[..., BatchedChatQwen]]:
    """``make_model(srv_or_url, **fields)``: simulator's model name, max_tokens=16, timeout=30."""
    made: list[BatchedChatQwen] = []

    def make(target: SimServer | str | list[str], **fields: Any) -> BatchedChatQwen:
        fields.setdefault("model", harness.SIM_MODEL)
        fields.setdefault("max_tokens", 16)
        fields.setdefault("timeout", 30.0)
        base = target.base_url if isinstance(target, SimServer) else target
        m = BatchedChatQwen(base_url=base, **fields)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff of 25-50 ms, then 50-100 ms... (Retry-After unaffected): retries cost little."""
    from langchain_qwen_fast import chat_models
    from langchain_qwen_fast._upstream import transport as _transport

    monkeypatch.setattr(
        chat_models,
        "RetryPolicy",
        functools.partial(_transport.RetryPolicy, backoff_base=0.05, backoff_max=0.2),
    )
