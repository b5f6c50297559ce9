"""Where and when a failed call tries again (``retry.plan``, no I/O), and what the health probe asks a server.

Covers: _upstream/retry.py, _upstream/probe.py."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from langchain_qwen_fast._engines import RawResponse
from langchain_qwen_fast._errors import APIConnectionError, connection_error, from_status
from langchain_qwen_fast._upstream.probe import HealthProbe
from langchain_qwen_fast._upstream.replicas import HealthPolicy, ReplicaSet
from langchain_qwen_fast._upstream.retry import Attempt, RetryPolicy, plan

URLS = ["http://a:8000/v1", "http://b:8000/v1"]
POLICY = RetryPolicy(max_retries=3, backoff_base=0.2, backoff_max=1.0, retry_after_max=5.0)


def reset(url: str) -> APIConnectionError:
    return connection_error(url, ConnectionResetError("reset by peer"), maybe_sent=True)


def status(code: int, url: str, retry_after: float | None = None) -> Exception:
    return from_status(code, b'{"error": {"message": "busy"}}', url + "/chat/completions", retry_after)


def later(seconds: float = 60.0) -> float:
    return time.monotonic() + seconds


def test_a_retry_goes_to_another_healthy_replica_at_once() -> None:
    rs = ReplicaSet(URLS, limit=8)
    a, b = rs.replicas
    nxt = plan(POLICY, rs, Attempt(1, a, reset(a.base), later()))
    assert nxt.replica is b and nxt.delay == 0.0


def test_the_only_replica_is_retried_after_a_backoff_that_doubles_with_jitter() -> None:
    rs = ReplicaSet(URLS[:1], limit=8)
    (a,) = rs.replicas
    for k, cap in ((1, 0.2), (2, 0.4), (3, 0.8)):
        delays = [plan(POLICY, rs, Attempt(k, a, reset(a.base), later())).delay for _ in range(50)]
        assert all(cap * 0.5 <= d <= cap for d in delays), (k, min(delays), max(delays))
        assert max(delays) - min(delays) > cap * 0.1  # jitter, not one fixed wait


def test_backoff_is_capped_at_backoff_max() -> None:
    rs = ReplicaSet(URLS[:1], limit=8)
    (a,) = rs.replicas
    policy = RetryPolicy(max_retries=10, backoff_base=0.2, backoff_max=1.0)
    assert all(plan(policy, rs, Attempt(9, a, reset(a.base), later())).delay <= 1.0 for _ in range(20))


def test_retry_after_is_waited_for_up_to_retry_after_max_and_ignored_above() -> None:
    rs = ReplicaSet(URLS[:1], limit=8)
    (a,) = rs.replicas
    assert plan(POLICY, rs, Attempt(1, a, status(429, a.base, retry_after=3.0), later())).delay == 3.0
    above = plan(POLICY, rs, Attempt(1, a, status(429, a.base, retry_after=30.0), later())).delay
    assert 0.1 <= above <= 0.2  # the usual backoff instead


def test_no_retry_starts_before_the_replicas_503_pause_ends() -> None:
    rs = ReplicaSet(URLS[:1], limit=8, health=HealthPolicy(busy_first_s=0.6))
    (a,) = rs.replicas
    busy = status(503, a.base)
    rs.failed(a, busy)
    nxt = plan(POLICY, rs, Attempt(1, a, busy, later()))
    assert nxt.replica is a and 0.5 < nxt.delay <= 0.6


def test_a_wait_that_would_pass_the_deadline_gives_up_with_the_real_reason() -> None:
    rs = ReplicaSet(URLS[:1], limit=8)
    (a,) = rs.replicas
    limited = status(429, a.base, retry_after=2.0)
    with pytest.raises(type(limited)) as ei:
        plan(POLICY, rs, Attempt(1, a, limited, later(1.0)))
    assert ei.value is limited


def test_after_max_retries_more_tries_the_last_failure_is_raised() -> None:
    rs = ReplicaSet(URLS, limit=8)
    a, b = rs.replicas
    first = Attempt(1, a, reset(a.base), later())
    third = first.then(b, reset(b.base)).then(a, reset(a.base))
    assert third.number == 3 and third.replica is a and third.deadline == first.deadline
    assert plan(POLICY, rs, third).replica is b  # retry 3 of 3 is still allowed
    fourth = third.then(b, reset(b.base))
    with pytest.raises(APIConnectionError) as ei:
        plan(POLICY, rs, fourth)
    assert ei.value is fourth.error


class _Engine:
    """Answers GETs from a table of path -> status, recording each URL asked."""

    def __init__(self, answers: Mapping[str, int]) -> None:
        self.answers, self.asked = answers, []  # type: ignore[var-annotated]

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        self.asked.append(url)
        path = url.split(":8000", 1)[1]
        if path not in self.answers:
            raise connection_error(url, ConnectionRefusedError("refused"), maybe_sent=False)
        return RawResponse(self.answers[path], {}, b"")


@pytest.mark.parametrize(
    ("answers", "expected", "asked"),
    [
        ({"/health": 200}, None, ["/health"]),
        ({"/health": 404, "/v1/models": 200}, None, ["/health", "/v1/models"]),  # a router without /health
        ({"/health": 405, "/v1/models": 401}, None, ["/health", "/v1/models"]),  # it answers HTTP: it is up
        ({"/health": 503}, "health probe answered HTTP 503", ["/health"]),
        ({"/health": 404, "/v1/models": 502}, "health probe answered HTTP 502", ["/health", "/v1/models"]),
        ({}, "ConnectionRefusedError: refused", ["/health"]),  # the library's words; the replica says where
    ],
)
async def test_the_probe_asks_health_then_models_and_says_why_not(
    answers: dict[str, int], expected: str | None, asked: list[str]
) -> None:
    engine = _Engine(answers)
    why = await HealthProbe(engine)(URLS[0], 1.0)  # type: ignore[arg-type]
    assert (why is None) if expected is None else (why is not None and why.startswith(expected)), why
    assert [u.split(":8000", 1)[1] for u in engine.asked] == asked
