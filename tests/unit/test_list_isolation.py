"""Completions lists never mix callers' credentials or deadlines.

Covers: _calls/request.py, _dispatch/scheduler.py."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from langchain_qwen_fast import BatchedChatQwen


def _echo_lists(seen: list[tuple[str, int]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        seen.append((request.headers.get("authorization", ""), len(prompts)))
        choices = [{"index": i, "text": "ok", "finish_reason": "stop"} for i in range(len(prompts))]
        return httpx.Response(200, json={"id": "c", "model": "m", "choices": choices})

    return httpx.MockTransport(handler)


@pytest.mark.timeout(30)
def test_two_instances_with_different_keys_never_share_a_list_request():
    seen: list[tuple[str, int]] = []
    client = httpx.AsyncClient(transport=_echo_lists(seen))
    common = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "max_tokens": 4, "http_async_client": client}
    a = BatchedChatQwen(api_key="key-A", **common)
    b = BatchedChatQwen(api_key="key-B", **common)
    assert a._dispatcher()[1] is b._dispatcher()[1]  # same settings: one shared dispatcher

    async def both() -> None:
        await asyncio.gather(a.abatch([f"a{i}" for i in range(40)]), b.abatch([f"b{i}" for i in range(40)]))

    asyncio.run(both())
    assert sum(n for _, n in seen) == 80
    by_key = {"Bearer key-A": 0, "Bearer key-B": 0}
    for auth, n in seen:
        by_key[auth] += n
    assert by_key == {"Bearer key-A": 40, "Bearer key-B": 40}


def test_explicit_n_one_keeps_a_call_eligible_for_lists():
    from langchain_qwen_fast._calls.request import build_spec

    spec = build_spec({"model": "m", "max_tokens": 4, "n": 1}, {}, None, "m", False, "completions", None, {})
    assert spec.list_eligible
    assert "n" not in spec.params


def test_base_url_from_environment_is_validated(monkeypatch):
    monkeypatch.setenv("QWEN_BASE_URL", "localhost:8000/v1")
    with pytest.raises(ValueError, match="scheme"):
        BatchedChatQwen()
