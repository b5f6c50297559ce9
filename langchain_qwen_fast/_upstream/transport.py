"""Transport: one call's attempts over the replicas, its deadline, HTTP statuses and SSE, over one engine.

A call's first attempt goes straight to the engine: a success pays nothing for the retry machinery.
A retryable failure (connection error, 408, 429, 5xx) enters a plain loop: :func:`retry.plan`
decides where the next try goes and after how long (at most ``max_retries`` more, none started or
slept past the deadline, never back to the replica that just failed while another is healthy); when
every replica is down, the loop waits for a probe to bring one back. The first attempt goes to the
replica the dispatcher admitted the call on (:class:`~langchain_qwen_fast._upstream.replicas.Lease`).
Health bookkeeping (ejection, 503 pauses, probes) lives in ``replicas.py``; the probe's HTTP in
``probe.py``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson

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
from langchain_qwen_fast._upstream.retry import Attempt, RetryPolicy, describe, plan
from langchain_qwen_fast._upstream.sse import DONE, sse_event

log = logging.getLogger("langchain_qwen_fast")
T = TypeVar("T")
#: One try: (the replica to send to, whether it is a retry) -> the result.
_Send = Callable[[Replica, bool], Awaitable[T]]


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


class Transport:
    """How a call reaches a server: its attempts over ``replicas``, each through ``engine``."""

    def __init__(self, replicas: ReplicaSet, engine: HttpEngine, retry: RetryPolicy) -> None:
        self.replicas = replicas
        self.engine = engine
        self.retry = retry
        self.models = ServedModels(replicas, engine)  # model lookups: a 404's served list, a default's choice

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
    ) -> Any:
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
        except Exception as e:
            self.replicas.failed(ep, e)
            raise
        finally:
            ep.outstanding -= 1
        self.replicas.succeeded(ep, time.monotonic() - t0)
        return data

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

    async def post_json(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str], deadline: float,
        timeout: float | None, lease: Lease,
    ) -> Any:
        body = orjson.dumps(payload)

        def send(ep: Replica, retry: bool) -> Awaitable[Any]:
            return self._attempt(path, body, headers, deadline, timeout, lease, ep, retry)

        return await self._with_retries(send, deadline, lease, payload, headers)

    # -- retries -------------------------------------------------------------------------
    async def _with_retries(self, send: _Send[T], deadline: float, lease: Lease, payload: Mapping[str, Any],
                            headers: Mapping[str, str]) -> T:
        """:meth:`_tries`; a 404 for the payload's model is explained with the models the server serves."""
        try:
            return await self._tries(send, deadline, lease.replica)
        except NotFoundError as e:  # "The model `X` does not exist": say what is served instead
            await self.models.explain(e, payload.get("model"), headers)
            raise

    async def _tries(self, send: _Send[T], deadline: float, first: Replica) -> T:
        """Send once directly; on a retryable failure, go on in :meth:`_retry`."""
        try:
            return await send(first, False)
        except Exception as e:
            if not is_retryable(e) or self.retry.max_retries <= 0:
                log.debug("qwen-fast: %s, not retried", describe(e))
                raise
            failed = Attempt(1, first, e, deadline)
        try:
            return await self._retry(send, failed)
        except Exception as last:
            log.debug("qwen-fast: giving up after %s", describe(last))
            if self.replicas.all_down() and isinstance(last, APIConnectionError) and is_retryable(last):
                raise self.replicas.down_error() from last
            raise

    async def _retry(self, send: _Send[T], last: Attempt) -> T:
        """Try again until a try succeeds, fails in a way no retry helps, or :func:`retry.plan` gives up."""
        while True:
            nxt = plan(self.retry, self.replicas, last)
            if nxt.delay:
                await asyncio.sleep(nxt.delay)
            ep = nxt.replica
            # Every replica down: wait for a probe to bring one back (a restart), unless the only server never
            # answered: nothing is restarting there, and this retry knocks again itself, after its backoff.
            if self.replicas.all_down() and not self.replicas.never_answered():
                ep = await self._await_replica(last.deadline)
            try:
                return await send(ep, True)
            except Exception as e:
                if not is_retryable(e):
                    raise
                last = last.then(ep, e)

    async def _await_replica(self, deadline: float) -> Replica:
        """Every replica is ejected: wait for a probe to bring one back (within the call's deadline
        and the replicas' fail-fast time) and return where to retry; else fail with the all-down error."""
        left = min(deadline - time.monotonic(), self.replicas.fail_fast_in() or 0.0)
        if not await self.replicas.wait_healthy(left):
            raise self.replicas.down_error()
        return self.replicas.for_retry(None)

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
            self.replicas.failed(ep, e)
            raise
        if handle.status >= 400:
            try:
                raw = await handle.read()
            finally:
                await handle.close()
            exc = from_status(handle.status, raw, url, parse_retry_after(handle.headers))
            self.replicas.failed(ep, exc)
            raise exc
        return ep, handle

    async def sse_events(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str], deadline: float,
        timeout: float | None, lease: Lease,
    ) -> AsyncIterator[dict[str, Any]]:
        """One streamed request: yield its server-sent events' data objects, up to ``[DONE]``. Retries
        happen only before the first byte; a stream cut after that is an error, never a shorter answer."""
        body = orjson.dumps(payload)

        def send(ep: Replica, retry: bool) -> Awaitable[tuple[Replica, StreamHandle]]:
            return self._open(path, body, headers, deadline, timeout, lease, ep, retry)

        ep, handle = await self._with_retries(send, deadline, lease, payload, headers)
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
            self.replicas.failed(ep, e)
            raise
        finally:
            ep.outstanding -= 1
            await handle.close()

    async def aclose(self) -> None:
        await self.models.aclose()
        await self.replicas.aclose()
        await self.engine.aclose()


__all__ = ["RetryPolicy", "Transport", "deadline_for", "parse_retry_after", "server_message"]
