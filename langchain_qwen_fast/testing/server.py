"""A simulated Qwen3-0.6B OpenAI-compatible server (vLLM 0.24 JSON shapes), one process on loopback.

    python -m langchain_qwen_fast.testing.server --port 8000 [--latency h100|zero] [--seed 0]
        [--max-model-len 2048] [--reasoning-field reasoning|reasoning_content] [--api-key KEY]
        [--model-name Qwen/Qwen3-0.6B [ALIAS ...]] [--fault SPEC ...] [--speed 1.0] [--step-a S] [--step-b S]
        [--prefill-per-token S] [--fe-per-request S] [--fe-per-prompt S] [--fe-per-token S]
        [--max-num-seqs N] [--scheduling-policy fcfs|priority]

It uses aiohttp's low-level ``web.Server`` (no router or middleware: a dict lookup per request) and
orjson, so a client benchmark measures the client, not this server (see docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from .faults import (
    Fault,
    FaultSet,
    early_response,
    error_response,
    send_body,
    send_stream,
    stream_plan,
)
from .responses import (
    Conversation,
    Generation,
    choose_tools,
    conversation_from_messages,
    count_tokens,
    generate,
    instance_for_schema,
    make_tool_calls,
    new_id,
    parse_chatml,
    render_chatml,
    structured,
)
from .sim_engine import SimConfig, SimEngine, build_parser

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_GUARDED = ("/v1", "/v2", "/inference", "/cohere")  # what vLLM's --api-key guards
SIM_VERSION = "0.24.0 (simulated by langchain_qwen_fast.testing)"
_LEN_MSG = (
    "This model's maximum context length is {L} tokens. However, you requested {N} tokens "
    "({P} in the messages, {M} in the completion). "
    "Please reduce the length of the messages or completion."
)


class BadRequest(Exception):
    """Raised while reading a request; becomes vLLM's 400 (or the given status) error body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SimApp:
    """Request handlers, counters and the fault set of one server process."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        params = cfg.latency_params()
        self.engine = SimEngine(params, cfg.scheduling_policy) if params is not None else None
        self.faults = FaultSet(cfg.faults, cfg.seed)
        self.started = time.time()
        self.inflight = self.inflight_prompts = 0
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/health"): self.health, ("GET", "/v1/models"): self.models,
            ("GET", "/version"): self.version,
            ("POST", "/v1/chat/completions"): self.chat,
            ("POST", "/v1/completions"): self.completions,
            ("GET", "/server_info"): self.server_info,
            ("GET", "/sim/stats"): self.sim_stats, ("POST", "/sim/reset"): self.sim_reset,
            ("POST", "/sim/faults"): self.sim_faults, ("GET", "/sim/faults"): self.sim_faults,
        }
        self.paths = {path for _, path in self.routes}
        created = int(self.started)
        perm = {"id": new_id("modelperm"), "object": "model_permission", "created": created,
                "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                "organization": "*", "group": None, "is_blocking": False}
        self._models = orjson.dumps({"object": "list", "data": [{
            "id": name, "object": "model", "created": created, "owned_by": "vllm",
            "root": cfg.model_name, "parent": None, "max_model_len": cfg.max_model_len,
            "permission": [perm]} for name in cfg.served_names]})
        self._auth = None if cfg.api_key is None else f"bearer {cfg.api_key}"
        self.reset_counters()

    # ------------------------------------------------------------------------------------ plumbing
    def reset_counters(self) -> None:
        self.requests: dict[str, int] = {}
        self.served: dict[str, int] = {}
        self.prompts_served = 0
        self.max_inflight, self.max_inflight_prompts = self.inflight, self.inflight_prompts
        self.faults.injected = {}
        if self.engine is not None:
            self.engine.reset_counters()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._auth is not None and request.path.startswith(_GUARDED) and not self._authorized(request):
            # vLLM's --api-key middleware: the same prefixes, status and body (vllm/entrypoints/serve/middleware)
            return web.Response(status=401, body=b'{"error":"Unauthorized"}', content_type="application/json")
        route = self.routes.get((request.method, request.path))
        if route is None:
            known = request.path in self.paths
            status, detail = (405, "Method Not Allowed") if known else (404, "Not Found")
            return web.Response(status=status, body=orjson.dumps({"detail": detail}),
                                content_type="application/json")
        return await route(request)

    def _authorized(self, request: web.BaseRequest) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return f"{scheme.lower()} {token}" == self._auth

    async def _api(self, request: web.BaseRequest, endpoint: str, fn: Any) -> web.StreamResponse:
        """Count the request, parse its body, map BadRequest to vLLM's error shape."""
        self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            try:  # content.read(): no 1 MiB client_max_size cap (lists of long prompts)
                body = orjson.loads(await request.content.read())
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"Invalid JSON body: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("The request body must be a JSON object")
            model = body.get("model")
            if model is not None and model not in self.cfg.served_names:
                raise BadRequest(f"The model `{model}` does not exist.", 404)
            return await fn(request, body)
        except BadRequest as exc:
            return error_response(exc.status, str(exc))
        finally:
            self.inflight -= 1

    async def _fault(
        self, request: web.BaseRequest, endpoint: str, texts: list[str]
    ) -> Fault | None:
        try:
            fault = self.faults.pick(endpoint, request.headers.get("x-sim-fault"), texts)
        except ValueError as exc:  # a malformed header or marker spec
            raise BadRequest(str(exc)) from None
        if fault is None:
            return None
        self.faults.record(fault)
        delay = fault.delay + (float(fault.value or 0) if fault.kind == "stall" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        return fault

    def _check_len(self, prompt_tokens: int, max_tokens: int | None) -> None:
        limit = self.cfg.max_model_len
        m = max_tokens or 0
        if prompt_tokens + m > limit or prompt_tokens >= limit:
            raise BadRequest(_LEN_MSG.format(L=limit, N=prompt_tokens + m, P=prompt_tokens, M=m))

    @contextlib.contextmanager
    def _sequences(self, n: int) -> Iterator[None]:
        """Count n sequences as in flight (admission to response) for /sim/stats."""
        self.inflight_prompts += n
        self.max_inflight_prompts = max(self.max_inflight_prompts, self.inflight_prompts)
        try:
            yield
        finally:
            self.inflight_prompts -= n

    async def _generate_wait(self, prompt_tokens: list[int], gens: list[Generation],
                             priority: int = 0) -> None:
        """Hold the response for the modelled time (front-end admission, then the engine)."""
        with self._sequences(len(prompt_tokens)):
            if self.engine is not None:
                await self.engine.admit(len(prompt_tokens))
                await self.engine.submit(prompt_tokens, [g.completion_tokens for g in gens],
                                         priority)

    def mark_served(self, endpoint: str, prompts: int) -> None:
        self.served[endpoint] = self.served.get(endpoint, 0) + 1
        self.prompts_served += prompts

    # ------------------------------------------------------------------------------------ endpoints
    async def health(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests["health"] = self.requests.get("health", 0) + 1
        return web.Response(status=200)

    async def models(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests["models"] = self.requests.get("models", 0) + 1
        return web.Response(body=self._models, content_type="application/json")

    async def version(self, request: web.BaseRequest) -> web.StreamResponse:
        """vLLM's ``/version``, plus the mark by which ``qwen-fast doctor`` tells a simulated server."""
        return web.Response(body=orjson.dumps({"version": SIM_VERSION, "simulator": True}),
                            content_type="application/json")

    async def server_info(self, request: web.BaseRequest) -> web.StreamResponse:
        """vLLM's dev-mode ``/server_info`` (``VLLM_SERVER_DEV_MODE=1``), cut to what says how
        this server schedules: ``vllm_config.scheduler_config.policy``."""
        config = {"scheduler_config": {"policy": self.cfg.scheduling_policy,
                                       "max_num_seqs": self.cfg.max_num_seqs or 1024},
                  "model_config": {"served_model_name": self.cfg.model_name,
                                   "max_model_len": self.cfg.max_model_len}}
        shown: Any = config if request.query.get("config_format") == "json" else str(config)
        body = {"vllm_config": shown, "vllm_env": {}, "system_env": {}}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def chat(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._api(request, "chat", self._chat)

    async def completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._api(request, "completions", self._completions)

    async def _chat(self, request: web.BaseRequest, body: dict[str, Any]) -> web.StreamResponse:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("`messages` must be a non-empty list")
        kwargs = body.get("chat_template_kwargs") or {}
        thinking = kwargs.get("enable_thinking", True) is not False  # Qwen3's default: on
        conv = conversation_from_messages(messages, thinking)
        fault = await self._fault(request, "chat", [conv.last_user])
        if fault is not None and (early := early_response(fault, request)) is not None:
            return early
        tools = body.get("tools") or None
        prompt_tokens = count_tokens(render_chatml(conv.turns, conv.thinking, tools))
        max_tokens = _int(body.get("max_completion_tokens") or body.get("max_tokens"), "max_tokens")
        self._check_len(prompt_tokens, max_tokens)
        n = _int(body.get("n"), "n") or 1
        priority = _priority(request, body)
        gens = [self._chat_choice(body, conv, tools, max_tokens, j) for j in range(n)]
        rid, created = new_id("chatcmpl"), int(time.time())
        usage = _usage(prompt_tokens, sum(g.completion_tokens for g in gens))
        if body.get("stream"):
            return await self._stream(request, fault, "chat", rid, created, [prompt_tokens] * n,
                                      gens, usage if _include_usage(body) else None,
                                      priority=priority)
        await self._generate_wait([prompt_tokens] * n, gens, priority)
        field = self.cfg.reasoning_field
        choices = []
        for j, g in enumerate(gens):
            msg = {"role": "assistant", "content": g.content, "refusal": None,
                   "annotations": None, "audio": None, "function_call": None,
                   "tool_calls": g.tool_calls, field: g.reasoning}
            choices.append({"index": j, "message": msg, "logprobs": None,
                            "finish_reason": g.finish_reason, "stop_reason": None})
        payload = {"id": rid, "object": "chat.completion", "created": created,
                   "model": self.cfg.model_name, "choices": choices, "service_tier": None,
                   "system_fingerprint": None, "usage": usage, "prompt_logprobs": None,
                   "kv_transfer_params": None}
        self.mark_served("chat", 1)
        return await send_body(fault, request, orjson.dumps(payload))

    def _chat_choice(
        self, body: dict[str, Any], conv: Conversation, tools: list[dict[str, Any]] | None,
        max_tokens: int | None, j: int,
    ) -> Generation:
        """Tool call, JSON, or text: the same decision vLLM's parsers and guided decoding make."""
        tool_choice = body.get("tool_choice") or ("auto" if tools else "none")
        parallel = body.get("parallel_tool_calls") is not False
        try:
            fns = choose_tools(tools or [], tool_choice, parallel, conv)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if fns:
            gen = structured(conv, tool_calls=make_tool_calls(fns, conv))
            if tool_choice != "auto":  # vLLM: guided tool calls answer content "" ...
                gen.content = ""
                if isinstance(tool_choice, dict):  # ... and a named choice finishes with "stop"
                    gen.finish_reason = "stop"
            return gen
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema") or {"type": "object"}
            value = instance_for_schema(schema, conv.last_user.split(), conv.key + j)
            return structured(conv, orjson.dumps(value).decode())
        if rf.get("type") == "json_object":
            answer = generate(conv, None, False, j).content or ""
            return structured(conv, orjson.dumps({"answer": answer}).decode())
        return generate(conv, max_tokens, bool(body.get("ignore_eos")), j, _stop(body))

    async def _completions(
        self, request: web.BaseRequest, body: dict[str, Any]
    ) -> web.StreamResponse:
        if not self.cfg.list_prompts and isinstance(body.get("prompt"), list):
            # vLLM 0.24's Rust front end, word for word: its prompt type has no list-of-strings variant.
            raise BadRequest("prompt: data did not match any variant of untagged enum Prompt")
        prompts = _prompts(body.get("prompt"))
        convs = [parse_chatml(p) if isinstance(p, str) else Conversation((("user", ""),), False)
                 for p in prompts]
        fault = await self._fault(request, "completions", [c.last_user for c in convs])
        if fault is not None and (early := early_response(fault, request)) is not None:
            return early
        max_tokens = _int(body.get("max_tokens"), "max_tokens")
        max_tokens = 16 if max_tokens is None else max_tokens  # vLLM/OpenAI completions default
        n = _int(body.get("n"), "n") or 1
        priority = _priority(request, body)
        ptoks = [count_tokens(p) if isinstance(p, str) else len(p) for p in prompts]
        for p in ptoks:
            self._check_len(p, max_tokens)
        ignore_eos, stop = bool(body.get("ignore_eos")), _stop(body)
        gens = [generate(c, max_tokens, ignore_eos, j, stop) for c in convs for j in range(n)]
        seq_prompts = [p for p in ptoks for _ in range(n)]
        usage = _usage(sum(ptoks), sum(g.completion_tokens for g in gens))
        rid, created = new_id("cmpl"), int(time.time())
        if body.get("stream"):
            return await self._stream(request, fault, "completions", rid, created, seq_prompts,
                                      gens, usage if _include_usage(body) else None, len(prompts),
                                      priority)
        await self._generate_wait(seq_prompts, gens, priority)
        ids = bool(body.get("return_token_ids"))
        choices = []
        for i, g in enumerate(gens):
            ch: dict[str, Any] = {"index": i, "text": g.completion_text(), "logprobs": None,
                                  "finish_reason": g.finish_reason, "stop_reason": None,
                                  "prompt_logprobs": None}
            if ids:
                ch["prompt_token_ids"] = _fake_ids(seq_prompts[i], 151644)
                ch["token_ids"] = _fake_ids(g.completion_tokens, 1000 + i)
            choices.append(ch)
        payload = {"id": rid, "object": "text_completion", "created": created,
                   "model": self.cfg.model_name, "choices": choices, "service_tier": None,
                   "system_fingerprint": None, "usage": usage, "kv_transfer_params": None}
        self.mark_served("completions", len(prompts))
        return await send_body(fault, request, orjson.dumps(payload))

    # -------------------------------------------------------------------------------- streaming
    async def _stream(self, request: web.BaseRequest, fault: Fault | None, endpoint: str, rid: str,
                      created: int, seq_prompts: list[int], gens: list[Generation],
                      usage: dict[str, Any] | None, n_prompts: int = 1,
                      priority: int = 0) -> web.StreamResponse:
        """SSE like vLLM: per choice a role chunk, deltas paced by the engine, finish_reason on the
        last delta, then the usage chunk (``choices: []``) when asked, then ``data: [DONE]``."""
        chat = endpoint == "chat"
        obj = "chat.completion.chunk" if chat else "text_completion"
        prefix = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[' % (
            rid.encode(), obj.encode(), created, orjson.dumps(self.cfg.model_name))
        plans = [stream_plan(g, self.cfg.reasoning_field if chat else None) for g in gens]
        futs: list[list[Any]] = [[None] * len(p) for p in plans]
        tail = b""
        if usage is not None:
            tail = prefix + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"
        tail += b"data: [DONE]\n\n"

        def done() -> None:
            self.mark_served(endpoint, n_prompts)

        with self._sequences(len(gens)):
            if self.engine is not None:
                await self.engine.admit(n_prompts)
                for j, plan in enumerate(plans):  # the role chunk (mark 0) waits for nothing
                    marks = [m for m, _ in plan if m > 0]
                    futs[j][len(plan) - len(marks) :] = self.engine.submit_stream(
                        seq_prompts[j], marks, priority)
            items = []
            order = sorted((m, j, i) for j, p in enumerate(plans) for i, (m, _) in enumerate(p))
            for _, j, i in order:
                choice: dict[str, Any] = {"index": j}
                if chat:
                    choice.update(delta=plans[j][i][1], logprobs=None, finish_reason=None)
                else:
                    choice.update(plans[j][i][1], logprobs=None, finish_reason=None,
                                  stop_reason=None)
                if i == len(plans[j]) - 1:
                    choice["finish_reason"] = gens[j].finish_reason
                items.append((futs[j][i], prefix + orjson.dumps(choice) + b"]}\n\n"))
            return await send_stream(fault, request, items, tail, done)

    # ---------------------------------------------------------------------------------- /sim/*
    async def sim_stats(self, request: web.BaseRequest) -> web.StreamResponse:
        eng = self.engine
        stats = {
            "latency": self.cfg.latency, "uptime_s": round(time.time() - self.started, 3),
            "requests": self.requests, "served": self.served, "prompts_served": self.prompts_served,
            "inflight": self.inflight, "max_inflight": self.max_inflight,
            "inflight_prompts": self.inflight_prompts,
            "max_inflight_prompts": self.max_inflight_prompts,
            "max_running_seqs": eng.max_running if eng else self.max_inflight_prompts,
            "engine": None if eng is None else {"running": eng.running, "waiting": eng.waiting,
                                                "max_running": eng.max_running, "steps": eng.steps},
            "faults": self.faults.injected,
            "fault_list": [f.describe() for f in self.faults.faults],
        }
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    async def sim_reset(self, request: web.BaseRequest) -> web.StreamResponse:
        self.reset_counters()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def sim_faults(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            try:
                specs = orjson.loads(await request.read()).get("faults", [])
                self.faults.replace([str(s) for s in specs])
            except (ValueError, AttributeError, TypeError) as exc:
                return error_response(400, f"bad fault list: {exc}")
        body = {"faults": [f.describe() for f in self.faults.faults]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


# ------------------------------------------------------------------------------------------ helpers
def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"`{name}` must be a positive integer, got {value!r}")
    return value


def _priority(request: web.BaseRequest, body: dict[str, Any]) -> int:
    """vLLM's request priority: the ``X-Vllm-Priority`` header (when an integer) over the body's
    ``priority`` (default 0, lower is handled earlier)."""
    header = request.headers.get("X-Vllm-Priority")
    if header is not None:
        with contextlib.suppress(ValueError):
            return int(header)
    value = body.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"`priority` must be an integer, got {value!r}")
    return value


def _prompts(prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [prompt]
        if all(isinstance(p, str) or (isinstance(p, list) and p) for p in prompt):
            return prompt
    raise BadRequest("`prompt` must be a string, a list of strings, or token ids")


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion,
            "completion_tokens": completion, "prompt_tokens_details": None}


def _include_usage(body: dict[str, Any]) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


def _fake_ids(n: int, seed: int) -> list[int]:
    return [(seed + 7919 * i) % 151643 for i in range(n)]


# ---------------------------------------------------------------------------------------------- CLI
async def serve(cfg: SimConfig, host: str, port: int, exit_with_parent: bool = False) -> None:
    """Serve until SIGTERM/SIGINT (or the parent process dies, with ``exit_with_parent``)."""
    app = SimApp(cfg)
    server = web.Server(app.handle, access_log=None)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(server, host, port, backlog=4096, reuse_address=True)
    bound = srv.sockets[0].getsockname()[1]
    print(f"SIM_LISTENING http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if exit_with_parent and os.getppid() != parent:
            break
    srv.close()
    await server.shutdown(0.2)
    if app.engine is not None:
        await app.engine.close()


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    cfg = SimConfig.from_args(a)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(cfg, a.host, a.port, a.exit_with_parent))
    except OSError as exc:
        print(f"simulator failed to start: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
