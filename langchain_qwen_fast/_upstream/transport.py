"""Transport: replicas, retries, the per-call deadline, error mapping and SSE, over one engine.

A call's first attempt goes straight to the engine: a success pays nothing for the retry machinery.
A retryable failure (connection error, 408, 429, 5xx) hands the call to tenacity: at most
``max_retries`` more attempts, none started or slept past the deadline. The first attempt goes to
the replica the dispatcher admitted the call on (:class:`~langchain_qwen_fast._upstream.replicas.Lease`); a
retry never returns to the replica that just failed while another is healthy, and goes there at
once. Only a retry on the same replica waits: exponential backoff with jitter, ``Retry-After``
honoured. Health bookkeeping (ejection, 503 pauses, probes) lives in ``_replicas.py``; the probe's
HTTP is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from langchain_qwen_fast._engines import HttpEngine, RawResponse, StreamHandle
from langchain_qwen_fast._errors import (
    APIConnectionError,
    NotFoundError,
    connection_error,
    deadline_error,
    from_status,
    invalid_body,
    is_retryable,
    server_message,
)
from langchain_qwen_fast._upstream.models import ServedModels
from langchain_qwen_fast._upstream.replicas import Lease, Replica, ReplicaSet
from langchain_qwen_fast._upstream.sse import DONE, sse_event
from langchain_qwen_fast._urls import server_root

log = logging.getLogger("langchain_qwen_fast")
T = TypeVar("T")
#: One try: (the replica to send to, whether it is a retry) -> (the replica used, the result).
_Attempt = Callable[[Replica, bool], Awaitable[T]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is retried (replica health is ``_replicas.HealthPolicy``)."""

    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


#: The deadline of a call whose ``timeout`` is None (the openai SDK's default, too).
DEFAULT_TIMEOUT_S = 600.0


def deadline_for(timeout: float | None) -> float:
    """The monotonic time by which a call dispatched now must be done."""
    return time.monotonic() + (timeout if timeout is not None else DEFAULT_TIMEOUT_S)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date; anything else is ignored and the usual backoff applies
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _describe(exc: BaseException) -> str:
    """Type, status and (credential-free) URL of a failure; never the body, never the prompt."""
    status = getattr(exc, "status_code", None)
    url = getattr(exc, "url", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}{f' from {url}' if url else ''}"


