"""Which HTTP engine? Client CPU per request and req/s at N in flight, one process run.

Against a zero-latency server (the project's simulator with ``--latency zero`` in its own process,
or ``--base-url``), every candidate sends the same non-streaming chat request with N in flight:

- ``httpx_default``: ``httpx.AsyncClient`` with its default transport (what a "shared httpx pool" gives);
- ``httpx_aiohttp``: ``httpx.AsyncClient`` over httpx-aiohttp's ``AiohttpTransport``;
- ``engine_aiohttp`` / ``engine_asyncio``: this package's transport + its aiohttp or asyncio engine
  (``Transport.post_json``), no dispatcher;
- ``raw_aiohttp``: ``aiohttp.ClientSession`` + a semaphore, the reference the ratios are taken against;
- ``qwen_batch_chat_aiohttp`` / ``qwen_batch_chat_asyncio`` / ``qwen_batch`` / ``openai_batch``: the whole
  sync ``.batch`` path of BatchedChatQwen in the chat wire mode (one request per input, like ChatOpenAI)
  with either engine, and in its default completions mode (lists of 32) with the default engine, and of
  ChatOpenAI (``max_concurrency=N``), LangChain included.

Scenarios are interleaved and repeated; the table gives medians with min-max, and ratios against
raw aiohttp and ChatOpenAI from the same run. Client CPU is this process's rusage (all threads).

    python benchmarks/transport_bench.py [--rounds 3] [--inflight 64 256 1024] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

BODY = {
    "model": "Qwen/Qwen3-0.6B",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 32,
    "chat_template_kwargs": {"enable_thinking": False},
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _drive(n: int, inflight: int, one: Callable[[], Awaitable[Any]]) -> int:
    sem = asyncio.Semaphore(inflight)
    errors = 0

    async def task() -> None:
        nonlocal errors
        async with sem:
            try:
                await one()
            except Exception:
                errors += 1

    await asyncio.gather(*(task() for _ in range(n)))
    return errors


async def run_httpx(url: str, n: int, inflight: int, transport: Any = None) -> int:
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    kw: dict[str, Any] = {"limits": limits, "timeout": httpx.Timeout(60.0)}
    if transport is not None:
        kw = {"transport": transport, "timeout": httpx.Timeout(60.0)}
    async with httpx.AsyncClient(**kw) as client:
        async def one() -> Any:
            r = await client.post(url + "/chat/completions", json=BODY)
            r.raise_for_status()
            return r.json()

        return await _drive(n, inflight, one)


async def run_httpx_aiohttp(url: str, n: int, inflight: int) -> int:
    from httpx_aiohttp import AiohttpTransport

    transport = AiohttpTransport(client=lambda: aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=inflight)))
    return await run_httpx(url, n, inflight, transport)


async def run_raw_aiohttp(url: str, n: int, inflight: int) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as s:
        body = orjson.dumps(BODY)
        headers = {"Content-Type": "application/json"}

        async def one() -> Any:
            async with s.post(url + "/chat/completions", data=body, headers=headers) as r:
                r.raise_for_status()
                return orjson.loads(await r.read())

        return await _drive(n, inflight, one)


async def run_engine(url: str, n: int, inflight: int, kind: str) -> int:
    from langchain_qwen_fast._engines import Limits, make_engine
    from langchain_qwen_fast._upstream.replicas import ReplicaSet
    from langchain_qwen_fast._upstream.transport import RetryPolicy, Transport

    replicas = ReplicaSet([url], limit=inflight)
    tr = Transport(replicas, make_engine(kind, Limits(max_connections=inflight)), RetryPolicy(max_retries=0))
    headers = {"Content-Type": "application/json"}
    try:
        async def one() -> Any:
            lease = replicas.admit(replicas.replicas[0], 1)
            try:
                return await tr.post_json("/chat/completions", BODY, headers, time.monotonic() + 60.0, 60.0, lease)
            finally:
                replicas.release(lease)

        return await _drive(n, inflight, one)
    finally:
        await tr.aclose()


def run_qwen_batch(url: str, n: int, inflight: int, mode: str = "completions", engine: str | None = None) -> int:
    from langchain_qwen_fast import BatchedChatQwen

    fields: dict[str, Any] = {"http_engine": engine} if engine else {}
    with BatchedChatQwen(base_url=url, model="Qwen/Qwen3-0.6B", max_tokens=32, max_concurrency=inflight,
                         max_retries=0, timeout=60, wire_mode=mode, **fields) as m:
        out = m.batch(["What is the capital of France?"] * n, return_exceptions=True)
    return sum(isinstance(o, Exception) for o in out)


def run_openai_batch(url: str, n: int, inflight: int) -> int:
    from langchain_openai import ChatOpenAI

    m = ChatOpenAI(base_url=url, model="Qwen/Qwen3-0.6B", api_key="EMPTY", max_tokens=32, max_retries=0, timeout=60,
                   extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    out = m.batch(["What is the capital of France?"] * n, config={"max_concurrency": inflight},
                  return_exceptions=True)
    return sum(isinstance(o, Exception) for o in out)


SCENARIOS: dict[str, Callable[[str, int, int], Any]] = {
    "httpx_default": lambda u, n, c: asyncio.run(run_httpx(u, n, c)),
    "httpx_aiohttp": lambda u, n, c: asyncio.run(run_httpx_aiohttp(u, n, c)),
    "engine_aiohttp": lambda u, n, c: asyncio.run(run_engine(u, n, c, "aiohttp")),
    "engine_asyncio": lambda u, n, c: asyncio.run(run_engine(u, n, c, "asyncio")),
    "raw_aiohttp": lambda u, n, c: asyncio.run(run_raw_aiohttp(u, n, c)),
    "qwen_batch_chat_aiohttp": lambda u, n, c: run_qwen_batch(u, n, c, "chat", "aiohttp"),
    "qwen_batch_chat_asyncio": lambda u, n, c: run_qwen_batch(u, n, c, "chat", "asyncio"),
    "qwen_batch": run_qwen_batch,
    "openai_batch": run_openai_batch,
}


def measure(name: str, url: str, n: int, inflight: int) -> dict[str, Any]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    try:
        errors = SCENARIOS[name](url, n, inflight)
        failure = None
    except Exception as e:  # a scenario that dies is a result too (httpx at 256 did, on the GPU machine)
        errors, failure = n, f"{type(e).__name__}: {e}"[:200]
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"scenario": name, "inflight": inflight, "requests": n, "errors": errors, "failure": failure,
            "wall_s": wall, "req_per_s": n / wall, "cpu_us_per_req": cpu / n * 1e6}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["inflight"], r["scenario"]) for r in rows}, key=lambda k: (k[0], list(SCENARIOS).index(k[1])))
    for inflight, name in keys:
        rs = [r for r in rows if r["inflight"] == inflight and r["scenario"] == name]
        cpu = [r["cpu_us_per_req"] for r in rs]
        rps = [r["req_per_s"] for r in rs]
        out.append({"inflight": inflight, "scenario": name, "rounds": len(rs),
                    "cpu_us_median": statistics.median(cpu), "cpu_us_min": min(cpu), "cpu_us_max": max(cpu),
                    "rps_median": statistics.median(rps), "errors": sum(r["errors"] for r in rs),
                    "failures": [r["failure"] for r in rs if r["failure"]]})
    for row in out:
        ref = {s["scenario"]: s for s in out if s["inflight"] == row["inflight"]}
        raw, oai = ref.get("raw_aiohttp"), ref.get("openai_batch")
        row["cpu_vs_raw_aiohttp"] = row["cpu_us_median"] / raw["cpu_us_median"] if raw else None
        row["cpu_vs_chatopenai"] = row["cpu_us_median"] / oai["cpu_us_median"] if oai else None
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| in flight | scenario | client CPU µs/req (median, min-max) | req/s (median) | x raw aiohttp CPU"
        " | x ChatOpenAI CPU | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        f = lambda v: f"{v:.2f}" if v is not None else ""  # noqa: E731
        err = str(r["errors"]) + (f" ({r['failures'][0]})" if r["failures"] else "")
        cpu = f"{r['cpu_us_median']:.0f} ({r['cpu_us_min']:.0f}-{r['cpu_us_max']:.0f})"
        lines.append(
            f"| {r['inflight']} | {r['scenario']} | {cpu} | {r['rps_median']:.0f} | {f(r['cpu_vs_raw_aiohttp'])}"
            f" | {f(r['cpu_vs_chatopenai'])} | {err} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default=None, help="zero-latency server; default: start the simulator")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inflight", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    from contextlib import nullcontext

    from langchain_qwen_fast.testing import SimConfig, SimServer

    ctx: Any = nullcontext(None) if args.base_url else SimServer(SimConfig(latency="zero"))
    rows: list[dict[str, Any]] = []
    with ctx as srv:
        url = args.base_url or srv.base_url
        for name in args.scenarios:  # warm-up: imports, connections, first-call costs
            measure(name, url, 200, 64)
        for rnd in range(args.rounds):
            for inflight in args.inflight:
                for name in args.scenarios:
                    n = max(args.requests, 4 * inflight)
                    row = measure(name, url, n, inflight)
                    row["round"] = rnd
                    rows.append(row)
                    print(f"round {rnd} c={inflight:5d} {name:24s} {row['cpu_us_per_req']:8.0f} µs/req "
                          f"{row['req_per_s']:7.0f} req/s errors={row['errors']}", file=sys.stderr, flush=True)
    summary = summarise(rows)
    md = table(summary)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "httpx": httpx.__version__, "aiohttp": aiohttp.__version__, "argv": sys.argv}
    (out / f"transport-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1))
    (out / f"transport-{stamp}.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
