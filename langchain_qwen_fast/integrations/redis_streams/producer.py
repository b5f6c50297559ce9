"""The producer side of the queue: submit jobs, wait for their results (exported by ``redis_streams``).

Results come back on one reply stream per producer (``STREAM:replies:PRODUCER``), read by one
blocking XREAD, so a producer with 10,000 jobs outstanding holds one connection, not 10,000 blocked
ones (what a per-job BLPOP would need); the stream survives a Redis restart (append-only file) and
is read on from the last id seen, so nothing is missed. Each result is also kept under its own key
(``STREAM:result:ID``, TTL) for anyone else who knows the id; ``result()`` falls back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from langchain_qwen_fast.integrations.redis_streams.jobs import (
    Keys,
    check_job_id,
    check_producer,
    job_document,
    parse_job,
)

try:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("the queue needs the 'queue' extra: pip install 'langchain-qwen-fast[queue]'") from e

T = TypeVar("T")
_ROLE_OF_TYPE = {"human": "user", "ai": "assistant", "system": "system"}
_CHUNK = 1000
_BLOCK_S = 1.0  # a blocking read returns at least this often, so a closing queue notices within a second


def connect(url: str, **options: Any) -> Any:
    """A redis-py asyncio client with the timeouts the queue relies on (the socket timeout must outlast a
    blocking read); ``options`` go to ``redis.asyncio.Redis.from_url``."""
    from redis.asyncio import Redis

    settings: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 15}
    settings.update(options)
    return Redis.from_url(url, **settings)


@dataclass(frozen=True)
class JobResult:
    """One job's answer; ``error`` is ``{"type", "message"}`` when it has none (bad job, model failure)."""

    id: str
    content: str | None
    reasoning: str | None
    usage: Mapping[str, int] | None
    finish_reason: str | None
    error: Mapping[str, str] | None
    worker: str | None
    raw: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_json(cls, data: bytes | str) -> JobResult:
        d = orjson.loads(data)
        return cls(d.get("id"), d.get("content"), d.get("reasoning"), d.get("usage"), d.get("finish_reason"),
                   d.get("error"), d.get("worker"), d)


