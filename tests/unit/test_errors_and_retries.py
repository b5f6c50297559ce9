"""Error mapping onto langchain_core.exceptions, and which failures are retried (counted).

Covers: _errors.py, _upstream/transport.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)

from langchain_qwen_fast import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    DeadlineExceededError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from langchain_qwen_fast._upstream.transport import parse_retry_after

pytestmark = pytest.mark.timeout(30)

VLLM_CONTEXT_MSG = (
    "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens "
    "(2000 in the messages, 100 in the completion). "
    "Please reduce the length of the messages or completion."
)


def _error_body(message: str, code: int) -> dict[str, Any]:
    # vLLM >= 0.10 shape
    return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": code}}


def _sequence(*responses: Any) -> Any:
    """A responder that answers with the given responses in order (the last one repeats)."""
    lock = threading.Lock()
    state = {"i": 0}

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        with lock:
            i = min(state["i"], len(responses) - 1)
            state["i"] += 1
        r = responses[i]
        if isinstance(r, Exception):
            raise r
        return r

    return respond


def test_400_maps_to_bad_request_keeps_message_and_is_not_retried(
    mock_model: Any, fast_backoff: None
) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(400, json=_error_body("temperature must be >= 0", 400)))
    )
    with pytest.raises(BadRequestError) as ei:
        model.invoke("hi")
    assert isinstance(ei.value, ModelInvalidRequestError)
    assert "temperature must be >= 0" in str(ei.value)
    assert ei.value.status_code == 400
    assert rec.count == 1


def test_400_with_old_vllm_error_shape_keeps_message(mock_model: Any) -> None:
    body = {
        "object": "error",
        "message": "bad stop sequence",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    model, rec = mock_model(_sequence(httpx.Response(400, json=body)))
    with pytest.raises(BadRequestError, match="bad stop sequence"):
        model.invoke("hi")
    assert rec.count == 1


def test_400_maximum_context_length_maps_to_context_overflow_not_retried(
    mock_model: Any, fast_backoff: None
) -> None:
    model, rec = mock_model(_sequence(httpx.Response(400, json=_error_body(VLLM_CONTEXT_MSG, 400))))
    with pytest.raises(ContextOverflowError) as ei:
        model.invoke("a very long prompt")
    assert isinstance(ei.value, ContextLengthError)
    assert "maximum context length is 2048" in str(ei.value)
    assert rec.count == 1


@pytest.mark.parametrize(
    ("status", "exc_type", "core_type"),
    [
        (401, AuthenticationError, ModelAuthenticationError),
        (403, PermissionDeniedError, ModelPermissionDeniedError),
        (404, NotFoundError, ModelNotFoundError),
        (422, BadRequestError, ModelInvalidRequestError),
    ],
)
def test_client_errors_are_not_retried(
    status: int, exc_type: type, core_type: type, mock_model: Any, fast_backoff: None
) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(status, json=_error_body(f"server says {status}", status))),
        max_retries=3,
    )
    with pytest.raises(exc_type) as ei:
        model.invoke("hi")
    assert isinstance(ei.value, core_type)
    assert f"server says {status}" in str(ei.value)
    assert rec.count == 1


def test_404_on_base_url_without_v1_names_the_fix(mock_model: Any) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(404, json={"detail": "Not Found"})), base_url="http://127.0.0.1:9"
    )
    with pytest.raises(NotFoundError) as ei:
        model.invoke("hi")
    msg = str(ei.value)
    assert "/v1" in msg and "http://127.0.0.1:9/v1" in msg
    assert rec.requests[0]["path"] == "/chat/completions"


def test_404_on_base_url_with_v1_does_not_suggest_v1(mock_model: Any) -> None:
    model, _ = mock_model(
        _sequence(httpx.Response(404, json=_error_body("The model `x` does not exist.", 404)))
    )
    with pytest.raises(NotFoundError) as ei:
        model.invoke("hi")
    assert "does not exist" in str(ei.value)
    assert "use base_url=" not in str(ei.value)


def test_404_on_completions_path_with_v1_does_not_suggest_v1(mock_model: Any) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(404, json=_error_body("The model `x` does not exist.", 404))),
        wire_mode="completions",
        max_tokens=4,
    )
    with pytest.raises(NotFoundError) as ei:
        model.invoke("hi")
    assert rec.requests[0]["path"] == "/v1/completions"
    assert "use base_url=" not in str(ei.value)


@pytest.mark.parametrize(
    ("status", "exc_type", "core_type"),
    [
        (408, DeadlineExceededError, ModelTimeoutError),
        (429, RateLimitError, ModelRateLimitError),
        (500, ServerError, ModelAPIError),
        (502, ServerError, ModelAPIError),
        (503, ServerError, ModelAPIError),
    ],
)
def test_retryable_statuses_are_retried_max_retries_times_then_raise(
    status: int, exc_type: type, core_type: type, mock_model: Any, fast_backoff: None
) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(status, json=_error_body(f"transient {status}", status))),
        max_retries=2,
    )
    with pytest.raises(exc_type) as ei:
        model.invoke("hi")
    assert isinstance(ei.value, core_type)
    assert f"transient {status}" in str(ei.value)
    assert rec.count == 3  # the first attempt + max_retries


def test_max_retries_zero_sends_exactly_one_request(mock_model: Any, fast_backoff: None) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(503, json=_error_body("busy", 503))), max_retries=0
    )
    with pytest.raises(ServerError):
        model.invoke("hi")
    assert rec.count == 1


def test_success_after_two_failures_returns_the_answer(mock_model: Any, fast_backoff: None) -> None:
    model, rec = mock_model(
        _sequence(
            httpx.Response(503, json=_error_body("busy", 503)),
            httpx.Response(500, json=_error_body("oops", 500)),
            httpx.Response(200, json=chat_body("finally")),
        ),
        max_retries=2,
    )
    assert model.invoke("hi").content == "finally"
    assert rec.count == 3


def test_connection_error_is_retried_then_succeeds(mock_model: Any, fast_backoff: None) -> None:
    model, rec = mock_model(
        _sequence(
            httpx.ConnectError("connection refused"),
            httpx.Response(200, json=chat_body("up again")),
        )
    )
    assert model.invoke("hi").content == "up again"
    assert rec.count == 2


def test_connection_error_every_time_raises_connection_error(
    mock_model: Any, fast_backoff: None
) -> None:
    model, rec = mock_model(_sequence(httpx.ReadError("connection reset by peer")), max_retries=2)
    with pytest.raises(APIConnectionError) as ei:
        model.invoke("hi")
    assert isinstance(ei.value, ModelConnectionError)
    assert "reset" in str(ei.value)
    assert rec.count == 3


def test_retry_after_is_honoured(mock_model: Any, fast_backoff: None) -> None:
    times: list[float] = []
    inner = _sequence(
        httpx.Response(429, headers={"Retry-After": "0.3"}, json=_error_body("slow down", 429)),
        httpx.Response(200, json=chat_body("ok")),
    )

    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return inner(payload, request)

    model, rec = mock_model(respond, max_retries=1)
    assert model.invoke("hi").content == "ok"
    assert rec.count == 2
    assert times[1] - times[0] >= 0.3 - 0.005  # timer granularity only


def test_retry_after_longer_than_deadline_fails_fast(mock_model: Any, fast_backoff: None) -> None:
    model, rec = mock_model(
        _sequence(
            httpx.Response(
                429, headers={"Retry-After": "30"}, json=_error_body("come back later", 429)
            )
        ),
        timeout=1.0,
        max_retries=3,
    )
    t0 = time.monotonic()
    with pytest.raises(RateLimitError, match="come back later"):
        model.invoke("hi")
    assert time.monotonic() - t0 < 0.9
    assert rec.count == 1


def test_deadline_bounds_a_slow_server_on_the_default_engine(local_server: Any) -> None:
    from langchain_qwen_fast import BatchedChatQwen

    server = local_server(delay=3.0)
    with BatchedChatQwen(base_url=server.base_url, timeout=0.3, max_retries=2) as model:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError) as ei:
            model.invoke("hi")
        assert isinstance(ei.value, ModelTimeoutError)
        assert time.monotonic() - t0 < 1.5
    assert server.count == 1  # a passed deadline is never retried


def test_deadline_bounds_a_slow_httpx_transport(mock_model: Any) -> None:
    """The call's one deadline must hold whatever the engine: MockTransport, respx and custom
    httpx transports do not enforce httpx's own timeouts, so the transport must."""
    import asyncio

    async def slow(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2.0)
        return httpx.Response(200, json=chat_body("late"))

    model, _ = mock_model(slow, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError) as ei:
        model.invoke("hi")
    assert isinstance(ei.value, ModelTimeoutError)
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("status", [200, 404])
def test_html_body_raises_invalid_response_quoting_first_bytes(
    status: int, mock_model: Any
) -> None:
    html = "<html><head><title>Welcome to nginx!</title></head><body>proxy page</body></html>"
    model, rec = mock_model(
        _sequence(httpx.Response(status, text=html, headers={"content-type": "text/html"}))
    )
    with pytest.raises(InvalidResponseError) as ei:
        model.invoke("hi")
    assert "<html><head><title>Welcome to nginx!" in str(ei.value)
    assert rec.count == 1


