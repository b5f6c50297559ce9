"""When and where a failed call tries again: the retry policy, what a call has tried so far, one decision.

The transport sends a call's first attempt straight to the engine; only a retryable failure
(connection error, 408, 429, 5xx: ``_errors.is_retryable``) comes here, as an :class:`Attempt`
(which try it was, the replica it went to, how it failed, the call's deadline). :func:`plan` decides
the next try from that alone:

- ``max_retries`` more tries were made: give up with the last failure;
- another replica is healthy: go there at once (a retry never returns to the replica that just
  failed while another is healthy, and has no reason to wait for a different server);
- else the same replica, after exponential backoff with jitter or the server's ``Retry-After`` (up
  to ``retry_after_max``), and never before that replica's 503 pause ends;
- a wait that would end at or past the call's deadline: give up now, with the real reason, instead
  of sleeping into a deadline error.

What happens while every replica is down (wait for a probe, or knock again on a server that never
answered) is the transport's, because it waits on the replicas rather than on the clock.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from langchain_qwen_fast._upstream.replicas import Replica, ReplicaSet

log = logging.getLogger("langchain_qwen_fast")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried (replica health is ``replicas.HealthPolicy``).

    ``max_retries`` tries follow the first at most; the backoff before retry ``k`` on the same replica
    is ``min(backoff_max, backoff_base * 2 ** (k - 1))`` times a jitter in [0.5, 1]; a ``Retry-After``
    above ``retry_after_max`` is not waited for (the backoff applies instead).
    """

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


@dataclass(frozen=True, slots=True)
class Attempt:
    """A try of one call that failed: which (1 is the first), where it went, how, and the call's deadline."""

    number: int
    replica: Replica
    error: Exception
    deadline: float

    def then(self, replica: Replica, error: Exception) -> Attempt:
        """The next try, which went to ``replica`` and failed with ``error``."""
        return Attempt(self.number + 1, replica, error, self.deadline)


@dataclass(frozen=True, slots=True)
class Next:
    """Where the next try goes, and how many seconds to wait before it."""

    replica: Replica
    delay: float


def describe(exc: BaseException) -> str:
    """Type, status and (credential-free) URL of a failure, for DEBUG logs: never the body or the prompt."""
    status = getattr(exc, "status_code", None)
    url = getattr(exc, "url", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}{f' from {url}' if url else ''}"


def backoff(policy: RetryPolicy, retry: int, exc: BaseException) -> float:
    """Seconds before retry number ``retry`` on the replica that answered ``exc``."""
    ra = getattr(exc, "retry_after", None)
    if ra is not None and ra <= policy.retry_after_max:
        return float(ra)
    cap = min(policy.backoff_max, policy.backoff_base * 2 ** (retry - 1))
    return cap * random.uniform(0.5, 1.0)


def plan(policy: RetryPolicy, replicas: ReplicaSet, last: Attempt) -> Next:
    """The next try after ``last`` failed; raises ``last.error`` when there is none (see the module)."""
    k, exc = last.number, last.error  # retry k follows try k
    if k > policy.max_retries:
        raise exc
    ep = replicas.for_retry(last.replica)
    if ep is not last.replica and not ep.ejected:
        log.debug("qwen-fast: retry %d of %d after %s on another replica", k, policy.max_retries, describe(exc))
        return Next(ep, 0.0)
    now = time.monotonic()
    delay = backoff(policy, k, exc)
    if now + delay >= last.deadline:
        log.debug("qwen-fast: not retrying %s: waiting %.2fs would pass the deadline", describe(exc), delay)
        raise exc
    log.debug("qwen-fast: retry %d of %d after %s, in %.2fs", k, policy.max_retries, describe(exc), delay)
    pause = ep.busy_until - now  # the replica's 503 pause
    if pause > delay:
        if now + pause >= last.deadline:
            raise exc
        delay = pause
    return Next(ep, delay)
