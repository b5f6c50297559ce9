"""Pins how a batch fails and how far it runs ahead, on every entry point and both wire modes: with
``return_exceptions`` N inputs give N outputs in order, the package's documented error types in the failed places,
and ``on_llm_error`` for exactly the failed inputs (with the exception returned, and the ``response`` LangChain's
own path passes); without it the batch raises, and no started run is left without its end or error event;
``max_concurrency`` in the config bounds the sequences in flight at the server (a list of k prompts is k).

Inputs fail at the server through the simulator's ``[[fault:status=N]]`` marker (a list fails whole, as on vLLM,
and is split until the bad prompt stands alone: so lists only carry 400s here).

Covers: _calls/batch.py, _calls/prepare.py, _loop/bridge.py, _dispatch/feed.py, _errors.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelInvalidRequestError,
    ModelNotFoundError,
)
from langchain_core.messages import HumanMessage
from support import ENTRY_POINTS, run_entry_point, run_invoke

from langchain_qwen_fast import AuthenticationError, BadRequestError, NotFoundError, ServerError

pytestmark = pytest.mark.timeout(60)

WIRES = ("completions", "chat")
#: The failing statuses each wire mode gets, by input position: a list answers 400 per prompt; chat any status.
FAULTS = {"completions": {1: 400, 5: 400}, "chat": {1: 400, 3: 401, 4: 404, 5: 422, 6: 500}}
#: The documented type for each status (README.md, _errors.py), and the LangChain type it is.
ERROR_TYPES = {400: (BadRequestError, ModelInvalidRequestError), 401: (AuthenticationError, ModelAuthenticationError),
               404: (NotFoundError, ModelNotFoundError), 422: (BadRequestError, ModelInvalidRequestError),
               500: (ServerError, ModelAPIError)}
N = 8
BAD_INPUT = 2  # an image: a ValueError before anything is sent, and no run (the failures after it are not its item)
IMAGE = [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])]


def _texts(wire: str) -> list[str]:
    faults = FAULTS[wire]
    return [f"q{i} [[fault:status={faults[i]}]]" if i in faults else f"q{i}" for i in range(N)]


def _invoke_error_response(model: Any, entry: str, text: str, run_log: Any) -> Any:
    """The ``response`` that ``on_llm_error`` gets when ``invoke`` (``ainvoke``) of ``text`` fails."""
    log = run_log(async_handler=entry.startswith("a"))
    with pytest.raises(Exception, match="rejected"):
        run_invoke(model, entry, text, {"callbacks": [log]})
    ((_, response),) = log.errors.values()
    return response


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_return_exceptions_gives_every_output_in_order_and_errors_only_the_failed_runs(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    model, server = canned_model(wire, max_retries=0)
    texts: list[Any] = _texts(wire)
    inputs = [IMAGE if i == BAD_INPUT else t for i, t in enumerate(texts)]
    log = run_log(async_handler=entry.startswith("a"))
    out = run_entry_point(model, entry, inputs, {"callbacks": [log]}, return_exceptions=True)
    assert len(out) == N
    faults = FAULTS[wire]
    for i, o in enumerate(out):
        if i in faults:
            ours, langchains = ERROR_TYPES[faults[i]]
            assert type(o) is ours and isinstance(o, langchains), (i, o)
            assert f"rejected {texts[i]}" in str(o) and o.status_code == faults[i]
        elif i == BAD_INPUT:
            assert isinstance(o, ValueError) and "image_url" in str(o)
        else:
            assert o.content == f"echo:q{i}" and o.id == f"lc_run--{log.run_of(texts[i])}-0"
    assert len(log.starts) == N - 1  # no run for the input that was never sent
    log.assert_every_run_ended_once()
    assert set(log.errors) == {log.run_of(texts[i]) for i in faults}
    for i in faults:
        error, response = log.errors[log.run_of(texts[i])]
        assert error is out[i]  # the run's error is the one returned in its place
        assert response == _invoke_error_response(model, entry, texts[i], run_log)
    assert {t for t in server.texts if "fault" not in t} == {texts[i] for i in range(N) if i not in faults} - {
        texts[BAD_INPUT]}


def _failing_batch(model: Any, entry: str, texts: list[str], log: Any, errors: Any, match: str) -> BaseException:
    """Run the entry point without return_exceptions; it must raise one of ``errors``; every input had a run."""
    with pytest.raises(errors, match=match) as raised:
        run_entry_point(model, entry, texts, {"callbacks": [log]})
    assert len(log.starts) == N
    return raised.value


@pytest.mark.parametrize("entry", ["batch", "abatch"])
@pytest.mark.parametrize("wire", WIRES)
def test_without_return_exceptions_batch_raises_the_first_failure_in_input_order_after_ending_every_run(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    model, _ = canned_model(wire, max_retries=0)
    texts, log = _texts(wire), run_log(async_handler=entry.startswith("a"))
    _failing_batch(model, entry, texts, log, BadRequestError, re.escape(f"rejected {texts[1]}"))
    log.assert_every_run_ended_once()  # every input ran to its end, as each invoke of ChatOpenAI.batch does
    assert set(log.errors) == {log.run_of(texts[i]) for i in FAULTS[wire]}
    assert set(log.ends) == {log.run_of(texts[i]) for i in range(N) if i not in FAULTS[wire]}


@pytest.mark.parametrize("entry", ["batch_as_completed", "abatch_as_completed"])
@pytest.mark.parametrize("wire", WIRES)
def test_without_return_exceptions_as_completed_raises_the_first_failure_and_ends_every_started_run(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    model, _ = canned_model(wire, max_retries=0)
    texts, log = _texts(wire), run_log(async_handler=entry.startswith("a"))
    raised = _failing_batch(model, entry, texts, log, tuple(ERROR_TYPES[s][0] for s in FAULTS[wire].values()),
                            "rejected q")
    log.assert_every_run_ended_once()  # what was still pending is ended with the error that stopped the batch
    failed = {log.run_of(texts[i]) for i in FAULTS[wire]}
    assert set(log.ends).isdisjoint(failed)
    assert any(error is raised for error, _ in log.errors.values())


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_max_concurrency_bounds_the_sequences_in_flight_at_the_server(
    wire: str, entry: str, canned_model: Any
) -> None:
    model, server = canned_model(wire, delay=0.02)
    texts = [f"q{i}" for i in range(24)]
    out = run_entry_point(model, entry, texts, {"max_concurrency": 4})
    assert [m.content for m in out] == [f"echo:{t}" for t in texts]
    assert sorted(server.texts) == sorted(texts)
    assert 2 <= server.max_sequences_in_flight <= 4  # a bound, not one at a time


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_the_first_of_per_input_configs_sets_max_concurrency_as_in_langchain(
    wire: str, entry: str, canned_model: Any
) -> None:
    model, server = canned_model(wire, delay=0.02)
    texts = [f"q{i}" for i in range(18)]
    configs = [{"max_concurrency": 3 if i == 0 else 100, "tags": [f"t{i}"]} for i in range(len(texts))]
    out = run_entry_point(model, entry, texts, configs)
    assert [m.content for m in out] == [f"echo:{t}" for t in texts]
    assert 2 <= server.max_sequences_in_flight <= 3


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_max_concurrency_bounds_langchains_own_path_too(wire: str, entry: str, canned_model: Any) -> None:
    """With a cache the batch takes LangChain's per-input path; max_concurrency still bounds it."""
    model, server = canned_model(wire, delay=0.02, cache=InMemoryCache())
    texts = [f"q{i}" for i in range(18)]
    out = run_entry_point(model, entry, texts, {"max_concurrency": 3})
    assert [m.content for m in out] == [f"echo:{t}" for t in texts]
    assert 2 <= server.max_sequences_in_flight <= 3
