"""Turn benchmark JSON lines into markdown tables with ratios, and a PNG plot.

Ratios are always taken within one file (one server run): against ChatOpenAI's default ``.batch``
and against the best raw strategy measured beside it. Wherever a row had errors, the errors column
names their types (``error_types`` in the row), and runs that failed outright are listed after the
tables rather than dropped.

    python -m langchain_qwen_fast.bench.report RESULTS.jsonl [...] --md OUT.md --png OUT.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from langchain_qwen_fast.bench.progress import error_summary

ORDER = [
    "raw_aiohttp_chat_c256",
    "raw_aiohttp_list32_x16",
    "qwen_batch_completions",
    "qwen_batch_completions_no_token_ids",
    "qwen_abatch_completions",
    "qwen_threads32_completions",
    "qwen_batch_chat",
    "qwen_abatch_chat",
    "qwen_threads32_chat",
    "openai_batch_default",
    "openai_batch_c256",
    "openai_abatch_default",
    "httpx_serial",
    "qwen_serial_chat",
    "qwen_serial_completions",
    "openai_serial",
]


def load(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def median_range(xs: list[float], digits: int = 2, suffix: str = "x") -> str:
    """``[0.91, 0.97, 1.05]`` -> ``"0.97x (0.91-1.05)"``: a per-round ratio's median and range; ``-`` when empty."""
    if not xs:
        return "-"
    f = f".{digits}f"
    return f"{statistics.median(xs):{f}}{suffix} ({min(xs):{f}}-{max(xs):{f}})"


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.0f}-{max(xs):.0f}" if len(xs) > 1 else "-"


def errors_cell(errors: int, types: dict[str, int] | None) -> str:
    """``3`` -> ``"3 (ServerError 2, APIConnectionError 1)"``; rows written before error_types show the count."""
    return f"{errors} ({error_summary(types)})" if errors and types else str(errors)


