"""Fault knobs, and the delivery paths they corrupt (JSON bodies and SSE streams).

The knobs are what a reliability suite needs to provoke, with exact and countable semantics; the
writers live here too because every fault except the status/HTML ones is a way of delivering (or
not delivering) a finished answer.

SPEC grammar (docs/simulator.md has the full table)::

    SPEC    := KIND ["=" VALUE] (":" OPTION "=" VALUE)* ["@" RATE] ["#" COUNT]
    KIND    := status | html | stall | slow_body | truncated_json | truncated_sse
             | reset_before | reset_after
    OPTION  := retry_after (seconds, any status; 429 defaults to 1)
             | delay (seconds to wait before the fault acts)
             | on (chat | completions | any: which endpoint a server-wide fault matches)

    status=429:retry_after=2@0.3     30 % of requests get a 429 with "Retry-After: 2"
    status=503#3                     the next 3 requests get a 503, then the server recovers

A request gets at most one fault. Precedence: the ``[[fault:SPEC]]`` marker in the last user message
(any prompt of a /v1/completions list: a real server rejects the whole list), then the
``x-sim-fault: SPEC[,SPEC...]`` header, then the server-wide list in order (first one that fires).
Rates draw from RNGs seeded with ``--seed``, so a fixed request order gives a fixed fault pattern.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .responses import Generation, token_pieces

KINDS = (
    "status", "html", "stall", "slow_body", "truncated_json", "truncated_sse",
    "reset_before", "reset_after",
)
_NEEDS_VALUE = {"status", "stall", "slow_body"}
_OPTIONS = {"retry_after", "delay", "on"}
MARKER_RE = re.compile(r"\[\[fault:([^\]]+)\]\]")
_ERROR_TYPES = {
    400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
    404: "NotFoundError", 408: "RequestTimeoutError", 409: "ConflictError",
    422: "UnprocessableEntityError", 429: "RateLimitError", 500: "InternalServerError",
    502: "BadGatewayError", 503: "ServiceUnavailableError", 504: "GatewayTimeoutError",
}
_HTML = b"<html><body>Bad Gateway</body></html>"


@dataclass
class Fault:
    """One parsed SPEC. ``count`` is the number of injections left (None: unlimited)."""

    kind: str
    value: float | None = None
    rate: float = 1.0
    count: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    on: str = "any"
    spec: str = ""
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def stat_key(self) -> str:
        """``status_503``, ``html_502``, or the kind itself: what /sim/stats counts under."""
        if self.kind in ("status", "html"):
            return f"{self.kind}_{self.status}"
        return self.kind

    @property
    def status(self) -> int:
        if self.kind == "html":
            return int(self.value) if self.value is not None else 502
        return int(self.value or 500)

    def matches(self, endpoint: str) -> bool:
        return self.on in ("any", endpoint)

    def fires(self) -> bool:
        """Draw once (rate) and consume one of ``count``; False once the count is spent."""
        if self.count is not None and self.count <= 0:
            return False
        if self.rate < 1.0 and self.rng.random() >= self.rate:
            return False
        if self.count is not None:
            self.count -= 1
        return True

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "remaining": self.count, "rate": self.rate}


def _num(text: str, what: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad {what} {text!r} in fault spec {spec!r}") from None


def parse_fault(spec: str, seed: int = 0, salt: str = "") -> Fault:
    """Parse one SPEC; raises ValueError with the offending part named."""
    spec = spec.strip()
    rest, count, rate = spec, None, 1.0
    if "#" in rest:
        rest, c = rest.rsplit("#", 1)
        count = int(_num(c, "count", spec))
    if "@" in rest:
        rest, r = rest.rsplit("@", 1)
        rate = _num(r, "rate", spec)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1] in fault spec {spec!r}")
    head, *opts = rest.split(":")
    kind, _, value = head.partition("=")
    kind = kind.strip()
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r} in {spec!r}; kinds: {', '.join(KINDS)}")
    if kind in _NEEDS_VALUE and not value:
        raise ValueError(f"fault {kind!r} needs a value ({kind}=...) in {spec!r}")
    fault = Fault(kind, _num(value, kind, spec) if value else None, rate, count, spec=spec,
                  rng=random.Random(f"{seed}:{salt}:{spec}"))
    for opt in opts:
        name, _, val = opt.partition("=")
        if name not in _OPTIONS or not val:
            raise ValueError(f"bad option {opt!r} in {spec!r}; options: {sorted(_OPTIONS)}")
        if name == "on":
            if val not in ("chat", "completions", "any"):
                raise ValueError(f"on= must be chat, completions or any in {spec!r}")
            fault.on = val
        else:
            setattr(fault, name, _num(val, name, spec))
    if kind == "status" and fault.status == 429 and fault.retry_after is None:
        fault.retry_after = 1.0
    return fault


class FaultSet:
    """The server-wide list plus the per-request sources; one pick per API request."""

    def __init__(self, specs: list[str] | tuple[str, ...], seed: int) -> None:
        self.seed = seed
        self.injected: dict[str, int] = {}
        self._adhoc_rng = random.Random(seed)
        self.faults: list[Fault] = []
        self.replace(list(specs))

    def replace(self, specs: list[str]) -> None:
        """Swap the server-wide list atomically (all specs parse, or nothing changes)."""
        self.faults = [parse_fault(s, self.seed, str(i)) for i, s in enumerate(specs)]

    def pick(self, endpoint: str, header: str | None, texts: list[str]) -> Fault | None:
        specs = [m.group(1) for m in map(MARKER_RE.search, texts) if m]
        specs += header.split(",") if header else []
        for spec in specs:
            fault = self._adhoc(spec)
            if fault is not None:
                return fault
        for fault in self.faults:
            if fault.matches(endpoint) and fault.fires():
                return fault
        return None

    def _adhoc(self, spec: str) -> Fault | None:
        """Header/marker faults: the rate draws from one shared seeded RNG; count does not apply."""
        fault = parse_fault(spec, self.seed)
        if fault.rate < 1.0 and self._adhoc_rng.random() >= fault.rate:
            return None
        return fault

    def record(self, fault: Fault) -> None:
        self.injected[fault.stat_key] = self.injected.get(fault.stat_key, 0) + 1


# -------------------------------------------------------------------------------------- delivery
def error_response(
    status: int, message: str, retry_after: float | None = None, err_type: str | None = None
) -> web.Response:
    """vLLM's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": err_type or _ERROR_TYPES.get(status, "Error"),
                      "param": None, "code": status}}
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                        content_type="application/json")


