"""The model name calls carry: a name given is used as given; a model nobody named takes the one model its
replicas serve (one ``GET /v1/models`` per replica, shared by the dispatcher, logged once at INFO, shown in
``stats()``); a 404 that names the model says what is served and what to change.

Covers: _served.py, _upstream/models.py, _loop/handle.py, chat_models.py, _upstream/transport.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _qwen_fakes import Recorder, chat_body

from langchain_qwen_fast import BatchedChatQwen, NotFoundError, run_batch
from langchain_qwen_fast._served import DEFAULT_MODEL, DefaultName, choose, is_named, listed_models

A, B = "http://127.0.0.1:9/v1", "http://127.0.0.2:9/v1"


class Served(Recorder):
    """A fake server per host: ``served[host]`` is what its ``GET /v1/models`` lists; a chat request for a
    model the host does not list answers vLLM's 404."""

    def __init__(self, served: dict[str, list[str]], models_delay: float = 0.0) -> None:
        super().__init__(self._chat)
        self.served, self.models_delay, self.listed = served, models_delay, 0
        self.probe = self._models

    async def _models(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/models":
            return httpx.Response(200)
        self.listed += 1
        if self.models_delay:
            await asyncio.sleep(self.models_delay)
        ids = self.served[request.url.host]
        return httpx.Response(200, json={"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    def _chat(self, payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        model = payload.get("model")
        if model not in self.served[request.url.host]:
            return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist.",
                                                       "type": "NotFoundError", "code": 404}})
        return httpx.Response(200, json=chat_body("ok", model=str(model)))


@pytest.fixture
def make() -> Iterator[Callable[..., BatchedChatQwen]]:
    made: list[BatchedChatQwen] = []

    def build(server: Served, **fields: Any) -> BatchedChatQwen:
        fields.setdefault("base_url", A)
        fields.setdefault("wire_mode", "chat")
        model = BatchedChatQwen(http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(server)),
                                max_retries=0, **fields)
        made.append(model)
        return model

    yield build
    for m in made:
        m.close()


@pytest.fixture(autouse=True)
def no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_MODEL", raising=False)


# -- the rule ---------------------------------------------------------------------------------------
def test_the_rule_takes_the_one_model_every_replica_serves() -> None:
    assert choose(DEFAULT_MODEL, {A: ["Qwen-0.6B"], B: ["Qwen-0.6B"]}).name == "Qwen-0.6B"
    assert choose(DEFAULT_MODEL, {A: ["Qwen-0.6B"], B: None}).name == "Qwen-0.6B"  # a replica that is down
    assert choose(DEFAULT_MODEL, {A: [DEFAULT_MODEL, "lora"], B: [DEFAULT_MODEL]}).how == "default"
    assert choose(DEFAULT_MODEL, {A: None}).name == DEFAULT_MODEL  # nothing listed: the default
    split = choose(DEFAULT_MODEL, {A: ["Qwen-0.6B"], B: ["Qwen3-0.6B"]})
    assert split.name is None and f"{A} serves Qwen-0.6B; {B} serves Qwen3-0.6B" in split.detail
    several = choose(DEFAULT_MODEL, {A: ["x", "y"]})
    assert several.name is None and 'BatchedChatQwen(model="x") or QWEN_MODEL=x' in several.detail


def test_the_fields_default_is_marked_as_unnamed_and_a_given_name_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(BatchedChatQwen(base_url=A).model_name, DefaultName)
    assert is_named(BatchedChatQwen(base_url=A, model=DEFAULT_MODEL).model_name)
    monkeypatch.setenv("QWEN_MODEL", DEFAULT_MODEL)
    assert is_named(BatchedChatQwen(base_url=A).model_name)


# -- discovery --------------------------------------------------------------------------------------
def test_a_model_nobody_named_takes_the_one_model_served_once_per_dispatcher(
    make: Callable[..., BatchedChatQwen], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="langchain_qwen_fast")
    server = Served({"127.0.0.1": ["Qwen-0.6B"]})
    llm = make(server, api_key="sk-secret-4411")
    assert llm.stats()["model"]["chosen"].startswith("not yet")
    first = llm.invoke("hi")
    assert first.response_metadata["model_name"] == "Qwen-0.6B"
    assert server.last["model"] == "Qwen-0.6B"
    llm.batch(["a", "b", "c"])
    # Another instance with the same settings shares the dispatcher, and so its lookup.
    with BatchedChatQwen(base_url=A, http_async_client=llm.http_async_client, wire_mode="chat", max_retries=0,
                         api_key="sk-secret-4411") as again:
        again.invoke("x")
    assert {p["model"] for p in server.payloads} == {"Qwen-0.6B"}
    assert server.listed == 1  # one GET /v1/models for the dispatcher, not one per call or instance
    stats = llm.stats()
    assert stats["model"]["name"] == "Qwen-0.6B" and stats["model"]["chosen"].startswith("discovered")
    assert stats["served_models"] == {A: ["Qwen-0.6B"]}
    said = [r.getMessage() for r in caplog.records if "calls use it" in r.getMessage()]
    assert len(said) == 1 and "Qwen-0.6B" in said[0] and "sk-secret" not in caplog.text


