"""A queue worker's state: its phase (running -> draining -> stopped, with one drain deadline) and what it holds.

What each of ``StreamWorker``'s loops does in each phase is said once, in :data:`DOES`:

| activity | running | draining | stopped |
|---|---|---|---|
| read: the reader's XREADGROUP, up to the free capacity | yes | no (the reader returns) | no |
| reclaim: the keeper's XAUTOCLAIM, lag and trim | yes | no | no |
| heartbeat: the keeper's XCLAIM JUSTID of what is held | yes | yes (held jobs stay this worker's) | no |
| answer: model calls for what is held | yes | yes, until the drain deadline | no (cancelled; jobs stay pending) |
| write: results and acknowledgements | yes | yes | what is queued, then the writer returns |

Loops end by reading the phase at each blocking step (a read blocks at most ``block_s``), never by ``cancel()``: a
cancel that lands as a redis-py command starts can be swallowed, and the task then reads on (redis-py#2028).
Every change a loop may wait for (the phase, room in the held table, results to write, an answer finished) calls
:meth:`WorkerState.changed`, and each loop waits for its own condition with :meth:`WorkerState.until`.

The held table is the one record of the jobs this worker holds (read or reclaimed, not yet acknowledged or given
up): its size against the capacity is what the reader may read, a job already in it is not taken twice (XAUTOCLAIM
can hand back one of this worker's own entries), and the heartbeat refreshes exactly its entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable
from typing import Literal

Activity = Literal["read", "reclaim", "heartbeat", "answer", "write"]


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


#: What the worker does in each phase (the table in the module docstring).
DOES: dict[Phase, frozenset[Activity]] = {
    Phase.RUNNING: frozenset({"read", "reclaim", "heartbeat", "answer", "write"}),
    Phase.DRAINING: frozenset({"heartbeat", "answer", "write"}),
    Phase.STOPPED: frozenset({"write"}),
}


class WorkerState:
    """The phase, the drain deadline, and one wake-up for every loop that waits on a change."""

    def __init__(self) -> None:
        self.phase = Phase.RUNNING
        self.drain_deadline: float | None = None  # monotonic; set when draining starts
        self._changed = asyncio.Event()

    def does(self, activity: Activity) -> bool:
        return activity in DOES[self.phase]

    def drain(self, seconds: float) -> float:
        """Stop reading; answer what is held until the returned deadline (``seconds`` from now)."""
        if self.phase is Phase.RUNNING:
            self.phase, self.drain_deadline = Phase.DRAINING, time.monotonic() + seconds
            self.changed()
        return self.drain_deadline if self.drain_deadline is not None else time.monotonic()

    def stop(self) -> None:
        self.phase = Phase.STOPPED
        self.changed()

    def changed(self) -> None:
        """Wake every loop waiting in :meth:`until` (each checks its own condition again)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``ready()`` holds (checked at each change) or ``timeout`` seconds pass; returns ``ready()``."""
        end = None if timeout is None else time.monotonic() + timeout
        while not ready():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            changed = self._changed
            if left is None:
                await changed.wait()
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        return True


class HeldJobs:
    """The jobs (stream entry ids) this worker holds, each with when it was taken (monotonic); at most
    ``capacity`` are taken by reads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, eid: object) -> bool:
        return eid in self._held

    @property
    def free(self) -> int:
        """How many more jobs a read may take."""
        return self.capacity - len(self._held)

    def take(self, eid: bytes) -> bool:
        """Hold ``eid``; False when it is held already (it is being answered: never twice)."""
        if eid in self._held:
            return False
        self._held[eid] = time.monotonic()
        return True

    def release(self, eid: bytes) -> None:
        self._held.pop(eid, None)

    def ids(self) -> list[bytes]:
        return list(self._held)

    def oldest_s(self) -> float | None:
        """Seconds since the longest-held job was taken (None when nothing is held)."""
        return time.monotonic() - min(self._held.values()) if self._held else None
