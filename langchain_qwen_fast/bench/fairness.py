"""The fairness plan: one interactive caller beside a bulk batch in the same process, against one server.

    qwen-fast bench fairness [--max-tokens 32,128] [--n 6000] [--rounds 2]
        [--headroom 0,16] [--base-url URL] [--out DIR]

A bulk ``.batch(N)`` (or ``.abatch``) runs on one model instance while another instance with equal
settings (so, for this package, the same dispatcher) calls ``invoke`` in a loop with 50 ms between
calls; its latencies are the interactive figures. Each bulk also runs alone, in the same round, for
the throughput it would have without the interactive caller. ChatOpenAI runs the same way (its
``.batch`` and ``.abatch`` as the bulk). Without ``--base-url`` a simulated server (``--latency
h100``) is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from langchain_qwen_fast.bench import scenarios as S
from langchain_qwen_fast.bench.report import median_range
from langchain_qwen_fast.cli.help import DefaultsHelpFormatter, plain


def _bulk(model: Any, how: str, prompts: list[str]) -> None:
    if how == "batch":
        model.batch(prompts, return_exceptions=True)
    else:
        asyncio.run(model.abatch(prompts, return_exceptions=True))


def run(make: Any, how: str, w: S.Workload, interactive: bool) -> dict[str, Any]:
    """One bulk run; with ``interactive``, a second instance invokes in a loop while it runs."""
    bulk, inter = make(), make()
    inter.invoke("warm up")
    prompts = S.prompts(w.n)
    lat: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    th = threading.Thread(target=_bulk, args=(bulk, how, prompts))
    th.start()
    if interactive:
        time.sleep(0.5)  # the bulk's queue is full by then
        while th.is_alive():
            t = time.perf_counter()
            try:
                inter.invoke("Is the shop open on Sunday?")
                lat.append(time.perf_counter() - t)
            except Exception:
                errors += 1
            time.sleep(0.05)
    th.join()
    wall = time.perf_counter() - t0
    lat.sort()
    pick = (lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 4)) if lat else (lambda p: None)
    return {"bulk_req_s": round(w.n / wall, 2), "bulk_wall_s": round(wall, 3), "interactive_n": len(lat),
            "interactive_p50_s": pick(0.5), "interactive_p95_s": pick(0.95), "interactive_max_s": pick(1.0),
            "interactive_errors": errors}


def plan(headrooms: list[int], openai: bool) -> list[tuple[str, str, str, dict[str, Any], bool]]:
    """(name, client, how, fields, interactive)."""
    steps: list[tuple[str, str, str, dict[str, Any], bool]] = [("qwen_batch_alone", "qwen", "batch", {}, False)]
    steps.append(("qwen_batch_interactive_default", "qwen", "batch", {}, True))
    for h in headrooms:
        steps.append((f"qwen_batch_interactive_h{h}", "qwen", "batch", {"interactive_headroom": h}, True))
    steps.append(("qwen_abatch_alone", "qwen", "abatch", {}, False))
    steps.append(("qwen_abatch_interactive_default", "qwen", "abatch", {}, True))
    if openai:
        for how in ("batch", "abatch"):
            steps.append((f"openai_{how}_alone", "openai", how, {}, False))
            steps.append((f"openai_{how}_interactive", "openai", how, {}, True))
    return steps


def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f}" if xs else "-"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Medians over rounds; the bulk's throughput as a ratio to the same bulk alone in the same round."""
    out = ["| max_tokens | scenario | bulk req/s | bulk x alone (per round) | interactive p50 s | interactive p95 s |"
           " calls |", "|---|---|---|---|---|---|---|"]
    by: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["max_tokens"], r["scenario"]), []).append(r)
    alone = {(r["max_tokens"], r["scenario"], r["round"]): r["bulk_req_s"] for r in rows}
    for (mt, name), rs in sorted(by.items()):
        base = name.rsplit("_interactive", 1)[0] + "_alone"
        rel = [r["bulk_req_s"] / alone[(mt, base, r["round"])] for r in rs
               if "_interactive" in name and (mt, base, r["round"]) in alone]
        ratio = median_range(rel, digits=3, suffix="")
        p50 = [r["interactive_p50_s"] for r in rs if r["interactive_p50_s"] is not None]
        p95 = [r["interactive_p95_s"] for r in rs if r["interactive_p95_s"] is not None]
        bulk = statistics.median(r["bulk_req_s"] for r in rs)
        calls = sum(r["interactive_n"] for r in rs)
        out.append(f"| {mt} | {name} | {bulk:.1f} | {ratio} | {_med(p50)} | {_med(p95)} | {calls} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qwen-fast bench fairness",
                                 description=plain(__doc__.split("\n")[0]),
                                 formatter_class=DefaultsHelpFormatter)
    ap.add_argument("--base-url", default=None, help="the server; default: a simulated one")
    ap.add_argument("--max-tokens", default="32,128", help="answer lengths, comma-separated")
    ap.add_argument("--n", type=int, default=6000, help="bulk batch size")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--headroom", default="0,16", help="interactive_headroom values to compare")
    ap.add_argument("--no-openai", action="store_true", help="skip the ChatOpenAI rows")
    ap.add_argument("--model", default="Qwen/Qwen3-0.6B", help="served model name")
    ap.add_argument("--out", default="qwen-fast-bench", help="folder for the JSON lines and the table")
    a = ap.parse_args(argv)
    folder = Path(a.out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fairness_{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        url = a.base_url
        if url is None:
            from langchain_qwen_fast.testing import SimConfig, SimServer

            url = stack.enter_context(SimServer(SimConfig(latency="h100"))).base_url
        for mt in [int(x) for x in a.max_tokens.split(",")]:
            w = S.Workload(base_url=url, model=a.model, max_tokens=mt, n=a.n)
            for rnd in range(a.rounds):
                for name, client, how, fields, inter in plan([int(x) for x in a.headroom.split(",")], not a.no_openai):

                    def make(c: str = client, f: dict[str, Any] = fields, wk: S.Workload = w) -> Any:
                        return S.qwen_model(wk, **f) if c == "qwen" else S.openai_model(wk)

                    row = {"scenario": name, "client": client, "bulk": how, "max_tokens": mt, "n": a.n,
                           "round": rnd, **fields, **run(make, how, w, inter), "t": time.time()}
                    rows.append(row)
                    with path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"m{mt} round {rnd} {name:32s} bulk {row['bulk_req_s']:7.1f} req/s  interactive p50 "
                          f"{row['interactive_p50_s']} p95 {row['interactive_p95_s']}", flush=True)
    text = "\n".join(table(rows))
    path.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nrows in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
