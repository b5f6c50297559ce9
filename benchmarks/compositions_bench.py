"""Every LangChain entry point: sequences in flight at the server and req/s, this package against ChatOpenAI.

    .venv/bin/python benchmarks/compositions_bench.py [--n 300] [--delay 0.05] [--rounds 3]

One simulated server on loopback answers every request after ``--delay`` seconds (``stall`` fault, no
latency model), so what is measured is how many calls each entry point keeps in flight (this package on the chat
wire, one request per call, so requests in flight at the server are sequences in flight). Each row reports the
peak sequences in flight the server saw and req/s (inputs per second; a RunnableParallel of two models sends two
requests per input). "LangChain default" rows call LangChain's own ``Runnable`` method on this package's model,
which is what ``batch_as_completed`` and the compositions did before this package overrode or wrapped them.
Prints a markdown table and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel

from langchain_qwen_fast import BatchedChatQwen, run_batch
from langchain_qwen_fast.bench.scenarios import Workload, openai_model
from langchain_qwen_fast.testing import SimConfig, SimServer


def drain(it: Any) -> int:
    return sum(1 for _ in it)


async def adrain(ait: Any) -> int:
    return len([x async for x in ait])


async def oai_as_completed(w: Workload, xs: list[str]) -> int:
    """ChatOpenAI's ``abatch_as_completed`` with a client of this event loop, closed on it: a client left to the
    garbage collector tries to close its connections on a loop that ``asyncio.run`` already closed."""
    oai = openai_model(w)
    try:
        return await adrain(oai.abatch_as_completed(xs))
    finally:
        await oai.root_async_client.close()


def scenarios(qwen: Any, oai: Any, w: Workload) -> list[tuple[str, str, Callable[[list[str]], Any]]]:
    def lam(m: Any) -> Any:
        return RunnableLambda(lambda q: m.invoke(q).content)

    return [
        ("llm.batch_as_completed", "BatchedChatQwen", lambda xs: drain(qwen.batch_as_completed(xs))),
        ("llm.batch_as_completed", "LangChain default", lambda xs: drain(Runnable.batch_as_completed(qwen, xs))),
        ("llm.batch_as_completed", "ChatOpenAI", lambda xs: drain(oai.batch_as_completed(xs))),
        ("llm.abatch_as_completed", "BatchedChatQwen", lambda xs: asyncio.run(adrain(qwen.abatch_as_completed(xs)))),
        ("llm.abatch_as_completed", "ChatOpenAI", lambda xs: asyncio.run(oai_as_completed(w, xs))),
        ("RunnableParallel(a=llm, b=llm)", "run_batch", lambda xs: run_batch(RunnableParallel(a=qwen, b=qwen), xs)),
        ("RunnableParallel(a=llm, b=llm)", ".batch (LangChain default)",
         lambda xs: RunnableParallel(a=qwen, b=qwen).batch(xs)),
        ("RunnableParallel(a=llm, b=llm)", ".batch(max_concurrency=512)",
         lambda xs: RunnableParallel(a=qwen, b=qwen).batch(xs, config={"max_concurrency": 512})),
        ("RunnableParallel(a=llm, b=llm)", "ChatOpenAI .batch", lambda xs: RunnableParallel(a=oai, b=oai).batch(xs)),
        ("RunnableLambda(llm.invoke)", "run_batch", lambda xs: run_batch(lam(qwen), xs)),
        ("RunnableLambda(llm.invoke)", ".batch (LangChain default)", lambda xs: lam(qwen).batch(xs)),
        ("RunnableLambda(llm.invoke)", "ChatOpenAI .batch", lambda xs: lam(oai).batch(xs)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with SimServer(SimConfig(latency="zero", faults=(f"stall={a.delay}",))) as srv:
        w = Workload(base_url=srv.base_url, max_tokens=16, n=a.n)
        # chat wire: one request per call, so HTTP requests in flight at the server are sequences in flight
        qwen = BatchedChatQwen(base_url=srv.base_url, model=w.model, max_tokens=16, api_key="EMPTY", wire_mode="chat")
        oai = openai_model(w)
        xs = [f"question {i}" for i in range(a.n)]
        for rnd in range(a.rounds):
            for comp, how, fn in scenarios(qwen, oai, w):
                srv.reset()
                t0 = time.perf_counter()
                fn(xs)
                wall = time.perf_counter() - t0
                st = srv.stats()
                rows.append({"composition": comp, "how": how, "round": rnd, "n": a.n, "wall_s": round(wall, 3),
                             "req_s": round(a.n / wall, 1), "max_in_flight": st["max_inflight"],
                             "requests": sum(st["requests"].get(k, 0) for k in ("chat", "completions"))})
                print(json.dumps(rows[-1]), flush=True)
    table = ["| composition | how | sequences in flight at the server (max) | inputs/s (median) |", "|---|---|---|---|"]
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["composition"], r["how"]) not in keys:
            keys.append((r["composition"], r["how"]))
    for comp, how in keys:
        rs = [r for r in rows if r["composition"] == comp and r["how"] == how]
        table.append(f"| {comp} | {how} | {max(r['max_in_flight'] for r in rs)} | "
                     f"{statistics.median(r['req_s'] for r in rs):.0f} |")
    print("\n".join(table))
    out = Path(a.out) / f"compositions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(a), "rows": rows, "table": table}, indent=1))
    print(f"\nrows in {out}")


if __name__ == "__main__":
    main()
