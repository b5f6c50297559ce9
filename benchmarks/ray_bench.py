"""Ray Data pipeline vs ``BatchedChatQwen.batch`` outside Ray: rows/s on the same simulated replicas, one run.

Two simulator replicas (``--latency h100`` by default, each its own process) serve every variant:

- ``plain``: one ``BatchedChatQwen(base_url=[a, b]).batch(prompts, return_exceptions=True)`` in this
  process, the pool warmed up once (what the job would do on one machine);
- ``ray-async-K``: ``qwen_map_batches`` with ``QwenBatchPredictor`` (async ``__call__``, ``.abatch``),
  ``--actors`` actors, K blocks in flight per actor;
- ``ray-sync-K``: the same with ``QwenSyncBatchPredictor`` (blocking ``.batch``; K > 1 means K threads).

The Ray cluster is started once (``address="local"``, ``num_cpus`` = this machine's cores); each Ray run
starts its own actors, as each job does, so ``rows/s`` includes actor start-up and ``steady rows/s``
counts the rows between 10% and 90% of the output. Variants are interleaved (the order rotates each
round) and repeated; the table gives medians with min-max and the ratio to ``plain`` within each round.
``max in flight`` is the most prompts the two servers held at once.

    python benchmarks/ray_bench.py [--rows 20000] [--rounds 3] [--latency h100] [--max-tokens 32]
        [--actors 2] [--actor-concurrency N] [--variants plain ray-async-2 ray-async-1 ray-sync-1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import ray

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast.integrations.ray_data import qwen_map_batches
from langchain_qwen_fast.testing import SimConfig, SimServer

MODEL = "Qwen/Qwen3-0.6B"


def prompts(n: int) -> list[str]:
    return [f"Describe product {i} in one line." for i in range(n)]


def run_plain(llm: BatchedChatQwen, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = llm.batch(prompts(n), return_exceptions=True)
    elapsed = time.perf_counter() - t0
    errors = sum(isinstance(o, BaseException) for o in out)
    return {"rows_per_s": n / elapsed, "steady_rows_per_s": n / elapsed, "first_s": None, "elapsed_s": elapsed,
            "errors": errors, "rows": len(out)}


def run_ray(ds: Any, n: int, llm_kwargs: dict[str, Any], variant: str, args: argparse.Namespace) -> dict[str, Any]:
    _, mode, k = variant.split("-")
    t0 = time.perf_counter()
    out = qwen_map_batches(ds, llm_kwargs=llm_kwargs, actors=args.actors, batch_size=args.batch_size,
                           max_concurrent_batches=int(k), sync=mode == "sync")
    marks: list[tuple[float, int]] = []
    seen = errors = 0
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        seen += batch.num_rows
        errors += batch.num_rows - batch.column("qwen_error").null_count
        marks.append((time.perf_counter() - t0, seen))
    elapsed = time.perf_counter() - t0
    lo = next(m for m in marks if m[1] >= 0.1 * n)
    hi = next(m for m in marks if m[1] >= 0.9 * n)
    steady = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")
    return {"rows_per_s": n / elapsed, "steady_rows_per_s": steady, "first_s": marks[0][0], "elapsed_s": elapsed,
            "errors": errors, "rows": seen}


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["variant"]] = r
    out = []
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        ratio = [rd[v]["rows_per_s"] / rd["plain"]["rows_per_s"] for rd in by_round.values() if "plain" in rd]
        steady = [rd[v]["steady_rows_per_s"] / rd["plain"]["rows_per_s"] for rd in by_round.values() if "plain" in rd]
        out.append({
            "variant": v,
            "rows_per_s": statistics.median(r["rows_per_s"] for r in mine),
            "rows_per_s_min": min(r["rows_per_s"] for r in mine),
            "rows_per_s_max": max(r["rows_per_s"] for r in mine),
            "steady_rows_per_s": statistics.median(r["steady_rows_per_s"] for r in mine),
            "ratio": statistics.median(ratio) if ratio else None,
            "steady_ratio": statistics.median(steady) if steady else None,
            "first_s": statistics.median(r["first_s"] for r in mine) if mine[0]["first_s"] is not None else None,
            "max_in_flight": max(r["max_in_flight"] for r in mine),
            "errors": sum(r["errors"] for r in mine),
        })
    return out


def table(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def f(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    lines = [f"{args.rows} rows, {args.max_tokens} tokens, latency={args.latency}, {args.actors} actors, "
             f"batch_size={args.batch_size}, max_concurrency per actor {args.actor_concurrency or 512} "
             f"(plain: 512), {args.rounds} rounds, {os.cpu_count()} CPUs", "",
             "| variant | rows/s (min-max) | steady rows/s | vs plain | steady vs plain | first rows (s) "
             "| max in flight | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['variant']} | {s['rows_per_s']:.0f} ({s['rows_per_s_min']:.0f}-{s['rows_per_s_max']:.0f}) "
                     f"| {s['steady_rows_per_s']:.0f} | {f(s['ratio'], '.2f')}x | {f(s['steady_ratio'], '.2f')}x "
                     f"| {f(s['first_s'], '.1f')} | {s['max_in_flight']} | {s['errors']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency", default="h100", choices=["h100", "zero"])
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--actor-concurrency", type=int, default=None,
                    help="max_concurrency of each actor's model (default: the model's own, 512 per actor)")
    ap.add_argument("--variants", nargs="+", default=["plain", "ray-async-2", "ray-async-1", "ray-sync-1"])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if "plain" not in args.variants:
        args.variants.insert(0, "plain")

    rows: list[dict[str, Any]] = []
    with SimServer(SimConfig(latency=args.latency)) as a, SimServer(SimConfig(latency=args.latency)) as b:
        llm_kwargs = {"base_url": [a.base_url, b.base_url], "model": MODEL, "max_tokens": args.max_tokens}
        actor_kwargs = dict(llm_kwargs)
        if args.actor_concurrency:
            actor_kwargs["max_concurrency"] = args.actor_concurrency
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts(args.rows))]).materialize()
            llm = BatchedChatQwen(**llm_kwargs)
            llm.batch(prompts(200))  # warm-up: connections, first-call costs
            for rnd in range(args.rounds):
                order = args.variants[rnd % len(args.variants):] + args.variants[:rnd % len(args.variants)]
                for v in order:
                    for s in (a, b):
                        s.reset()
                    row = run_plain(llm, args.rows) if v == "plain" else run_ray(ds, args.rows, actor_kwargs, v, args)
                    row.update(variant=v, round=rnd,
                               max_in_flight=sum(s.stats()["max_inflight_prompts"] for s in (a, b)))
                    rows.append(row)
                    print(f"round {rnd} {v:12s} {row['rows_per_s']:7.0f} rows/s steady {row['steady_rows_per_s']:7.0f}"
                          f" in {row['elapsed_s']:5.1f} s, max in flight {row['max_in_flight']}, "
                          f"errors {row['errors']}", file=sys.stderr, flush=True)
            llm.close()
        finally:
            ray.shutdown()
    summary = summarise(rows, args.variants)
    md = table(summary, args)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "ray": ray.__version__, "argv": sys.argv}
    (out / f"ray-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
