"""The one-GPU ceiling run's figure, read from what the run wrote (benchmarks/gpu/ceiling.sh's results folder).

    python benchmarks/gpu/ceiling_report.py benchmarks/results/gpu-2026-12-06-h100-ceiling \
        --png docs/gpu-ceiling-h100.png

32 tokens: the rows of the proof phase's log (``round R ROW REQ/S req/s``: its JSON lines did not come back from the
machine). 128 tokens: the raw rows of ``serve_new_again/raw128.jsonl`` (two interleaved rounds, the median), the
client rows of ``serve_new_again/replicas_m128_*.jsonl`` and ChatOpenAI's row of the proof log. Prints the rows it
plotted, so the figure can be checked against docs/benchmarks.md section 0.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

ROW = re.compile(r"^round \d+ (\S+)\s+([\d.]+) req/s")
#: what the figure shows, in order: (label, row at 32 tokens, row at 128 tokens)
BARS = [
    ("ChatOpenAI .batch, 1 server", "openai_batch_default_x1", "openai_batch_default_x1"),
    ("raw lists, old defaults", "raw_lists_old_c16", "old/base_c16"),
    ("raw lists, MPS + throughput", "raw_lists_new_c64", "new/base_c64"),
    (".batch, new defaults", "qwen_batch_new_mc2048", "qwen_batch_new_mc2048"),
    (".abatch, new defaults", "qwen_abatch_new_mc2048", "qwen_abatch_new_mc2048"),
]


def proof_rows(log: Path) -> list[dict[str, float]]:
    """The proof log's rows, one dict per token length (the log has the 32-token run, then the 128-token one)."""
    runs: list[dict[str, float]] = []
    for line in log.read_text().splitlines():
        m = ROW.match(line)
        if not m:
            continue
        if not runs or m.group(1) in runs[-1]:
            runs.append({})
        runs[-1][m.group(1)] = float(m.group(2))
    return runs


def rows_128(folder: Path) -> dict[str, float]:
    raw: dict[str, list[float]] = {}
    for line in (folder / "serve_new_again" / "raw128.jsonl").read_text().splitlines():
        r = json.loads(line)
        raw.setdefault(f"{r['set']}/{r['variant']}", []).append(r["req_s"])
    out = {k: statistics.median(v) for k, v in raw.items()}
    for path in sorted((folder / "serve_new_again").glob("replicas_m128_*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            out[r["scenario"]] = r["req_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--png", type=Path, required=True)
    a = ap.parse_args()
    m32, m128_proof = proof_rows(a.folder / "proof" / "ceiling_proof.log")[:2]
    m128 = {**{"openai_batch_default_x1": m128_proof["openai_batch_default_x1"]}, **rows_128(a.folder)}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (title, rows, key) in zip(axes, (("32 tokens, N=3000", m32, 1), ("128 tokens, N=1500", m128, 2)),
                                      strict=True):
        labels = [b[0] for b in BARS]
        values = [rows[b[key]] for b in BARS]
        for label, value in zip(labels, values, strict=True):
            print(f"{title}: {label}: {value}")
        bars = ax.barh(labels, values, color=["#999999", "#6b8fb3", "#2b5d8c", "#d9822b", "#e0a458"])
        ax.bar_label(bars, fmt="%.0f", padding=3)
        ax.set_title(title)
        ax.set_xlabel("requests/s")
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.2)
    fig.suptitle("Three vLLM 0.24 servers on one H100: old defaults vs CUDA MPS + --performance-mode throughput")
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
