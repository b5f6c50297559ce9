"""Queue workers on Redis Streams (the ``[queue]`` extra): ``StreamWorker`` answers jobs, ``JobQueue`` submits them.

The modules: ``stream_worker`` (the consumer: reads, answers, acknowledges, reclaims), ``producer`` (the
producer side), ``jobs`` (the job and result formats), ``finish`` (the one server-side script that writes a
result, announces it and acknowledges the job), ``config`` (the worker's settings), ``state`` (the worker's
phases and the jobs it holds). The names below load
on first use, so the job formats stay importable without redis-py.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "JobQueue": "producer",
    "JobResult": "producer",
    "SyncJobQueue": "producer",
    "connect": "producer",
    "StreamWorker": "stream_worker",
    "WorkerConfig": "config",
    "admission_capacity": "config",
    "default_consumer": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