def test_non_json_200_body_raises_clear_error(mock_model: Any) -> None:
    model, rec = mock_model(_sequence(httpx.Response(200, text="upstream hiccup, try later")))
    with pytest.raises(InvalidResponseError) as ei:
        model.invoke("hi")
    assert "not JSON" in str(ei.value)
    assert "upstream hiccup" in str(ei.value)
    assert rec.count == 1


@pytest.mark.parametrize("wire", ["chat", "completions"])
def test_json_200_without_choices_raises_invalid_response_not_retried(mock_model: Any, wire: str) -> None:
    model, rec = mock_model(
        _sequence(httpx.Response(200, json={"object": "list", "data": []})), wire_mode=wire, max_tokens=8
    )
    with pytest.raises(InvalidResponseError, match="no choices") as ei:
        model.invoke("hi")
    assert isinstance(ei.value, ModelAPIError)  # `except ModelError` catches a server that is not OpenAI-shaped
    assert rec.count == 1


@pytest.mark.parametrize(
    "body",
    [[1, 2], {"choices": "abc"}, {"choices": [7]}, {"choices": [{"message": "text"}]},
     {"choices": [{"message": {"content": "x"}}], "usage": [3]}],
    ids=["list", "choices_str", "choice_int", "message_str", "usage_list"],
)
def test_json_200_of_the_wrong_shape_raises_invalid_response(mock_model: Any, body: Any) -> None:
    model, _ = mock_model(_sequence(httpx.Response(200, json=body)))
    with pytest.raises(InvalidResponseError, match="not an OpenAI-compatible response"):
        model.invoke("hi")


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    import email.utils

    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After": "0"}) == 0.0
    assert parse_retry_after({}) is None
    future = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= parse_retry_after({"retry-after": future}) <= 10.5


