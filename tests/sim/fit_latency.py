"""Fit and check the simulator's latency model against the H100 anchors (not collected by pytest).

    .venv/bin/python tests/sim/fit_latency.py model    # the model alone, in virtual time (instant)
    .venv/bin/python tests/sim/fit_latency.py search [NAMES]  # coordinate descent from the preset
    .venv/bin/python tests/sim/fit_latency.py real     # a live `--latency h100` server + aiohttp

`model` runs the real ``SimEngine`` class on an event loop whose clock jumps to the next timer, so a
10-second scenario takes milliseconds and the numbers are exactly the model's. `real` measures the
same scenarios over HTTP with a raw aiohttp client, like the anchors' rbench.py, and so includes the
simulator's own overheads. Targets come from ../shared/gpu/anchors (RESULTS.md, STEADY.md).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from langchain_qwen_fast.testing.sim_engine import (
    H100,
    LatencyParams,
    SimEngine,
    VirtualClockLoop,
)

PROMPT_TOKENS = 21  # the anchors' prompts after templating (real Qwen tokenizer)

# name -> (kind, in-flight, list size, max_tokens, N, target value, unit)
TARGETS: list[tuple[str, str, int, int, int, int, float, str]] = [
    ("engine only (offline), 1000 at once, 128 tok", "engine", 8, 125, 128, 1000, 151.7, "req/s"),
    ("engine only (offline), 1000 at once, 32 tok", "engine", 8, 125, 32, 1000, 424.4, "req/s"),
    ("serial latency, 128 tok", "serial", 1, 1, 128, 30, 0.335, "s"),
    ("serial latency, 32 tok", "serial", 1, 1, 32, 30, 0.101, "s"),
    ("chat, 256 in flight, 128 tok", "chat", 256, 1, 128, 1500, 155.0, "req/s"),
    ("chat, 256 in flight, 32 tok", "chat", 256, 1, 32, 3000, 350.0, "req/s"),
    ("lists of 32, 16 in flight, 128 tok", "list", 16, 32, 128, 1500, 216.8, "req/s"),
    ("lists of 32, 16 in flight, 32 tok", "list", 16, 32, 32, 3000, 584.3, "req/s"),
    ("1000 at once, lists of 32, 128 tok", "list", 1000, 32, 128, 1000, 160.0, "req/s"),
    ("1000 at once, lists of 32, 32 tok", "list", 1000, 32, 32, 1000, 519.0, "req/s"),
    ("1000 at once, lists of 128, 128 tok", "list", 1000, 128, 128, 1000, 156.7, "req/s"),
    ("1000 at once, lists of 128, 32 tok", "list", 1000, 128, 32, 1000, 491.3, "req/s"),
]


Send = Callable[[int], Awaitable[None]]


async def _closed_loop(send: Send, n_req: int, inflight: int) -> float:
    """`inflight` workers send `n_req` requests back to back; returns wall seconds."""
    loop = asyncio.get_running_loop()
    it = iter(range(n_req))

    async def worker() -> None:
        for i in it:
            await send(i)

    t0 = loop.time()
    await asyncio.gather(*(worker() for _ in range(min(inflight, n_req))))
    return loop.time() - t0


def model_value(
    params: LatencyParams, kind: str, inflight: int, size: int, mt: int, n: int
) -> float:
    """One scenario through the real SimEngine in virtual time (the server's handler does the same)."""

    async def run() -> float:
        eng = SimEngine(params)

        async def send(i: int) -> None:
            k = min(size, n - i * size)
            if kind != "engine":
                await eng.admit(k)
            await eng.submit([PROMPT_TOKENS] * k, [mt] * k)

        n_req = math.ceil(n / size)
        wall = await _closed_loop(send, n_req, inflight)
        await eng.close()
        return wall / n if kind == "serial" else n / wall

    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


async def real_value(base: str, kind: str, inflight: int, size: int, mt: int, n: int) -> float:
    import aiohttp

    q = "What is quantum entanglement?"
    prompt = f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    extra = {"max_tokens": mt, "ignore_eos": True, "temperature": 0.5}
    conn = aiohttp.TCPConnector(limit=min(inflight, 1000) + 8)
    async with aiohttp.ClientSession(base, connector=conn) as s:

        async def send(i: int) -> None:
            k = min(size, n - i * size)
            if size == 1:
                body = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": q}],
                        "chat_template_kwargs": {"enable_thinking": False}, **extra}
                path = "/v1/chat/completions"
            else:
                body = {"model": "Qwen/Qwen3-0.6B", "prompt": [prompt] * k, **extra}
                path = "/v1/completions"
            async with s.post(path, json=body) as r:
                d = await r.json()
                assert d["usage"]["completion_tokens"] == k * mt, d

        for _ in range(8):  # warm-up
            await send(0)
        t0 = time.perf_counter()
        it = iter(range(math.ceil(n / size)))

        async def worker() -> None:
            for i in it:
                await send(i)

        await asyncio.gather(*(worker() for _ in range(min(inflight, math.ceil(n / size)))))
        wall = time.perf_counter() - t0
    return wall / n if kind == "serial" else n / wall


