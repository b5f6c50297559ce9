"""``batch``/``abatch`` without a thread pool: one submission, callbacks as items finish.

LangChain's default ``batch`` runs ``invoke`` in min(32, cpu+4) threads, which caps what is in
flight far below what a vLLM server takes (49 req/s where the engine does 152). Here the inputs
are converted and their callback runs started chunk by chunk (32 inputs, then 64, ... up to 512;
one callback manager for a shared config, one run per input as ``ChatOpenAI.batch`` reports them),
and each chunk goes to the dispatcher as soon as it is ready: the first requests are on the wire while the rest
are still being prepared. An input that cannot be converted is a per-item ``ValueError`` with
``return_exceptions``; without it, it raises, and the chunks already sent are cancelled.

The few configurations whose semantics live inside LangChain's per-call path (an LLM cache, a
rate limiter, ``output_version="v1"``, streaming requested, or a core without the helpers used
here) take LangChain's generic path instead, with ``max_concurrency`` defaulting to the model's
admission limit rather than the thread-pool size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import LLMResult
from langchain_core.runnables.config import ensure_config, get_config_list
from langchain_core.utils.utils import LC_ID_PREFIX

from langchain_qwen_fast import _bridge
from langchain_qwen_fast._request import make_item

try:  # private helpers of langchain-core; without them the generic path is used
    from langchain_core.language_models.chat_models import (
        _filter_invocation_params_for_tracing,
        _format_for_tracing,
        _format_ls_structured_output,
        _gen_info_and_msg_metadata,
        _generate_response_from_error,
        _normalize_messages,
    )

    _HELPERS = True
except ImportError:  # pragma: no cover - depends on the installed core
    _HELPERS = False

if TYPE_CHECKING:
    from langchain_qwen_fast.chat_models import BatchedChatQwen

_FIRST_CHUNK, _MAX_CHUNK = 32, 512


def _fast_path_ok(model: BatchedChatQwen, kwargs: dict[str, Any]) -> bool:
    if not _HELPERS or model.rate_limiter is not None or model.output_version == "v1":
        return False
    if model.cache is not None and model.cache is not False:
        return False
    if model.cache is None and get_llm_cache() is not None:
        return False
    return not (kwargs.get("stream") or ("streaming" in model.model_fields_set and model.streaming))


def _with_default_concurrency(model: BatchedChatQwen, config: Any) -> Any:
    if isinstance(config, list):
        return [{**c, "max_concurrency": c.get("max_concurrency") or model.max_concurrency} for c in config]
    config = dict(config or {})
    config.setdefault("max_concurrency", model.max_concurrency)
    return config


class _Prepared:
    """A batch's inputs, converted chunk by chunk, with the callback runs and items of each chunk."""

    def __init__(
        self,
        model: BatchedChatQwen,
        inputs: list[Any],
        config: Any,
        kwargs: dict[str, Any],
        return_exceptions: bool,
    ) -> None:
        # One dict (or none) for the whole batch: one callback manager serves every input (it is
        # what each invoke would configure anyway). A list of configs (what an LCEL chain passes,
        # each with its own child callbacks), or a run_id, which belongs to the first input only,
        # needs one each.
        self.shared_config = not isinstance(config, Sequence) and not (config or {}).get("run_id")
        self.input_configs = (
            [ensure_config(config)] * len(inputs) if self.shared_config else get_config_list(config, len(inputs))
        )
        kwargs = dict(kwargs)
        self.model, self.inputs, self.return_exceptions = model, inputs, return_exceptions
        self.limit = self.input_configs[0].get("max_concurrency") if inputs else None
        stop = kwargs.pop("stop", None)
        ls_format = kwargs.pop("ls_structured_output_format", None) or kwargs.pop("structured_output_format", None)
        self.params = model._get_invocation_params(stop=stop, **kwargs)
        self.options = {"stop": stop, **_format_ls_structured_output(ls_format)}
        self.ls_params = model._get_ls_params_with_defaults(stop=stop, **kwargs)
        self.spec = model._spec(stop, kwargs)
        self.outputs: list[Any] = [None] * len(inputs)
        self.index: list[int] = []  # position in inputs of each item sent
        self._manager: Any = None

    def _convert(self, start: int, end: int) -> tuple[list[Any], list[Any], list[int]]:
        msgs_out, items, idx = [], [], []
        for i in range(start, end):
            try:
                msgs = _normalize_messages(self.model._convert_input(self.inputs[i]).to_messages())
                item = make_item(self.spec, msgs)
            except Exception as e:
                if not self.return_exceptions:
                    raise
                self.outputs[i] = e
                continue
            msgs_out.append(msgs)
            items.append(item)
            idx.append(i)
        return msgs_out, items, idx

    def chunks(self) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
        """(configs, message lists, items) per chunk of inputs, converted chunk by chunk, small chunks first.

        The caller starts the callback runs of a chunk and hands its items to the dispatcher before
        it converts the next, so the first requests are on the wire after ~32 inputs rather than
        after all of them (converting an input and starting its run cost tens of microseconds).
        An input that cannot be converted raises here (without ``return_exceptions``), when the
        chunks before it may already be on their way: the caller cancels them.
        """
        n, start, size = len(self.inputs), 0, _FIRST_CHUNK
        while start < n:
            end = min(n, start + size)
            msgs, items, idx = self._convert(start, end)
            self.index += idx
            if items:
                yield [self.input_configs[i] for i in idx], msgs, items
            start, size = end, min(2 * size, _MAX_CHUNK)

    def manager(self, config: dict[str, Any], cls: Any) -> Any:
        """The callback manager for ``config``: configured once for a shared config, else per input."""
        if self.shared_config and self._manager is not None:
            return self._manager
        args, kw = self.manager_args(config)
        cm = cls.configure(*args, **kw)
        if self.shared_config:
            self._manager = cm
        return cm

    def manager_args(self, config: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        model = self.model
        args = (
            config.get("callbacks"),
            model.callbacks,
            model.verbose,
            config.get("tags"),
            model.tags,
            {**(config.get("metadata") or {}), **self.ls_params},
            model.metadata,
        )
        return args, {"langsmith_inheritable_metadata": _filter_invocation_params_for_tracing(self.params)}

    def start_kwargs(self, config: dict[str, Any]) -> dict[str, Any]:
        # One run per input, started one at a time so that a failure part-way leaves no run
        # started without its manager; batch_size 1 as ChatOpenAI.batch reports it (invoke per input).
        return {
            "invocation_params": self.params,
            "options": self.options,
            "name": config.get("run_name"),
            "run_id": config.get("run_id"),
            "batch_size": 1,
        }

    @staticmethod
    def finish(result: Any, run_id: Any) -> Any:
        gen = result.generations[0]
        if gen.message.id is None:
            gen.message.id = f"{LC_ID_PREFIX}-{run_id}-0"
        gen.message.response_metadata = _gen_info_and_msg_metadata(gen)
        if len(result.generations) == 1 and result.llm_output is not None:
            gen.message.response_metadata = {**result.llm_output, **gen.message.response_metadata}
        return gen.message


def _as_llm_result(result: Any) -> LLMResult:
    """What on_llm_end receives for one input, as BaseChatModel.generate builds it."""
    return LLMResult(generations=[list(result.generations)], llm_output=result.llm_output)


def _raise_first(outputs: list[Any]) -> None:
    for out in outputs:
        if isinstance(out, BaseException):
            raise out


def _error_response(exc: BaseException) -> LLMResult:
    return LLMResult(generations=[_generate_response_from_error(exc)])


def batch_fast(
    model: BatchedChatQwen, inputs: list[Any], config: Any, return_exceptions: bool, kwargs: dict[str, Any]
) -> list[Any]:
    if not inputs:
        return []
    if not _fast_path_ok(model, kwargs):
        return BaseChatModel.batch(
            model, inputs, _with_default_concurrency(model, config), return_exceptions=return_exceptions, **kwargs
        )
    prep = _Prepared(model, inputs, config, kwargs, return_exceptions)
    rt, disp = model._dispatcher()
    managers: list[Any] = []  # one run per item, in item order
    finished: set[int] = set()
    with _bridge.BatchRun(rt, disp, prep.limit) as run:
        try:
            for cfgs, msgs, items in prep.chunks():
                for cfg, m in zip(cfgs, msgs, strict=True):
                    cm = prep.manager(cfg, CallbackManager)
                    managers += cm.on_chat_model_start(
                        model._serialized, [_format_for_tracing(m)], **prep.start_kwargs(cfg)
                    )
                run.add(items)
            for j, result, exc in run.results():
                rm, i = managers[j], prep.index[j]
                finished.add(j)
                if exc is not None:
                    rm.on_llm_error(exc, response=_error_response(exc))
                    prep.outputs[i] = exc
                else:
                    rm.on_llm_end(_as_llm_result(result))
                    prep.outputs[i] = prep.finish(result, rm.run_id)
        except BaseException as e:  # a bad input, a failing callback, KeyboardInterrupt: stop, end every run
            run.close()  # cancel what was sent first: error callbacks may be slow
            for j, rm in enumerate(managers):
                if j not in finished:
                    with contextlib.suppress(Exception):
                        rm.on_llm_error(e)
            raise
    if not return_exceptions:
        _raise_first(prep.outputs)
    return prep.outputs


async def abatch_fast(
    model: BatchedChatQwen, inputs: list[Any], config: Any, return_exceptions: bool, kwargs: dict[str, Any]
) -> list[Any]:
    if not inputs:
        return []
    if not _fast_path_ok(model, kwargs):
        return await BaseChatModel.abatch(
            model, inputs, _with_default_concurrency(model, config), return_exceptions=return_exceptions, **kwargs
        )
    prep = _Prepared(model, inputs, config, kwargs, return_exceptions)
    rt, disp = model._dispatcher()
    managers: list[Any] = []
    finished: set[int] = set()
    with _bridge.ABatchRun(rt, disp, prep.limit) as run:
        try:
            for cfgs, msgs, items in prep.chunks():
                for cfg, m in zip(cfgs, msgs, strict=True):
                    acm = prep.manager(cfg, AsyncCallbackManager)
                    managers += await acm.on_chat_model_start(
                        model._serialized, [_format_for_tracing(m)], **prep.start_kwargs(cfg)
                    )
                run.add(items)
            async for j, result, exc in run.results():
                rm, i = managers[j], prep.index[j]
                finished.add(j)
                if exc is not None:
                    await rm.on_llm_error(exc, response=_error_response(exc))
                    prep.outputs[i] = exc
                else:
                    await rm.on_llm_end(_as_llm_result(result))
                    prep.outputs[i] = prep.finish(result, rm.run_id)
        except BaseException as e:  # incl. a cancelled task: stop, then end every run started, concurrently
            run.close()
            await asyncio.gather(
                *(rm.on_llm_error(e) for j, rm in enumerate(managers) if j not in finished), return_exceptions=True
            )
            raise
    if not return_exceptions:
        _raise_first(prep.outputs)
    return prep.outputs
