"""Queue workers: jobs/s through 1 and 3 ``qwen-fast worker`` processes, against ``BatchedChatQwen.batch`` on the
same replicas as the ceiling, and queue latency at 50% and 90% load from open-loop Poisson producers.

    python benchmarks/queue_bench.py [--rounds 3] [--jobs 3000] [--replicas 2] [--max-tokens 32] [--seconds 10]

One run starts a redis-server (unix socket, append-only file with ``appendfsync everysec``, as in
production), ``--replicas`` simulator processes with the H100 latency model, and four workers: one
alone on stream ``q1`` and three sharing stream ``q3``. Each round, interleaved: ``batch`` (one
``.batch`` of N prompts in this process, the ceiling: no queue at all), ``1 worker`` and
``3 workers`` (N jobs submitted in pipelined XADDs, timed until the last result reached the
producer). Then the latency phase offers Poisson arrivals at 50% and 90% of the 1-worker rate
measured above (split over ``--producers`` producers, each with its own reply stream) and reports
p50/p95/p99 from submit to result received. Then ``delivery``: how results reach a producer with 2,000
jobs outstanding: one reply stream read by one XREAD (the design), a BLPOP per job, or polling GET.

Everything shares this machine's cores (on 2 cores: simulators, workers, Redis and this process), so
absolute rates are the machine's; the ratios within a round are the comparison. JSON goes to
benchmarks/results/queue-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._process import ChildProcess, stop_all
from langchain_qwen_fast.integrations.redis_streams import JobQueue, connect
from langchain_qwen_fast.testing import SimConfig, SimServer

HERE = Path(__file__).resolve().parent
MODEL = "Qwen/Qwen3-0.6B"


def _workers(redis_url: str, replicas: list[str], stream: str, count: int, args: argparse.Namespace) -> list[Any]:
    out = []
    for _ in range(count):
        argv = [sys.executable, "-m", "langchain_qwen_fast.cli", "worker", "--redis", redis_url,
                "--stream", stream, "--group", "bench", "--base-url", ",".join(replicas), "--model", MODEL,
                "--max-tokens", str(args.max_tokens), "--http-port", "0", "--max-concurrency",
                str(args.max_concurrency)]
        holder: list[ChildProcess] = []
        child = ChildProcess(argv, ready=lambda h=holder: "WORKER_READY" in h[0].output(), name="worker",
                             startup_timeout=90, die_with_parent=True)
        holder.append(child)
        out.append(child.start())
    return out


async def _through_queue(url: str, stream: str, prompts: list[str]) -> float:
    async with JobQueue(url, stream) as q:
        t0 = time.perf_counter()
        ids = await q.submit_many(prompts)
        res = await q.results(ids, timeout=600)
        dt = time.perf_counter() - t0
    assert all(r.ok for r in res), [r.error for r in res if not r.ok][:3]
    return len(prompts) / dt


def _through_batch(model: BatchedChatQwen, prompts: list[str]) -> float:
    t0 = time.perf_counter()
    model.batch(prompts)
    return len(prompts) / (time.perf_counter() - t0)


async def _poisson(url: str, stream: str, rate: float, seconds: float, producers: int) -> dict[str, Any]:
    """Open loop: arrivals do not wait for answers, so a queue that falls behind shows it as latency."""
    lat: list[float] = []
    rng = random.Random(7)

    async def producer(q: JobQueue, per_rate: float) -> None:
        waits: list[asyncio.Task[None]] = []
        end = time.perf_counter() + seconds
        nxt = time.perf_counter()
        i = 0
        while nxt < end:
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
            t0 = time.perf_counter()
            jid = await q.submit(f"poisson {i} from {q.producer}")
            i += 1

            async def wait(jid: str = jid, t0: float = t0) -> None:
                await q.result(jid, timeout=120)
                lat.append(time.perf_counter() - t0)

            waits.append(asyncio.create_task(wait()))
            nxt += rng.expovariate(per_rate)
        await asyncio.gather(*waits)

    queues = [JobQueue(url, stream) for _ in range(producers)]
    t0 = time.perf_counter()
    await asyncio.gather(*(producer(q, rate / producers) for q in queues))
    wall = time.perf_counter() - t0
    for q in queues:
        await q.aclose()
    return _summary(lat, rate, wall)


async def _deliver_once(url: str, writer: Any, design: str, n: int) -> dict[str, Any]:
    from redis.asyncio import BlockingConnectionPool, Redis

    await writer.flushdb()
    waiter = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=n + 8, timeout=30))
    got: set[int] = set()
    done = asyncio.Event()

    def arrived(i: int) -> None:
        got.add(i)
        if len(got) == n:
            done.set()

    async def listen() -> None:
        last = "0-0"
        while not done.is_set():  # ends by itself: redis-py can swallow a cancel() as a command starts
            resp = await waiter.xread({"replies": last}, count=1000, block=1000)
            for _s, entries in resp or ():
                for eid, fields in entries:
                    last = eid.decode()
                    arrived(int(fields[b"id"]))

    async def blpop(i: int) -> None:
        await waiter.blpop([f"done:{i}"], timeout=60)
        arrived(i)

    async def poll(i: int) -> None:
        while await waiter.get(f"result:{i}") is None:
            await asyncio.sleep(0.01)
        arrived(i)

    if design == "reply":
        tasks = [asyncio.create_task(listen())]
    else:
        tasks = [asyncio.create_task((blpop if design == "blpop" else poll)(i)) for i in range(n)]
    await asyncio.sleep(0.5)  # every waiter in place
    clients = int((await writer.info("clients"))["connected_clients"])
    t0 = time.perf_counter()
    for i in range(0, n, 256):
        async with writer.pipeline(transaction=False) as p:
            for j in range(i, min(n, i + 256)):
                p.set(f"result:{j}", b"x" * 200, nx=True, ex=600)
                if design == "reply":
                    p.xadd("replies", {"id": str(j), "result": b"x" * 200})
                elif design == "blpop":
                    p.rpush(f"done:{j}", b"1")
            await p.execute()
    await asyncio.wait_for(done.wait(), 120)
    seconds = time.perf_counter() - t0
    await asyncio.wait(tasks, timeout=5)
    await waiter.aclose()
    return {"seconds": seconds, "connections": clients}


async def _delivery(url: str, n: int) -> dict[str, Any]:
    """N results written by one writer while N jobs wait at one producer: wall time until all arrived, and the
    connections the producer held (``connected_clients``, the writer's included)."""
    writer = connect(url)
    names = {"reply": "reply stream + one XREAD", "blpop": "BLPOP per job", "poll": "GET polling (10 ms)"}
    out = {label: await _deliver_once(url, writer, design, n) for design, label in names.items()}
    await writer.aclose()
    return out


async def _direct(model: BatchedChatQwen, rate: float, seconds: float) -> dict[str, Any]:
    """The same open-loop arrivals straight into ``ainvoke`` in this process: the latency without a queue."""
    rng, lat, waits = random.Random(7), [], []
    end = time.perf_counter() + seconds
    nxt = t_start = time.perf_counter()
    i = 0

    async def one(i: int, t0: float) -> None:
        await model.ainvoke(f"direct {i}")
        lat.append(time.perf_counter() - t0)

    while nxt < end:
        await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
        waits.append(asyncio.create_task(one(i, time.perf_counter())))
        i += 1
        nxt += rng.expovariate(rate)
    await asyncio.gather(*waits)
    return _summary(lat, rate, time.perf_counter() - t_start)


def _summary(lat: list[float], rate: float, wall: float) -> dict[str, Any]:
    lat = sorted(lat)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))]

    return {"offered_per_s": rate, "jobs": len(lat), "achieved_per_s": len(lat) / wall,
            "p50_s": pct(0.5), "p95_s": pct(0.95), "p99_s": pct(0.99), "max_s": lat[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-concurrency", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each latency run")
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--delivery-jobs", type=int, default=2000)
    args = ap.parse_args(argv)
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not on PATH: bash tests/servers/redis.sh install")
    tmp = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    sock = tmp / "redis.sock"
    redis = ChildProcess([server, "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp), "--appendonly", "yes",
                          "--save", ""], ready=sock.exists, name="redis-server", die_with_parent=True).start()
    url = f"unix://{sock}"
    sims = [SimServer(SimConfig(latency="h100", seed=i)).start() for i in range(args.replicas)]
    replicas = [s.base_url for s in sims]
    workers: list[Any] = []
    rates: dict[str, list[float]] = {"batch (ceiling)": [], "1 worker": [], "3 workers": []}
    result: dict[str, Any] = {}
    try:
        workers = _workers(url, replicas, "q1", 1, args) + _workers(url, replicas, "q3", 3, args)
        model = BatchedChatQwen(base_url=replicas, model=MODEL, max_tokens=args.max_tokens,
                                max_concurrency=args.max_concurrency)
        model.batch([f"warm {i}" for i in range(200)])
        for stream in ("q1", "q3"):
            asyncio.run(_through_queue(url, stream, [f"warm {i}" for i in range(200)]))
        for rnd in range(args.rounds):
            prompts = [f"round {rnd} job {i}" for i in range(args.jobs)]
            rates["batch (ceiling)"].append(_through_batch(model, prompts))
            rates["1 worker"].append(asyncio.run(_through_queue(url, "q1", prompts)))
            rates["3 workers"].append(asyncio.run(_through_queue(url, "q3", prompts)))
            print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()), flush=True)
        one = statistics.median(rates["1 worker"])
        latency, direct = {}, {}
        for load in (0.5, 0.9):
            key = f"{int(load * 100)}%"
            latency[key] = asyncio.run(_poisson(url, "q1", load * one, args.seconds, args.producers))
            direct[key] = asyncio.run(_direct(model, load * one, args.seconds))
        model.close()
        delivery = asyncio.run(_delivery(url, args.delivery_jobs))
    finally:
        stop_all(workers, 20)
        for s in sims:
            s.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ceiling = rates["batch (ceiling)"]
    print(f"\n{args.jobs} jobs per round, {args.rounds} rounds, {args.replicas} simulated H100 replicas, "
          f"max_tokens={args.max_tokens}\n")
    print("| path | jobs/s (median) | per round | vs batch, within round (median) |\n|---|---:|---|---:|")
    for name, r in rates.items():
        ratio = statistics.median(x / c for x, c in zip(r, ceiling, strict=True))
        print(f"| {name} | {statistics.median(r):,.0f} | {', '.join(f'{x:,.0f}' for x in r)} | {ratio:.2f}x |")
    print(f"\nlatency from submit to result, Poisson arrivals ({args.producers} producers for the queue), "
          f"{args.seconds:g} s per load; load = share of the 1-worker rate\n")
    print("| load | path | offered/s | answered/s | p50 ms | p95 ms | p99 ms |\n|---|---|---:|---:|---:|---:|---:|")
    for load in latency:
        for path, d in (("queue, 1 worker", latency[load]), ("direct ainvoke (no queue)", direct[load])):
            print(f"| {load} | {path} | {d['offered_per_s']:,.0f} | {d['achieved_per_s']:,.0f} | "
                  f"{d['p50_s'] * 1e3:,.0f} | {d['p95_s'] * 1e3:,.0f} | {d['p99_s'] * 1e3:,.0f} |")
    print(f"\nresult delivery, {args.delivery_jobs} jobs outstanding at one producer\n")
    print("| design | seconds until all arrived | Redis connections held |\n|---|---:|---:|")
    for design, d in delivery.items():
        print(f"| {design} | {d['seconds']:.3f} | {d['connections']} |")
    result = {"args": vars(args), "rates": rates, "latency": latency, "direct": direct, "delivery": delivery,
              "python": platform.python_version(), "machine": platform.machine()}
    out = HERE / "results" / f"queue-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
