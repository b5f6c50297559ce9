"""A queue worker's settings, checked when built, and the admission capacity it reads jobs up to."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from langchain_qwen_fast.integrations.redis_streams.jobs import Keys


def default_consumer() -> str:
    """Unique per process: a restarted worker must not inherit (and never reclaim) a dead one's name."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def client_name(consumer: str) -> str:
    """The name a worker gives its Redis connections (``CLIENT LIST`` shows which worker holds which): Redis
    refuses names with spaces or characters outside printable ASCII, so those become ``_``."""
    return "qwen-worker:" + "".join(c if "!" <= c <= "~" else "_" for c in consumer)


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker reads, reclaims and answers; ``max_in_flight=None`` takes the model's admission capacity."""

    stream: str
    group: str
    consumer: str = field(default_factory=default_consumer)
    max_in_flight: int | None = None
    claim_idle_s: float = 60.0
    block_s: float = 1.0
    max_job_bytes: int = 1 << 20
    max_deliveries: int = 5
    result_ttl_s: int = 86400
    reply_maxlen: int = 100_000
    dead_maxlen: int = 100_000
    trim_interval_s: float = 30.0
    drain_s: float = 30.0

    def __post_init__(self) -> None:
        Keys(self.stream)  # checks the name
        if not self.group or not self.consumer:
            raise ValueError("group and consumer must be non-empty")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        for name in ("claim_idle_s", "block_s", "drain_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.trim_interval_s < 0:
            raise ValueError("trim_interval_s must be >= 0 (0: never trim)")
        for name in ("max_job_bytes", "max_deliveries", "result_ttl_s", "reply_maxlen", "dead_maxlen"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def claim_interval_s(self) -> float:
        """Heartbeats and reclaim scans run four times per idle period: a live job is refreshed well before it
        could look abandoned, and a dead worker's job waits at most 1.25 idle periods."""
        return max(0.02, self.claim_idle_s / 4)


def admission_capacity(model: Any) -> int:
    """Sequences the model admits at once, as its dispatcher reports it in ``stats()["capacity"]`` (the
    per-replica limits summed, capped by ``max_total_concurrency``); else ``max_concurrency``."""
    cap = model.stats().get("capacity")
    return cap if isinstance(cap, int) and cap > 0 else int(model.max_concurrency)
