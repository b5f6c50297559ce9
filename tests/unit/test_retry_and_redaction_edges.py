"""Edge cases of retries, streams and redaction found in review.

Covers: _upstream/transport.py, _urls.py, _errors.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_streaming import REASONING_STREAM, sse

from langchain_qwen_fast._calls.request import build_spec, make_item
from langchain_qwen_fast._dispatch.item import LIST
from langchain_qwen_fast._errors import connection_error
from langchain_qwen_fast._upstream.transport import parse_retry_after


@pytest.mark.parametrize("value", ["soon", "", "Thu, 99 Foo 2026 00:00:00 GMT"])
def test_unparseable_retry_after_is_ignored_not_raised(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None


def test_retry_after_seconds_and_dates_are_read() -> None:
    assert parse_retry_after({"Retry-After": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past


@pytest.mark.timeout(30)
def test_429_with_garbage_retry_after_is_still_retried(mock_model: Any, fast_backoff: None) -> None:
    calls = {"n": 0}

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(429, headers={"retry-after": "soon"}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json={"id": "x", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})

    model, _ = mock_model(respond, max_retries=2)
    assert model.invoke("hi").content == "ok"
    assert calls["n"] == 2


@pytest.mark.timeout(30)
def test_stream_retries_a_503_before_its_first_byte_and_counts_it(mock_model: Any, fast_backoff: None) -> None:
    calls = {"n": 0}

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(503, json={"error": {"message": "warming up"}})
        return httpx.Response(200, content=sse(REASONING_STREAM), headers={"content-type": "text/event-stream"})

    model, _ = mock_model(respond, max_retries=2)
    text = "".join(str(c.content) for c in model.stream("hi"))
    assert text == "Hello"
    assert calls["n"] == 2
    assert sum(e["retries"] for e in model.stats()["endpoints"].values()) == 1


def test_connection_error_text_never_carries_url_credentials() -> None:
    cause = OSError("Connection timeout to host http://alice:s3cret@example.test:8000/v1/chat/completions")
    exc = connection_error("http://alice:s3cret@example.test:8000/v1/chat/completions", cause, maybe_sent=False)
    assert "s3cret" not in str(exc) and "alice" not in str(exc)
    assert "example.test:8000" in str(exc)


def test_list_items_carry_no_chat_payload() -> None:
    from langchain_core.messages import HumanMessage

    spec = build_spec({"model": "m", "max_tokens": 4}, {}, None, "m", False, "completions", None, {})
    item = make_item(spec, [HumanMessage("hi")])
    assert item.kind == LIST and item.prompt is not None and item.payload is None
    chat_spec = build_spec({"model": "m", "max_tokens": 4}, {}, None, "m", False, "chat", None, {})
    assert make_item(chat_spec, [HumanMessage("hi")]).payload["messages"] == [{"role": "user", "content": "hi"}]
