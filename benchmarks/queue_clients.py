"""Which Redis client carries the queue workers: consume-and-acknowledge rate of one consumer, per client.

    python benchmarks/queue_clients.py [--jobs 20000] [--rounds 3]

Each round fills a fresh stream with N job-sized entries (raw XADD, as any producer would) and times
one consumer in its group until all N are acknowledged, the clients interleaved within the round:

- ``redis-py``: XREADGROUP COUNT 100, then one pipelined XACK per read (what ``StreamWorker`` does);
- ``redis-py+hiredis``: the same with the hiredis reply parser, when ``hiredis`` is installed;
- ``faststream``: a ``StreamSub(group=..., consumer=...)`` subscriber, one handler call per message
  (acknowledged after the handler returns), and ``batch=True`` with ``max_records=100``; only when
  ``faststream[redis]`` is installed (it is not a project dependency: run this from a venv that has it).

Needs ``redis-server`` on PATH (``bash tests/servers/redis.sh install``). Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAYLOAD = json.dumps({"v": 1, "id": "x" * 24, "messages": [{"role": "user", "content": "lorem ipsum " * 8}],
                      "params": {"max_tokens": 16}, "reply_to": "p" * 16, "ts": 0.0}).encode()


async def _fill(url: str, stream: str, n: int, **client_kw: Any) -> None:
    from redis.asyncio import Redis

    r = Redis.from_url(url, **client_kw)
    await r.delete(stream)
    for i in range(0, n, 1000):
        async with r.pipeline(transaction=False) as p:
            for _ in range(min(1000, n - i)):
                p.xadd(stream, {"job": PAYLOAD})
            await p.execute()
    await r.xgroup_create(stream, "g", id="0")
    await r.aclose()


async def redis_py(url: str, stream: str, n: int, parser: str) -> float:
    from redis.asyncio import Redis

    kw: dict[str, Any] = {}
    if parser == "python":
        from redis._parsers import _AsyncRESP3Parser  # switched to its RESP2 twin when protocol 2 is used

        kw["parser_class"] = _AsyncRESP3Parser
    await _fill(url, stream, n)
    r = Redis.from_url(url, **kw)
    t0, done = time.perf_counter(), 0
    while done < n:
        resp = await r.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
        for _s, entries in resp or ():
            async with r.pipeline(transaction=False) as p:
                for eid, fields in entries:
                    json.loads(fields[b"job"])
                    p.xack(stream, "g", eid)
                await p.execute()
            done += len(entries)
    dt = time.perf_counter() - t0
    await r.aclose()
    return n / dt


async def faststream(url: str, stream: str, n: int, batch: bool) -> float:
    from faststream.redis import RedisBroker, StreamSub

    await _fill(url, stream, n)
    broker = RedisBroker(url, logger=None)
    done, seen = asyncio.Event(), [0]
    sub = StreamSub(stream, group="g", consumer="c", batch=batch, max_records=100 if batch else None,
                    polling_interval=1000, declare=False)

    @broker.subscriber(stream=sub)
    async def handle(body: Any) -> None:
        seen[0] += len(body) if batch else 1
        if seen[0] >= n:
            done.set()

    t0 = time.perf_counter()
    async with broker:
        await broker.start()
        await asyncio.wait_for(done.wait(), 300)
    dt = time.perf_counter() - t0
    return n / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not on PATH: bash tests/servers/redis.sh install")
    cases: dict[str, Callable[[str, str, int], Awaitable[float]]] = {
        "redis-py": lambda u, s, n: redis_py(u, s, n, "python"),
    }
    if importlib.util.find_spec("hiredis"):
        cases["redis-py+hiredis"] = lambda u, s, n: redis_py(u, s, n, "hiredis")
    if importlib.util.find_spec("faststream"):
        cases["faststream (per message)"] = lambda u, s, n: faststream(u, s, n, False)
        cases["faststream (batch=True, 100)"] = lambda u, s, n: faststream(u, s, n, True)
    rates: dict[str, list[float]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", tmp],
                                stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():  # a redis-server that exits or never listens ends the run, not a hang
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not open {sock} (exit status {proc.poll()})")
                time.sleep(0.02)
            url = f"unix://{sock}"
            for rnd in range(args.rounds):
                for name, fn in cases.items():
                    rates[name].append(asyncio.run(fn(url, f"bench{rnd}", args.jobs)))
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    base = statistics.median(rates["redis-py"])
    print(f"\n{args.jobs} entries per round, {args.rounds} rounds, one consumer (consume + ack)\n")
    print("| client | entries/s (median) | rounds | vs redis-py |\n|---|---:|---|---:|")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):,.0f} | {', '.join(f'{x:,.0f}' for x in r)} | "
              f"{statistics.median(r) / base:.2f}x |")
    versions = {m: _version(m) for m in ("redis", "hiredis", "faststream")}
    out = HERE / "results" / f"queue-clients-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"jobs": args.jobs, "rounds": args.rounds, "rates": rates, "versions": versions,
                               "python": platform.python_version()}, indent=1))
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 0


def _version(module: str) -> str | None:
    import importlib.metadata as md

    with contextlib.suppress(md.PackageNotFoundError):
        return md.version(module)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
