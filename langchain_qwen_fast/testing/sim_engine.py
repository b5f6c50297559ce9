"""The continuous-batching latency model, and the simulator's configuration.

Why a model and not sleeps per request: what a client library must get right (admission, coalescing,
list batching) only shows against a server whose throughput depends on *how* it is loaded. vLLM's
cost has three parts, and each is here:

* **Engine (GPU process)**: one decode step emits one token for each of the B running sequences
  and takes ``step_a + step_b * B`` seconds; a sequence that joins a step adds
  ``prefill_per_token * prompt_tokens`` to it. At most ``max_num_seqs`` sequences run; the rest
  wait, in arrival order (``scheduling_policy="fcfs"``, vLLM's default) or lowest ``priority``
  first, ties in arrival order (``"priority"``, vLLM's ``--scheduling-policy priority``).
* **Front-end (API-server process)**: serial, because vLLM's API server is one CPU-bound process.
  Modelled as a virtual clock ``fe_free_at`` that every cost is appended to, never by burning CPU:
  ``fe_per_request + fe_per_prompt * n`` on admission (parse, template, tokenize: the request
  reaches the engine only when that is done) and ``fe_per_token * B`` after every step (vLLM
  detokenizes each step's outputs in the API server). A response leaves once the front-end has
  processed the step that finished it. So per-request cost is amortised by list batching, and a
  saturated front-end delays admissions, which is what the anchors show at 32 tokens.

All times are divided by ``speed``. The engine loop keeps its own virtual step clock (sleeping until
the step's end), so timer jitter does not accumulate; if the process falls behind by more than
``_MAX_LAG`` the debt is dropped rather than replayed as a burst.

Parameters and their fit to ../shared/gpu/anchors are in docs/simulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from langchain_qwen_fast.cli.help import DefaultsHelpFormatter

_MAX_LAG = 0.02


@dataclass(frozen=True)
class LatencyParams:
    """Seconds (before ``speed``); ``max_num_seqs`` caps the engine batch like vLLM's scheduler."""

    step_a: float = 0.0
    step_b: float = 0.0
    prefill_per_token: float = 0.0
    fe_per_request: float = 0.0
    fe_per_prompt: float = 0.0
    fe_per_token: float = 0.0
    max_num_seqs: int = 1024
    speed: float = 1.0


