"""The dispatcher's requests: one chat request, or one completions list (split on a 400 until the bad prompt stands
alone, or sent as chat requests to a server that refuses lists), each item settled with its answer or its error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from langchain_qwen_fast._answers import chat_answer, list_answers
from langchain_qwen_fast._dispatch.item import Item
from langchain_qwen_fast._dispatch.outcomes import Outcomes
from langchain_qwen_fast._errors import BadRequestError, ContextLengthError
from langchain_qwen_fast._stats import DispatchStats
from langchain_qwen_fast._upstream.replicas import Lease, Replica
from langchain_qwen_fast._upstream.transport import Transport, deadline_for

log = logging.getLogger("langchain_qwen_fast")
#: What a server answers when one prompt of a list is bad: the whole list is rejected, so split it.
_SPLITTABLE = (BadRequestError, ContextLengthError)


class Requests:
    """Sends what the pump granted and settles every item it carried, whatever happens."""

    def __init__(self, transport: Transport, stats: DispatchStats, outcomes: Outcomes) -> None:
        self.transport, self.stats, self.outcomes = transport, stats, outcomes
        self._checks: dict[Replica, asyncio.Future[None]] = {}  # a replica's list check under way

    async def send_chat(self, item: Item, lease: Lease) -> None:
        try:
            await self._post_chat(item, lease)
        except asyncio.CancelledError:
            self.outcomes.abandon(item)
            raise
        finally:
            self.stats.sent(1)

    async def _post_chat(self, item: Item, lease: Lease) -> None:
        """Send ``item`` as a chat request and settle it with the answer or the error (a cancel propagates)."""
        timeout = item.deadline_s
        try:
            resp = await self.transport.post_json("/chat/completions", item.payload or {}, item.headers,
                                                  deadline_for(timeout), timeout, lease)
            self.outcomes.settle(item, chat_answer(resp, item.model))
        except Exception as e:
            self.outcomes.settle(item, exc=e)

    async def send_list(self, items: list[Item], lease: Lease) -> None:
        try:
            await self._send_list(items, lease)
        except BaseException as e:  # never leave an item without an outcome
            for it in items:
                if isinstance(e, asyncio.CancelledError):
                    self.outcomes.abandon(it)
                else:
                    self.outcomes.settle(it, exc=e)
            if isinstance(e, asyncio.CancelledError):
                raise

    async def _send_list(self, items: list[Item], lease: Lease) -> None:
        live = [it for it in items if not it.done]
        if not live:
            return
        self.stats.sent(len(live))
        head = live[0]
        payload = dict(head.list_params or {})
        payload["prompt"] = [it.prompt for it in live] if len(live) > 1 else head.prompt
        timeout = head.deadline_s
        try:
            resp = await self.transport.post_json("/completions", payload, head.headers, deadline_for(timeout),
                                                  timeout, lease)
        except _SPLITTABLE as e:
            if len(live) == 1:
                self.outcomes.settle(head, exc=e)
                return
            rep = lease.replica
            while rep.lists is None and rep in self._checks:  # lists refused beside the one being checked wait
                await asyncio.shield(self._checks[rep])
            if rep.lists is False:
                await asyncio.gather(*(self._chat_in_list(it, lease) for it in live if not it.done))
                return
            if rep.lists is None and await self._check_lists(live, lease):
                return
            self.stats.splits += 1
            mid = len(live) // 2
            await asyncio.gather(self._send_list(live[:mid], lease), self._send_list(live[mid:], lease))
            return
        except Exception as e:
            self.outcomes.settle_many([(it, None, e) for it in live])
            return
        self._settle_list(live, resp)

    def _settle_list(self, items: list[Item], resp: Any) -> None:
        """Settle ``items`` with their answers in a list response, or all with why it has none for them."""
        try:
            answers = list_answers(resp, len(items), items[0].model)
        except Exception as e:
            self.outcomes.settle_many([(it, None, e) for it in items])
            return
        self.outcomes.settle_many([(it, answer, None) for it, answer in zip(items, answers, strict=True)])

    async def _check_lists(self, live: list[Item], lease: Lease) -> bool:
        """:meth:`_lists_refused`, once at a time per replica (lists refused together wait for its answer)."""
        rep = lease.replica
        done = self._checks[rep] = asyncio.get_running_loop().create_future()
        try:
            return await self._lists_refused(live, lease)
        finally:
            if self._checks.get(rep) is done:
                del self._checks[rep]
            done.set_result(None)

    async def _lists_refused(self, live: list[Item], lease: Lease) -> bool:
        """A whole list was rejected (400) by a replica never checked: a bad prompt in it, or a server that takes no
        list at all (vLLM's Rust front end answers 400 to every list prompt). The head alone tells which, in one or
        two requests whose answer is the head's own: as a list of one (accepted: the lists are fine, the bad prompt
        is among the others: split them as usual), then as a plain string (accepted where the list of one was not:
        the server refuses lists; every item then goes as a chat request, here and from now on). True when the items
        were answered here."""
        rep, head = lease.replica, live[0]
        timeout = head.deadline_s
        one = {**(head.list_params or {}), "prompt": [head.prompt]}
        try:
            resp = await self.transport.post_json("/completions", one, head.headers, deadline_for(timeout), timeout,
                                                  lease)
        except _SPLITTABLE:
            pass
        except Exception:
            return False  # something else went wrong: the usual splitting decides
        else:
            rep.lists = True
            self._settle_list([head], resp)
            await self._send_list(live[1:], lease)
            return True
        single = {**(head.list_params or {}), "prompt": head.prompt}
        try:
            resp = await self.transport.post_json("/completions", single, head.headers, deadline_for(timeout),
                                                  timeout, lease)
        except Exception:
            return False  # the head itself is bad: splitting finds it
        rep.lists = False
        log.warning("qwen-fast: %s refuses completions lists (HTTP 400 to a list prompt that it answers as a "
                    "string); it gets chat requests from now on", rep.name)
        self._settle_list([head], resp)
        await asyncio.gather(*(self._chat_in_list(it, lease) for it in live[1:] if not it.done))
        return True

    async def _chat_in_list(self, item: Item, lease: Lease) -> None:
        """One item of a refused list, asked again as a chat request on the list's admission."""
        item.as_chat()
        await self._post_chat(item, lease)
