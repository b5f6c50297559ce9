"""Measure the simulator's own throughput and CPU cost (not collected by pytest).

    .venv/bin/python tests/sim/bench_self.py [N]

Scenarios: ``--latency zero`` with a raw aiohttp client (non-streaming chat, max_tokens 32) at 64
and 256 in flight, the same with streaming and with /v1/completions lists of 32; then
``--latency h100`` holding 1,024+ sequences in flight, to show what the engine loop itself costs.
Server CPU comes from /proc/PID/stat of the server process (utime + stime), so the client's CPU is
not mixed in.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from langchain_qwen_fast.testing import SimConfig, SimServer

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(
    srv: SimServer, n: int, inflight: int, kind: str, max_tokens: int = 32
) -> dict[str, Any]:
    q = "What is quantum entanglement?"
    chat = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": q}],
            "max_tokens": max_tokens, "ignore_eos": True,
            "chat_template_kwargs": {"enable_thinking": False}}
    prompt = f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    size = 32 if kind == "list32" else 1
    if kind == "list32":
        path, body = "/v1/completions", {"model": "Qwen/Qwen3-0.6B", "prompt": [prompt] * 32,
                                         "max_tokens": max_tokens, "ignore_eos": True}
    else:
        path, body = "/v1/chat/completions", dict(chat, stream=kind == "stream")
    conn = aiohttp.TCPConnector(limit=inflight + 8)
    async with aiohttp.ClientSession(srv.url, connector=conn) as s:

        async def one() -> None:
            async with s.post(path, json=body) as r:
                await r.read()
                assert r.status == 200

        await asyncio.gather(*(one() for _ in range(min(inflight, 64))))  # warm connections
        n_req = n // size
        it = iter(range(n_req))

        async def worker() -> None:
            for _ in it:
                await one()

        s0, c0, t0 = proc_cpu(srv.pid), self_cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        wall = time.perf_counter() - t0
        s_cpu, c_cpu = proc_cpu(srv.pid) - s0, self_cpu() - c0
    return {"kind": kind, "inflight": inflight, "requests": n_req, "prompts": n_req * size,
            "wall_s": round(wall, 2), "req_s": round(n_req / wall),
            "prompts_s": round(n_req * size / wall),
            "server_cpu_us_per_req": round(s_cpu / n_req * 1e6),
            "server_cpu_us_per_prompt": round(s_cpu / (n_req * size) * 1e6, 1),
            "server_cpu_util": round(s_cpu / wall, 2),
            "client_cpu_us_per_req": round(c_cpu / n_req * 1e6)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with SimServer(SimConfig(latency="zero")) as srv:
        for kind, c in (("chat", 64), ("chat", 256), ("stream", 64), ("list32", 16)):
            print(asyncio.run(run(srv, n * (8 if kind == "list32" else 1), c, kind)), flush=True)
    # h100: 40 lists of 32 = 1,280 prompts in flight (the engine caps its batch at 1,024), then
    # 1,024 concurrent chat connections.
    with SimServer(SimConfig(latency="h100")) as srv:
        for args in ((40 * 32 * 3, 40, "list32", 128), (3072, 1024, "chat", 32)):
            srv.reset()
            res = asyncio.run(run(srv, *args))
            stats = srv.stats()
            res.update({k: stats[k] for k in ("max_running_seqs", "max_inflight")})
            print({"latency": "h100", **res}, flush=True)


if __name__ == "__main__":
    main()
