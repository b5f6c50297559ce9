"""``batch``/``abatch`` without a thread pool: one submission, callbacks as items finish.

LangChain's default ``batch`` runs ``invoke`` in min(32, cpu+4) threads, which caps what is in
flight far below what a vLLM server takes (49 req/s where the engine does 152). Here the inputs
are converted once, callback runs are started for the whole batch in one call (as
``BaseChatModel.generate`` does), and the items go to the dispatcher as one submission.

The few configurations whose semantics live inside LangChain's per-call path (an LLM cache, a
rate limiter, ``output_version="v1"``, streaming requested, or a core without the helpers used
here) take LangChain's generic path instead, with ``max_concurrency`` defaulting to the model's
admission limit rather than the thread-pool size.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import LLMResult
from langchain_core.runnables.config import get_config_list
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
    """Converted inputs, their items and callback run managers; errors found before sending."""

    def __init__(
        self,
        model: BatchedChatQwen,
        inputs: list[Any],
        configs: list[Any],
        kwargs: dict[str, Any],
        return_exceptions: bool,
    ) -> None:
        kwargs = dict(kwargs)
        self.stop = kwargs.pop("stop", None)
        ls_format = kwargs.pop("ls_structured_output_format", None) or kwargs.pop("structured_output_format", None)
        self.params = model._get_invocation_params(stop=self.stop, **kwargs)
        self.options = {"stop": self.stop, **_format_ls_structured_output(ls_format)}
        self.ls_params = model._get_ls_params_with_defaults(stop=self.stop, **kwargs)
        spec = model._spec(self.stop, kwargs)
        self.outputs: list[Any] = [None] * len(inputs)
        self.messages: list[Any] = []
        self.index: list[int] = []  # position in inputs of each valid item
        self.items = []
        for i, inp in enumerate(inputs):
            try:
                msgs = _normalize_messages(model._convert_input(inp).to_messages())
                item = make_item(spec, msgs)
            except Exception as e:
                if not return_exceptions:
                    raise
                self.outputs[i] = e
                continue
            self.messages.append(msgs)
            self.index.append(i)
            self.items.append(item)
        self.configs = [configs[i] for i in self.index]
        self.shared_config = len(configs) > 0 and all(c is configs[0] for c in configs)

    def groups(self) -> list[tuple[Any, list[Any]]]:
        """(config, message lists) per callback-manager start: one for a shared config, else one per input."""
        if self.shared_config:
            return [(self.configs[0], self.messages)]
        return [(c, [m]) for c, m in zip(self.configs, self.messages, strict=True)]

    def manager_args(self, model: BatchedChatQwen, config: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
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

    def start_kwargs(self, config: dict[str, Any], n: int) -> dict[str, Any]:
        return {
            "invocation_params": self.params,
            "options": self.options,
            "name": config.get("run_name"),
            "run_id": config.get("run_id") if n == 1 else None,
            "batch_size": n,
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


def batch_fast(
    model: BatchedChatQwen, inputs: list[Any], config: Any, return_exceptions: bool, kwargs: dict[str, Any]
) -> list[Any]:
    if not inputs:
        return []
    if not _fast_path_ok(model, kwargs):
        return BaseChatModel.batch(
            model, inputs, _with_default_concurrency(model, config), return_exceptions=return_exceptions, **kwargs
        )
    configs = get_config_list(config, len(inputs))
    prep = _Prepared(model, inputs, configs, kwargs, return_exceptions)
    if prep.items:
        managers = []
        for cfg, msgs in prep.groups():
            args, kw = prep.manager_args(model, cfg)
            cm = CallbackManager.configure(*args, **kw)
            managers += cm.on_chat_model_start(
                model._serialized, [_format_for_tracing(m) for m in msgs], **prep.start_kwargs(cfg, len(msgs))
            )
        rt, disp = model._dispatcher()
        limit = configs[0].get("max_concurrency")
        for j, result, exc in _bridge.run_items(rt, disp, prep.items, limit):
            rm, i = managers[j], prep.index[j]
            if exc is not None:
                rm.on_llm_error(exc, response=LLMResult(generations=[_generate_response_from_error(exc)]))
                prep.outputs[i] = exc
            else:
                rm.on_llm_end(_as_llm_result(result))
                prep.outputs[i] = prep.finish(result, rm.run_id)
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
    configs = get_config_list(config, len(inputs))
    prep = _Prepared(model, inputs, configs, kwargs, return_exceptions)
    if prep.items:
        managers = []
        for cfg, msgs in prep.groups():
            args, kw = prep.manager_args(model, cfg)
            acm = AsyncCallbackManager.configure(*args, **kw)
            managers += await acm.on_chat_model_start(
                model._serialized, [_format_for_tracing(m) for m in msgs], **prep.start_kwargs(cfg, len(msgs))
            )
        rt, disp = model._dispatcher()
        limit = configs[0].get("max_concurrency")
        done = [False] * len(prep.items)
        try:
            async for j, result, exc in _bridge.arun_items(rt, disp, prep.items, limit):
                rm, i = managers[j], prep.index[j]
                done[j] = True
                if exc is not None:
                    await rm.on_llm_error(exc, response=LLMResult(generations=[_generate_response_from_error(exc)]))
                    prep.outputs[i] = exc
                else:
                    await rm.on_llm_end(_as_llm_result(result))
                    prep.outputs[i] = prep.finish(result, rm.run_id)
        except asyncio.CancelledError as e:
            for j, finished in enumerate(done):
                if not finished:
                    await managers[j].on_llm_error(e)
            raise
    if not return_exceptions:
        _raise_first(prep.outputs)
    return prep.outputs
