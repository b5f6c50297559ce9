"""``batch``/``abatch`` and their ``_as_completed`` forms without a thread pool: one submission per call.

LangChain's default ``batch`` runs ``invoke`` in min(32, cpu+4) threads, which caps what is in
flight far below what a vLLM server takes (49 req/s where the engine does 152), and its
``batch_as_completed`` kept 6 in flight. Here one driver serves all four entry points: the inputs
are converted and their callback runs started chunk by chunk (32 inputs, then 64, ... up to 512),
each chunk goes to the dispatcher as soon as it is ready, and results come back as they finish.

Inputs are prepared only as far ahead of what is finished as the dispatcher can use (twice its
admission capacity), and each input's objects (its run manager, its dispatcher item) are dropped
when it finishes: 100,000 pending inputs cost their results and the caller's own list, not five
LangChain objects each.

An input that cannot be converted is a per-item ``ValueError`` with ``return_exceptions``; without
it, it raises, and what was sent is cancelled. The ``_as_completed`` forms yield ``(index,
output)`` as each input finishes; without ``return_exceptions`` the first failure raises there, as
LangChain's own does. The few configurations whose semantics live inside LangChain's per-call
path (an LLM cache, a rate limiter, ``output_version="v1"``, streaming requested) take LangChain's
generic path instead, with ``max_concurrency`` defaulting to the model's admission limit rather
than the thread-pool size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from typing import Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel

from langchain_qwen_fast._calls.prepare import HELPERS, Chunk, Lane, Prepared, PreparedInput
from langchain_qwen_fast._dispatch.scheduler import Flow
from langchain_qwen_fast._loop import bridge as _bridge

__all__ = ["Lane", "abatch_as_completed_fast", "abatch_fast", "batch_as_completed_fast", "batch_fast"]


def _fast_path_ok(model: BaseChatModel, lane: Lane, kwargs: dict[str, Any]) -> bool:
    if not HELPERS or model.rate_limiter is not None or model.output_version == "v1":
        return False
    if model.cache is not None and model.cache is not False:
        return False
    if model.cache is None and get_llm_cache() is not None:
        return False
    return not (kwargs.get("stream") or lane.streaming)


def _with_default_concurrency(lane: Lane, config: Any) -> Any:
    if isinstance(config, list):
        return [{**c, "max_concurrency": c.get("max_concurrency") or lane.limit} for c in config]
    config = dict(config or {})
    config.setdefault("max_concurrency", lane.limit)
    return config


class _Driver:
    """One fast batch: what is prepared, and each input that is on its way (by its index)."""

    def __init__(
        self, model: BaseChatModel, lane: Lane, inputs: Sequence[Any], config: Any, kwargs: dict[str, Any],
        return_exceptions: bool, manager_cls: Any,
    ) -> None:
        self.prep = Prepared(model, lane, inputs, config, kwargs, return_exceptions, manager_cls)
        self.rt, self.disp = lane.dispatcher()
        capacity = self.disp.replicas.capacity()
        if self.prep.limit:
            capacity = min(capacity, self.prep.limit)
        self.ahead = max(2 * capacity, 1024)
        self.flow = Flow("batch", self.prep.spec.priority)
        self.pending: dict[int, PreparedInput] = {}  # input index -> its record, while its item is out
        self._chunks = self.prep.chunks()
        self._fed = False

    def next_chunk(self) -> Chunk | None:
        """The next chunk to start, or None while enough is pending (or when every input is out)."""
        if self._fed or len(self.pending) >= self.ahead:
            return None
        chunk = next(self._chunks, None)
        if chunk is None:
            self._fed = True
        return chunk

    def to_start(self, chunk: Chunk) -> list[PreparedInput]:
        """Record the chunk's inputs as pending; those a handler listens to need their run started (in order)."""
        pending = self.pending
        for rec in chunk.inputs:
            pending[rec.index] = rec
        return [rec for rec in chunk.inputs if rec.run_id is None]

    def finished(self, index: int, answer: Any, exc: BaseException | None) -> tuple[Any, Callable[[], Any] | None]:
        """``(output, end)`` for a result (:meth:`Prepared.outcome`); the input is no longer pending. ``end`` ends
        the input's run (``on_llm_end``, or ``on_llm_error`` for a failure): the driver calls it (the async one
        awaits it); None when no run was started (nobody listens)."""
        rec = self.pending.pop(index)
        out, event = self.prep.outcome(rec, answer, exc)
        m = rec.manager
        if m is None:
            return out, None
        if isinstance(out, BaseException):
            return out, partial(m.on_llm_error, out, response=event)
        return out, partial(m.on_llm_end, event)

    def open_runs(self) -> list[Any]:
        """The run managers of the inputs still pending (each to be ended with the error that stopped the batch)."""
        return [rec.manager for rec in self.pending.values() if rec.manager is not None]

    @property
    def done(self) -> bool:
        return self._fed and not self.pending


def _raise_first(outputs: list[Any]) -> None:
    for out in outputs:
        if isinstance(out, BaseException):
            raise out


def _driver(
    model: BaseChatModel, lane: Lane, inputs: Sequence[Any], config: Any, return_exceptions: bool,
    kwargs: dict[str, Any], manager_cls: Any,
) -> _Driver | None:
    """The fast batch for these inputs, or None where LangChain's own path must serve them: an LLM cache, a rate
    limiter, ``output_version="v1"``, streaming asked for, or a handler that wants the tokens as they come (what
    ``astream_events`` attaches: LangChain then streams each input, and so does ChatOpenAI)."""
    if not _fast_path_ok(model, lane, kwargs):
        return None
    d = _Driver(model, lane, inputs, config, kwargs, return_exceptions, manager_cls)
    streams = model._should_stream(async_api=manager_cls is AsyncCallbackManager,
                                   run_manager=d.prep.first_manager, **kwargs)
    return None if streams else d


