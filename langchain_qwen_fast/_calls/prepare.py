"""A batch's inputs on their way in and out: converted chunk by chunk, callback runs started, outputs finished.

Kept apart from the drivers in ``batch.py`` so both (sync and async, collect-all and as-completed) share one
definition of what LangChain's per-input path would have done: one callback manager for a shared config
(configuring one per input cost 95 µs each), one run per input with ``batch_size=1`` as ``ChatOpenAI.batch``
reports it, message ids and ``response_metadata`` filled as ``_generate_with_cache`` fills them.

Each input is one :class:`PreparedInput`, numbered by its position in the caller's list; its dispatcher item
carries the same number as its tag, so a result finds its input with no other index.

**No handler attached: no callback machinery.** When configuring the callbacks gives no handler at all (none in
the config, none inherited from a parent run, no tracing switched on by the environment or a context, not
verbose), no run manager would call anything, so none is made: the run id is a fresh UUIDv7 (as LangChain's), a
string input becomes its request message directly, and the output message is built once, final
(``_answers.to_message``). Configuring found that out; each other input's config adds handlers only through its
own ``callbacks`` (the rest is the same for every input of the batch), which is checked per input. With any
handler, every event is sent exactly as LangChain sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langchain_core.runnables.config import ensure_config, get_config_list

from langchain_qwen_fast._answers import finish, to_message, to_result
from langchain_qwen_fast._calls.request import CallSpec, item_of_dicts, item_of_text
from langchain_qwen_fast._convert import messages_to_dicts
from langchain_qwen_fast._dispatch.dispatcher import Dispatcher
from langchain_qwen_fast._dispatch.item import Item
from langchain_qwen_fast._loop.runtime import Runtime

try:  # private helpers of langchain-core; without them the generic path is used
    from langchain_core.language_models.chat_models import (
        _filter_invocation_params_for_tracing,
        _format_for_tracing,
        _format_ls_structured_output,
        _generate_response_from_error,
        _normalize_messages,
    )

    HELPERS = True
except ImportError:  # pragma: no cover - depends on the installed core
    HELPERS = False

try:  # the Rust UUIDv7 langsmith installs: 0.3 µs against langchain-core's 2.4 µs (same format)
    from uuid_utils import uuid7 as _uuid7
except ImportError:  # pragma: no cover - depends on the install
    from langchain_core.utils.uuid import uuid7 as _uuid7  # type: ignore[assignment]


#: A run id for an input no handler listens to (only its message id shows it), called once per such input.
new_run_id: Callable[[], Any] = _uuid7

_FIRST_CHUNK, _MAX_CHUNK = 32, 512


@dataclass(frozen=True)
class Lane:
    """What the batch drivers need from the model, built by ``chat_models.py`` (layers point down)."""

    dispatcher: Callable[[], tuple[Runtime, Dispatcher]]
    spec: Callable[[Any, dict[str, Any]], CallSpec]
    limit: int  # the model's max_concurrency: the generic path's thread pool size
    streaming: bool  # streaming=True set explicitly: LangChain's per-call path streams


@dataclass(slots=True)
class PreparedInput:
    """One input of a batch: its position (its item's tag), its config, and its run: the run manager when a handler
    is attached, else only the run id."""

    index: int
    config: Any  # a RunnableConfig
    messages: list[BaseMessage] | None = None  # for on_chat_model_start; dropped once the run started
    manager: Any = None  # the run manager (handlers attached)
    run_id: Any = None  # the run id (no handler attached)


@dataclass(slots=True)
class Chunk:
    """The inputs prepared together: their records and items (same order), and the inputs that failed to convert."""

    inputs: list[PreparedInput] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    errors: list[tuple[int, BaseException]] = field(default_factory=list)


class Prepared:
    """A batch's inputs, converted chunk by chunk, with their runs, and each finished output."""

    def __init__(
        self, model: BaseChatModel, lane: Lane, inputs: Sequence[Any], config: Any, kwargs: dict[str, Any],
        return_exceptions: bool, manager_cls: Any,
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
        self.manager_cls = manager_cls
        self.limit = self.input_configs[0].get("max_concurrency") if inputs else None
        stop = kwargs.pop("stop", None)
        ls_format = kwargs.pop("ls_structured_output_format", None) or kwargs.pop("structured_output_format", None)
        self.params = model._get_invocation_params(stop=stop, **kwargs)
        self.options = {"stop": stop, **_format_ls_structured_output(ls_format)}
        self.ls_params = model._get_ls_params_with_defaults(stop=stop, **kwargs)
        self.spec = lane.spec(stop, kwargs)
        # Whether any handler listens: configuring the first input's callbacks tells for what every input shares
        # (and that manager serves the first input, or all of them for a shared config).
        self.first_manager: Any = self._configure(self.input_configs[0]) if inputs else None
        self.quiet = self.first_manager is not None and not self.first_manager.handlers

    # -- callbacks ------------------------------------------------------------------------------
    def _configure(self, config: Any) -> Any:
        model = self.model
        return self.manager_cls.configure(
            config.get("callbacks"),
            model.callbacks,
            model.verbose,
            config.get("tags"),
            model.tags,
            {**(config.get("metadata") or {}), **self.ls_params},
            model.metadata,
            langsmith_inheritable_metadata=_filter_invocation_params_for_tracing(self.params),
        )

    def manager(self, rec: PreparedInput) -> Any:
        """The callback manager for ``rec``'s config: configured once for a shared config, else per input."""
        if self.shared_config or rec.index == 0:
            return self.first_manager
        return self._configure(rec.config)

    def _quiet_for(self, config: Any) -> bool:
        """No handler for this input: the batch's shared part has none, and its own callbacks add none."""
        if not self.quiet:
            return False
        if self.shared_config:
            return True
        cb = config.get("callbacks")
        return not cb or (not isinstance(cb, list) and not cb.handlers and not cb.inheritable_handlers)

    def start_args(self, rec: PreparedInput) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # One run per input, started one at a time so that a failure part-way leaves no run
        # started without its manager; batch_size 1 as ChatOpenAI.batch reports it (invoke per input).
        config = rec.config
        messages, rec.messages = rec.messages, None
        return (self.model._serialized, [_format_for_tracing(messages or [])]), {
            "invocation_params": self.params,
            "options": self.options,
            "name": config.get("run_name"),
            "run_id": config.get("run_id"),
            "batch_size": 1,
        }

    # -- inputs ----------------------------------------------------------------------------------
    def chunks(self) -> Iterator[Chunk]:
        """The inputs chunk by chunk, small chunks first.

        The caller starts the callback runs of a chunk (where a handler listens) and hands its items to
        the dispatcher before it converts the next, so the first requests are on the wire after ~32 inputs
        rather than after all of them. An input that cannot be converted is an error of its own with
        ``return_exceptions``; without it, it raises here, when the chunks before it may already be on their
        way: the caller cancels them.
        """
        n, start, size = len(self.inputs), 0, _FIRST_CHUNK
        while start < n:
            end = min(n, start + size)
            chunk = Chunk()
            for i in range(start, end):
                try:
                    rec, item = self._prepare(i)
                except Exception as e:
                    if not self.return_exceptions:
                        raise
                    chunk.errors.append((i, e))
                    continue
                chunk.inputs.append(rec)
                chunk.items.append(item)
            yield chunk
            start, size = end, min(2 * size, _MAX_CHUNK)

    def _prepare(self, i: int) -> tuple[PreparedInput, Item]:
        config = self.input_configs[i]
        inp = self.inputs[i]
        if self._quiet_for(config):
            rec = PreparedInput(i, config, run_id=config.get("run_id") or new_run_id())
            if type(inp) is str:  # the common case becomes its request directly: no HumanMessage
                item = item_of_text(self.spec, inp)
            else:
                item = item_of_dicts(self.spec, messages_to_dicts(self._messages(inp)))
        else:
            messages = self._messages(inp)
            rec = PreparedInput(i, config, messages=messages)
            item = item_of_dicts(self.spec, messages_to_dicts(messages))
        item.tag = i
        return rec, item

    def _messages(self, inp: Any) -> list[BaseMessage]:
        if isinstance(inp, list) and all(isinstance(m, BaseMessage) for m in inp):
            messages = inp  # what _convert_input(...).to_messages() returns for a list of messages
        else:
            messages = self.model._convert_input(inp).to_messages()
        if all(type(m.content) is str for m in messages):
            # LangChain's normalising changes only list contents (content blocks); with none it returns the same
            # messages, after two imports inside the function that cost 4 us per input
            return list(messages)
        return _normalize_messages(messages)

    # -- outputs ---------------------------------------------------------------------------------
    def outcome(self, rec: PreparedInput, answer: Any, exc: BaseException | None) -> tuple[Any, LLMResult | None]:
        """``(output, event)`` for one finished input: the output is its message or its exception; the event is
        what ``on_llm_end``/``on_llm_error`` receives (None when no handler listens). Shared by every driver."""
        if exc is None:
            try:
                if rec.manager is None:
                    return to_message(answer, rec.run_id), None
                result = to_result(answer)
                return finish(result, rec.manager.run_id), LLMResult(generations=[list(result.generations)],
                                                                      llm_output=result.llm_output)
            except Exception as e:  # an answer that cannot be converted fails its own input only
                exc = e
        return exc, (None if rec.manager is None else error_response(exc))


def error_response(exc: BaseException) -> LLMResult:
    return LLMResult(generations=[_generate_response_from_error(exc)])
