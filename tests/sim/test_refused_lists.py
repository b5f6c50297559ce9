"""A server that refuses completions lists (vLLM 0.24's Rust front end answers 400 to every list prompt): the first
refused list is checked with its head alone, that replica gets chat requests from then on, and nothing is lost or
answered twice while it switches; a list refused for one bad prompt is still split as before; the doctor says so.

Covers: _dispatch/requests.py, _dispatch/item.py, _upstream/replicas.py, doctor/, testing/server.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import check

from langchain_qwen_fast import BadRequestError, BatchedChatQwen
from langchain_qwen_fast.doctor import run_checks
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def refusing() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero", list_prompts=False)) as srv:
        yield srv


@pytest.fixture(scope="module")
def taking() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero")) as srv:
        yield srv


def _served(srv: SimServer) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(srv.url + "/sim/stats", timeout=10).json()
    return stats


def _reset(srv: SimServer) -> None:
    httpx.post(srv.url + "/sim/reset", timeout=10)


def _model(urls: list[str], **kw: Any) -> BatchedChatQwen:
    return BatchedChatQwen(base_url=urls if len(urls) > 1 else urls[0], model="Qwen/Qwen3-0.6B", api_key="EMPTY",
                           max_tokens=8, **kw)


def test_the_server_itself_refuses_lists_and_takes_strings(refusing: SimServer) -> None:
    base = refusing.base_url
    body = {"model": "Qwen/Qwen3-0.6B", "max_tokens": 4}
    r = httpx.post(base + "/completions", json={**body, "prompt": ["a", "b"]}, timeout=10)
    assert r.status_code == 400 and "did not match any variant" in r.text
    assert httpx.post(base + "/completions", json={**body, "prompt": "a"}, timeout=10).status_code == 200


def test_a_batch_against_a_server_that_refuses_lists_is_answered_once_each(refusing: SimServer) -> None:
    _reset(refusing)
    model = _model([refusing.base_url])
    questions = [f"question {i}" for i in range(300)]
    out = model.batch(questions)
    # each its own answer, in order (the simulator echoes the question; chat and lists answer alike)
    assert all(m.content.startswith(f"[sim] {q} ") for q, m in zip(questions, out, strict=True))
    served = _served(refusing)["served"]
    # the first list (refused), its head as a list of one (refused), as a string (answered): then chat only
    assert served.get("completions", 0) == 1
    assert served.get("chat", 0) == 299
    snap = model.stats()
    (ep,) = snap["endpoints"].values()
    assert ep["lists"].startswith("refused")
    assert snap["items"] == 300 and snap["items_failed"] == 0
    model.batch(["again"] * 40)  # no second check: straight to chat
    assert _served(refusing)["served"]["chat"] == 299 + 40
    model.close()


def test_with_one_refusing_replica_and_one_taking_lists_both_serve_and_nothing_is_lost(
    refusing: SimServer, taking: SimServer
) -> None:
    _reset(refusing)
    _reset(taking)
    model = _model([refusing.base_url, taking.base_url])
    out = model.batch([f"q{i}" for i in range(600)], return_exceptions=True)
    assert not [o for o in out if isinstance(o, BaseException)]
    assert all(o.content.startswith(f"[sim] q{i} ") for i, o in enumerate(out))
    a, b = _served(refusing), _served(taking)
    assert a["prompts_served"] + b["prompts_served"] == 600  # each input answered once, nowhere twice
    assert a["served"].get("chat", 0) > 0 and b["served"].get("completions", 0) > 0
    assert b["prompts_served"] > b["served"]["completions"]  # the other replica still gets lists
    lists = {name: ep["lists"] for name, ep in model.stats()["endpoints"].items()}
    assert lists[refusing.base_url].startswith("refused") and lists[taking.base_url] == "accepted"
    model.close()


def test_a_list_rejected_for_one_bad_prompt_is_still_split_and_the_server_keeps_lists(taking: SimServer) -> None:
    _reset(taking)
    model = _model([taking.base_url], max_batch_size=8)
    inputs = [f"fine {i}" for i in range(16)]
    inputs[5] = "[[fault:status=400]] bad one"
    out = model.batch(inputs, return_exceptions=True)
    bad = [i for i, o in enumerate(out) if isinstance(o, BaseException)]
    assert bad == [5] and isinstance(out[5], BadRequestError)
    assert all(o.content.startswith(f"[sim] fine {i} ") for i, o in enumerate(out) if i != 5)
    (ep,) = model.stats()["endpoints"].values()
    assert ep["lists"] == "accepted"
    assert _served(taking)["served"].get("chat", 0) == 0  # never switched to chat
    model.close()


def test_doctor_warns_that_a_server_refuses_lists_and_names_the_fix(refusing: SimServer) -> None:
    report = run_checks(refusing.base_url, model="Qwen/Qwen3-0.6B", timeout=10)
    c = check(report, "completions_list")
    assert c.status == "warn", c
    assert "refuses a list of prompts" in c.finding and "chat requests instead" in c.finding
    assert "VLLM_USE_RUST_FRONTEND" in (c.fix or "")


def test_lists_refused_together_for_bad_heads_each_fail_with_the_servers_error(taking: SimServer) -> None:
    # every head bad: each check is inconclusive (the head fails alone too), and checks of lists refused at the same
    # time follow one another; each input gets the server's 400, none a bookkeeping error
    _reset(taking)
    model = _model([taking.base_url], max_batch_size=4)
    out = model.batch([f"bad {i} [[fault:status=400]]" for i in range(64)], return_exceptions=True)
    assert [type(o).__name__ for o in out] == ["BadRequestError"] * 64
    (ep,) = model.stats()["endpoints"].values()
    assert ep["lists"] == "accepted"  # inconclusive checks leave it taking lists
    model.close()
