"""A model with one server that does not answer: fail fast with a message about that server when it never
answered; wait for it while it restarts when it did; several replicas keep their all-down wait and message.

Covers: _upstream/replicas.py, _upstream/transport.py, _errors.py."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body

from langchain_qwen_fast import AllReplicasDownError, APIConnectionError

pytestmark = pytest.mark.timeout(30)
URL = "http://127.0.0.1:9/v1"


@pytest.fixture
def short_hold(monkeypatch: pytest.MonkeyPatch) -> float:
    """Every replica down holds calls 0.5 s instead of 3 s (the rule is the same, the test is quicker)."""
    from langchain_qwen_fast import chat_models
    from langchain_qwen_fast._upstream import replicas

    monkeypatch.setattr(chat_models, "HealthPolicy", functools.partial(replicas.HealthPolicy, fail_after_s=0.5))
    return 0.5


def refusing(until: Callable[[], float] = lambda: float("inf")) -> Callable[..., httpx.Response]:
    """A responder (and probe) that refuses connections while ``time.monotonic() < until()``, then answers."""

    def respond(*args: Any) -> httpx.Response:
        if time.monotonic() < until():
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200, json=chat_body("back"))

    return respond


def failure(model: Any, text: str, kind: type[Exception] = APIConnectionError) -> tuple[Any, float]:
    """The error ``model.invoke(text)`` raises (of ``kind``) and the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(kind) as ei:
        model.invoke(text)
    return ei.value, time.monotonic() - t0


def test_a_server_that_never_answered_fails_after_its_own_retries_with_a_message_about_it(
    mock_model: Any, fast_backoff: None
) -> None:
    url = "http://user:s3cret@127.0.0.1:9/v1"
    shown = "http://***@127.0.0.1:9/v1"
    model, rec = mock_model(refusing(), base_url=url, max_retries=2)
    rec.probe = refusing()
    err, elapsed = failure(model, "hi")
    assert rec.count == 3  # the first try and max_retries more: retried, each after its backoff
    assert elapsed < 1.0, elapsed  # not held for the 3 s that every replica down gets
    assert not isinstance(err, AllReplicasDownError) and err.maybe_sent is False
    msg = str(err)
    assert msg == (f"cannot connect to {shown} (ConnectError: [Errno 111] Connection refused); is the server "
                   f"running? (check with `qwen-fast doctor --base-url {shown}`)"), msg
    assert "replica" not in msg and "s3cret" not in msg

    again, at_once = failure(model, "hi again")  # still refused: fails at once, nothing sent
    assert at_once < 0.5, at_once
    assert rec.count == 3 and str(again) == msg


def test_the_only_server_that_answered_before_is_waited_for_while_it_restarts(
    mock_model: Any, fast_backoff: None
) -> None:
    up_at = [0.0]
    model, rec = mock_model(refusing(lambda: up_at[0]), max_retries=2)
    rec.probe = refusing(lambda: up_at[0])
    assert model.invoke("first").content == "back"
    up_at[0] = time.monotonic() + 0.6  # it goes away now and answers again 0.6 s later: a restart
    t0 = time.monotonic()
    assert model.invoke("during the restart").content == "back"
    assert time.monotonic() - t0 >= 0.5  # it waited for the server instead of failing fast


def test_the_only_server_that_stays_down_after_answering_fails_after_the_hold_in_its_own_words(
    mock_model: Any, fast_backoff: None, short_hold: float
) -> None:
    down_from = [float("inf")]

    def respond(*args: Any) -> httpx.Response:
        if time.monotonic() >= down_from[0]:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200, json=chat_body("ok"))

    model, rec = mock_model(respond, max_retries=2)
    rec.probe = respond
    assert model.invoke("first").content == "ok"
    down_from[0] = time.monotonic()
    err, elapsed = failure(model, "after it stopped")
    assert short_hold - 0.05 <= elapsed < short_hold + 1.0, elapsed  # held for a restart that did not come
    msg = str(err)
    assert not isinstance(err, AllReplicasDownError)
    assert msg.startswith(f"{URL} stopped answering and calls fail until it answers again (ConnectError: "), msg
    assert msg.endswith(f"is the server running? (check with `qwen-fast doctor --base-url {URL}`)"), msg
    assert "replica" not in msg


def test_several_replicas_that_never_answered_keep_the_all_down_wait_and_message(
    mock_model: Any, fast_backoff: None, short_hold: float
) -> None:
    urls = ["http://127.0.0.1:9/v1", "http://127.0.0.2:9/v1"]
    model, rec = mock_model(refusing(), base_url=urls, max_retries=2)
    rec.probe = refusing()
    err, elapsed = failure(model, "hi", AllReplicasDownError)
    assert elapsed >= short_hold - 0.05, elapsed  # every replica down: held for a probe first
    msg = str(err)
    assert msg.startswith("all 2 replicas are down, calls fail until one answers again ("), msg
    assert all(u in msg for u in urls)
