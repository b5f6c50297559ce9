"""Benchmark scenarios shared by ``qwen-fast bench`` (simulator), ``make demo`` and the GPU runner.

Every scenario sends the same workload (``QUESTIONS`` cycled to N, ``ignore_eos`` so each request
makes exactly ``max_tokens`` tokens, thinking off) and returns one flat dict: wall time, req/s,
latency percentiles as the caller sees each request, client CPU per request (this process's
rusage, all threads), errors with their types, and output tokens checked against N x max_tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

QUESTIONS = [
    "What is quantum entanglement?",
    "Explain photosynthesis to a child.",
    "Give three tips for better sleep.",
    "What causes the seasons on Earth?",
    "Summarise the plot of Hamlet.",
    "How does a hash map work?",
    "Why is the sky blue?",
    "Name five prime numbers.",
    "What is the difference between TCP and UDP?",
    "Write a haiku about autumn.",
    "How do vaccines train the immune system?",
    "What is a black hole?",
    "Suggest a name for a coffee shop.",
    "Explain recursion with an example.",
    "What is inflation?",
    "How do I boil an egg?",
    "What is the Pythagorean theorem?",
    "Describe the water cycle.",
    "What is machine learning?",
    "Translate 'good morning' into French.",
    "Why do cats purr?",
    "What is the tallest mountain?",
    "Explain supply and demand.",
    "How does GPS work?",
    "What is DNA?",
    "什么是量子纠缠？",
    "用简单的话解释光合作用。",
    "给出三个改善睡眠的建议。",
    "地球为什么有四季？",
    "概述《哈姆雷特》的情节。",
    "哈希表是如何工作的？",
    "天空为什么是蓝色的？",
    "列出五个质数。",
    "TCP和UDP有什么区别？",
    "写一首关于秋天的俳句。",
    "疫苗如何训练免疫系统？",
    "什么是黑洞？",
    "给咖啡店起个名字。",
    "用例子解释递归。",
    "什么是通货膨胀？",
    "怎么煮鸡蛋？",
    "什么是勾股定理？",
    "描述水循环。",
    "什么是机器学习？",
    "把“早上好”翻译成法语。",
    "猫为什么会打呼噜？",
    "世界上最高的山是哪座？",
    "解释供求关系。",
    "GPS是如何工作的？",
    "什么是DNA？",
]


def prompts(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentiles(lat: list[float]) -> dict[str, float | None]:
    if not lat:
        return {"p50_s": None, "p95_s": None, "p99_s": None}
    s = sorted(lat)
    pick = lambda p: round(s[min(len(s) - 1, int(p * len(s)))], 4)  # noqa: E731
    return {"p50_s": pick(0.50), "p95_s": pick(0.95), "p99_s": pick(0.99)}


class LatencyRecorder(BaseCallbackHandler):
    """Per-request latency as a LangChain caller sees it: chat-model start to end (same for both clients).

    ``run_inline``: async callback managers call it directly instead of through a thread pool, so the
    measuring costs both clients as little as possible.
    """

    run_inline = True

    def __init__(self) -> None:
        self._start: dict[uuid.UUID, float] = {}
        self.latencies: list[float] = []
        self.tokens = 0
        #: exception type name -> count, so a row can say which errors it saw
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._start[run_id] = time.perf_counter()

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        t = self._start.pop(run_id, None)
        gen = response.generations[0][0] if response.generations and response.generations[0] else None
        usage = getattr(getattr(gen, "message", None), "usage_metadata", None) or {}
        with self._lock:
            if t is not None:
                self.latencies.append(time.perf_counter() - t)
            self.tokens += int(usage.get("output_tokens") or 0)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._start.pop(run_id, None)
        with self._lock:
            self.errors[type(error).__name__] += 1


@dataclass
class Workload:
    base_url: str
    model: str = "Qwen/Qwen3-0.6B"
    max_tokens: int = 128
    n: int = 1000
    temperature: float = 0.5
    api_key: str = "EMPTY"

    @property
    def extra(self) -> dict[str, Any]:
        return {"ignore_eos": True}


def qwen_model(w: Workload, mode: str = "completions", token_ids: bool = True, **kw: Any) -> Any:
    from langchain_qwen_fast import BatchedChatQwen

    extra = w.extra if token_ids else {**w.extra, "return_token_ids": False}
    return BatchedChatQwen(
        base_url=w.base_url,
        model=w.model,
        api_key=w.api_key,
        max_tokens=w.max_tokens,
        temperature=w.temperature,
        wire_mode=mode,
        model_kwargs=extra,
        timeout=600,
        **kw,
    )


def openai_model(w: Workload) -> Any:
    from langchain_openai import ChatOpenAI

    # ChatOpenAI shares one cached httpx.AsyncClient per settings; its connections belong to the first
    # event loop that used them, so the next scenario's asyncio.run() would fail with "Event loop is
    # closed" (langchain#35783). A fresh cache per model gives every scenario a working client, as a
    # fresh process would.
    with contextlib.suppress(ImportError, AttributeError):
        from langchain_openai.chat_models import _client_utils

        _client_utils._cached_async_httpx_client.cache_clear()
    return ChatOpenAI(
        base_url=w.base_url,
        model=w.model,
        api_key=w.api_key,
        max_tokens=w.max_tokens,
        temperature=w.temperature,
        timeout=600,
        extra_body={**w.extra, "chat_template_kwargs": {"enable_thinking": False}},
    )


def _result(
    name: str,
    w: Workload,
    wall: float,
    cpu: float,
    lat: list[float],
    tokens: int,
    errors: int | Mapping[str, int],
    n: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    n = n if n is not None else w.n
    types = dict(errors) if isinstance(errors, Mapping) else {}
    return {
        "scenario": name,
        "max_tokens": w.max_tokens,
        "n": n,
        "wall_s": round(wall, 3),
        "req_s": round(n / wall, 2) if wall > 0 else None,
        "client_cpu_ms_per_req": round(cpu / n * 1000, 4),
        **percentiles(lat),
        "errors": sum(types.values()) if isinstance(errors, Mapping) else errors,
        "error_types": types,  # exception type name (or "HTTP <status>") -> count
        "output_tokens": tokens,
        "tokens_ok": tokens == n * w.max_tokens,
        **extra,
    }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, cpu_seconds() - c0


def _lc_run(
    name: str, w: Workload, model: Any, how: str, config: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    rec = LatencyRecorder()
    cfg = {**(config or {}), "callbacks": [rec]}
    ps = prompts(w.n)
    if how == "batch":
        fn: Callable[[], Any] = lambda: model.batch(ps, config=cfg, return_exceptions=True)  # noqa: E731
    elif how == "abatch":
        fn = lambda: asyncio.run(model.abatch(ps, config=cfg, return_exceptions=True))  # noqa: E731
    elif how == "threads32":

        def fn() -> Any:
            def one(p: str) -> Any:
                try:
                    return model.invoke(p, config={"callbacks": [rec]})
                except Exception as e:
                    return e

            with ThreadPoolExecutor(32) as ex:
                return list(ex.map(one, ps))
    elif how == "serial":

        def fn() -> Any:
            return [model.invoke(p, config={"callbacks": [rec]}) for p in ps]
    else:
        raise ValueError(how)
    _, wall, cpu = _timed(fn)
    return _result(name, w, wall, cpu, rec.latencies, rec.tokens, rec.errors, **extra)


def qwen_scenario(
    w: Workload, how: str, mode: str = "completions", token_ids: bool = True, **kw: Any
) -> dict[str, Any]:
    # Not closed afterwards: instances with equal settings share one warm pool, as ChatOpenAI's
    # cached httpx client stays warm between its scenarios.
    model = qwen_model(w, mode, token_ids, **kw)
    before = model.stats()["max_in_flight"]
    name = f"qwen_{how}_{mode}" + ("" if token_ids else "_no_token_ids")
    out = _lc_run(name, w, model, how, client="BatchedChatQwen", mode=mode)
    out["dispatcher_max_in_flight"] = max(before, model.stats()["max_in_flight"])
    return out


def openai_scenario(w: Workload, how: str, max_concurrency: int | None = None) -> dict[str, Any]:
    cfg = {"max_concurrency": max_concurrency} if max_concurrency else None
    tag = f"openai_{how}" + (f"_c{max_concurrency}" if max_concurrency else "_default")
    return _lc_run(tag, w, openai_model(w), how, cfg, client="ChatOpenAI")


# -- raw strategies (no LangChain): the ceilings a client library can hope to reach ----------------
def _chat_body(w: Workload, q: str) -> dict[str, Any]:
    return {
        "model": w.model,
        "messages": [{"role": "user", "content": q}],
        "max_tokens": w.max_tokens,
        "temperature": w.temperature,
        **w.extra,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def _chatml(q: str) -> str:
    from langchain_qwen_fast._qwen import render_chatml

    return render_chatml([{"role": "user", "content": q}], enable_thinking=False)


async def _raw(
    w: Workload, mode: str, inflight: int, batch: int, urls: Sequence[str] | None = None
) -> tuple[list[float], int, Counter[str]]:
    """The raw aiohttp client: ``inflight`` requests at once, each to the server of ``urls`` (default: the
    workload's) with the fewest prompts in flight."""
    import aiohttp
    import orjson

    lat: list[float] = []
    toks = 0
    errors: Counter[str] = Counter()
    ps = prompts(w.n)
    outstanding = dict.fromkeys((u.rstrip("/") for u in urls or [w.base_url]), 0)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {w.api_key}"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=inflight + 8), timeout=aiohttp.ClientTimeout(total=600)
    ) as s:
        sem = asyncio.Semaphore(inflight)

        async def post(path: str, body: dict[str, Any], k: int) -> None:
            nonlocal toks
            async with sem:
                url = min(outstanding, key=outstanding.__getitem__)
                outstanding[url] += k
                t = time.perf_counter()
                try:
                    async with s.post(url + path, data=orjson.dumps(body), headers=headers) as r:
                        raw = await r.read()
                        if r.status != 200:  # counted by status, not as the KeyError its body would give
                            errors[f"HTTP {r.status}"] += k
                            return
                        toks += orjson.loads(raw)["usage"]["completion_tokens"]
                except Exception as e:
                    errors[type(e).__name__] += k
                finally:
                    outstanding[url] -= k
                    lat.extend([time.perf_counter() - t] * k)

        if mode == "chat":
            await asyncio.gather(*(post("/chat/completions", _chat_body(w, q), 1) for q in ps))
        else:
            bodies = []
            for k in range(0, len(ps), batch):
                chunk = ps[k : k + batch]
                bodies.append(
                    (
                        {
                            "model": w.model,
                            "prompt": [_chatml(q) for q in chunk],
                            "max_tokens": w.max_tokens,
                            "temperature": w.temperature,
                            **w.extra,
                        },
                        len(chunk),
                    )
                )
            await asyncio.gather(*(post("/completions", b, k) for b, k in bodies))
    return lat, toks, errors


