"""A batch's inputs on their way in: converted chunk by chunk, callback runs started, results finished.

Kept apart from the drivers in ``_batch.py`` so both (sync and async, collect-all and
as-completed) share one definition of what LangChain's per-input path would have done: one
callback manager for a shared config (configuring one per input cost 95 µs each), one run per
input with ``batch_size=1`` as ``ChatOpenAI.batch`` reports it, message ids and
``response_metadata`` filled as ``_generate_with_cache`` fills them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import LLMResult
from langchain_core.runnables.config import ensure_config, get_config_list
from langchain_core.utils.utils import LC_ID_PREFIX

from langchain_qwen_fast._calls.request import CallSpec, make_item
from langchain_qwen_fast._dispatch.dispatcher import Dispatcher
from langchain_qwen_fast._loop.runtime import Runtime

try:  # private helpers of langchain-core; without them the generic path is used
    from langchain_core.language_models.chat_models import (
        _filter_invocation_params_for_tracing,
        _format_for_tracing,
        _format_ls_structured_output,
        _gen_info_and_msg_metadata,
        _generate_response_from_error,
        _normalize_messages,
    )

    HELPERS = True
except ImportError:  # pragma: no cover - depends on the installed core
    HELPERS = False

_FIRST_CHUNK, _MAX_CHUNK = 32, 512


@dataclass(frozen=True)
class Lane:
    """What the batch drivers need from the model, built by ``chat_models.py`` (layers point down)."""

    dispatcher: Callable[[], tuple[Runtime, Dispatcher]]
    spec: Callable[[Any, dict[str, Any]], CallSpec]
    limit: int  # the model's max_concurrency: the generic path's thread pool size
    streaming: bool  # streaming=True set explicitly: LangChain's per-call path streams


class Prepared:
    """A batch's inputs, converted chunk by chunk, with the callback runs and items of each chunk."""

    def __init__(
        self, model: BaseChatModel, lane: Lane, inputs: Sequence[Any], config: Any, kwargs: dict[str, Any],
        return_exceptions: bool,
    ) -> None:
        # One dict (or none) for the whole batch: one callback manager serves every input (it is
        # what each invoke would configure anyway). A list of configs (what an LCEL chain passes,
        # each with its own child callbacks), or a run_id, which belongs to the first input only,
        # needs one each.
        self.shared_config = not isinstance(config, Sequence) and not (config or {}).get("run_id")
        n = len(inputs)
        self.input_configs = [ensure_config(config)] * n if self.shared_config else get_config_list(config, n)
        kwargs = dict(kwargs)
        self.model, self.inputs, self.return_exceptions = model, inputs, return_exceptions
        self.limit = self.input_configs[0].get("max_concurrency") if inputs else None
        stop = kwargs.pop("stop", None)
        ls_format = kwargs.pop("ls_structured_output_format", None) or kwargs.pop("structured_output_format", None)
        self.params = model._get_invocation_params(stop=stop, **kwargs)
        self.options = {"stop": stop, **_format_ls_structured_output(ls_format)}
        self.ls_params = model._get_ls_params_with_defaults(stop=stop, **kwargs)
        self.spec = lane.spec(stop, kwargs)
        self.index: list[int] = []  # position in inputs of each item sent
        self._manager: Any = None

    def chunks(self) -> Iterator[tuple[list[Any], list[Any], list[Any], list[tuple[int, BaseException]]]]:
        """(configs, message lists, items, conversion errors) per chunk of inputs, small chunks first.

        The caller starts the callback runs of a chunk and hands its items to the dispatcher before
        it converts the next, so the first requests are on the wire after ~32 inputs rather than
        after all of them. An input that cannot be converted is an error of its own with
        ``return_exceptions``; without it, it raises here, when the chunks before it may already be
        on their way: the caller cancels them.
        """
        n, start, size = len(self.inputs), 0, _FIRST_CHUNK
        while start < n:
            end = min(n, start + size)
            cfgs: list[Any] = []
            msgs_out: list[Any] = []
            items: list[Any] = []
            errors: list[tuple[int, BaseException]] = []
            for i in range(start, end):
                try:
                    msgs = _normalize_messages(self.model._convert_input(self.inputs[i]).to_messages())
                    item = make_item(self.spec, msgs)
                except Exception as e:
                    if not self.return_exceptions:
                        raise
                    errors.append((i, e))
                    continue
                cfgs.append(self.input_configs[i])
                msgs_out.append(msgs)
                items.append(item)
                self.index.append(i)
            yield cfgs, msgs_out, items, errors
            start, size = end, min(2 * size, _MAX_CHUNK)

    def manager(self, config: dict[str, Any], cls: Any) -> Any:
        """The callback manager for ``config``: configured once for a shared config, else per input."""
        if self.shared_config and self._manager is not None:
            return self._manager
        model = self.model
        cm = cls.configure(
            config.get("callbacks"),
            model.callbacks,
            model.verbose,
            config.get("tags"),
            model.tags,
            {**(config.get("metadata") or {}), **self.ls_params},
            model.metadata,
            langsmith_inheritable_metadata=_filter_invocation_params_for_tracing(self.params),
        )
        if self.shared_config:
            self._manager = cm
        return cm

    def start_args(self, config: dict[str, Any], messages: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # One run per input, started one at a time so that a failure part-way leaves no run
        # started without its manager; batch_size 1 as ChatOpenAI.batch reports it (invoke per input).
        return (self.model._serialized, [_format_for_tracing(messages)]), {
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


def as_llm_result(result: Any) -> LLMResult:
    """What on_llm_end receives for one input, as BaseChatModel.generate builds it."""
    return LLMResult(generations=[list(result.generations)], llm_output=result.llm_output)


def error_response(exc: BaseException) -> LLMResult:
    return LLMResult(generations=[_generate_response_from_error(exc)])