def loss(params: LatencyParams) -> float:
    """Squared log-error over the anchors; the 1000-at-once rows (one run each, 147-173 req/s
    spread between repeats) weigh half."""
    return sum((0.5 if t[0].startswith("1000") else 1.0)
               * math.log(model_value(params, *t[1:6]) / t[6]) ** 2 for t in TARGETS)


def descend(params: LatencyParams, names: list[str]) -> LatencyParams:
    """Coordinate descent on the named parameters with shrinking multiplicative steps."""
    best = loss(params)
    for factor in (1.25, 1.1, 1.04):
        improved = True
        while improved:
            improved = False
            for name, m in itertools.product(names, (factor, 1 / factor)):
                trial = replace(params, **{name: getattr(params, name) * m})
                value = loss(trial)
                if value < best - 1e-5:
                    best, params, improved = value, trial, True
                    print(f"{best:.4f} {name}={getattr(params, name):.3g}", flush=True)
    return params


def table(values: list[float], measured: list[float] | None = None) -> str:
    """Markdown: target, the model's value, and (with ``measured``) the value over HTTP."""
    head = "| scenario | anchor | model | ratio |"
    if measured:
        head = "| scenario | anchor | model | measured over HTTP | ratio (measured / anchor) |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, (t, v) in enumerate(zip(TARGETS, values, strict=True)):
        fmt = "{:.3f} s" if t[7] == "s" else "{:.0f} req/s"
        got = measured[i] if measured else v
        cells = [t[0], fmt.format(t[6]), fmt.format(v)]
        cells += [fmt.format(got)] if measured else []
        rows.append("| " + " | ".join([*cells, f"{got / t[6]:.2f}"]) + " |")
    return "\n".join(rows)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "model"
    if mode == "model":
        print(table([model_value(H100, *t[1:6]) for t in TARGETS]))
        print(f"loss {loss(H100):.4f}")
    elif mode == "search":
        # step_a/step_b/prefill are pinned by the anchors (docs/simulator.md); fit the front-end
        names = sys.argv[2].split(",") if len(sys.argv) > 2 else [
            "fe_per_request", "fe_per_prompt", "fe_per_token"]
        best = descend(H100, names)
        print(best)
        print(table([model_value(best, *t[1:6]) for t in TARGETS]))
    elif mode == "real":
        from langchain_qwen_fast.testing import SimConfig, SimServer

        no_fe = SimConfig(latency="h100", fe_per_request=0.0, fe_per_prompt=0.0, fe_per_token=0.0)
        vals = []
        with SimServer(SimConfig(latency="h100")) as srv, SimServer(no_fe) as engine_only:
            for t in TARGETS:
                url = engine_only.url if t[1] == "engine" else srv.url
                vals.append(asyncio.run(real_value(url, *t[1:6])))
                print(t[0], round(vals[-1], 3), flush=True)
        print(table([model_value(H100, *t[1:6]) for t in TARGETS], vals))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