def _as_messages(value: Any) -> list[dict[str, str]]:
    """A prompt string, ``{role, content}`` dicts or LangChain messages -> the job's message list."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    out = []
    for m in value:
        if isinstance(m, Mapping):
            out.append(dict(m))
        elif hasattr(m, "type") and hasattr(m, "content"):
            role = _ROLE_OF_TYPE.get(m.type)
            if role is None or not isinstance(m.content, str):
                raise ValueError(f"a job carries plain text system/user/assistant messages, not {type(m).__name__}")
            out.append({"role": role, "content": m.content})
        else:
            raise ValueError(f"a message must be a dict or a LangChain message, got {type(m).__name__}")
    return out


class JobQueue:
    """``async with JobQueue(url, "jobs") as q: jid = await q.submit("Hi"); print((await q.result(jid)).content)``.

    ``producer`` names this producer's reply stream (default: random, one per instance); give a fixed one to
    pick up, after a restart, results that arrived while it was down.
    """

    def __init__(self, redis: Any, stream: str, *, producer: str | None = None, max_job_bytes: int = 1 << 20,
                 keep_unclaimed: int = 100_000, submit_timeout: float = 30.0) -> None:
        self.client = connect(redis) if isinstance(redis, str) else redis
        self.keys = Keys(stream)
        self.producer = check_producer(producer) if producer is not None else secrets.token_hex(8)
        self.max_job_bytes = max_job_bytes
        self.submit_timeout = submit_timeout
        self._futures: dict[str, asyncio.Future[JobResult]] = {}
        self._unclaimed: OrderedDict[str, JobResult] = OrderedDict()  # arrived for ids this instance did not submit
        self._keep = keep_unclaimed
        self._last_id = "0-0"
        self._listener: asyncio.Task[None] | None = None
        self._owns_client = isinstance(redis, str)
        self._closing = False

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def submit(self, messages: Any, *, job_id: str | None = None, **params: Any) -> str:
        """Enqueue one job (a prompt string or a message list) and return its id; ``params`` as in the job format."""
        return (await self.submit_many([messages], job_ids=None if job_id is None else [job_id], **params))[0]

    async def submit_many(self, inputs: Iterable[Any], *, job_ids: Sequence[str] | None = None,
                          **params: Any) -> list[str]:
        """Enqueue many jobs in pipelined XADDs; every job is checked first, so a bad one enqueues none."""
        inputs = list(inputs)
        if job_ids is not None and len(job_ids) != len(inputs):
            raise ValueError(f"{len(job_ids)} job_ids for {len(inputs)} inputs")
        docs: list[tuple[str, bytes]] = []
        for i, value in enumerate(inputs):
            jid = check_job_id(job_ids[i]) if job_ids is not None else secrets.token_hex(12)
            doc = job_document(jid, _as_messages(value), params, self.producer)
            parse_job(doc, max_bytes=self.max_job_bytes)  # raises BadJob (a ValueError) naming the problem
            docs.append((jid, doc))
        loop = asyncio.get_running_loop()
        for jid, _ in docs:
            self._futures.setdefault(jid, loop.create_future())
        self._listen()
        try:
            for i in range(0, len(docs), _CHUNK):
                await self._xadd(docs[i : i + _CHUNK])
        except BaseException:
            for jid, _ in docs:  # which of them went in is unknown: the caller decides, with result() or again
                fut = self._futures.get(jid)
                if fut is not None and not fut.done():
                    self._futures.pop(jid, None)
            raise
        return [jid for jid, _ in docs]

    async def _xadd(self, docs: list[tuple[str, bytes]]) -> None:
        """One pipelined XADD per job, sent again after a connection failure for up to ``submit_timeout`` s.
        A pipeline that failed half-way may have enqueued some jobs already: those are then in the stream
        twice, and the worker answers the second copy with the first one's result (one result per id)."""
        deadline, pause = time.monotonic() + self.submit_timeout, 0.05
        while True:
            try:
                async with self.client.pipeline(transaction=False) as p:
                    for jid, doc in docs:
                        p.xadd(self.keys.stream, {"job": doc, "id": jid, "reply_to": self.producer})
                    await p.execute()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)

    async def result(self, job_id: str, timeout: float | None = None) -> JobResult:
        """Wait for one job's result; ``TimeoutError`` after ``timeout`` seconds (None: wait as long as it takes)."""
        fut = self._futures.get(job_id)
        if fut is None:
            if job_id in self._unclaimed:
                return self._unclaimed.pop(job_id)
            return await self._poll(job_id, timeout)
        try:
            res = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raw = await self.client.get(self.keys.result(job_id))  # the reply may have been trimmed away
            if raw is None:
                raise TimeoutError(f"no result for job {job_id!r} within {timeout} s") from None
            res = JobResult.from_json(raw)
        self._futures.pop(job_id, None)
        return res

    async def results(self, job_ids: Sequence[str], timeout: float | None = None) -> list[JobResult]:
        """Results in the order of ``job_ids``, all within one ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for jid in job_ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(await self.result(jid, left))
        return out

    async def _poll(self, job_id: str, timeout: float | None) -> JobResult:
        """A job this instance did not submit: read its result key until it appears."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while True:
            raw = await self.client.get(self.keys.result(check_job_id(job_id)))
            if raw is not None:
                return JobResult.from_json(raw)
            if deadline is not None and time.monotonic() + pause > deadline:
                raise TimeoutError(f"no result for job {job_id!r} within {timeout} s")
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)

    def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen_loop())

    async def _listen_loop(self) -> None:
        key = self.keys.replies(self.producer)
        while not self._closing:  # a flag, not cancel(): redis-py can swallow a cancel as a command starts
            try:
                resp = await self.client.xread({key: self._last_id}, count=1000, block=int(_BLOCK_S * 1000))
            except (RedisError, OSError):  # Redis restarting: read on from the last id once it is back
                await asyncio.sleep(0.2)
                continue
            for _stream, entries in resp or ():
                seen = []
                for eid, fields in entries:
                    self._last_id = eid.decode()
                    seen.append(eid)
                    self._deliver(fields[b"id"].decode(), JobResult.from_json(fields[b"result"]))
                with contextlib.suppress(RedisError, OSError):  # read once is enough; the key keeps a copy
                    await self.client.xdel(key, *seen)

    def _deliver(self, job_id: str, res: JobResult) -> None:
        fut = self._futures.get(job_id)
        if fut is not None:
            if not fut.done():
                fut.set_result(res)
            return
        self._unclaimed[job_id] = res
        while len(self._unclaimed) > self._keep:
            self._unclaimed.popitem(last=False)

    async def aclose(self) -> None:
        self._closing = True
        if self._listener is not None:
            done, _ = await asyncio.wait([self._listener], timeout=_BLOCK_S + 5)  # it ends at its next read
            if not done:
                self._listener.cancel()
                await asyncio.wait([self._listener], timeout=1)
        if self._owns_client:
            await self.client.aclose()


class SyncJobQueue:
    """``JobQueue`` for synchronous code: the same calls, run on a private event loop thread."""

    def __init__(self, redis_url: str, stream: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qwen-job-queue", daemon=True)
        self._thread.start()

        async def make() -> JobQueue:
            return JobQueue(redis_url, stream, **options)

        self._queue = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def producer(self) -> str:
        return self._queue.producer

    def submit(self, messages: Any, *, job_id: str | None = None, **params: Any) -> str:
        return self._run(self._queue.submit(messages, job_id=job_id, **params))

    def submit_many(self, inputs: Iterable[Any], *, job_ids: Sequence[str] | None = None, **params: Any) -> list[str]:
        return self._run(self._queue.submit_many(list(inputs), job_ids=job_ids, **params))

    def result(self, job_id: str, timeout: float | None = None) -> JobResult:
        return self._run(self._queue.result(job_id, timeout))

    def results(self, job_ids: Sequence[str], timeout: float | None = None) -> list[JobResult]:
        return self._run(self._queue.results(job_ids, timeout))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._queue.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncJobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
