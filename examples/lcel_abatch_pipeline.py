"""An LCEL pipeline (prompt | model | parser) over a few hundred inputs with ``.abatch``.

    python -m langchain_qwen_fast.testing.server --port 8000 &   # or a real vLLM server
    python examples/lcel_abatch_pipeline.py [--base-url URL] [--model NAME] [--n 300]
        [--max-concurrency N] [--max-tokens 64]

--base-url defaults to $QWEN_BASE_URL, else http://localhost:8000/v1; --model to $QWEN_MODEL,
else the one model the server serves (BatchedChatQwen asks it).

``chain.abatch`` hands the whole list to the model's ``abatch``: one submission, bounded by the
pool's admission limit (``max_concurrency``, 512 by default) or by a per-call
``config={"max_concurrency": N}``. With ``max_tokens`` set, these plain prompts travel as
/v1/completions lists of up to ``max_batch_size``; ``model.stats()`` shows the batch sizes,
the queue wait and the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_qwen_fast import BatchedChatQwen


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default=os.environ.get("QWEN_BASE_URL", "http://localhost:8000/v1"))
    ap.add_argument("--model", default=os.environ.get("QWEN_MODEL"))
    ap.add_argument("--n", type=int, default=300, help="number of inputs")
    ap.add_argument("--max-concurrency", type=int, default=None, help="per-call admission limit")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    named = {"model": args.model} if args.model else {}  # else QWEN_MODEL, else what the server serves

    prompt = ChatPromptTemplate.from_messages([
        ("system", "You write product taglines. One line, no quotes."),
        ("human", "A tagline for product #{i}: a {adjective} {item}."),
    ])
    adjectives = ["quiet", "solar", "folding", "smart", "vintage", "waterproof"]
    items = ["bicycle", "teapot", "backpack", "desk lamp", "notebook", "tent", "kite"]
    inputs = [{"i": i, "adjective": adjectives[i % 6], "item": items[i % 7]} for i in range(args.n)]

    async with BatchedChatQwen(**named, base_url=args.base_url,
                               max_tokens=args.max_tokens, temperature=0.7) as model:
        chain = prompt | model | StrOutputParser()
        config = {"max_concurrency": args.max_concurrency} if args.max_concurrency else None
        t0 = time.perf_counter()
        taglines = await chain.abatch(inputs, config=config)
        elapsed = time.perf_counter() - t0

        rate = len(taglines) / elapsed
        print(f"{len(taglines)} taglines in {elapsed:.2f} s: {rate:.1f} per second")
        for line in taglines[:3]:
            print("  ", line.strip()[:90])
        stats = model.stats()
        summary = {k: stats[k] for k in ("items", "items_failed", "batches", "batch_size_histogram",
                                         "max_in_flight")}
        summary["queue_wait_p50_s"] = stats["queue_wait_s"]["p50"]
        summary["latency_s"] = {k: stats["latency_s"][k] for k in ("p50", "p95", "p99")}
        summary["endpoints"] = {url: {"requests": ep["requests"], "retries": ep["retries"],
                                      "errors": ep["errors"]}
                                for url, ep in stats["endpoints"].items()}
        print("model.stats():", json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