@pytest.mark.parametrize("how", ["argument", "env"])
def test_a_named_model_is_never_swapped_and_never_looked_up(
    make: Callable[..., BatchedChatQwen], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    server = Served({"127.0.0.1": ["Qwen-0.6B"]})
    if how == "env":
        monkeypatch.setenv("QWEN_MODEL", DEFAULT_MODEL)
        llm = make(server)
    else:
        llm = make(server, model=DEFAULT_MODEL)
    with pytest.raises(NotFoundError) as ei:
        llm.invoke("hi")
    assert server.last["model"] == DEFAULT_MODEL
    # The 404 names what is served and the change to make.
    assert "the server serves Qwen-0.6B" in str(ei.value)
    assert 'use BatchedChatQwen(model="Qwen-0.6B") or QWEN_MODEL=Qwen-0.6B' in str(ei.value)
    assert llm.stats()["model"] == {"name": DEFAULT_MODEL,
                                    "chosen": "QWEN_MODEL" if how == "env" else "the model argument"}


def test_replicas_that_serve_different_models_are_a_clear_error_before_any_request(
    make: Callable[..., BatchedChatQwen],
) -> None:
    server = Served({"127.0.0.1": ["Qwen-0.6B"], "127.0.0.2": ["Qwen3-0.6B"]})
    llm = make(server, base_url=[A, B])
    with pytest.raises(NotFoundError) as ei:
        llm.invoke("hi")
    msg = str(ei.value)
    assert "no model was named" in msg and f"{A} serves Qwen-0.6B; {B} serves Qwen3-0.6B" in msg
    assert "--served-model-name" in msg
    with pytest.raises(NotFoundError, match="no model was named"):  # a setting to fix, not a per-input failure
        llm.batch(["a", "b"], return_exceptions=True)
    assert server.count == 0  # nothing was sent that would have 404ed on one replica and worked on the other


def test_a_404_for_a_list_of_prompts_names_the_served_models_with_one_lookup(
    make: Callable[..., BatchedChatQwen],
) -> None:
    def listing(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": f"The model `{payload['model']}` does not exist."}})

    server = Served({"127.0.0.1": ["Qwen-0.6B"]})
    server.respond = listing
    llm = make(server, model="Qwen/Qwen3-8B", max_tokens=4, wire_mode="completions")
    out = llm.batch([f"q{i}" for i in range(40)], return_exceptions=True)
    assert all(isinstance(o, NotFoundError) and "serves Qwen-0.6B" in str(o) for o in out)
    assert str(out[0]).count("serves Qwen-0.6B") == 1  # said once, also where a list's items share the error
    assert server.listed == 1


async def test_an_async_caller_is_never_blocked_by_the_lookup(make: Callable[..., BatchedChatQwen]) -> None:
    server = Served({"127.0.0.1": ["Qwen-0.6B"]}, models_delay=0.5)
    llm = make(server)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    results = await llm.abatch(["a", "b"])
    tick.cancel()
    assert [r.response_metadata["model_name"] for r in results] == ["Qwen-0.6B"] * 2
    assert sum(gaps) >= 0.45 and max(gaps) < 0.25, max(gaps)  # the loop kept running during the 0.5 s lookup


def test_run_batch_decides_the_name_on_the_runtime_loop(make: Callable[..., BatchedChatQwen]) -> None:
    server = Served({"127.0.0.1": ["Qwen-0.6B"]})
    llm = make(server)
    out = run_batch(llm, ["a", "b"])  # abatch runs on the package's own loop thread
    assert [o.response_metadata["model_name"] for o in out] == ["Qwen-0.6B", "Qwen-0.6B"]


def test_a_server_that_is_down_at_first_is_asked_again_later(make: Callable[..., BatchedChatQwen]) -> None:
    server = Served({"127.0.0.1": ["Qwen-0.6B"]})
    up = threading.Event()
    answer = server.probe

    def maybe_down(request: httpx.Request) -> Any:
        if not up.is_set():
            raise httpx.ConnectError("refused", request=request)
        return answer(request)

    server.probe = maybe_down
    llm = make(server)
    with pytest.raises(NotFoundError):  # the lookup failed: this call carries the default, which is 404ed...
        llm.invoke("hi")
    assert server.last["model"] == DEFAULT_MODEL
    up.set()
    time.sleep(1.1)  # ... and a failed lookup is retried after a second, not on every call
    llm.invoke("hi")
    assert server.last["model"] == "Qwen-0.6B"


def test_one_rule_reads_a_model_listing_for_the_client_the_doctor_and_the_worker() -> None:
    body = {"object": "list", "data": [{"id": "Qwen-0.6B"}, {"object": "model"}, {"id": ""}, "x", {"id": 7}]}
    assert listed_models(body) == ["Qwen-0.6B", "7"]  # an entry without an id is no model (not "None")
    assert listed_models({"data": []}) == []
    for not_a_listing in ({}, {"data": {"id": "m"}}, [{"id": "m"}], "data", None):
        assert listed_models(not_a_listing) is None
