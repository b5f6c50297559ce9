"""One input on its way through the dispatcher: what it sends, where its answer goes, which flow it waits in.

A module of its own so that the scheduler (which queues items) and the call layer (which makes them)
need not import the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_qwen_fast._dispatch.scheduler import Flow


@dataclass(eq=False, slots=True)
class Item:
    """One input on its way: the chat payload, or the rendered prompt when a list may carry it."""

    payload: dict[str, Any]
    headers: Mapping[str, str]
    deadline_s: float | None
    model: str
    prompt: str | None = None
    list_key: bytes | None = None  # completions items with equal list keys may share a list
    list_params: dict[str, Any] | None = None
    est_tokens: int = 0
    stream_slot: bool = False
    future: asyncio.Future[Any] = field(default=None)  # type: ignore[arg-type]  # set by submit()
    enqueued: float = 0.0
    task: asyncio.Task[Any] | None = None
    flow: Flow | None = None
    pkeys: tuple[int, ...] | None = None  # prefix hashes, computed once when routing by prefix affinity
