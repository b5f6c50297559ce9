"""Locust load test: users that each call ``invoke`` with a short wait between calls, 32 tokens per answer, against
a list of servers; ``BatchedChatQwen`` (every URL) or ``ChatOpenAI`` (the first URL) for comparison.

    pip install 'langchain-qwen-fast[load]'                       # locust (and langchain-openai for OpenAIUser)
    locust -f benchmarks/locustfile.py --headless -u 100 -r 100 -t 30s \\
        --host http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1 QwenUser
    locust -f benchmarks/locustfile.py --headless -u 100 -r 100 -t 30s --host http://127.0.0.1:8000/v1 OpenAIUser

Locust runs each user as a gevent greenlet and monkey-patches the standard library when it is imported. All users
of one Locust process share one model, as the threads of a web server would: ``BatchedChatQwen`` then admits and
coalesces their calls in one dispatcher. Under gevent the package's loop runs as a greenlet on asyncio's own loop
(uvloop would block every greenlet: docs/architecture.md), so call the sync methods from users; this file does.

Settings (environment): ``QWEN_MODEL`` (served name, default ``Qwen/Qwen3-0.6B``: what ``vllm serve Qwen/Qwen3-0.6B``
serves), ``QWEN_MAX_TOKENS`` (32),
``LOCUST_WAIT`` (a user's pause between calls in seconds, ``min,max``, default ``0.05,0.15``). Each answer is
``max_tokens`` long (``ignore_eos``), so the rows compare like for like; a request's length in Locust's table is
its output tokens.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from locust import User, between, events, task
from locust.env import Environment

from langchain_qwen_fast.bench import scenarios as S

MIN_WAIT, MAX_WAIT = (float(x) for x in os.environ.get("LOCUST_WAIT", "0.05,0.15").split(","))
_models: dict[str, Any] = {}
_questions = itertools.cycle(S.QUESTIONS)


def _workload(host: str | None, first_only: bool) -> S.Workload:
    urls = [u.strip() for u in (host or os.environ.get("QWEN_BASE_URL", "")).split(",") if u.strip()]
    if not urls:
        raise SystemExit("give the servers with --host URL[,URL...] (or QWEN_BASE_URL)")
    return S.Workload(base_url=urls[0] if first_only else urls,  # type: ignore[arg-type]
                      model=os.environ.get("QWEN_MODEL", "Qwen/Qwen3-0.6B"),
                      max_tokens=int(os.environ.get("QWEN_MAX_TOKENS", "32")))


@events.test_start.add_listener
def _build_models(environment: Environment, **_: Any) -> None:
    """One model per client and process, built before the first user runs (a bad URL fails here, once)."""
    classes = {cls.__name__ for cls in environment.user_classes}
    if "QwenUser" in classes:
        _models["qwen"] = S.qwen_model(_workload(environment.host, first_only=False))
    if "OpenAIUser" in classes:
        _models["openai"] = S.openai_model(_workload(environment.host, first_only=True))


class _ChatUser(User):
    abstract = True
    wait_time = between(MIN_WAIT, MAX_WAIT)
    client_name = ""

    def _invoke(self, key: str) -> None:
        t0 = time.perf_counter()
        tokens, error = 0, None
        try:
            msg = _models[key].invoke(next(_questions))
            tokens = int((msg.usage_metadata or {}).get("output_tokens") or 0)
        except Exception as e:  # counted as Locust's failure, never a crash of the user
            error = e
        self.environment.events.request.fire(
            request_type="invoke", name=self.client_name, response_time=(time.perf_counter() - t0) * 1000,
            response_length=tokens, exception=error, context={})


class QwenUser(_ChatUser):
    """``BatchedChatQwen.invoke`` over every URL of ``--host``."""

    client_name = "BatchedChatQwen"

    @task
    def ask(self) -> None:
        self._invoke("qwen")


class OpenAIUser(_ChatUser):
    """``ChatOpenAI.invoke`` (default settings) against the first URL of ``--host``."""

    client_name = "ChatOpenAI"

    @task
    def ask(self) -> None:
        self._invoke("openai")
