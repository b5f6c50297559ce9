"""Transport: replicas, retries, the per-call deadline, error mapping and SSE, over one engine.

A call's first attempt goes straight to the engine: a success pays nothing for the retry machinery.
A retryable failure (connection error, 408, 429, 5xx) hands the call to tenacity: exponential
backoff with jitter, ``Retry-After`` honoured, at most ``max_retries`` more attempts, none
started or slept past the deadline. With several replicas each attempt goes to the healthy one
with the fewest outstanding requests, a retry prefers another replica than the one that failed,
and a replica that fails repeatedly is ejected for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from langchain_qwen_fast._engines import Engine, RawResponse, StreamHandle
from langchain_qwen_fast._errors import (
    APIConnectionError,
    ServerError,
    connection_error,
    deadline_error,
    from_status,
    invalid_body,
    is_retryable,
    redact_url,
    server_message,
)
from langchain_qwen_fast._sse import DONE, sse_event
from langchain_qwen_fast._stats import EndpointStats

log = logging.getLogger("langchain_qwen_fast")
T = TypeVar("T")
#: One try: (replica to avoid, whether it is a retry) -> (the replica used, the result).
_Attempt = Callable[[Optional["Endpoint"], bool], Awaitable[T]]


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0
    eject_after: int = 3
    eject_seconds: float = 5.0


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


class Endpoint:
    """One replica's base URL and the health state routing reads."""

    __slots__ = ("base", "ejected_until", "failures", "outstanding", "stats")

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.outstanding = 0
        self.failures = 0
        self.ejected_until = 0.0
        self.stats = EndpointStats()


class Transport:
    def __init__(self, base_urls: Sequence[str], engine: Engine, retry: RetryPolicy) -> None:
        if not base_urls:
            raise ValueError("at least one base_url is needed")
        self.endpoints = [Endpoint(u) for u in base_urls]
        self.engine = engine
        self.retry = retry
        self._rr = 0

    # -- routing -------------------------------------------------------------------------
    def _pick(self, avoid: Endpoint | None) -> Endpoint:
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        now = time.monotonic()
        healthy = [e for e in eps if e.ejected_until <= now and e is not avoid] or [
            e for e in eps if e.ejected_until <= now
        ]
        if not healthy:  # all ejected: try the one whose ejection ends first
            return min(eps, key=lambda e: e.ejected_until)
        self._rr = (self._rr + 1) % len(healthy)
        rotated = healthy[self._rr :] + healthy[: self._rr]
        return min(rotated, key=lambda e: e.outstanding)

    def _record_failure(self, ep: Endpoint, exc: BaseException) -> None:
        ep.stats.error(type(exc).__name__)
        with contextlib.suppress(AttributeError):
            exc._endpoint = ep  # type: ignore[attr-defined]  # lets a retry avoid this replica
        if isinstance(exc, (APIConnectionError, ServerError)):
            ep.failures += 1
            if ep.failures >= self.retry.eject_after and len(self.endpoints) > 1:
                ep.ejected_until = time.monotonic() + self.retry.eject_seconds
                log.debug("ejecting replica %s for %.1fs after %d failures", redact_url(ep.base),
                          self.retry.eject_seconds, ep.failures)

    # -- one attempt ---------------------------------------------------------------------
    @staticmethod
    def _remaining(deadline: float, url: str, timeout: float | None) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise deadline_error(url, timeout)
        return left

    async def _attempt(
        self, path: str, body: bytes, headers: Mapping[str, str], deadline: float, timeout: float | None,
        avoid: Endpoint | None, retry: bool = False,
    ) -> tuple[Endpoint, Any]:
        ep = self._pick(avoid)
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
        ep.failures = 0
        ep.stats.ok(time.monotonic() - t0)
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
        timeout: float | None = None,
    ) -> Any:
        body = orjson.dumps(payload)

        def attempt(avoid: Endpoint | None, retry: bool) -> Awaitable[tuple[Endpoint, Any]]:
            return self._attempt(path, body, headers, deadline, timeout, avoid, retry)

        return (await self._with_retries(attempt, deadline))[1]

    async def _with_retries(self, attempt: _Attempt[T], deadline: float) -> T:
        """Run ``attempt`` once directly; on a retryable failure hand it to :meth:`_retry`."""
        try:
            return await attempt(None, False)
        except Exception as first:
            if not is_retryable(first) or self.retry.max_retries <= 0:
                log.debug("qwen-fast: %s, not retried", _describe(first))
                raise
            failed = first
        try:
            return await self._retry(attempt, deadline, failed)
        except Exception as last:
            log.debug("qwen-fast: giving up after %s", _describe(last))
            raise

    async def _retry(self, attempt: _Attempt[T], deadline: float, first: BaseException) -> T:
        avoid: list[Endpoint | None] = [getattr(first, "_endpoint", None)]

        def wait(state: RetryCallState) -> float:
            if state.attempt_number >= self.retry.max_retries:
                return 0.0  # tenacity asks for the wait before its stop check: there is no next try
            exc = state.outcome.exception() if state.outcome else None
            return self._delay(state.attempt_number + 1, exc or first, deadline)

        await asyncio.sleep(self._delay(1, first, deadline))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_retries),
            wait=wait,
            retry=retry_if_exception(is_retryable),
            reraise=True,
        )
        async for tried in retrying:
            with tried:
                try:
                    return await attempt(avoid[0], True)
                except Exception as e:
                    avoid[0] = getattr(e, "_endpoint", None)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- streaming -----------------------------------------------------------------------
    async def _open(
        self, path: str, body: bytes, headers: Mapping[str, str], deadline: float, timeout: float | None,
        avoid: Endpoint | None, retry: bool = False,
    ) -> tuple[Endpoint, StreamHandle]:
        ep = self._pick(avoid)
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
        timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield SSE data objects. Retries happen only before the first byte of the stream."""
        body = orjson.dumps(payload)

        def attempt(avoid: Endpoint | None, retry: bool) -> Awaitable[tuple[Endpoint, StreamHandle]]:
            return self._open(path, body, headers, deadline, timeout, avoid, retry)

        ep, handle = await self._with_retries(attempt, deadline)
        url = ep.base + path
        ep.outstanding += 1
        t0, done = time.monotonic(), False
        try:
            try:
                async for line in handle.lines():
                    event = sse_event(line, url)
                    if event is DONE:
                        done = True
                        break
                    if event is not None:
                        yield event
            except asyncio.TimeoutError:
                raise deadline_error(url, timeout) from None
            if not done:
                raise connection_error(url, ValueError("the stream ended before [DONE]"), maybe_sent=True)
            ep.stats.ok(time.monotonic() - t0)
        except Exception as e:
            self._record_failure(ep, e)
            raise
        finally:
            ep.outstanding -= 1
            await handle.close()


__all__ = ["Endpoint", "RetryPolicy", "Transport", "parse_retry_after", "server_message"]
