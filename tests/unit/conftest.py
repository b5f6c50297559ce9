"""Fixtures for the unit tests; the fakes behind them are in ``_qwen_fakes.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _qwen_fakes import MOCK_URL, MODEL, LocalServer, Recorder, echo

from langchain_qwen_fast import BatchedChatQwen


@pytest.fixture
def mock_model() -> Iterator[Callable[..., tuple[BatchedChatQwen, Recorder]]]:
    """``mock_model(respond=echo, **fields) -> (model, recorder)``; models are closed afterwards."""
    made: list[BatchedChatQwen] = []

    def make(respond: Callable[..., Any] = echo, **fields: Any) -> tuple[BatchedChatQwen, Recorder]:
        rec = Recorder(respond)
        fields.setdefault("base_url", MOCK_URL)
        fields.setdefault("model", MODEL)
        model = BatchedChatQwen(
            http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), **fields
        )
        made.append(model)
        return model, rec

    yield make
    for m in made:
        m.close()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink exponential backoff so retry tests take milliseconds (Retry-After is unaffected)."""
    from langchain_qwen_fast import chat_models
    from langchain_qwen_fast._upstream import transport as _transport

    monkeypatch.setattr(
        chat_models,
        "RetryPolicy",
        functools.partial(_transport.RetryPolicy, backoff_base=0.005, backoff_max=0.02),
    )


@pytest.fixture
def local_server() -> Iterator[Callable[..., LocalServer]]:
    """``local_server(delay=0.05) -> LocalServer`` on a free loopback port; stopped afterwards."""
    servers: list[LocalServer] = []

    def start(delay: float = 0.0) -> LocalServer:
        s = LocalServer(delay).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
