"""Under gevent's monkey-patching, as Locust's users run: sync calls from many greenlets are answered together, on
asyncio's loop (uvloop's would stop every greenlet), and a loop that cannot start says why instead of hanging.
Each case runs in a fresh interpreter that patches before it imports the package, as Locust does, against the
simulator with its H100 latency model.

Covers: _loop/runtime.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from langchain_qwen_fast.testing import SimConfig, SimServer

pytest.importorskip("gevent")

PRELUDE = """\
from gevent import monkey
monkey.patch_all()
import asyncio, faulthandler, json, sys, time
import gevent
faulthandler.dump_traceback_later(40, exit=True)  # a hang ends with the stacks, not a stuck test
from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._loop.runtime import get_runtime
llm = BatchedChatQwen(base_url=sys.argv[1], model="Qwen/Qwen3-0.6B", max_tokens=8, timeout=20)
"""

MANY = PRELUDE + """\
llm.invoke("warm up")
t0 = time.perf_counter()
llm.invoke("one alone")
one = time.perf_counter() - t0
t0 = time.perf_counter()
users = [gevent.spawn(llm.invoke, f"question {i}") for i in range(100)]
gevent.joinall(users, timeout=30)
print(json.dumps({"one_s": one, "hundred_s": time.perf_counter() - t0,
                  "answered": sum(1 for g in users if g.successful() and g.value.content),
                  "loop": type(get_runtime().loop).__module__}))
"""

ASYNC_FIRST = PRELUDE + """\
try:
    asyncio.run(llm.ainvoke("hi"))
    print(json.dumps({"error": None}))
except RuntimeError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.fixture(scope="module")
def h100() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="h100", seed=5)) as srv:
        yield srv


def run(script: str, url: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_hundred_greenlets_calling_invoke_are_answered_together(h100: SimServer) -> None:
    got = run(MANY, h100.base_url)
    assert got["answered"] == 100
    assert got["loop"].startswith("asyncio")  # type: ignore[attr-defined]
    # one after another they would take 100 times one call; together, a few times one call
    assert got["hundred_s"] < 20 * got["one_s"], got  # type: ignore[operator]


def test_an_async_call_inside_a_greenlets_own_event_loop_fails_with_the_reason_instead_of_hanging(
    h100: SimServer,
) -> None:
    got = run(ASYNC_FIRST, h100.base_url)
    assert got["error"] is not None and "call the sync methods, invoke and batch, from greenlets" in got["error"]
