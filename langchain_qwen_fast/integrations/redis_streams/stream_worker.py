"""Queue workers on Redis Streams: jobs from many producers, answered by ``BatchedChatQwen``.

A worker reads with a consumer group (XREADGROUP), so jobs are shared among workers and every job
stays pending until a worker acknowledges it. It reads no more jobs than it can admit, so jobs
wait in Redis, where any worker can take them, not in one worker's memory. Each job is one
``ainvoke`` on the shared model, so jobs from every producer coalesce into the same completions
lists under the same admission limit. The result is written, announced to its producer and the job
acknowledged in one server-side script: a job is never acknowledged without its result, and a job
delivered twice is answered once (``SET NX`` on the result key). A worker that dies leaves its jobs
pending; after ``claim_idle_s`` another worker takes them over (XAUTOCLAIM), while live workers keep
their own jobs fresh (XCLAIM JUSTID), so a slow model call is never taken over. What the worker holds and
what each loop does while it runs, drains and stops is in ``state.py``.

The producer side (``JobQueue``, ``SyncJobQueue``) lives in ``producer.py``; the formats are in
``jobs.py`` and docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

import orjson

from langchain_qwen_fast._stats import Histogram
from langchain_qwen_fast.integrations.redis_streams.config import WorkerConfig, admission_capacity
from langchain_qwen_fast.integrations.redis_streams.finish import FINISH_SCRIPT, Finish, dead_copy, stream_id
from langchain_qwen_fast.integrations.redis_streams.jobs import (
    JOB_FIELD,
    BadJob,
    Job,
    Keys,
    error_result,
    ok_result,
    parse_job,
    route,
)
from langchain_qwen_fast.integrations.redis_streams.state import HeldJobs, WorkerState

try:
    from redis.exceptions import RedisError, ResponseError
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("the queue workers need the 'queue' extra: pip install 'langchain-qwen-fast[queue]'") from e

__all__ = ["StreamWorker"]
log = logging.getLogger("langchain_qwen_fast.worker")

#: Upper bounds of the job_seconds histogram (submit to result written), in seconds.
JOB_SECONDS_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: After the drain deadline the loops get ``block_s`` (a blocking read ends by then) plus this long to end on their
#: own, the writer to write the last answers (if Redis is away then, their jobs stay pending and are answered again
#: elsewhere, once: SET NX).
_FLUSH_S = 1.0
#: A loop that ignores its last-resort cancel (redis-py#2028) is waited for this long, then left behind.
_CANCEL_WAIT_S = 2.0


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class StreamWorker:
    """``await StreamWorker(connect(url), model, WorkerConfig(stream=..., group=...)).run(stop_event)``."""

    def __init__(self, client: Any, model: Any, config: WorkerConfig) -> None:
        self.client, self.model, self.config = client, model, config
        self.keys = Keys(config.stream)
        self.capacity = config.max_in_flight or admission_capacity(model)
        self._finish = client.register_script(FINISH_SCRIPT)
        self.state = WorkerState()
        self.held = HeldJobs(self.capacity)  # read or reclaimed, not yet acknowledged: being answered or written
        self._tasks: set[asyncio.Task[None]] = set()  # model calls (answers)
        self._outbox: list[Finish] = []
        self._claim_cursor = "0-0"
        self.counts: Counter[str] = Counter()
        self.dead_reasons: Counter[str] = Counter()
        self.failed_types: Counter[str] = Counter()
        self.job_seconds = Histogram(JOB_SECONDS_BOUNDS)  # summed across workers by Prometheus
        self.stream_lag: int | None = None
        self.stream_pending: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def ensure_group(self) -> None:
        """Create the group at the stream's start, so jobs enqueued before the first worker are served."""
        try:
            await self.client.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set, then drain: stop reading, finish what is held (up to ``drain_s``) and return.
        Jobs still unanswered then stay pending in Redis and go to another worker after ``claim_idle_s``."""
        stop = stop or asyncio.Event()
        while True:
            try:
                await self.ensure_group()
                break
            except (RedisError, OSError) as e:
                self._redis_error("create group", e)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if stop.is_set():
                    return
        reader = self._spawn(self._read_loop(), "qwen-worker-read")
        writer = self._spawn(self._write_loop(), "qwen-worker-write")
        keeper = self._spawn(self._keep_loop(), "qwen-worker-keep")
        try:
            await stop.wait()
        finally:
            await self._drain(reader, writer, keeper)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(lambda _: self.state.changed())
        return task

    async def _drain(self, reader: asyncio.Task[None], *loops: asyncio.Task[None]) -> None:
        """running -> draining -> stopped (``state.py`` says what each loop does in each), within one deadline."""
        deadline = self.state.drain(self.config.drain_s)
        await self.state.until(lambda: reader.done() and not self._tasks, deadline - time.monotonic())
        if self._tasks:
            log.warning("drain: %d model calls still running after %.1f s are cancelled; their jobs stay pending "
                        "for another worker (%d jobs held, the oldest for %.1f s)", len(self._tasks),
                        self.config.drain_s, len(self.held), self.held.oldest_s() or 0.0)
        self.state.stop()
        for t in list(self._tasks):
            t.cancel()  # unanswered: they stay pending and go to another worker
        left = [t for t in (reader, *loops, *self._tasks) if not t.done()]
        if left:
            end = max(deadline, time.monotonic() + self.config.block_s + _FLUSH_S)
            _, stuck = await asyncio.wait(left, timeout=end - time.monotonic())
            for t in stuck:
                t.cancel()  # last resort: a loop still in a Redis command well past the deadline
            if stuck:
                await asyncio.wait(stuck, timeout=_CANCEL_WAIT_S)

    async def healthy(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), 2.0))
        except (RedisError, OSError, asyncio.TimeoutError):
            return False

    # -- reading ----------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        cfg, state, held = self.config, self.state, self.held
        while state.does("read"):
            if held.free <= 0:
                await state.until(lambda: held.free > 0 or not state.does("read"))
                continue
            try:
                resp = await self.client.xreadgroup(
                    cfg.group, cfg.consumer, {cfg.stream: ">"}, count=held.free, block=int(cfg.block_s * 1000)
                )
            except ResponseError as e:
                if "NOGROUP" in str(e):  # the stream was deleted, or Redis came back without its data
                    with contextlib.suppress(RedisError, OSError):
                        await self.ensure_group()
                    continue
                self._redis_error("read", e)
                await asyncio.sleep(0.2)
                continue
            except (RedisError, OSError) as e:
                self._redis_error("read", e)
                await asyncio.sleep(0.2)
                continue
            try:
                for _stream, entries in resp or ():
                    await self._intake([(eid, fields, 1) for eid, fields in entries], source="new")
            except Exception:  # a bug must not stop the reader; the entries stay pending and are reclaimed
                log.exception("accepting jobs failed")

    async def _intake(self, entries: list[tuple[bytes, dict[bytes, bytes] | None, int]], *, source: str) -> None:
        """Take entries this worker was just given (read new, or reclaimed with their delivery counts): hold each
        once, answer at once what needs no model (deleted, delivered too often, bad, answered already), and start
        one model call per parameter set for the rest."""
        if not self.state.does("answer"):
            return  # stopped: they stay pending under this consumer and go to another worker after claim_idle_s
        cfg = self.config
        jobs: list[tuple[bytes, Job]] = []
        for eid, fields, deliveries in entries:
            if not self.held.take(eid):
                continue  # XAUTOCLAIM handed back one of our own entries: it is being answered already
            self.counts[f"read_{source}"] += 1
            if source == "reclaimed":
                self.counts["retried"] += 1
            if fields is None:  # deleted from the stream while pending: nothing left to answer
                self._queue(Finish(eid))
            elif deliveries > cfg.max_deliveries:
                self._dead_letter(eid, fields, f"delivered {deliveries} times without an answer "
                                  f"(max_deliveries={cfg.max_deliveries}): a worker died on it each time?",
                                  "max_deliveries")
            else:
                try:
                    raw = fields.get(JOB_FIELD)
                    if raw is None:
                        raise BadJob(f"the stream entry has no '{JOB_FIELD.decode()}' field")
                    jobs.append((eid, parse_job(raw, max_bytes=cfg.max_job_bytes)))
                except BadJob as e:
                    self._dead_letter(eid, fields, str(e), "bad_job")
        if not jobs:
            return
        try:  # answered already (enqueued twice, or redelivered after its result was written): acknowledge only
            async with self.client.pipeline(transaction=False) as p:
                for _, job in jobs:
                    p.exists(self.keys.result(job.id))
                exists = await p.execute()
        except (RedisError, OSError) as e:
            self._redis_error("check results", e)
            exists = [0] * len(jobs)  # SET NX still keeps the result single
        groups: dict[bytes, list[tuple[bytes, Job]]] = {}
        for (eid, job), seen in zip(jobs, exists, strict=True):
            if seen:
                self.counts["duplicates"] += 1
                self._queue(Finish(eid))
                continue
            groups.setdefault(orjson.dumps(job.params, option=orjson.OPT_SORT_KEYS), []).append((eid, job))
        for group in groups.values():
            task = asyncio.create_task(self._answer(group))
            self._tasks.add(task)
            task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.state.changed()

    async def _answer(self, group: list[tuple[bytes, Job]]) -> None:
        """One ``abatch`` per read and parameter set: the fast batch path costs a fifth of one ``ainvoke`` per
        job (docs/architecture.md), and the dispatcher still coalesces across reads, workers' producers and
        parameter sets into its lists."""
        started = time.time()
        t0 = time.perf_counter()
        inputs = [[dict(m) for m in job.messages] for _, job in group]
        try:
            outs: list[Any] = await self.model.abatch(inputs, return_exceptions=True, **group[0][1].params)
        except asyncio.CancelledError:
            for eid, _ in group:  # unanswered: they stay pending and go to another worker
                self._release(eid)
            raise
        except Exception as e:  # the whole call failed: every job in it gets the error
            outs = [e] * len(group)
        model_s = time.perf_counter() - t0
        for (eid, job), out in zip(group, outs, strict=True):
            if isinstance(out, BaseException):  # the model's retries are spent: the job gets an error result
                kind = type(out).__name__
                if not self.failed_types[kind]:  # the first of its kind, once: type and message, never the prompt
                    log.warning("a job failed with %s: %.300s (later %s failures are counted in /metrics)",
                                kind, out, kind)
                self.failed_types[kind] += 1
                result = error_result(job.id, kind, str(out), self.config.consumer)
            else:
                queued = None if job.submitted_at is None else round(max(0.0, started - job.submitted_at), 6)
                result = ok_result(job.id, out, self.config.consumer, queued, model_s)
            self._queue(Finish(eid, job.id, job.reply_to, orjson.dumps(result), submitted_at=job.submitted_at))

    def _dead_letter(self, eid: bytes, fields: dict[bytes, bytes], reason: str, kind: str) -> None:
        """Answer an entry that can never succeed with an error result and keep a copy beside the stream."""
        job_id, reply_to = route(fields, eid)
        self.dead_reasons[kind] += 1
        result = orjson.dumps(error_result(job_id, "BadJob", reason, self.config.consumer))
        self._queue(Finish(eid, job_id, reply_to, result, dead=dead_copy(eid, fields, reason, self.config.consumer)))

    # -- writing --------------------------------------------------------------------------------
    def _queue(self, fin: Finish) -> None:
        self._outbox.append(fin)
        self.state.changed()

    def _release(self, eid: bytes) -> None:
        self.held.release(eid)
        self.state.changed()

    async def _write_loop(self) -> None:
        """Write results in pipelined batches; a batch that fails on the connection is sent again (the script is
        idempotent), so a Redis restart delays answers but loses none."""
        cfg, keys, state = self.config, self.keys, self.state
        while True:
            if not self._outbox:
                if not state.does("answer"):  # stopped: no answer can come any more
                    return
                await state.until(lambda: bool(self._outbox) or not state.does("answer"))
                continue
            batch = self._outbox[:256]
            try:
                async with self.client.pipeline(transaction=False) as p:
                    for f in batch:
                        await f.send(p, self._finish, cfg, keys)
                    out = await p.execute(raise_on_error=False)
            except Exception as e:  # the writer never dies: a batch it cannot send is sent again
                self._redis_error("write", e)
                await asyncio.sleep(0.2)
                continue
            del self._outbox[: len(batch)]
            now = time.time()
            for f, res in zip(batch, out, strict=True):
                if isinstance(res, Exception):  # a command refused on its own (e.g. out of memory): try again
                    f.failures += 1
                    self._redis_error("write one", res)
                    if f.failures < 20:
                        self._outbox.append(f)
                    else:  # give up here; the job stays pending and is reclaimed (or dead-lettered) elsewhere
                        self._release(f.entry)
                    continue
                self.counts["acked"] += 1
                if f.result is not None:
                    self.counts["results_written" if res == 1 else "duplicates"] += 1
                    if f.dead:
                        self.counts["dead_lettered"] += 1
                    if f.submitted_at is not None and res == 1:
                        self.job_seconds.add(max(0.0, now - f.submitted_at))
                self._release(f.entry)

    # -- keeping jobs fresh, reclaiming, trimming -----------------------------------------------
    async def _keep_loop(self) -> None:
        cfg, state = self.config, self.state
        last_trim = time.monotonic()
        while state.does("heartbeat"):
            try:
                await self._heartbeat()
                if state.does("reclaim"):
                    await self._reclaim()
                    await self._measure_lag()
                    if cfg.trim_interval_s and time.monotonic() - last_trim >= cfg.trim_interval_s:
                        await self.trim()
                        last_trim = time.monotonic()
            except Exception as e:  # heartbeats must go on; a failed round is tried again
                self._redis_error("reclaim", e)
            await state.until(lambda: not state.does("heartbeat"), cfg.claim_interval_s)

    async def _heartbeat(self) -> None:
        held = self.held.ids()
        for i in range(0, len(held), 1000):
            await self.client.xclaim(self.config.stream, self.config.group, self.config.consumer, 0,
                                     held[i : i + 1000], justid=True)

    async def _reclaim(self) -> None:
        cfg = self.config
        if self.held.free <= 0:
            return
        resp = await self.client.xautoclaim(cfg.stream, cfg.group, cfg.consumer, int(cfg.claim_idle_s * 1000),
                                            start_id=self._claim_cursor, count=self.held.free)
        self._claim_cursor = _str(resp[0])
        claimed = [(eid, fields) for eid, fields in resp[1] if eid not in self.held]
        if len(resp) > 2 and resp[2]:  # pending entries whose stream entry was deleted
            await self.client.xack(cfg.stream, cfg.group, *resp[2])
            self.counts["acked"] += len(resp[2])
        if not claimed:
            return
        async with self.client.pipeline(transaction=False) as p:
            for eid, _ in claimed:
                p.xpending_range(cfg.stream, cfg.group, eid, eid, 1)
            info = await p.execute()
        await self._intake([(eid, fields, rows[0]["times_delivered"] if rows else 1)
                            for (eid, fields), rows in zip(claimed, info, strict=True)], source="reclaimed")

    async def _measure_lag(self) -> None:
        for g in await self.client.xinfo_groups(self.config.stream):
            if _str(g.get("name")) == self.config.group:
                lag = g.get("lag")
                self.stream_lag = None if lag is None else int(lag)
                self.stream_pending = int(g.get("pending", 0))

    async def trim(self) -> int:
        """Drop entries every group has acknowledged: below the oldest pending entry of every group, and below
        what every group has been delivered. Returns the number of entries removed."""
        stream = self.config.stream
        safe: tuple[int, int] | None = None
        for g in await self.client.xinfo_groups(stream):
            if int(g.get("pending", 0)):
                summary = await self.client.xpending(stream, g["name"])
                point = stream_id(summary["min"]) if summary.get("min") else None
            else:
                point = stream_id(g["last-delivered-id"]) if isinstance(g["last-delivered-id"], bytes) else None
            if point is None:
                return 0
            safe = point if safe is None else min(safe, point)
        if safe is None or safe == (0, 0):
            return 0
        removed = int(await self.client.xtrim(stream, minid=f"{safe[0]}-{safe[1]}", approximate=True))
        self.counts["trimmed"] += removed
        return removed

    # -- helpers --------------------------------------------------------------------------------
    def _redis_error(self, what: str, e: BaseException) -> None:
        if isinstance(e, (RedisError, OSError)):
            self.counts["redis_errors"] += 1
            log.warning("redis %s failed (%s: %s); retrying", what, type(e).__name__, e)
        else:
            log.error("%s failed; retrying", what, exc_info=e)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics (``prometheus.WorkerCollector``) and for tests."""
        return {
            "consumer": self.config.consumer,
            "capacity": self.capacity,
            "in_flight": len(self.held),
            "outbox": len(self._outbox),
            **{k: self.counts[k] for k in ("read_new", "read_reclaimed", "acked", "results_written", "duplicates",
                                           "retried", "dead_lettered", "redis_errors", "trimmed")},
            "dead_letter_reasons": dict(self.dead_reasons),
            "failed": dict(self.failed_types),
            "stream_lag": self.stream_lag,
            "stream_pending": self.stream_pending,
            "job_seconds": self.job_seconds.snapshot(),
        }
