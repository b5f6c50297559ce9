"""Tables and a plot from the engines-per-GPU run (benchmarks/gpu/engines.sh table/extra).

    python benchmarks/gpu/engines_report.py RESULTS_DIR [--png docs/gpu-engines-h200.png]

Per engine count and length: medians over rounds of req/s, the within-round ratio to raw lists over the same
engines and to ChatOpenAI's default ``.batch`` against one engine, and the mean GPU-busy sample during each row
(``gpu_util_table.csv``, NVML utilisation every 0.5 s).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path
from typing import Any

from langchain_qwen_fast.bench.report import median_range


def _util(folder: Path) -> list[tuple[float, float]]:
    out = []
    for line in (folder / "gpu_util_table.csv").read_text().splitlines():
        ts, util, _ = (x.strip() for x in line.split(","))
        t = datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
        out.append((t.timestamp(), float(util.split()[0])))
    return out


def table(rows: list[dict[str, Any]], util: list[tuple[float, float]]) -> list[str]:
    openai = {r["round"]: r["req_s"] for r in rows if r["scenario"].startswith("openai")}
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["scenario"], []).append(r)
    out = ["| engines | scenario | req/s (median of rounds) | x raw lists (per round) "
           "| x ChatOpenAI `.batch` (per round) | GPU busy % |", "|---|---|---|---|---|---|"]

    def raw_of(r: dict[str, Any]) -> float | None:
        got = [x["req_s"] for x in rows if x["scenario"] == f"raw_lists_x{r['engines']}" and x["round"] == r["round"]]
        return got[0] if got else None

    order = sorted(by, key=lambda n: (by[n][0]["engines"], not n.startswith("raw"), not n.startswith("openai"), n))
    for name in order:
        rs = by[name]
        busy = [u for r in rs for t, u in util if r["t_start"] <= t <= r["t"]]
        vs_raw = [r["req_s"] / raw for r in rs if (raw := raw_of(r))]
        vs_oa = [r["req_s"] / openai[r["round"]] for r in rs if r["round"] in openai]
        busy_cell = f"{statistics.mean(busy):.0f}" if busy else "-"
        out.append(f"| {rs[0]['engines']} | {name} | {statistics.median(r['req_s'] for r in rs):.1f} | "
                   f"{median_range(vs_raw)} | {median_range(vs_oa)} | {busy_cell} |")
    return out


def plot(runs: dict[int, list[dict[str, Any]]], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4))
    for ax, (mt, rows) in zip(axes, sorted(runs.items()), strict=True):
        lines = (("raw_lists_x", "raw lists (best raw client)"), ("qwen_batch_x", "BatchedChatQwen .batch"),
                 ("qwen_abatch_x", "BatchedChatQwen .abatch"))
        for prefix, label in lines:
            xs = sorted({r["engines"] for r in rows if r["scenario"].startswith(prefix)})
            ys = [statistics.median(r["req_s"] for r in rows if r["scenario"] == f"{prefix}{k}") for k in xs]
            ax.plot(xs, ys, marker="o", label=label)
        oa = statistics.median(r["req_s"] for r in rows if r["scenario"].startswith("openai"))
        ax.axhline(oa, color="grey", linestyle="--", label="ChatOpenAI .batch (one engine)")
        ax.set_title(f"{mt} tokens per answer")
        ax.set_xlabel("vLLM engines on one H200")
        ax.set_ylabel("requests/s (median of 3 rounds)")
        ax.set_xticks([1, 2, 3, 4])
        ax.set_ylim(0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--png", default="")
    a = ap.parse_args()
    folder = Path(a.folder)
    util = _util(folder)
    runs: dict[int, list[dict[str, Any]]] = {}
    for f in sorted(folder.glob("replicas_m*.jsonl")):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        runs[rows[0]["max_tokens"]] = rows
    for mt, rows in sorted(runs.items()):
        print(f"\n#### max_tokens = {mt} (N = {rows[0]['n']})\n")
        print("\n".join(table(rows, util)))
    if a.png:
        plot(runs, a.png)


if __name__ == "__main__":
    main()