def abort(request: web.BaseRequest) -> None:
    """Drop the connection with a RST (SO_LINGER 0): the client sees a reset, not a clean close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def early_response(fault: Fault, request: web.BaseRequest) -> web.StreamResponse | None:
    """Faults that answer instead of the model. Returns None when the request should go on."""
    if fault.kind == "status":
        message = f"[sim] injected fault: {fault.spec}"
        return error_response(fault.status, message, fault.retry_after)
    if fault.kind == "html":
        return web.Response(status=fault.status, body=_HTML, content_type="text/html")
    if fault.kind == "reset_before":
        abort(request)
        return web.Response(status=204)  # never reaches the wire: aiohttp sees a closed transport
    return None


async def send_body(
    fault: Fault | None, request: web.BaseRequest, body: bytes, status: int = 200
) -> web.StreamResponse:
    """Send a finished JSON body, honouring reset_after and the slow/truncated body faults."""
    kind = fault.kind if fault is not None else None
    if kind == "reset_after":
        abort(request)
        return web.Response(status=204)
    if kind not in ("slow_body", "truncated_json", "truncated_sse"):
        return web.Response(status=status, body=body, content_type="application/json")
    resp = web.StreamResponse(status=status)
    resp.content_type = "application/json"
    resp.content_length = len(body)
    await resp.prepare(request)
    if kind == "slow_body":
        pieces = 10
        step = max(1, -(-len(body) // pieces))
        with contextlib.suppress(ConnectionError):  # the client gave up waiting: fine
            for i in range(0, len(body), step):
                await asyncio.sleep(float(fault.value or 0) / pieces)  # type: ignore[union-attr]
                await resp.write(body[i : i + step])
            await resp.write_eof()
        return resp
    await resp.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()  # flush what was written, then FIN: a short body, not a reset
    return resp


def stream_plan(g: Generation, field: str | None) -> list[tuple[int, dict[str, Any]]]:
    """Deltas of one choice with the token count each needs (chat if ``field``, else text).

    About 16 deltas per choice at most (>= 4 tokens each), so streaming stays cheap for the server.
    """
    total = g.completion_tokens
    k = max(4, -(-total // 16))
    out: list[tuple[int, dict[str, Any]]] = []

    def add(text: str, start: int, key: str) -> int:
        pieces = token_pieces(text)
        for i in range(0, len(pieces), k):
            start += len(pieces[i : i + k])
            out.append((start, {key: "".join(pieces[i : i + k])}))
        return start

    if field is None:
        out.append((0, {"text": ""}))
        add(g.completion_text(), 0, "text")
    else:
        out.append((0, {"role": "assistant", "content": ""}))
        used = add(g.reasoning, 2, field) if g.reasoning is not None else 0
        used += 3 if g.reasoning is not None else 0
        if g.tool_calls:
            per = max(1, (total - used) // (4 * len(g.tool_calls)))
            for i, call in enumerate(g.tool_calls):
                fn = call["function"]
                head = {"index": i, "id": call["id"], "type": "function",
                        "function": {"name": fn["name"], "arguments": ""}}
                out.append((used, {"tool_calls": [head]}))
                args, q = fn["arguments"], -(-len(fn["arguments"]) // 4) or 1
                for s in range(0, len(args), q):
                    used += per
                    frag = {"index": i, "function": {"arguments": args[s : s + q]}}
                    out.append((used, {"tool_calls": [frag]}))
        elif g.content:
            add(g.content, used, "content")
    out = [(min(max(m, 1) if i else 0, total), d) for i, (m, d) in enumerate(out)]
    if len(out) == 1:
        out.append((total, {"content": ""} if field is not None else {"text": ""}))
    out[-1] = (total, out[-1][1])
    return out


_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


async def send_stream(
    fault: Fault | None,
    request: web.BaseRequest,
    items: list[tuple[asyncio.Future[None] | None, bytes]],
    tail: bytes,
    on_complete: Callable[[], None],
) -> web.StreamResponse:
    """Write SSE events, each once its engine future resolved; ready events go out in one write.

    reset_after: wait for the whole generation, count it, drop the connection before any byte.
    truncated_sse/truncated_json: about half the events, then close (no finish_reason, no [DONE]).
    slow_body: spread the events over ``value`` seconds on top of the engine's pacing.
    """
    kind = fault.kind if fault is not None else None
    if kind == "reset_after":
        for fut, _ in items:
            if fut is not None:
                await fut
        on_complete()
        abort(request)
        return web.Response(status=204)
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    cut = len(items) // 2 + 1 if kind in ("truncated_sse", "truncated_json") else len(items) + 1
    pause = float(fault.value or 0) / len(items) if kind == "slow_body" and fault else 0.0
    buf: list[bytes] = []
    try:
        await resp.prepare(request)
        for i, (fut, data) in enumerate(items):
            if i == cut:
                await resp.write(b"".join(buf))
                if request.transport is not None:
                    request.transport.close()
                return resp
            if (fut is not None and not fut.done()) or pause:
                if buf:
                    await resp.write(b"".join(buf))
                    buf.clear()
                if fut is not None:
                    await fut
                if pause:
                    await asyncio.sleep(pause)
            buf.append(data)
        buf.append(tail)
        await resp.write(b"".join(buf))
        on_complete()
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away: nothing to report to it
    return resp
