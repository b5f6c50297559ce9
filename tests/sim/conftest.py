"""Fixtures for the simulator's own tests: one server process per configuration."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from langchain_qwen_fast.testing import SimConfig, SimServer


@pytest.fixture(scope="module")
def zero() -> Iterator[SimServer]:
    """Zero latency, default reasoning field: most shape tests and per-request faults run here."""
    with SimServer(SimConfig(latency="zero", seed=7)) as srv:
        yield srv


@pytest.fixture(scope="module")
def zero_rc() -> Iterator[SimServer]:
    """The old vLLM/SGLang reasoning field name."""
    with SimServer(SimConfig(latency="zero", reasoning_field="reasoning_content")) as srv:
        yield srv


@pytest.fixture
def faulty() -> Iterator[SimServer]:
    """A fresh server per test for server-wide fault lists and counters."""
    with SimServer(SimConfig(latency="zero", seed=3)) as srv:
        yield srv


@pytest.fixture
def client(zero: SimServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=zero.url, timeout=10.0) as c:
        yield c