def test_retry_fails_over_to_another_replica(mock_model: Any, fast_backoff: None) -> None:
    def respond(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1":
            return httpx.Response(503, json=_error_body("replica down", 503))
        return httpx.Response(200, json=chat_body(f"from {request.url.host}"))

    model, rec = mock_model(
        respond, base_url=["http://127.0.0.1:9/v1", "http://127.0.0.2:9/v1"], max_retries=1
    )
    for _ in range(4):
        assert model.invoke("hi").content == "from 127.0.0.2"
    hosts = [httpx.URL(r["url"]).host for r in rec.requests]
    assert "127.0.0.1" in hosts  # some first attempts did fail over
    assert hosts.count("127.0.0.2") == 4


def test_a_completions_list_whose_usage_is_not_an_object_fails_every_prompt(mock_model: Any) -> None:
    body = {"id": "cmpl-x", "choices": [{"index": i, "text": f"a{i}", "finish_reason": "length", "token_ids": [1],
                                          "prompt_token_ids": [1, 2]} for i in range(3)], "usage": [3]}
    model, rec = mock_model(lambda p, r: httpx.Response(200, json=body), wire_mode="completions", max_tokens=8,
                            max_wait_ms=50)
    outs = model.batch(["q0", "q1", "q2"], return_exceptions=True)
    assert rec.count == 1 and len(rec.last["prompt"]) == 3  # one list
    assert all(isinstance(o, InvalidResponseError) and "usage is a JSON list" in str(o) for o in outs), outs