# Fitted to the H100 anchors (vLLM 0.24, Qwen3-0.6B shape): see docs/simulator.md for the fit.
H100 = LatencyParams(
    step_a=2.6e-3,
    step_b=36e-6,
    prefill_per_token=10e-6,
    fe_per_request=1.0e-3,
    fe_per_prompt=1.1e-3,
    fe_per_token=23e-6,
    max_num_seqs=1024,
)
PRESETS: dict[str, LatencyParams | None] = {"h100": H100, "zero": None}
POLICIES = ("fcfs", "priority")


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulated server takes on its command line (``to_argv`` mirrors the CLI).

    ``latency="zero"`` answers at once (no engine, no front-end clock): used to measure client CPU.
    The ``step_*``/``fe_*``/``prefill_per_token``/``max_num_seqs`` fields override the preset.
    ``scheduling_policy`` is vLLM's ``--scheduling-policy``: under ``"fcfs"`` a request's
    ``priority`` is accepted and ignored, as vLLM's V1 engine does; under ``"priority"`` waiting
    sequences are admitted lowest value first.

    ``model_name`` is what ``vllm serve Qwen/Qwen3-0.6B`` serves; ``aliases`` are further names it
    also answers to and lists, as vLLM's ``--served-model-name A B`` does (answers carry the first).
    ``api_key`` is vLLM's ``--api-key``: ``/v1/*`` then answers 401 without ``Authorization: Bearer KEY``.
    """

    latency: str = "h100"
    seed: int = 0
    max_model_len: int = 2048
    reasoning_field: str = "reasoning"
    model_name: str = "Qwen/Qwen3-0.6B"
    aliases: tuple[str, ...] = ()
    api_key: str | None = None
    faults: tuple[str, ...] = ()
    speed: float = 1.0
    step_a: float | None = None
    step_b: float | None = None
    prefill_per_token: float | None = None
    fe_per_request: float | None = None
    fe_per_prompt: float | None = None
    fe_per_token: float | None = None
    max_num_seqs: int | None = None
    scheduling_policy: str = "fcfs"
    #: False answers a ``/v1/completions`` prompt that is a list with HTTP 400, as vLLM's Rust front end does
    #: (``VLLM_USE_RUST_FRONTEND=1``, vLLM 0.24); a string prompt is still served.
    list_prompts: bool = True

    def __post_init__(self) -> None:
        if self.latency not in PRESETS:
            raise ValueError(f"latency must be one of {sorted(PRESETS)}, not {self.latency!r}")
        if self.reasoning_field not in ("reasoning", "reasoning_content"):
            raise ValueError("reasoning_field must be 'reasoning' or 'reasoning_content'")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if self.scheduling_policy not in POLICIES:
            raise ValueError(f"scheduling_policy must be one of {POLICIES}, "
                             f"not {self.scheduling_policy!r}")
        object.__setattr__(self, "faults", tuple(self.faults))  # a list is fine to pass
        object.__setattr__(self, "aliases", tuple(self.aliases))

    @property
    def served_names(self) -> tuple[str, ...]:
        return (self.model_name, *(a for a in self.aliases if a != self.model_name))

    def latency_params(self) -> LatencyParams | None:
        """The effective model, or None for ``latency="zero"``."""
        base = PRESETS[self.latency]
        if base is None:
            return None
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(LatencyParams)
            if getattr(self, f.name) is not None
        }
        return replace(base, **overrides)

    def to_argv(self) -> list[str]:
        """Command-line flags that reproduce this config in ``python -m ...testing.server``."""
        argv = [
            "--latency", self.latency, "--seed", str(self.seed),
            "--max-model-len", str(self.max_model_len), "--reasoning-field", self.reasoning_field,
            "--model-name", *self.served_names, "--speed", repr(self.speed),
            "--scheduling-policy", self.scheduling_policy,
        ]
        if not self.list_prompts:
            argv.append("--refuse-list-prompts")
        for f in fields(LatencyParams):
            value = getattr(self, f.name)
            if f.name != "speed" and value is not None:
                argv += ["--" + f.name.replace("_", "-"), repr(value)]
        for spec in self.faults:
            argv += ["--fault", spec]
        if self.api_key is not None:
            argv += ["--api-key", self.api_key]
        return argv

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> SimConfig:
        """The inverse of ``to_argv`` (given ``build_parser().parse_args(...)``)."""
        skip = ("faults", "model_name", "aliases", "list_prompts")
        given = {f.name: getattr(a, f.name) for f in fields(cls) if f.name not in skip}
        return cls(**given, faults=tuple(a.fault), model_name=a.model_name[0], aliases=tuple(a.model_name[1:]),
                   list_prompts=not a.refuse_list_prompts)


def build_parser() -> argparse.ArgumentParser:
    """The server's command line; kept beside ``SimConfig.to_argv`` so the two cannot drift."""
    p = argparse.ArgumentParser(prog="python -m langchain_qwen_fast.testing.server",
                                description="Simulated Qwen3-0.6B OpenAI-compatible server.",
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on stdout)")
    p.add_argument("--latency", choices=sorted(PRESETS), default="h100",
                   help="h100: the fitted vLLM latency model; zero: answer at once")
    p.add_argument("--seed", type=int, default=0, help="seeds answers and fault rates")
    p.add_argument("--max-model-len", type=int, default=2048, help="context length; longer prompts get 400")
    p.add_argument("--reasoning-field", choices=["reasoning", "reasoning_content"],
                   default="reasoning", help="where reasoning comes back (vLLM 0.24: reasoning)")
    p.add_argument("--model-name", nargs="+", default=["Qwen/Qwen3-0.6B"], metavar="NAME",
                   help="served names, as vLLM's --served-model-name: answers carry the first, all are "
                   "listed and accepted (e.g. --model-name Qwen/Qwen3-0.6B Qwen-0.6B)")
    p.add_argument("--api-key", default=None,
                   help="as vLLM's --api-key: /v1/* answers 401 without 'Authorization: Bearer KEY' (default: none)")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="server-wide fault, repeatable: KIND[=V][:OPT=V...][@RATE][#COUNT]")
    p.add_argument("--speed", type=float, default=1.0, help="divide every modelled time by this")
    for name in ("step-a", "step-b", "prefill-per-token", "fe-per-request", "fe-per-prompt",
                 "fe-per-token"):
        p.add_argument(f"--{name}", type=float, default=None, metavar="SECONDS",
                       help="override the latency preset's value (docs/simulator.md)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="sequences the engine runs at once "
                   "(default: the preset's, 1024)")
    p.add_argument("--scheduling-policy", choices=POLICIES, default="fcfs",
                   help="fcfs (vLLM's default: a request's priority is ignored) or priority "
                   "(lowest value admitted first)")
    p.add_argument("--refuse-list-prompts", action="store_true",
                   help="answer 400 to a /v1/completions prompt that is a list, as vLLM's Rust front end does")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the parent process dies")
    return p


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of waiting for it.

    Runs the real ``SimEngine`` in virtual time, so the model's prediction for a scenario takes
    milliseconds: used by the fit script (tests/sim/fit_latency.py) and the latency tests.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        select = self._selector.select  # type: ignore[attr-defined]

        def jump(timeout: float | None = None) -> Any:
            if timeout is not None and timeout > 0:
                self._now += timeout
            return select(0)

        self._selector.select = jump  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._now


