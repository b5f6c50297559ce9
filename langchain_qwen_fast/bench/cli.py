"""``qwen-fast bench``: the CPU benchmark against the simulator, every scenario beside ChatOpenAI.

    qwen-fast bench [--rounds 3] [--n 1000] [--base-url URL] [--out qwen-fast-bench]
    qwen-fast bench replicas [options]    # 1 and 3 engines: raw lists vs .batch/.abatch (bench/replicas.py)
    qwen-fast bench fairness [options]    # an interactive caller beside a bulk batch (bench/fairness.py)
    qwen-fast bench client-cpu [options]  # client CPU per request, before/after trees side by side

In one process run, against one simulator (``--latency h100``, calibrated from the GPU anchors):
closed-loop scenarios at 128 and 32 max_tokens (sync ``.batch``, ``.abatch``, 32 threads of
``.invoke``, each in the completions and chat wire modes; ChatOpenAI ``.batch`` default and
``max_concurrency=256`` and ``.abatch``; raw aiohttp chat and lists), interleaved over rounds;
serial ``.invoke`` against raw httpx; an open-loop Poisson run at 80% of the best raw rate.
Shows progress bars while it runs, and writes JSON lines, a markdown table and a PNG into a new
``cpu-YYYYmmdd-HHMMSS`` folder under ``--out`` (``./qwen-fast-bench`` by default: a folder named for what
made it, wherever the command runs; ``make bench`` passes ``--out benchmarks/results``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from langchain_qwen_fast.bench import report
from langchain_qwen_fast.bench import run as runner
from langchain_qwen_fast.cli.help import DefaultsHelpFormatter, plain

DEFAULT_OUT = "qwen-fast-bench"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="qwen-fast bench",
        description=plain(__doc__.split("\n")[0]),
        formatter_class=DefaultsHelpFormatter,
        epilog="other plans: qwen-fast bench replicas --help (engines per GPU, raw ceiling over each), "
        "qwen-fast bench fairness --help (an interactive caller beside a bulk batch), "
        "qwen-fast bench client-cpu --help (client CPU per request, before/after trees in one run)",
    )
    ap.add_argument(
        "--base-url", metavar="URL", default=None, help="a real OpenAI-compatible server; none: start the simulator"
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every scenario (medians reported)")
    ap.add_argument("--n", type=int, default=1000, help="requests per closed-loop scenario run")
    ap.add_argument("--serial-n", type=int, default=30, help="requests per serial .invoke scenario run")
    ap.add_argument(
        "--poisson-seconds", type=float, default=15.0, help="length of each open-loop (Poisson arrivals) run"
    )
    ap.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="results folder, relative to the current directory; each run writes a new cpu-YYYYmmdd-HHMMSS "
        "folder in it",
    )
    return ap


#: Other plans, each with its own options (``qwen-fast bench PLAN --help``).
PLANS = {
    "replicas": "langchain_qwen_fast.bench.replicas",
    "fairness": "langchain_qwen_fast.bench.fairness",
    "client-cpu": "langchain_qwen_fast.bench.client_cpu",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PLANS:
        import importlib

        return int(importlib.import_module(PLANS[argv[0]]).main(argv[1:]) or 0)
    a = build_parser().parse_args(argv)

    from langchain_qwen_fast.testing import SimConfig, SimServer

    folder = Path(a.out) / f"cpu-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx: Any = contextlib.nullcontext(None) if a.base_url else SimServer(SimConfig(latency="h100"))
    files = []
    with ctx as sim:
        url = a.base_url or sim.base_url
        for mt in (128, 32):
            out = str(folder / f"cpu_m{mt}.jsonl")
            files.append(out)
            extra = ["--poisson", "0.8", "--poisson-seconds", str(a.poisson_seconds)] if mt == 128 else []
            runner.main(
                [
                    "--base-url",
                    url,
                    "--plan",
                    "cpu",
                    "--max-tokens",
                    str(mt),
                    "--n",
                    str(a.n),
                    "--rounds",
                    str(a.rounds),
                    "--out",
                    out,
                    "--tag",
                    "cpu",
                    *extra,
                ]
            )
        out = str(folder / "cpu_serial_m128.jsonl")
        files.append(out)
        runner.main(
            [
                "--base-url",
                url,
                "--plan",
                "serial",
                "--max-tokens",
                "128",
                "--n",
                str(a.serial_n),
                "--rounds",
                str(a.rounds),
                "--out",
                out,
                "--tag",
                "serial",
            ]
        )
    rows = report.load(files)
    md = "\n".join(x for x in (report.closed_loop_md(rows), report.open_loop_md(rows), report.failures_md(rows)) if x)
    (folder / "tables.md").write_text(md)
    with contextlib.suppress(ImportError):
        report.plot(rows, str(folder / "cpu-benchmark.png"), "simulator (H100 model)")
    print(md)
    print(f"\nresults in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
