"""Prefix affinity's bookkeeping: which replicas served which leading part of a conversation.

Pure data structures (no I/O, no clock), so ``_replicas.py`` keeps only routing decisions. The SGLang
router keeps a radix tree per worker; the client's version keeps hashes of each turn boundary in one
bounded LRU table, which is enough to find the longest part of a conversation seen before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

#: What the table maps prefixes to (the replicas; the table never looks inside them).
R = TypeVar("R")

_IM_START = "<|im_start|>"


def prefix_keys(prompt: str | None, messages: Sequence[Mapping[str, Any]] | None) -> tuple[int, ...]:
    """Hashes of each leading part of a conversation, up to (not including) its last user turn.

    A rendered prompt is cut at each ``<|im_start|>``; a chat payload at each message. A lone user
    turn has no shared part and so no key (plain least-outstanding routing for it).
    """
    keys: list[int] = []
    h = 0
    if prompt is not None:
        last_user = prompt.rfind(_IM_START + "user")
        start = 0
        while True:
            pos = prompt.find(_IM_START, start + 1)
            if pos < 0 or pos > last_user:
                break
            h = hash((h, prompt[start:pos]))
            keys.append(h)
            start = pos
        return tuple(keys)
    if messages:
        last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        for m in messages[:last]:
            h = hash((h, m.get("role"), str(m.get("content"))))
            keys.append(h)
    return tuple(keys)


class AffinityTable(Generic[R]):
    """prefix hash -> the replicas that served it (most recent last); least recently used keys go first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map: OrderedDict[int, list[R]] = OrderedDict()

    def holders(self, keys: Sequence[int]) -> list[R]:
        for k in reversed(keys):  # the longest shared part wins
            got = self._map.get(k)
            if got is not None:
                self._map.move_to_end(k)
                return got
        return []

    def record(self, keys: Sequence[int], replica: R) -> None:
        m = self._map
        for k in keys:
            got = m.get(k)
            if got is None:
                m[k] = [replica]
            else:
                if replica not in got:
                    got.append(replica)
                m.move_to_end(k)
        while len(m) > self.size:
            m.popitem(last=False)

    def forget(self, replica: R) -> None:
        for k in [k for k, v in self._map.items() if replica in v]:
            v = self._map[k]
            v.remove(replica)
            if not v:
                del self._map[k]


__all__ = ["AffinityTable", "prefix_keys"]
