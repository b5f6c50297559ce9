"""The replicas plan: several engines, the raw ceiling over all of them, and the package at default settings.

    qwen-fast bench replicas [--servers 1,3] [--rounds 3] [--n 3000] [--max-tokens 32]
        [--base-url URL ...] [--out DIR]
    qwen-fast bench replicas --set old=URL,URL,URL --set new=URL,URL,URL [--depths 16,32,64]
        [--rows raw,batch,abatch] [--max-concurrency 512] [--openai] ...

Without ``--base-url`` it starts simulated engines (``--latency h100``, one process each) on
loopback. For each engine count it runs, interleaved over rounds: raw ``/v1/completions`` lists of
32 prompts with 16 lists in flight per engine, each list to the engine with the fewest sequences in
flight (the best raw strategy measured on the GPU), and ``BatchedChatQwen`` ``.batch`` and
``.abatch`` with the engine list and nothing else set. Ratios to the raw ceiling are taken within
each round. Rows are JSON lines (``replicas_*.jsonl``) beside a markdown table.

With ``--set`` it compares named sets of engines instead of engine counts (one GPU's servers with and without
MPS, say): per set and round, raw lists at each ``--depths`` (lists of 32 in flight per engine), ``.batch`` and
``.abatch`` at default settings, and with ``--max-concurrency N,...`` the same two at those admission limits; each
row's ratio is to the first set's raw lists at the first depth in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from langchain_qwen_fast.bench import scenarios as S
from langchain_qwen_fast.bench.report import median_range
from langchain_qwen_fast.cli.help import DefaultsHelpFormatter, plain


def raw_scenario(urls: list[str], w: S.Workload, per_server: int = 16, batch: int = 32) -> dict[str, Any]:
    # lists of ``batch`` prompts, ``per_server`` in flight per engine, each to the engine with the fewest prompts
    (lat, toks, errors), wall, cpu = S._timed(lambda: asyncio.run(S._raw(w, "list", per_server * len(urls), batch,
                                                                          urls)))
    return S._result(f"raw_lists_x{len(urls)}", w, wall, cpu, lat, toks, errors, client="aiohttp", engines=len(urls))


def qwen_scenario(urls: list[str], w: S.Workload, how: str, **fields: Any) -> dict[str, Any]:
    wk = dataclasses.replace(w, base_url=urls if len(urls) > 1 else urls[0])  # type: ignore[arg-type]
    model = S.qwen_model(wk, **fields)
    tag = {"max_total_concurrency": "_shared512", "routing": "_affinity"}
    suffix = "".join(tag.get(k, f"_{k}{v}") for k, v in sorted(fields.items()))
    out = S._lc_run(f"qwen_{how}_x{len(urls)}{suffix}", wk, model, how, client="BatchedChatQwen", engines=len(urls))
    out["dispatcher_max_in_flight"] = model.stats()["max_in_flight"]
    return out


def plan(counts: list[int], urls: list[str], variants: set[int] | None = None,
         openai: bool = False, rnd: int = 0) -> list[tuple[str, Any]]:
    """Per engine count: raw lists, ``.batch`` and ``.abatch``; for the counts in ``variants`` (default: every
    count above 1) also the old shared limit and prefix affinity; with ``openai``, ChatOpenAI's default
    ``.batch`` against the first engine. Odd rounds run each engine count's rows in reverse order, so no row
    always follows the same one (a row right after raw lists was the only one that did)."""
    steps: list[tuple[str, Any]] = []
    if openai:
        steps.append(("openai_batch_default_x1", lambda w, u=urls[:1]: _openai(u, w)))
    for k in counts:
        sub = urls[:k]
        group: list[tuple[str, Any]] = [
            (f"raw_lists_x{k}", lambda w, u=sub: raw_scenario(u, w)),
            (f"qwen_batch_x{k}", lambda w, u=sub: qwen_scenario(u, w, "batch")),
            (f"qwen_abatch_x{k}", lambda w, u=sub: qwen_scenario(u, w, "abatch")),
        ]
        if k > 1 and (variants is None or k in variants):
            # one limit shared by all engines (the old default), and prefix affinity on this plain workload
            group.append((f"qwen_batch_x{k}_shared512",
                          lambda w, u=sub: qwen_scenario(u, w, "batch", max_total_concurrency=512)))
            group.append((f"qwen_batch_x{k}_affinity",
                          lambda w, u=sub: qwen_scenario(u, w, "batch", routing="prefix_affinity")))
        steps.extend(reversed(group) if rnd % 2 else group)
    return steps


def _openai(urls: list[str], w: S.Workload) -> dict[str, Any]:
    wk = dataclasses.replace(w, base_url=urls[0])
    return S._lc_run("openai_batch_default_x1", wk, S.openai_model(wk), "batch", client="ChatOpenAI", engines=1)


def parse_sets(specs: list[str]) -> dict[str, list[str]]:
    """``--set NAME=URL,URL`` (repeated) -> ``{NAME: [URL, ...]}`` in the order given."""
    sets: dict[str, list[str]] = {}
    for spec in specs:
        name, _, urls = spec.partition("=")
        if not name or not urls or name in sets:
            raise SystemExit(f"--set {spec!r}: give NAME=URL[,URL...], each name once")
        sets[name] = [u.strip() for u in urls.split(",") if u.strip()]
    return sets


def set_plan(sets: dict[str, list[str]], depths: list[int], kinds: list[str], max_concurrency: list[int],
             openai: bool = False, rnd: int = 0) -> list[tuple[str, Any]]:
    """Per set: raw lists at each depth, then ``.batch``/``.abatch`` (default settings, and at each
    ``max_concurrency``); odd rounds run the whole list backwards. A row sends at least three times what it
    keeps in flight (``waves``), so a deep row reaches its depth and holds it."""
    steps: list[tuple[str, Any]] = []
    if openai:
        first = next(iter(sets.values()))[:1]
        steps.append(("openai_batch_default_x1", lambda w, u=first: _openai(u, w)))
    for name, urls in sets.items():
        if "raw" in kinds:
            for d in depths:
                steps.append((f"raw_lists_{name}_c{d}", lambda w, u=urls, d=d, n=name: _named(
                    raw_scenario(u, waves(w, d * 32, len(u)), per_server=d), f"raw_lists_{n}_c{d}", n, depth=d)))
        for how in ("batch", "abatch"):
            if how not in kinds:
                continue
            steps.append((f"qwen_{how}_{name}", lambda w, u=urls, h=how, n=name: _named(
                qwen_scenario(u, waves(w, 512, len(u)), h), f"qwen_{h}_{n}", n)))
            for mc in max_concurrency:
                tag = f"qwen_{how}_{name}_mc{mc}"
                steps.append((tag, lambda w, u=urls, h=how, n=name, t=tag, mc=mc: _named(
                    qwen_scenario(u, waves(w, mc, len(u)), h, max_concurrency=mc), t, n, max_concurrency=mc)))
    return list(reversed(steps)) if rnd % 2 else steps


def waves(w: S.Workload, per_engine: int, engines: int, count: int = 3) -> S.Workload:
    """``w`` with at least ``count`` times the sequences a row keeps in flight over all engines."""
    return dataclasses.replace(w, n=max(w.n, count * per_engine * engines))


def _named(row: dict[str, Any], scenario: str, set_name: str, **extra: Any) -> dict[str, Any]:
    row.update(scenario=scenario, set=set_name, **extra)
    return row


def set_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: each row's req/s and its within-round ratio to the first raw row of the first set."""
    ref = next((r["scenario"] for r in rows if r["scenario"].startswith("raw_lists_")), None)
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        if r.get("req_s"):
            by_round.setdefault(r["round"], {})[r["scenario"]] = r["req_s"]
    out = [f"| scenario | req/s (median) | x {ref}, per round (median, range) | errors |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["scenario"] for r in rows):
        vals = [v[name] for v in by_round.values() if name in v]
        rel = [v[name] / v[ref] for v in by_round.values() if name in v and ref in v]
        errors = sum(r["errors"] for r in rows if r["scenario"] == name)
        out.append(f"| {name} | {statistics.median(vals) if vals else 0:.1f} | {median_range(rel)} | {errors} |")
    return out


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per engine count, each scenario's req/s and its within-round ratios to raw lists over the same
    engines and, where the run has it, to ChatOpenAI's default ``.batch`` against one engine."""
    openai = {r["round"]: r["req_s"] for r in rows if r["scenario"].startswith("openai") and r.get("req_s")}
    out = ["| engines | scenario | req/s (median) | x raw lists, per round (median, range) | x ChatOpenAI .batch |",
           "|---|---|---|---|---|"]
    by_round: dict[tuple[int, int], dict[str, float]] = {}
    for r in rows:
        if r.get("req_s"):
            by_round.setdefault((r["engines"], r["round"]), {})[r["scenario"]] = r["req_s"]
    for e in sorted({e for e, _ in by_round}):
        rounds = [(rnd, v) for (k, rnd), v in sorted(by_round.items()) if k == e]
        names = sorted({n for _, v in rounds for n in v}, key=lambda n: (not n.startswith("raw"), n))
        for name in names:
            vals = [v[name] for _, v in rounds if name in v]
            rel = [v[name] / v[f"raw_lists_x{e}"] for _, v in rounds if name in v and v.get(f"raw_lists_x{e}")]
            spread = median_range(rel)
            vs = [v[name] / openai[rnd] for rnd, v in rounds if name in v and rnd in openai]
            oa = median_range(vs)
            out.append(f"| {e} | {name} | {statistics.median(vals):.1f} | {spread} | {oa} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qwen-fast bench replicas",
                                 description=plain(__doc__.split("\n")[0]),
                                 formatter_class=DefaultsHelpFormatter)
    ap.add_argument("--servers", default="1,3", help="engine counts to compare, comma-separated")
    ap.add_argument("--base-url", action="append", default=[], help="an engine (repeat); default: simulated engines")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--n", type=int, default=3000, help="requests per run")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (ignore_eos)")
    ap.add_argument("--model", default="Qwen/Qwen3-0.6B", help="served model name")
    ap.add_argument("--out", default="qwen-fast-bench", help="folder for the JSON lines and the table")
    ap.add_argument("--variants", default=None, help="engine counts that also run the shared-limit and affinity rows")
    ap.add_argument("--openai", action="store_true", help="add ChatOpenAI's default .batch against the first engine")
    ap.add_argument("--deadline", type=float, default=0, help="unix time after which no new run starts")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=URL,URL",
                    help="a named set of engines (repeat): compare sets instead of engine counts")
    ap.add_argument("--depths", default="16", help="with --set: lists of 32 in flight per engine for raw rows")
    ap.add_argument("--rows", default="raw,batch,abatch", help="with --set: which rows run for each set")
    ap.add_argument("--max-concurrency", default="",
                    help="with --set: also .batch/.abatch at these admission limits per engine (comma-separated)")
    a = ap.parse_args(argv)
    sets = parse_sets(a.set)
    counts = [int(x) for x in a.servers.split(",")] if not sets else [len(u) for u in sets.values()]
    folder = Path(a.out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"replicas_m{a.max_tokens}_{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        urls = list(a.base_url) or [u for us in sets.values() for u in us]
        if not urls:
            from langchain_qwen_fast.testing import SimConfig, SimServer

            urls = [stack.enter_context(SimServer(SimConfig(latency="h100", seed=i))).base_url
                    for i in range(max(counts))]
        w = S.Workload(base_url=urls[0], model=a.model, max_tokens=a.max_tokens, n=a.n)
        warm = dataclasses.replace(w, n=256)
        raw_scenario(urls, warm)
        qwen_scenario(urls, warm, "batch")
        variants = {int(x) for x in a.variants.split(",")} if a.variants else None
        depths, kinds = [int(x) for x in a.depths.split(",")], a.rows.split(",")
        limits = [int(x) for x in a.max_concurrency.split(",") if x]
        for rnd in range(a.rounds):
            steps = (set_plan(sets, depths, kinds, limits, a.openai, rnd) if sets
                     else plan(counts, urls, variants, a.openai, rnd))
            for name, fn in steps:
                if a.deadline and time.time() > a.deadline:
                    print(f"deadline reached before {name} round {rnd}", flush=True)
                    break
                t_start = time.time()
                row = fn(w)
                row.update(round=rnd, t_start=t_start, t=time.time())
                rows.append(row)
                with path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"round {rnd} {name:18s} {row['req_s']:8.1f} req/s  errors {row['errors']}", flush=True)
    table = "\n".join(set_ratios(rows) if sets else ratios(rows))
    (path.with_suffix(".md")).write_text(table + "\n")
    print(table)
    print(f"\nrows in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