def raw_scenario(w: Workload, mode: str = "chat", inflight: int = 256, batch: int = 32) -> dict[str, Any]:
    (lat, toks, errors), wall, cpu = _timed(lambda: asyncio.run(_raw(w, mode, inflight, batch)))
    name = f"raw_aiohttp_chat_c{inflight}" if mode == "chat" else f"raw_aiohttp_list{batch}_x{inflight}"
    return _result(name, w, wall, cpu, lat, toks, errors, client="aiohttp")


def httpx_serial(w: Workload) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    toks = 0
    with httpx.Client(timeout=600) as c:
        c0, t0 = cpu_seconds(), time.perf_counter()
        for q in prompts(w.n):
            t = time.perf_counter()
            r = c.post(
                w.base_url.rstrip("/") + "/chat/completions",
                json=_chat_body(w, q),
                headers={"Authorization": f"Bearer {w.api_key}"},
            )
            toks += r.json()["usage"]["completion_tokens"]
            lat.append(time.perf_counter() - t)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return _result("httpx_serial", w, wall, cpu, lat, toks, 0, client="httpx")


# -- open loop ------------------------------------------------------------------------------------
async def _poisson(
    w: Workload, model: Any, rate: float, duration: float, seed: int
) -> tuple[list[float], int, Counter[str], int]:
    rng = random.Random(seed)
    lat: list[float] = []
    toks = sent = 0
    errors: Counter[str] = Counter()
    tasks = []

    async def one(q: str) -> None:
        nonlocal toks
        t = time.perf_counter()
        try:
            msg = await model.ainvoke(q)
            toks += int((msg.usage_metadata or {}).get("output_tokens") or 0)
            lat.append(time.perf_counter() - t)
        except Exception as e:
            errors[type(e).__name__] += 1

    start = time.perf_counter()
    next_at = start
    while next_at - start < duration:
        now = time.perf_counter()
        if next_at > now:
            await asyncio.sleep(next_at - now)
        tasks.append(asyncio.ensure_future(one(QUESTIONS[sent % len(QUESTIONS)])))
        sent += 1
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return lat, toks, errors, sent


def poisson_scenario(
    w: Workload, client: str, rate: float, duration: float, seed: int = 7, mode: str = "completions"
) -> dict[str, Any]:
    model = qwen_model(w, mode) if client == "qwen" else openai_model(w)
    (lat, toks, errors, sent), wall, cpu = _timed(lambda: asyncio.run(_poisson(w, model, rate, duration, seed)))
    name = f"poisson_{'qwen_ainvoke_' + mode if client == 'qwen' else 'openai_ainvoke'}"
    return _result(
        name,
        w,
        wall,
        cpu,
        lat,
        toks,
        errors,
        n=sent,
        offered_rps=rate,
        client="BatchedChatQwen" if client == "qwen" else "ChatOpenAI",
    )
