"""Fakes shared by the unit tests: canned OpenAI-style bodies, a recording MockTransport handler,
and a tiny real aiohttp server on loopback for the tests that must count concurrent connections.

Handlers handed to ``httpx.MockTransport`` run on the qwen-fast background loop thread, so the
recorder takes a lock; an async ``respond`` is awaited on that loop. (A module with its own name,
not ``conftest``, so that other test folders' conftest files can never shadow these imports.)
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
from aiohttp import web

MODEL = "Qwen/Qwen3-0.6B"
#: Loopback, so passing an api_key raises no "plain http" warning; nothing listens there.
MOCK_URL = "http://127.0.0.1:9/v1"
USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


def chat_body(
    content: str | None = "ok",
    *,
    finish_reason: str = "stop",
    usage: dict[str, Any] | None = USAGE,
    id: str = "chatcmpl-test",
    model: str = MODEL,
    system_fingerprint: str | None = None,
    **message_extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message_extra},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    if system_fingerprint is not None:
        body["system_fingerprint"] = system_fingerprint
    return body


def last_user_text(payload: dict[str, Any]) -> str:
    for m in reversed(payload.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c)
    return ""


def echo(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
    """Default responder: the answer names the last user message, so tests can match answers."""
    return httpx.Response(200, json=chat_body(f"echo:{last_user_text(payload)}"))


class Recorder:
    """A MockTransport handler that records each request (path, headers, JSON body).

    GETs are the replicas' health probes (``/health``, ``/v1/models``): recorded apart in
    ``probes`` and answered by ``probe`` (200 unless a test says otherwise), so ``requests`` and
    ``count`` are the generation requests alone.
    """

    def __init__(self, respond: Callable[[dict[str, Any], httpx.Request], Any] = echo) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.probes: list[str] = []
        self.probe: Callable[[httpx.Request], Any] = lambda request: httpx.Response(200)
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> Any:
        if request.method == "GET":
            with self._lock:
                self.probes.append(str(request.url))
            return self.probe(request)
        try:
            payload = json.loads(request.content) if request.content else {}
        except ValueError:
            payload = {}
        with self._lock:
            self.requests.append(
                {
                    "url": str(request.url),
                    "path": request.url.path,
                    "headers": dict(request.headers),
                    "json": payload,
                }
            )
        return self.respond(payload, request)  # a coroutine is awaited by MockTransport

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["json"] for r in self.requests]

    @property
    def last(self) -> dict[str, Any]:
        with self._lock:
            return self.requests[-1]["json"]


# -- a real server on loopback ------------------------------------------------------------------


class LocalServer:
    """An aiohttp OpenAI-ish server in its own thread; counts requests in flight.

    ``respond(payload) -> (status, body_dict)`` may be replaced; ``delay`` is slept per request.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.count = 0
        self.payloads: list[dict[str, Any]] = []
        self.respond: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] = lambda p: (
            200,
            chat_body(f"echo:{last_user_text(p)}"),
        )
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-local-server", daemon=True
        )
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.count += 1
        self.payloads.append(payload)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            status, body = self.respond(payload)
            return web.json_response(body, status=status)
        finally:
            self.in_flight -= 1

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> LocalServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @staticmethod
    async def _cancel_rest() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(self._cancel_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
