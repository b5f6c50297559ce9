"""One caller's batch on its way into the dispatcher: fed as it is prepared, at most ``limit`` at a time.

Apart from ``_batcher.py`` because it is the caller's side of the queue (what one batch has handed over
and what it still holds back), not the dispatcher's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from langchain_qwen_fast._dispatch.dispatcher import Dispatcher
from langchain_qwen_fast._dispatch.item import Item
from langchain_qwen_fast._dispatch.scheduler import Flow

log = logging.getLogger("langchain_qwen_fast")


class Submission:
    """One caller's batch (one flow), fed to the dispatcher as it arrives and at most ``limit`` items at a time.

    ``add`` may be called several times: a large batch is prepared in chunks, and the first
    requests go out while later inputs are still being prepared. ``on_result(index, result,
    exception)`` fires once per item, in completion order; ``index`` counts across all ``add`` calls.
    Only what has no outcome yet is kept: a finished item is dropped at once.
    """

    def __init__(
        self, dispatcher: Dispatcher, limit: int | None, on_result: Callable[[int, Any, BaseException | None], None],
        flow: Flow,
    ) -> None:
        self.dispatcher, self.on_result, self.flow = dispatcher, on_result, flow
        self.limit = limit if limit and limit > 0 else None
        self._waiting: deque[tuple[int, Item]] = deque()  # added, not yet handed to the dispatcher
        self._live: dict[int, Item] = {}  # handed over, no outcome yet
        self._count = 0
        self.cancelled = False

    def add(self, items: list[Item]) -> None:
        if self.cancelled:  # the caller has gone; nobody would read these results
            return
        for it in items:
            self._waiting.append((self._count, it))
            self._count += 1
        self._fill()

    def _fill(self) -> None:
        while self._waiting and (self.limit is None or len(self._live) < self.limit):
            i, item = self._waiting.popleft()
            self._live[i] = item
            fut = self.dispatcher.submit(item, self.flow)
            fut.add_done_callback(lambda f, i=i: self._done(i, f))  # type: ignore[misc]

    def _done(self, index: int, fut: asyncio.Future[Any]) -> None:
        self._live.pop(index, None)
        if fut.cancelled():
            exc: BaseException | None = asyncio.CancelledError()
            result = None
        else:
            exc = fut.exception()
            result = None if exc else fut.result()
        try:
            self.on_result(index, result, exc)
        except Exception:  # a broken sink must not stop the feed
            log.exception("qwen-fast result sink failed")
        if not self.cancelled:
            self._fill()

    def cancel(self) -> None:
        self.cancelled = True
        self._waiting.clear()
        self.dispatcher.cancel_flow(self.flow)
        for it in list(self._live.values()):
            if not it.future.done():
                it.future.cancel()