def iter_fast(d: _Driver, raise_early: bool) -> Iterator[tuple[int, Any]]:
    """``(index, output)`` for each input as it finishes (output may be an exception)."""
    prep = d.prep
    with _bridge.BatchRun(d.rt, d.disp, prep.limit, d.flow) as run:
        try:
            while not d.done:
                while (chunk := d.next_chunk()) is not None:
                    yield from chunk.errors
                    for rec in d.to_start(chunk):
                        args, kw = prep.start_args(rec)
                        (rec.manager,) = prep.manager(rec).on_chat_model_start(*args, **kw)
                    run.add(chunk.items)
                if not d.pending:
                    continue
                for index, answer, exc in run.take():
                    out, end = d.finished(index, answer, exc)
                    if end is not None:
                        end()
                    if raise_early and isinstance(out, BaseException):
                        raise out
                    yield index, out
        except BaseException as e:  # a bad input, a failing callback, KeyboardInterrupt, the caller left
            run.close()  # cancel what was sent first: error callbacks may be slow
            for m in d.open_runs():
                with contextlib.suppress(Exception):
                    m.on_llm_error(e)
            raise


async def aiter_fast(d: _Driver, raise_early: bool) -> AsyncGenerator[tuple[int, Any], None]:
    """The async twin of :func:`iter_fast`: the same steps, with the callbacks awaited."""
    prep = d.prep
    with _bridge.ABatchRun(d.rt, d.disp, prep.limit, d.flow) as run:
        try:
            while not d.done:
                while (chunk := d.next_chunk()) is not None:
                    for err in chunk.errors:
                        yield err
                    for rec in d.to_start(chunk):
                        args, kw = prep.start_args(rec)
                        (rec.manager,) = await prep.manager(rec).on_chat_model_start(*args, **kw)
                    run.add(chunk.items)
                if not d.pending:
                    continue
                for index, answer, exc in await run.take():
                    out, end = d.finished(index, answer, exc)
                    if end is not None:
                        await end()
                    if raise_early and isinstance(out, BaseException):
                        raise out
                    yield index, out
        except BaseException as e:  # incl. a cancelled task: stop, then end every run started, concurrently
            run.close()
            await asyncio.gather(*(m.on_llm_error(e) for m in d.open_runs()), return_exceptions=True)
            raise


def batch_fast(
    model: BaseChatModel, lane: Lane, inputs: list[Any], config: Any, return_exceptions: bool, kwargs: dict[str, Any]
) -> list[Any]:
    if not inputs:
        return []
    d = _driver(model, lane, inputs, config, return_exceptions, kwargs, CallbackManager)
    if d is None:
        return BaseChatModel.batch(
            model, inputs, _with_default_concurrency(lane, config), return_exceptions=return_exceptions, **kwargs
        )
    outputs: list[Any] = [None] * len(inputs)
    for i, out in iter_fast(d, raise_early=False):
        outputs[i] = out
    if not return_exceptions:
        _raise_first(outputs)
    return outputs


async def abatch_fast(
    model: BaseChatModel, lane: Lane, inputs: list[Any], config: Any, return_exceptions: bool, kwargs: dict[str, Any]
) -> list[Any]:
    if not inputs:
        return []
    d = _driver(model, lane, inputs, config, return_exceptions, kwargs, AsyncCallbackManager)
    if d is None:
        return await BaseChatModel.abatch(
            model, inputs, _with_default_concurrency(lane, config), return_exceptions=return_exceptions, **kwargs
        )
    outputs: list[Any] = [None] * len(inputs)
    gen = aiter_fast(d, raise_early=False)
    try:
        async for i, out in gen:
            outputs[i] = out
    finally:
        await gen.aclose()
    if not return_exceptions:
        _raise_first(outputs)
    return outputs


def batch_as_completed_fast(
    model: BaseChatModel, lane: Lane, inputs: Sequence[Any], config: Any, return_exceptions: bool,
    kwargs: dict[str, Any],
) -> Iterator[tuple[int, Any]]:
    if not inputs:
        return
    d = _driver(model, lane, inputs, config, return_exceptions, kwargs, CallbackManager)
    if d is None:
        yield from BaseChatModel.batch_as_completed(  # type: ignore[call-overload]
            model, inputs, _with_default_concurrency(lane, config), return_exceptions=return_exceptions, **kwargs
        )
        return
    yield from iter_fast(d, raise_early=not return_exceptions)


async def abatch_as_completed_fast(
    model: BaseChatModel, lane: Lane, inputs: Sequence[Any], config: Any, return_exceptions: bool,
    kwargs: dict[str, Any],
) -> AsyncIterator[tuple[int, Any]]:
    if not inputs:
        return
    d = _driver(model, lane, inputs, config, return_exceptions, kwargs, AsyncCallbackManager)
    if d is None:
        async for pair in BaseChatModel.abatch_as_completed(  # type: ignore[call-overload]
            model, inputs, _with_default_concurrency(lane, config), return_exceptions=return_exceptions, **kwargs
        ):
            yield pair
        return
    gen = aiter_fast(d, raise_early=not return_exceptions)
    try:
        async for pair in gen:
            yield pair
    finally:
        await gen.aclose()
