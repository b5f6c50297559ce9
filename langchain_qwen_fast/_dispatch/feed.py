"""One caller's batch on its way into the dispatcher: fed as it is prepared, at most ``limit`` at a time.

Apart from ``dispatcher.py`` because it is the caller's side of the queue (what one batch has handed over
and what it still holds back), not the dispatcher's.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from langchain_qwen_fast._dispatch.dispatcher import Dispatcher
from langchain_qwen_fast._dispatch.item import Item, Outcome
from langchain_qwen_fast._dispatch.scheduler import Flow

log = logging.getLogger("langchain_qwen_fast")


class Submission:
    """One caller's batch (one flow), fed to the dispatcher as it arrives and at most ``limit`` items at a time.

    ``add`` may be called several times: a large batch is prepared in chunks, and the first
    requests go out while later inputs are still being prepared. ``on_results`` hears each item's
    ``(tag, result, exception)`` once, in completion order, several at a time (a list's answers together),
    where ``tag`` is the item's own (the caller numbers its items). Only what has no outcome yet is kept: a
    finished item is dropped at once.
    """

    def __init__(
        self, dispatcher: Dispatcher, limit: int | None,
        on_results: Callable[[list[tuple[int, Any, BaseException | None]]], None], flow: Flow,
    ) -> None:
        self.dispatcher, self.on_results, self.flow = dispatcher, on_results, flow
        self.limit = limit if limit and limit > 0 else None
        self._waiting: deque[Item] = deque()  # added, not yet handed to the dispatcher
        self._live: dict[int, Item] = {}  # handed over, no outcome yet (by tag)
        self.cancelled = False
        self._sink = self._done  # one object for every item: the dispatcher hands a list's outcomes over at once

    def add(self, items: list[Item]) -> None:
        if self.cancelled:  # the caller has gone; nobody would read these results
            return
        sink = self._sink
        for it in items:
            it.sink = sink
        if self.limit is None and not self._waiting:
            self._hand_over(items)
        else:
            self._waiting.extend(items)
            self._fill()

    def _fill(self) -> None:
        room = len(self._waiting) if self.limit is None else self.limit - len(self._live)
        if room > 0 and self._waiting:
            w = self._waiting
            self._hand_over([w.popleft() for _ in range(min(room, len(w)))])

    def _hand_over(self, items: list[Item]) -> None:
        live = self._live
        for it in items:
            live[it.tag] = it
        self.dispatcher.submit(items, self.flow)

    def _done(self, outcomes: list[Outcome]) -> None:
        pop = self._live.pop
        triples = []
        for it, result, exc in outcomes:
            pop(it.tag, None)
            triples.append((it.tag, result, exc))
        try:
            self.on_results(triples)
        except Exception:  # a broken sink must not stop the feed
            log.exception("qwen-fast result sink failed")
        if self._waiting and not self.cancelled:
            self._fill()

    def cancel(self) -> None:
        self.cancelled = True
        self._waiting.clear()
        self.dispatcher.cancel_flow(self.flow)
        self.dispatcher.cancel(list(self._live.values()))