class Transport:
    def __init__(self, replicas: ReplicaSet, engine: HttpEngine, retry: RetryPolicy) -> None:
        self.replicas = replicas
        self.engine = engine
        self.retry = retry
        replicas.prober = self.probe
        self.models = ServedModels(replicas, engine)  # model lookups: a 404's served list, a default's choice

    def _record_failure(self, ep: Replica, exc: BaseException) -> None:
        self.replicas.failed(ep, exc)
        with contextlib.suppress(AttributeError):
            exc._replica = ep  # type: ignore[attr-defined]  # lets a retry avoid this replica

    async def probe(self, r: Replica) -> str | None:
        """None when ``r`` answers HTTP again: ``/health`` 200 (vLLM, SGLang), or where a router has
        no ``/health``, any non-5xx answer of ``/v1/models``; else why not."""
        timeout = self.replicas.health.probe_timeout_s
        root = server_root(r.base)
        try:
            raw = await asyncio.wait_for(self.engine.get(root + "/health", {}, timeout), timeout)
            if raw.status == 200:
                return None
            if raw.status in (404, 405):
                raw = await asyncio.wait_for(self.engine.get(r.base + "/models", {}, timeout), timeout)
                if raw.status < 500:
                    return None
            return f"health probe answered HTTP {raw.status}"
        except asyncio.TimeoutError:
            return f"health probe timed out after {timeout} s"
        except Exception as e:
            return f"{type(e).__name__}: {e}"

    # -- one attempt ---------------------------------------------------------------------
    @staticmethod
    def _remaining(deadline: float, url: str, timeout: float | None) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise deadline_error(url, timeout)
        return left

    async def _attempt(
        self, path: str, body: bytes, headers: Mapping[str, str], deadline: float, timeout: float | None,
        lease: Lease, ep: Replica, retry: bool = False,
    ) -> tuple[Replica, Any]:
        self.replicas.move(lease, ep)
        ep.stats.retries += retry
        url = ep.base + path
        left = self._remaining(deadline, url, timeout)
        ep.outstanding += 1
        t0 = time.monotonic()
        try:
            try:
                if getattr(self.engine, "enforces_deadline", False):
                    raw = await self.engine.post(url, body, headers, left)
                else:  # httpx times out per phase (and mocks not at all): bound the whole exchange here
                    raw = await asyncio.wait_for(self.engine.post(url, body, headers, left), left)
            except asyncio.TimeoutError:
                raise deadline_error(url, timeout) from None
            data = self._decode(raw, url)
        except BaseException as e:
            if isinstance(e, Exception):
                self._record_failure(ep, e)
            raise
        finally:
            ep.outstanding -= 1
        self.replicas.succeeded(ep, time.monotonic() - t0)
        return ep, data

    @staticmethod
    def _decode(raw: RawResponse, url: str) -> Any:
        if raw.status >= 400:
            html = raw.body.lstrip()[:1] == b"<"
            if html and raw.status < 500:
                raise invalid_body(raw.status, raw.body, url, "an HTML error page instead of JSON")
            # A proxy's 502/503 HTML page maps by its status: the server behind it may come back.
            raise from_status(raw.status, raw.body, url, None if html else parse_retry_after(raw.headers))
        try:
            return orjson.loads(raw.body)
        except orjson.JSONDecodeError:
            declared = raw.headers.get("content-length") or raw.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > len(raw.body):
                raise connection_error(url, ValueError("body cut short"), maybe_sent=True) from None
            raise invalid_body(raw.status, raw.body, url, "the body is not JSON") from None

    # -- retries -------------------------------------------------------------------------
    def _delay(self, attempt: int, exc: BaseException, deadline: float) -> float:
        ra = getattr(exc, "retry_after", None)
        if ra is not None and ra <= self.retry.retry_after_max:
            delay = ra
        else:
            cap = min(self.retry.backoff_max, self.retry.backoff_base * 2 ** (attempt - 1))
            delay = cap * random.uniform(0.5, 1.0)
        if time.monotonic() + delay >= deadline:
            log.debug("qwen-fast: not retrying %s: waiting %.2fs would pass the deadline",
                      _describe(exc), delay)
            raise exc  # sleeping would pass the deadline: fail now with the real reason
        log.debug("qwen-fast: retry %d of %d after %s, in %.2fs", attempt, self.retry.max_retries,
                  _describe(exc), delay)
        return delay

    async def post_json(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str], deadline: float,
        timeout: float | None, lease: Lease,
    ) -> Any:
        body = orjson.dumps(payload)

        def attempt(ep: Replica, retry: bool) -> Awaitable[tuple[Replica, Any]]:
            return self._attempt(path, body, headers, deadline, timeout, lease, ep, retry)

        try:
            return (await self._with_retries(attempt, deadline, lease.replica))[1]
        except NotFoundError as e:  # "The model `X` does not exist": say what is served instead
            await self.models.explain(e, payload.get("model"), headers)
            raise

    async def _with_retries(self, attempt: _Attempt[T], deadline: float, first_ep: Replica) -> T:
        """Run ``attempt`` once directly; on a retryable failure hand it to :meth:`_retry`."""
        try:
            return await attempt(first_ep, False)
        except Exception as first:
            if not is_retryable(first) or self.retry.max_retries <= 0:
                log.debug("qwen-fast: %s, not retried", _describe(first))
                raise
            failed = first
        try:
            return await self._retry(attempt, deadline, failed)
        except Exception as last:
            log.debug("qwen-fast: giving up after %s", _describe(last))
            if self.replicas.all_down() and isinstance(last, APIConnectionError) and is_retryable(last):
                raise self.replicas.down_error() from last
            raise

    def _next(self, attempt_no: int, exc: BaseException, deadline: float) -> tuple[Replica, float]:
        """Where the next try goes and how long to wait first: at once on another replica, after
        backoff (or Retry-After) on the same one, and never before a 503 pause of that replica ends."""
        failed = getattr(exc, "_replica", None)
        ep = self.replicas.for_retry(failed)
        if ep is not failed and not ep.ejected:
            log.debug("qwen-fast: retry %d of %d after %s on another replica", attempt_no,
                      self.retry.max_retries, _describe(exc))
            return ep, 0.0
        delay = self._delay(attempt_no, exc, deadline)
        pause = ep.busy_until - time.monotonic()
        if pause > delay:
            if time.monotonic() + pause >= deadline:
                raise exc
            delay = pause
        return ep, delay

    async def _retry(self, attempt: _Attempt[T], deadline: float, first: BaseException) -> T:
        target, delay = self._next(1, first, deadline)
        nxt = [target]

        def wait(state: RetryCallState) -> float:
            if state.attempt_number >= self.retry.max_retries:
                return 0.0  # tenacity asks for the wait before its stop check: there is no next try
            exc = state.outcome.exception() if state.outcome else None
            nxt[0], pause = self._next(state.attempt_number + 1, exc or first, deadline)
            return pause

        if delay:
            await asyncio.sleep(delay)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_retries),
            wait=wait,
            retry=retry_if_exception(is_retryable),
            reraise=True,
        )
        async for tried in retrying:
            with tried:
                if self.replicas.all_down():
                    await self._await_replica(deadline, nxt)
                return await attempt(nxt[0], True)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _await_replica(self, deadline: float, nxt: list[Replica]) -> None:
        """Every replica is ejected: wait for a probe to bring one back (within the call's deadline
        and the replicas' fail-fast time), then retry there; else fail with the all-down error."""
        left = min(deadline - time.monotonic(), self.replicas.fail_fast_in() or 0.0)
        if not await self.replicas.wait_healthy(left):
            raise self.replicas.down_error()
        nxt[0] = self.replicas.for_retry(None)

    # -- streaming -----------------------------------------------------------------------
    async def _open(
        self, path: str, body: bytes, headers: Mapping[str, str], deadline: float, timeout: float | None,
        lease: Lease, ep: Replica, retry: bool = False,
    ) -> tuple[Replica, StreamHandle]:
        self.replicas.move(lease, ep)
        ep.stats.retries += retry
        url = ep.base + path
        left = self._remaining(deadline, url, timeout)
        try:
            handle = await asyncio.wait_for(self.engine.open_stream(url, body, headers, left), left)
        except asyncio.TimeoutError:
            raise deadline_error(url, timeout) from None
        except Exception as e:
            self._record_failure(ep, e)
            raise
        if handle.status >= 400:
            try:
                raw = await handle.read()
            finally:
                await handle.close()
            exc = from_status(handle.status, raw, url, parse_retry_after(handle.headers))
            self._record_failure(ep, exc)
            raise exc
        return ep, handle

    async def stream_events(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str], deadline: float,
        timeout: float | None, lease: Lease,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield SSE data objects. Retries happen only before the first byte of the stream."""
        body = orjson.dumps(payload)

        def attempt(ep: Replica, retry: bool) -> Awaitable[tuple[Replica, StreamHandle]]:
            return self._open(path, body, headers, deadline, timeout, lease, ep, retry)

        try:
            ep, handle = await self._with_retries(attempt, deadline, lease.replica)
        except NotFoundError as e:
            await self.models.explain(e, payload.get("model"), headers)
            raise
        url = ep.base + path
        ep.outstanding += 1
        t0, done, events = time.monotonic(), False, 0
        try:
            try:
                async for line in handle.lines():
                    event = sse_event(line, url)
                    if event is DONE:
                        if not events:  # vLLM and SGLang send at least the role chunk first
                            raise invalid_body(handle.status, line, url, "a stream that ends before any event")
                        done = True
                        break
                    if event is not None:
                        events += 1
                        yield event
            except asyncio.TimeoutError:
                raise deadline_error(url, timeout) from None
            if not done:
                raise connection_error(url, ValueError("the stream ended before [DONE]"), maybe_sent=True)
            self.replicas.succeeded(ep, time.monotonic() - t0)
        except Exception as e:
            self._record_failure(ep, e)
            raise
        finally:
            ep.outstanding -= 1
            await handle.close()


    async def aclose(self) -> None:
        await self.models.aclose()
        await self.replicas.aclose()
        await self.engine.aclose()


__all__ = ["RetryPolicy", "Transport", "parse_retry_after", "server_message"]