class _Group:
    """Futures are resolved per group: a list of 32 prompts costs one wake-up, not 32."""

    __slots__ = ("fut", "remaining")

    def __init__(self, fut: asyncio.Future[None], remaining: int) -> None:
        self.fut = fut
        self.remaining = remaining


def _resolve(futs: list[asyncio.Future[None]]) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_result(None)


_Seq = tuple[int, Sequence[int], Sequence[_Group]]  # prompt tokens, token marks, their groups


class _Fcfs(deque[_Seq]):
    """The waiting queue in arrival order; ``priority`` is ignored, as under vLLM's fcfs."""

    def push(self, priority: int, seq: _Seq) -> None:
        self.append(seq)


class _ByPriority:
    """The waiting queue of vLLM's priority policy: lowest value first, then arrival order
    (vLLM orders by ``(priority, arrival_time)``). Running sequences are never preempted here:
    the simulator has no KV cache to run out of."""

    __slots__ = ("_heap", "_n")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, _Seq]] = []
        self._n = 0

    def push(self, priority: int, seq: _Seq) -> None:
        heapq.heappush(self._heap, (priority, self._n, seq))
        self._n += 1

    def popleft(self) -> _Seq:
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)


class SimEngine:
    """Continuous batching over a global step counter.

    A sequence admitted into step ``s`` has its k-th token at the end of step ``s + k - 1``; events
    are bucketed by step number, so a step costs O(events in it), not O(running sequences).
    """

    def __init__(self, params: LatencyParams, scheduling_policy: str = "fcfs") -> None:
        if scheduling_policy not in POLICIES:
            raise ValueError(f"scheduling_policy must be one of {POLICIES}")
        s = params.speed
        self._a, self._b = params.step_a / s, params.step_b / s
        self._c = params.prefill_per_token / s
        self._f_req, self._f_prompt = params.fe_per_request / s, params.fe_per_prompt / s
        self._f_tok = params.fe_per_token / s
        self._max = params.max_num_seqs
        self._waiting: _Fcfs | _ByPriority = (
            _ByPriority() if scheduling_policy == "priority" else _Fcfs())
        self._events: dict[int, list[tuple[_Group, bool]]] = {}
        self._step = 0
        self._fe_free = 0.0
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.running = 0
        self.max_running = 0
        self.steps = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def reset_counters(self) -> None:
        self.max_running = self.running
        self.steps = 0

    async def admit(self, n_prompts: int) -> None:
        """Front-end admission: queue behind the serial API server, then return when it is done."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        free = max(now, self._fe_free) + self._f_req + self._f_prompt * n_prompts
        self._fe_free = free
        if free > now:
            await asyncio.sleep(free - now)

    def submit(self, prompt_tokens: Sequence[int], n_tokens: Sequence[int],
               priority: int = 0) -> asyncio.Future[None]:
        """Queue sequences; the future resolves when all of them finished and left the front-end."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        group = _Group(fut, len(prompt_tokens))
        for p, n in zip(prompt_tokens, n_tokens, strict=True):
            self._waiting.push(priority, (p, (max(1, n),), (group,)))
        self._kick()
        return fut

    def submit_stream(self, prompt_tokens: int, marks: Sequence[int],
                      priority: int = 0) -> list[asyncio.Future[None]]:
        """One sequence, a future per mark (ascending token counts; the last is its length)."""
        loop = asyncio.get_running_loop()
        groups = [_Group(loop.create_future(), 1) for _ in marks]
        self._waiting.push(priority, (prompt_tokens, [max(1, m) for m in marks], groups))
        self._kick()
        return [g.fut for g in groups]

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t = loop.time()
        events = self._events
        while True:
            if not self.running and not self._waiting:
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                t = max(t, loop.time())
            step = self._step + 1
            new_tokens = 0
            while self._waiting and self.running < self._max:
                prompt, marks, groups = self._waiting.popleft()
                new_tokens += prompt
                self.running += 1
                last = len(marks) - 1
                for i, (mark, group) in enumerate(zip(marks, groups, strict=True)):
                    events.setdefault(step + mark - 1, []).append((group, i == last))
            batch = self.running
            if batch > self.max_running:
                self.max_running = batch
            t += self._a + self._b * batch + self._c * new_tokens
            now = loop.time()
            if t > now:
                await asyncio.sleep(t - now)
            elif now - t > _MAX_LAG:
                t = now - _MAX_LAG
            self._step = step
            self.steps += 1
            fe = max(t, self._fe_free) + self._f_tok * batch
            self._fe_free = fe
            done = events.pop(step, None)
            if done:
                ready = []
                for group, final in done:
                    if final:
                        self.running -= 1
                    group.remaining -= 1
                    if not group.remaining:
                        ready.append(group.fut)
                if ready:
                    if fe > loop.time():
                        loop.call_at(fe, _resolve, ready)
                    else:
                        _resolve(ready)
