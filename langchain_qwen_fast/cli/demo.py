"""``make demo``: one LCEL pipeline, three ways, against the simulator (or ``--base-url``).

    qwen-fast demo [--base-url URL] [--n 400] [--max-tokens 128] [--model NAME]

Runs ``ChatPromptTemplate | model | StrOutputParser`` over a few hundred questions with
``ChatOpenAI.batch``, ``BatchedChatQwen.batch`` and ``BatchedChatQwen.abatch``, shows progress
bars, and prints wall time, req/s, p50/p95 latency, client CPU per request and speed-up. Without
``--base-url`` it starts the project's simulated Qwen3-0.6B server, calibrated to an H100 with vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_qwen_fast.bench.scenarios import QUESTIONS, LatencyRecorder, cpu_seconds, percentiles
from langchain_qwen_fast.cli.help import DefaultsHelpFormatter, plain


class _Tick(BaseCallbackHandler):
    run_inline = True

    def __init__(self, advance: Callable[[], None]) -> None:
        self.advance = advance

    def on_llm_end(self, response: Any, **kw: Any) -> None:
        self.advance()

    def on_llm_error(self, error: BaseException, **kw: Any) -> None:
        self.advance()


@contextlib.contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # plain fallback: a dot every 5%
        step, seen = max(1, total // 20), [0]

        def adv() -> None:
            seen[0] += 1
            if seen[0] % step == 0:
                print(".", end="", flush=True)

        print(f"{label:28s}", end="", flush=True)
        yield adv
        print(" done")
        return
    with Progress(TextColumn(f"{label:28s}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as p:
        task = p.add_task(label, total=total)
        yield lambda: p.advance(task)


def _chain(model: Any) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a concise assistant. Answer in two sentences."), ("user", "{question}")]
    )
    return prompt | model | StrOutputParser()


def _run(label: str, inputs: list[dict[str, str]], call: Callable[[list[Any]], Any]) -> dict[str, Any]:
    rec = LatencyRecorder()
    with _progress(label, len(inputs)) as advance:
        callbacks = [rec, _Tick(advance)]
        c0, t0 = cpu_seconds(), time.perf_counter()
        outputs = call(callbacks)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    errors = sum(isinstance(o, Exception) for o in outputs)
    return {
        "label": label,
        "wall": wall,
        "rps": len(inputs) / wall,
        "cpu_ms": cpu / len(inputs) * 1000,
        "errors": errors,
        "sample": next((o for o in outputs if isinstance(o, str)), ""),
        **percentiles(rec.latencies),
    }


def _table(rows: list[dict[str, Any]], n: int, where: str) -> None:
    base = rows[0]
    headers = ["client", "wall s", "req/s", "p50 s", "p95 s", "client CPU ms/req", "speed-up", "errors"]
    body = [
        [
            r["label"],
            f"{r['wall']:.1f}",
            f"{r['rps']:.1f}",
            f"{r['p50_s']:.2f}",
            f"{r['p95_s']:.2f}",
            f"{r['cpu_ms']:.2f}",
            f"{r['rps'] / base['rps']:.1f}x",
            str(r["errors"]),
        ]
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"{n} questions, LCEL prompt | model | parser, {where}")
        for h in headers:
            t.add_column(h, justify="left" if h == "client" else "right")
        for row in body:
            t.add_row(*row)
        Console(width=max(110, Console().width)).print(t)
    except ImportError:
        print(" | ".join(headers))
        for row in body:
            print(" | ".join(row))
    print("\nlatency = from the model call's start to its end as LangChain's callbacks see it; a batch")
    print("submits every input at once, so its per-request latency includes the wait for admission.")
    print(f"sample answer: {rows[-1]['sample'][:100]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="qwen-fast demo",
        description=plain(__doc__.split("\n")[0]),
        formatter_class=DefaultsHelpFormatter,
    )
    ap.add_argument(
        "--base-url", metavar="URL", default=None, help="a real OpenAI-compatible server; none: start the simulator"
    )
    ap.add_argument("--model", default="Qwen/Qwen3-0.6B", help="the served model name")
    ap.add_argument("--api-key", default="EMPTY", help="the server's API key")
    ap.add_argument("--n", type=int, default=400, help="questions per client")
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per answer")
    a = ap.parse_args(argv)

    from langchain_openai import ChatOpenAI

    from langchain_qwen_fast import BatchedChatQwen
    from langchain_qwen_fast.testing import SimConfig, SimServer

    inputs = [{"question": QUESTIONS[i % len(QUESTIONS)]} for i in range(a.n)]
    ctx: Any = contextlib.nullcontext(None) if a.base_url else SimServer(SimConfig(latency="h100"))
    with ctx as sim:
        url = a.base_url or sim.base_url
        where = url if a.base_url else "simulated Qwen3-0.6B on an H100 (vLLM-calibrated)"
        print(f"server: {where}\n")
        common = {
            "base_url": url,
            "model": a.model,
            "api_key": a.api_key,
            "max_tokens": a.max_tokens,
            "temperature": 0.7,
        }
        openai_chain = _chain(ChatOpenAI(**common, extra_body={"chat_template_kwargs": {"enable_thinking": False}}))
        qwen = BatchedChatQwen(**common)
        qwen_chain = _chain(qwen)
        _chain(qwen).batch(inputs[:32])  # warm both pools so neither pays connection set-up in the table
        openai_chain.batch(inputs[:32])
        rows = [
            _run(
                "ChatOpenAI.batch",
                inputs,
                lambda cb: openai_chain.batch(inputs, config={"callbacks": cb}, return_exceptions=True),
            ),
            _run(
                "BatchedChatQwen.batch",
                inputs,
                lambda cb: qwen_chain.batch(inputs, config={"callbacks": cb}, return_exceptions=True),
            ),
            _run(
                "BatchedChatQwen.abatch",
                inputs,
                lambda cb: asyncio.run(qwen_chain.abatch(inputs, config={"callbacks": cb}, return_exceptions=True)),
            ),
        ]
        print()
        _table(rows, a.n, where)
        s = qwen.stats()
        print(
            f"BatchedChatQwen.stats(): {s['items']} items in {s['batches']} HTTP requests, "
            f"batch sizes {s['batch_size_histogram']}, max in flight {s['max_in_flight']}"
        )
        qwen.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
