"""batch/abatch: input order, per-item errors, max_concurrency, bad inputs, >32 in flight.

Covers: _calls/batch.py, _calls/prepare.py, _loop/bridge.py, _dispatch/feed.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body, last_user_text
from langchain_core.messages import HumanMessage

from langchain_qwen_fast import BadRequestError, BatchedChatQwen

pytestmark = pytest.mark.timeout(30)

N = 50
BAD = {3, 17, 18, 42}


def _inputs() -> list[str]:
    return [f"bad-{i}" if i in BAD else f"q-{i}" for i in range(N)]


def _fail_bad(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
    text = last_user_text(payload)
    if text.startswith("bad-"):
        return httpx.Response(400, json={"error": {"message": f"rejected {text}", "code": 400}})
    return httpx.Response(200, json=chat_body(f"echo:{text}"))


def _check_results(results: list[Any]) -> None:
    assert len(results) == N
    for i, r in enumerate(results):
        if i in BAD:
            assert isinstance(r, BadRequestError), (i, r)
            assert f"rejected bad-{i}" in str(r)
        else:
            assert not isinstance(r, BaseException), (i, r)
            assert r.content == f"echo:q-{i}"


def test_batch_return_exceptions_keeps_order_and_errors_at_failing_indexes(mock_model: Any) -> None:
    model, rec = mock_model(_fail_bad)
    _check_results(model.batch(_inputs(), return_exceptions=True))
    assert rec.count == N  # 400s are not retried


def test_batch_without_return_exceptions_raises_the_item_error(mock_model: Any) -> None:
    model, _ = mock_model(_fail_bad)
    with pytest.raises(BadRequestError, match="rejected bad-"):
        model.batch(_inputs())


async def test_abatch_return_exceptions_keeps_order_and_errors_at_failing_indexes(
    mock_model: Any,
) -> None:
    model, rec = mock_model(_fail_bad)
    _check_results(await model.abatch(_inputs(), return_exceptions=True))
    assert rec.count == N


async def test_abatch_without_return_exceptions_raises_the_item_error(mock_model: Any) -> None:
    model, _ = mock_model(_fail_bad)
    with pytest.raises(BadRequestError, match="rejected bad-"):
        await model.abatch(_inputs())


def test_batch_results_follow_input_order_when_answers_arrive_out_of_order(mock_model: Any) -> None:
    import asyncio

    async def jittery(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        i = int(last_user_text(payload).split("-")[1])
        await asyncio.sleep(0.002 * ((i * 7) % 11))  # later inputs often finish first
        return httpx.Response(200, json=chat_body(f"echo:q-{i}"))

    model, _ = mock_model(jittery)
    results = model.batch([f"q-{i}" for i in range(40)])
    assert [r.content for r in results] == [f"echo:q-{i}" for i in range(40)]


def test_batch_max_concurrency_bounds_requests_in_flight(local_server: Any) -> None:
    server = local_server(delay=0.03)
    with BatchedChatQwen(base_url=server.base_url) as model:
        results = model.batch([f"q-{i}" for i in range(24)], config={"max_concurrency": 4})
    assert [r.content for r in results] == [f"echo:q-{i}" for i in range(24)]
    assert server.count == 24
    assert server.max_in_flight <= 4
    assert server.max_in_flight >= 2  # the bound is a bound, not serial execution


async def test_abatch_max_concurrency_bounds_requests_in_flight(local_server: Any) -> None:
    server = local_server(delay=0.03)
    async with BatchedChatQwen(base_url=server.base_url) as model:
        results = await model.abatch([f"q-{i}" for i in range(24)], config={"max_concurrency": 3})
    assert [r.content for r in results] == [f"echo:q-{i}" for i in range(24)]
    assert 2 <= server.max_in_flight <= 3


def test_model_max_concurrency_field_bounds_requests_in_flight(local_server: Any) -> None:
    server = local_server(delay=0.03)
    with BatchedChatQwen(base_url=server.base_url, max_concurrency=5) as model:
        model.batch([f"q-{i}" for i in range(30)])
    assert 2 <= server.max_in_flight <= 5


IMAGE = HumanMessage(
    content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
)


def test_batch_bad_input_element_is_value_error_and_nothing_sent_for_it(mock_model: Any) -> None:
    model, rec = mock_model()
    inputs: list[Any] = ["q-0", "q-1", [IMAGE], "q-3"]
    results = model.batch(inputs, return_exceptions=True)
    assert isinstance(results[2], ValueError)
    assert "image_url" in str(results[2])
    assert [r.content for i, r in enumerate(results) if i != 2] == [
        "echo:q-0",
        "echo:q-1",
        "echo:q-3",
    ]
    assert rec.count == 3
    assert all("image" not in str(p["messages"]) for p in rec.payloads)


async def test_abatch_bad_input_element_is_value_error_and_nothing_sent_for_it(
    mock_model: Any,
) -> None:
    model, rec = mock_model()
    results = await model.abatch(["q-0", [IMAGE], "q-2"], return_exceptions=True)
    assert isinstance(results[1], ValueError)
    assert results[0].content == "echo:q-0" and results[2].content == "echo:q-2"
    assert rec.count == 2


def test_batch_bad_input_without_return_exceptions_raises_before_sending(mock_model: Any) -> None:
    model, rec = mock_model()
    with pytest.raises(ValueError, match="image_url"):
        model.batch(["q-0", [IMAGE], "q-2"])
    assert rec.count == 0


def test_empty_batch_returns_empty_list_without_requests(mock_model: Any) -> None:
    model, rec = mock_model()
    assert model.batch([]) == []
    assert rec.count == 0


@pytest.mark.timeout(60)
def test_sync_batch_500_keeps_more_than_32_in_flight_and_returns_in_order(
    local_server: Any,
) -> None:
    """Acceptance criterion: sync .batch is one submission, not LangChain's 32-thread pool."""
    server = local_server(delay=0.05)
    with BatchedChatQwen(base_url=server.base_url) as model:
        results = model.batch([f"q-{i}" for i in range(500)])
    assert len(results) == 500
    assert [r.content for r in results] == [f"echo:q-{i}" for i in range(500)]
    assert server.count == 500
    assert server.max_in_flight > 32, server.max_in_flight


def test_generic_batch_path_with_rate_limiter_keeps_order(mock_model: Any) -> None:
    from langchain_core.rate_limiters import InMemoryRateLimiter

    limiter = InMemoryRateLimiter(
        requests_per_second=500, check_every_n_seconds=0.001, max_bucket_size=50
    )
    model, rec = mock_model(rate_limiter=limiter)
    results = model.batch([f"r{i}" for i in range(6)])
    assert [r.content for r in results] == [f"echo:r{i}" for i in range(6)]
    assert rec.count == 6
