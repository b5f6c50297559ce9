"""Pins what LangChain's LLM cache and rate limiter do on every batch entry point, as for ChatOpenAI: a cache hit
sends nothing and returns what was cached (the first run's message id, LangChain's ``total_cost: 0``), a mixed
batch sends only its misses, ``cache=False`` ignores a global cache, and a rate limiter takes one token per miss.

Both wire modes; the server counts every sequence it was sent (a list of 32 prompts is 32).

Covers: _calls/batch.py, _calls/prepare.py, chat_models.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.rate_limiters import InMemoryRateLimiter
from support import ENTRY_POINTS, run_entry_point

pytestmark = pytest.mark.timeout(60)

WIRES = ("completions", "chat")


@pytest.fixture
def global_cache() -> Iterator[InMemoryCache]:
    """``set_llm_cache(InMemoryCache())`` for one test; the cache that was set before is restored."""
    before = get_llm_cache()
    cache = InMemoryCache()
    set_llm_cache(cache)
    yield cache
    set_llm_cache(before)


class CountingLimiter(InMemoryRateLimiter):
    """A limiter that never makes anyone wait, counting the tokens taken from sync and async code."""

    def __init__(self) -> None:
        super().__init__(requests_per_second=10_000, check_every_n_seconds=0.001, max_bucket_size=10_000)
        self.sync_tokens = self.async_tokens = 0

    def acquire(self, *, blocking: bool = True) -> bool:
        self.sync_tokens += 1
        return super().acquire(blocking=blocking)

    async def aacquire(self, *, blocking: bool = True) -> bool:
        self.async_tokens += 1
        return await super().aacquire(blocking=blocking)


def _hit_of(miss: Any) -> dict[str, Any]:
    """What LangChain returns for a cache hit on ``miss``: the cached message with ``total_cost: 0`` in its usage."""
    return {**miss.model_dump(), "usage_metadata": {**miss.usage_metadata, "total_cost": 0}}


def _check_hits_and_misses(model: Any, server: Any, entry: str, run_log: Any) -> None:
    first = run_entry_point(model, entry, ["a", "b"])
    assert sorted(server.texts) == ["a", "b"]
    log = run_log(async_handler=entry.startswith("a"))
    second = run_entry_point(model, entry, ["a", "c", "b", "d"], {"callbacks": [log]})
    assert sorted(server.texts) == ["a", "b", "c", "d"]  # only the misses were sent
    assert [m.content for m in second] == ["echo:a", "echo:c", "echo:b", "echo:d"]
    for hit, miss in ((second[0], first[0]), (second[2], first[1])):
        assert hit.model_dump() == _hit_of(miss)  # content, response_metadata, additional_kwargs as cached
        assert hit.id == miss.id  # the id of the run that filled the cache ...
        assert list(hit.response_metadata) == list(miss.response_metadata)
    assert second[0].id != f"lc_run--{log.run_of('a')}-0"  # ... not the hit's own run
    for text, out in (("c", second[1]), ("d", second[3])):
        assert out.id == f"lc_run--{log.run_of(text)}-0"
        assert "total_cost" not in out.usage_metadata
    assert len(log.starts) == 4 and not log.errors  # hits are runs too: each starts and ends
    log.assert_every_run_ended_once()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_a_global_cache_answers_hits_without_a_request_and_sends_only_the_misses(
    wire: str, entry: str, canned_model: Any, global_cache: InMemoryCache, run_log: Any
) -> None:
    model, server = canned_model(wire)
    _check_hits_and_misses(model, server, entry, run_log)
    assert len(global_cache._cache) == 4


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_a_model_cache_answers_hits_without_a_request_and_sends_only_the_misses(
    wire: str, entry: str, canned_model: Any, run_log: Any
) -> None:
    own = InMemoryCache()
    model, server = canned_model(wire, cache=own)
    _check_hits_and_misses(model, server, entry, run_log)
    assert len(own._cache) == 4 and get_llm_cache() is None
    other, other_server = canned_model(wire)  # no cache of its own, none global: every input is sent
    run_entry_point(other, entry, ["a", "b"])
    assert sorted(other_server.texts) == ["a", "b"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_cache_false_ignores_a_global_cache(
    wire: str, entry: str, canned_model: Any, global_cache: InMemoryCache
) -> None:
    model, server = canned_model(wire, cache=False)
    run_entry_point(model, entry, ["a", "b"])
    out = run_entry_point(model, entry, ["a", "b"])
    assert sorted(server.texts) == ["a", "a", "b", "b"]
    assert [m.content for m in out] == ["echo:a", "echo:b"]
    assert global_cache._cache == {}  # nothing stored


def test_a_cache_hit_looks_as_it_does_for_chatopenai(canned_model: Any, canned_chatopenai: Any) -> None:
    """The same canned answer through ChatOpenAI's and our batch with a cache: a hit is the miss with LangChain's
    ``total_cost: 0``, under the first run's id, for both."""
    model, server = canned_model("chat", cache=InMemoryCache())
    theirs, sent = canned_chatopenai(max_tokens=16, cache=InMemoryCache())
    for llm in (model, theirs):
        (miss,) = llm.batch(["hello"])
        (hit,) = llm.batch(["hello"])
        assert hit.id == miss.id and hit.id.startswith("lc_run--") and hit.id.endswith("-0")
        assert hit.model_dump() == _hit_of(miss), type(llm).__name__
    assert server.texts == ["hello"] and len(sent) == 1


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_a_rate_limiter_takes_one_token_per_cache_miss_and_none_per_hit(
    wire: str, entry: str, canned_model: Any
) -> None:
    limiter = CountingLimiter()
    model, server = canned_model(wire, cache=InMemoryCache(), rate_limiter=limiter)

    def tokens() -> int:  # sync entry points take tokens with acquire, async ones with aacquire
        return limiter.async_tokens if entry.startswith("a") else limiter.sync_tokens

    run_entry_point(model, entry, ["a", "b", "c"])
    assert tokens() == 3
    run_entry_point(model, entry, ["a", "d", "b", "e", "c"])
    assert tokens() == 5  # the two misses
    assert limiter.sync_tokens + limiter.async_tokens == 5  # and none through the other API
    assert sorted(server.texts) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("wire", WIRES)
def test_a_rate_limiter_without_a_cache_takes_one_token_per_input(wire: str, entry: str, canned_model: Any) -> None:
    limiter = CountingLimiter()
    model, server = canned_model(wire, rate_limiter=limiter)
    run_entry_point(model, entry, ["a", "b", "c"])
    run_entry_point(model, entry, ["a", "b"])
    assert (limiter.async_tokens if entry.startswith("a") else limiter.sync_tokens) == 5
    assert limiter.sync_tokens + limiter.async_tokens == 5
    assert sorted(server.texts) == ["a", "a", "b", "b", "c"]
