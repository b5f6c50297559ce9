"""Run a benchmark plan: scenarios interleaved over rounds, one JSON line per run, with a deadline.

    python -m langchain_qwen_fast.bench.run --base-url URL --plan gpu --max-tokens 128 --n 1500 --rounds 2 --out F.jsonl

Plans name scenario lists; rounds repeat the whole list so slow drift (thermal, caches, a warming
server) spreads over every scenario instead of biasing the ones that ran last. The JSON lines go to
``--out`` only; the console shows progress and one summary line per row (``bench/progress.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from langchain_qwen_fast.bench import scenarios as S
from langchain_qwen_fast.bench.progress import RunDisplay, row_line

Plan = list[tuple[str, Callable[[S.Workload], dict[str, Any]]]]


def plan(name: str) -> Plan:
    qwen = [
        (f"qwen_{how}_{mode}", lambda w, h=how, m=mode: S.qwen_scenario(w, h, m))
        for mode in ("chat", "completions")
        for how in ("batch", "abatch", "threads32")
    ]
    openai = [
        ("openai_batch_default", lambda w: S.openai_scenario(w, "batch")),
        ("openai_batch_c256", lambda w: S.openai_scenario(w, "batch", 256)),
        ("openai_abatch_default", lambda w: S.openai_scenario(w, "abatch")),
    ]
    raw = [
        ("raw_aiohttp_chat_c256", lambda w: S.raw_scenario(w, "chat", 256)),
        ("raw_aiohttp_list32_x16", lambda w: S.raw_scenario(w, "list", 16, 32)),
    ]
    no_ids = [("qwen_batch_completions_no_token_ids", lambda w: S.qwen_scenario(w, "batch", "completions", False))]
    if name == "gpu":
        return [*raw, *qwen, *no_ids, *openai]
    if name == "cpu":
        return [*raw, *qwen, *openai]
    if name == "focus":  # the rows the throughput targets compare, for more rounds in the same time
        keep = {"qwen_batch_completions", "qwen_abatch_completions", "openai_batch_default"}
        return [*raw, *[step for step in [*qwen, *openai] if step[0] in keep]]
    if name == "serial":
        return [
            ("httpx_serial", S.httpx_serial),
            ("qwen_serial_chat", lambda w: S.qwen_scenario(w, "serial", "chat")),
            ("openai_serial", lambda w: S.openai_scenario(w, "serial")),
        ]
    raise ValueError(f"unknown plan {name!r}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--plan", default="gpu")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=0, help="unix time after which no new run starts")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", default="")
    ap.add_argument("--poisson", default="", help="fractions of the best raw req/s in --out, e.g. 0.5,0.9")
    ap.add_argument("--poisson-seconds", type=float, default=20.0)
    ap.add_argument("--sweep", action="store_true", help="BatchedChatQwen batch over N and admission limits")
    ap.add_argument("--no-warmup", action="store_true", help="no warm-up: a profiler sees one scenario")
    a = ap.parse_args(argv)
    w = S.Workload(base_url=a.base_url, max_tokens=a.max_tokens, n=a.n)
    steps = plan(a.plan)
    if a.only:
        keep = set(a.only.split(","))
        steps = [s for s in steps if s[0] in keep]
    fractions = [float(x) for x in a.poisson.split(",")] if a.poisson else []
    total = a.rounds * len(steps) + 2 * len(fractions) + (16 if a.sweep else 0)
    with RunDisplay(f"{a.tag or a.plan} m{a.max_tokens}", total) as show:
        _run(a, w, steps, fractions, show)


def _run(a: argparse.Namespace, w: S.Workload, steps: Plan, fractions: list[float], show: RunDisplay) -> None:
    # warm-up: first-call costs (imports, connection pools, the server's prefix cache) paid outside the timings
    warm = S.Workload(a.base_url, max_tokens=a.max_tokens, n=256 if a.rounds else 64)
    show.start("warm-up")
    if not a.no_warmup:
        S.raw_scenario(warm, "chat", 64)
    if a.plan != "serial" and not a.no_warmup:
        S.qwen_scenario(warm, "batch", "completions")
        S.qwen_scenario(warm, "batch", "chat")
        S.openai_scenario(warm, "batch", 256)
    for rnd in range(a.rounds):
        for name, fn in steps:
            if a.deadline and time.time() > a.deadline:
                show.note(f"deadline reached before {name} round {rnd}")
                return
            show.start(f"{name}, round {rnd + 1}/{a.rounds}")
            try:
                row = fn(w)
            except Exception as e:  # a failed scenario is a row, not the end of the run
                row = {
                    "scenario": name,
                    "max_tokens": w.max_tokens,
                    "n": w.n,
                    "failure": f"{type(e).__name__}: {e}"[:300],
                }
            row.update(round=rnd, tag=a.tag, t=time.time())
            emit(a.out, row, show)
    if fractions:
        best = best_raw(a.out, a.max_tokens)
        for frac in fractions:
            for client, mode in (("qwen", "completions"), ("openai", "chat")):
                if a.deadline and time.time() > a.deadline:
                    return
                show.start(f"poisson {client} at {frac:.0%} of {best:.0f} req/s")
                row = S.poisson_scenario(w, client, best * frac, a.poisson_seconds, mode=mode)
                row.update(load_fraction=frac, best_raw_req_s=best, tag=a.tag, t=time.time())
                emit(a.out, row, show)
    if a.sweep:
        for n in (1000, 3000, 10000):
            for mode in ("chat", "completions"):
                run_one(a, S.Workload(a.base_url, max_tokens=a.max_tokens, n=n), mode, None, "sweep_n", show)
        for limit in (64, 128, 256, 512, 1024):
            for mode in ("chat", "completions"):
                run_one(a, w, mode, limit, "sweep_admission", show)


def run_one(
    a: argparse.Namespace, w: S.Workload, mode: str, limit: int | None, kind: str, show: RunDisplay | None = None
) -> None:
    if a.deadline and time.time() > a.deadline:
        return
    if show:
        show.start(f"{kind} n={w.n} limit={limit or 'default'} {mode}")
    kw: dict[str, Any] = {"max_concurrency": limit} if limit else {}
    row = S.qwen_scenario(w, "batch", mode, **kw)
    row.update(sweep=kind, admission_limit=limit or "default", tag=a.tag, t=time.time())
    emit(a.out, row, show)


def emit(path: str, row: dict[str, Any], show: RunDisplay | None = None) -> None:
    """Append the row to the JSON lines file (the format report.py and the GPU runner read), then show it."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if show is not None:
        show.row(row)
    else:
        print(row_line(row), flush=True)


def best_raw(path: str, max_tokens: int) -> float:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    vals = [
        r["req_s"]
        for r in rows
        if r.get("scenario", "").startswith("raw_")
        and r.get("max_tokens") == max_tokens
        and r.get("req_s")
        and not r.get("errors")
    ]
    if not vals:
        raise SystemExit("no raw rows to derive the open-loop rate from")
    return max(vals)


if __name__ == "__main__":
    main()
