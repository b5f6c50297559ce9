"""Each item's outcome, delivered once: counted in the stats, then handed to the item's sink.

Apart from the dispatcher because both its pump (cancelled and failed items) and its requests (answers) settle items,
and neither needs the other to do it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from langchain_qwen_fast._dispatch.item import Item, Outcome
from langchain_qwen_fast._errors import ClientClosedError
from langchain_qwen_fast._stats import DispatchStats

log = logging.getLogger("langchain_qwen_fast")


class Outcomes:
    """Settles items: an outcome reaches its sink once, a cancelled item's late answer is discarded."""

    def __init__(self, stats: DispatchStats) -> None:
        self.stats = stats
        self.closed = False  # set by the dispatcher's close: cancelled requests then say so

    def settle(self, item: Item, result: Any = None, exc: BaseException | None = None) -> None:
        """Deliver ``item``'s outcome to its sink, once: a cancelled item's late answer is discarded."""
        if not item.done:
            self.settle_many([(item, result, exc)])

    def settle_many(self, outcomes: list[Outcome]) -> None:
        """:meth:`settle` for several items at once (a list's answers): counted, then delivered."""
        live = [o for o in outcomes if not o[0].done]
        if not live:
            return
        now, stats, lat = time.monotonic(), self.stats, []
        for it, _, exc in live:
            if exc is None:
                lat.append(now - it.enqueued)
            elif isinstance(exc, asyncio.CancelledError):
                stats.cancelled += 1
            else:
                lat.append(now - it.enqueued)
                stats.items_failed += 1
        stats.item_latency.extend(lat)
        self.deliver(live)

    @staticmethod
    def deliver(outcomes: list[Outcome]) -> None:
        """Mark each item done and hand the outcomes to their sinks, one call per run of items with the same sink."""
        run: list[Outcome] = []
        sink: Any = None
        for o in outcomes:
            it = o[0]
            it.done = True
            # The request body is never needed again; drop it now (100k pending items: ~1 KB each).
            it.payload = it.prompt = None
            if it.sink is not sink:
                Outcomes._hand(sink, run)
                run, sink = [], it.sink
            run.append(o)
        Outcomes._hand(sink, run)

    @staticmethod
    def _hand(sink: Any, outcomes: list[Outcome]) -> None:
        if sink is None or not outcomes:
            return
        try:
            sink(outcomes)
        except Exception:  # a broken sink must not stop the dispatcher or the items after it
            log.exception("qwen-fast result sink failed")

    def abandon(self, item: Item) -> None:
        """The request was cancelled: by its caller (cancel the item) or by close() (say so)."""
        if self.closed:
            self.settle(item, exc=ClientClosedError("the model was closed while this call was in flight"))
        else:
            self.settle(item, exc=asyncio.CancelledError())