def _types(rows: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in rows:
        total.update(r.get("error_types") or {})
    return dict(total)


def closed_loop(rows: list[dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
    """Per max_tokens, per scenario: medians over rounds (sweeps and open-loop rows excluded)."""
    by: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("failure") or r.get("sweep") or r["scenario"].startswith("poisson") or not r.get("req_s"):
            continue
        by[r["max_tokens"]][r["scenario"]].append(r)
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for mt, scen in by.items():
        out[mt] = {}
        # the best raw strategy of each round: a ratio against it is taken within one round
        best_raw: dict[Any, float] = defaultdict(float)
        for name, rs in scen.items():
            if name.startswith("raw_"):
                for r in rs:
                    best_raw[r.get("round")] = max(best_raw[r.get("round")], r["req_s"])
        for name, rs in scen.items():
            per_round = [r["req_s"] / best_raw[r.get("round")] for r in rs if best_raw.get(r.get("round"))]
            out[mt][name] = {
                "x_raw_rounds": _med(per_round) if per_round else None,
                "x_raw_rounds_spread": f"{min(per_round):.2f}-{max(per_round):.2f}" if len(per_round) > 1 else "-",
                "n": rs[0]["n"],
                "rounds": len(rs),
                "req_s": _med([r["req_s"] for r in rs]),
                "req_s_spread": _spread([r["req_s"] for r in rs]),
                "cpu_ms": _med([r["client_cpu_ms_per_req"] for r in rs]),
                "p50": _med([r["p50_s"] for r in rs if r.get("p50_s") is not None]),
                "p95": _med([r["p95_s"] for r in rs if r.get("p95_s") is not None]),
                "errors": sum(r.get("errors", 0) for r in rs),
                "error_types": _types(rs),
                "tokens_ok": all(r.get("tokens_ok") for r in rs),
            }
    return out


def closed_loop_md(rows: list[dict[str, Any]]) -> str:
    lines = []
    for mt, scen in sorted(closed_loop(rows).items()):
        oai = scen.get("openai_batch_default")
        raw = max((v["req_s"] for k, v in scen.items() if k.startswith("raw_")), default=None)
        lines += [
            f"#### max_tokens = {mt} (N = {next(iter(scen.values()))['n']})",
            "",
            "| scenario | req/s (median) | spread | x ChatOpenAI .batch | x best raw | x best raw of its round "
            "(median, range) | client CPU ms/req | CPU x ChatOpenAI .batch | p50 s | p95 s | errors | tokens exact |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name in sorted(scen, key=lambda k: ORDER.index(k) if k in ORDER else 99):
            v = scen[name]
            x_oai = f"{v['req_s'] / oai['req_s']:.2f}" if oai else ""
            x_raw = f"{v['req_s'] / raw:.2f}" if raw else ""
            cpu_ratio = f"{v['cpu_ms'] / oai['cpu_ms']:.2f}" if oai else ""
            x_round = f"{v['x_raw_rounds']:.2f} ({v['x_raw_rounds_spread']})" if v["x_raw_rounds"] else ""
            lines.append(
                f"| {name} | {v['req_s']:.1f} | {v['req_s_spread']} | {x_oai} | {x_raw} | {x_round} | "
                f"{v['cpu_ms']:.3f} | "
                f"{cpu_ratio} | {v['p50']:.3f} | {v['p95']:.3f} | {errors_cell(v['errors'], v['error_types'])} | "
                f"{'yes' if v['tokens_ok'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def open_loop_md(rows: list[dict[str, Any]]) -> str:
    pr = [r for r in rows if r["scenario"].startswith("poisson") and not r.get("failure")]
    if not pr:
        return ""
    lines = [
        "| max_tokens | offered req/s (share of best raw) | client | achieved req/s | p50 s | p95 s | p99 s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(pr, key=lambda r: (r["max_tokens"], r["offered_rps"], r["scenario"])):
        share = f" ({r['load_fraction']:.0%})" if r.get("load_fraction") else ""
        lines.append(
            f"| {r['max_tokens']} | {r['offered_rps']:.0f}{share} | {r['scenario'].replace('poisson_', '')} | "
            f"{r['req_s']:.1f} | {r['p50_s']} | {r['p95_s']} | {r['p99_s']} | "
            f"{errors_cell(r['errors'], r.get('error_types'))} |"
        )
    return "\n".join(lines) + "\n"


def sweep_md(rows: list[dict[str, Any]]) -> str:
    sw = [r for r in rows if r.get("sweep") and not r.get("failure")]
    if not sw:
        return ""
    lines = [
        "| max_tokens | sweep | N | admission limit | wire mode | req/s | client CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sw:
        lines.append(
            f"| {r['max_tokens']} | {r['sweep']} | {r['n']} | {r.get('admission_limit', 512)} | {r.get('mode')} | "
            f"{r['req_s']:.1f} | {r['client_cpu_ms_per_req']:.3f} | {errors_cell(r['errors'], r.get('error_types'))} |"
        )
    return "\n".join(lines) + "\n"


def failures_md(rows: list[dict[str, Any]]) -> str:
    """Runs that raised instead of finishing (the tables leave them out), with the exception."""
    failed = [r for r in rows if r.get("failure")]
    if not failed:
        return ""
    lines = ["Runs that failed (not in the tables above):", ""]
    for r in failed:
        rnd = f", round {r['round'] + 1}" if r.get("round") is not None else ""
        lines.append(f"- {r['scenario']} (max_tokens {r.get('max_tokens')}{rnd}): {r['failure']}")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cl = closed_loop(rows)
    pr = [r for r in rows if r["scenario"].startswith("poisson") and not r.get("failure")]
    fig, axes = plt.subplots(1, len(cl) + (1 if pr else 0), figsize=(6 * (len(cl) + (1 if pr else 0)), 5))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (mt, scen) in zip(axes, sorted(cl.items()), strict=False):
        names = [n for n in sorted(scen, key=lambda k: ORDER.index(k) if k in ORDER else 99) if "serial" not in n]
        vals = [scen[n]["req_s"] for n in names]
        colors = ["#888" if n.startswith("raw") else "#d62728" if n.startswith("openai") else "#1f77b4" for n in names]
        ax.barh(names, vals, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel("req/s (median over rounds)")
        ax.set_title(f"max_tokens={mt}")
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.0f}", va="center", fontsize=8)
    if pr:
        ax = axes[-1]
        for name in sorted({r["scenario"] for r in pr}):
            for mt in sorted({r["max_tokens"] for r in pr}):
                pts = sorted(
                    (r["offered_rps"], r["p95_s"]) for r in pr if r["scenario"] == name and r["max_tokens"] == mt
                )
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        marker="o",
                        label=f"{name.replace('poisson_', '')} m{mt}",
                    )
        ax.set_xlabel("offered load (req/s, Poisson)")
        ax.set_ylabel("p95 latency (s)")
        ax.set_yscale("log")
        ax.set_title("open loop: p95 vs offered load")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--md", default=None)
    ap.add_argument("--png", default=None)
    ap.add_argument("--title", default="")
    a = ap.parse_args(argv)
    rows = load(a.files)
    md = "\n".join(x for x in (closed_loop_md(rows), open_loop_md(rows), sweep_md(rows), failures_md(rows)) if x)
    if a.md:
        Path(a.md).write_text(md)
    print(md)
    if a.png:
        plot(rows, a.png, a.title)


if __name__ == "__main__":
    main()
