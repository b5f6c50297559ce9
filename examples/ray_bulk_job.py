"""A bulk job on Ray Data: prompts from a JSONL or Parquet file, answers to Parquet, one BatchedChatQwen per actor.

    python -m langchain_qwen_fast.testing.server --port 8000 &   # or real vLLM servers, or neither:
    python examples/ray_bulk_job.py [--base-url URL [--base-url URL2 ...]] [--model NAME]
        [--input prompts.jsonl|prompts.parquet] [--output DIR] [--rows 100000] [--actors 2]
        [--max-tokens 64] [--ray-address auto]

Without --base-url the script starts two simulated replicas itself (SimServer, the H100 latency model) and
stops them at the end; several --base-url flags are replicas of one model. Without --input it first writes
--rows synthetic product prompts (columns ``id``, ``prompt``) to a JSONL file. Without --ray-address it
starts a local Ray cluster (``address="local"``) and shuts it down at the end; ``auto`` joins the cluster
``ray start`` made on this machine.

Each actor holds one BatchedChatQwen and sends its blocks through ``.abatch``: the answers come back as
the columns qwen_content, qwen_reasoning, qwen_input_tokens, qwen_output_tokens, qwen_finish_reason and
qwen_error (None when the row was answered); ``id`` and every other input column pass through. A failed
row is a value in its row, never a failed job. Actors ask for a quarter of a CPU each (they only wait on
sockets), so the read and write tasks still get CPUs on a small node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray

from langchain_qwen_fast.integrations.ray_data import qwen_map_batches
from langchain_qwen_fast.testing import SimConfig, SimServer

ADJECTIVES = ["quiet", "solar", "folding", "smart", "vintage", "waterproof"]
ITEMS = ["bicycle", "teapot", "backpack", "desk lamp", "notebook", "tent", "kite"]


def write_prompts(path: Path, rows: int) -> None:
    with path.open("w") as f:
        for i in range(rows):
            prompt = f"Write a two-line product description for item {i}: a {ADJECTIVES[i % 6]} {ITEMS[i % 7]}."
            f.write(json.dumps({"id": i, "prompt": prompt}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", action="append", help="a server's /v1 URL; repeat for replicas")
    ap.add_argument("--model", default=os.environ.get("QWEN_MODEL"))
    ap.add_argument("--input", type=Path, help="a .jsonl or .parquet file (or folder) with a 'prompt' column")
    ap.add_argument("--output", type=Path, help="the Parquet folder to write (default: a temporary folder)")
    ap.add_argument("--rows", type=int, default=100_000, help="rows to generate when --input is not given")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ray-address", default="local", help="'local' starts a cluster; 'auto' joins one")
    args = ap.parse_args()

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ray-bulk-")))
        urls = args.base_url
        if not urls:
            sims = [stack.enter_context(SimServer(SimConfig(latency="h100"))) for _ in range(2)]
            urls = [s.base_url for s in sims]
        source = args.input
        if source is None:
            source = work / "prompts.jsonl"
            write_prompts(source, args.rows)
        output = args.output or work / "answers"
        named = {"model": args.model} if args.model else {}  # else each actor's model takes what the servers serve

        ray.init(address=args.ray_address, include_dashboard=False)
        stack.callback(ray.shutdown)
        ds = ray.data.read_parquet(str(source)) if source.suffix != ".jsonl" else ray.data.read_json(str(source))
        t0 = time.perf_counter()
        answered = qwen_map_batches(ds, llm_kwargs={"base_url": urls, **named, "max_tokens": args.max_tokens},
                                    actors=args.actors)
        answered.write_parquet(str(output))
        elapsed = time.perf_counter() - t0

        table = pq.read_table(str(output), columns=["id", "qwen_content", "qwen_output_tokens", "qwen_error"])
        errors = [e for e in table.column("qwen_error").to_pylist() if e is not None]
        n = table.num_rows
        tokens = sum(t or 0 for t in table.column("qwen_output_tokens").to_pylist())
        print(f"{n - len(errors)}/{n} rows answered, {len(errors)} failed, {tokens} output tokens, "
              f"{n / elapsed:.0f} rows/s in {elapsed:.1f} s (actor start-up included)")
        first = table.slice(0, 1).to_pylist()[0]
        print(f"  id {first['id']}: {str(first['qwen_content'])[:90]}")
        for e in sorted(set(errors))[:3]:
            print("  error:", e[:120])
        if args.output:
            print(f"answers in {output}")


if __name__ == "__main__":
    main()
