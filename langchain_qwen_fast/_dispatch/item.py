"""One input on its way through the dispatcher: what it sends, who hears its outcome, which flow it waits in.

An item is one of three kinds, fixed when it is made, and the dispatcher treats each its own way:

- ``LIST``: a rendered prompt that may share a ``/v1/completions`` list with items of the same list key;
- ``CHAT``: one ``/v1/chat/completions`` request body (tools, structured output, anything a list cannot carry);
- ``STREAM``: a slot for one streamed request; its outcome is the ``Lease`` it was admitted on, and the stream's
  owner sends the request itself.

Its outcome goes to its ``sink``, once, on the runtime loop (never twice: ``done`` is set first), as
``(item, result, None)`` or ``(item, None, exception)``. A sink hears outcomes in lists: the 32 answers of a
completions list reach their caller's sink in one call. No ``asyncio.Future`` per item: a batch of 100,000 inputs
would make 100,000 futures and schedule two callbacks on each, which cost more loop time than the HTTP work of the
lists that carry them.

A module of its own so that the scheduler (which queues items) and the call layer (which makes them) need not
import the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from langchain_qwen_fast._dispatch.scheduler import Flow

LIST: Final = "list"
CHAT: Final = "chat"
STREAM: Final = "stream"

#: One item's outcome: ``(item, result, None)`` or ``(item, None, exception)``; a cancelled item's exception is
#: ``asyncio.CancelledError``.
Outcome = tuple["Item", Any, "BaseException | None"]
#: Hears outcomes, several at a time.
Sink = Callable[[list[Outcome]], None]


@dataclass(eq=False, slots=True)
class Item:
    """One input: its kind, what it sends, and the dispatcher's bookkeeping while it waits or runs."""

    kind: str
    headers: Mapping[str, str]
    deadline_s: float | None
    model: str
    payload: dict[str, Any] | None = None  # CHAT: the request body
    prompt: str | None = None  # LIST: the rendered prompt
    list_key: bytes | None = None  # LIST: items with equal list keys may share a list
    list_params: dict[str, Any] | None = None  # LIST: the list request's parameters
    est_tokens: int = 0
    chat: Any = None  # LIST: the conversation (request dicts, or the text of one user turn), for a chat request
    chat_params: dict[str, Any] | None = None  # LIST: the chat request's parameters (shared by the call's items)
    # -- set when submitted ---------------------------------------------------------------
    sink: Sink | None = None
    tag: int = 0  # the submitter's number for this item
    flow: Flow | None = None
    enqueued: float = 0.0
    task: asyncio.Task[Any] | None = None  # the request carrying it, once sent
    pkeys: tuple[int, ...] | None = None  # prefix hashes, computed once when routing by prefix affinity
    done: bool = False  # its outcome was delivered (or it was cancelled)

    def as_chat(self) -> Item:
        """This list item as the chat request that asks the same (for a server that refuses lists)."""
        if self.kind == LIST:
            chat = self.chat
            messages = [{"role": "user", "content": chat}] if isinstance(chat, str) else chat
            self.payload = {**(self.chat_params or {}), "messages": messages}
            self.kind, self.prompt, self.chat = CHAT, None, None
        return self
