"""An answer as the server sent it, and the LangChain objects made from it by whoever reads it.

The dispatcher's loop only parses a response and checks its shape; each input's :class:`Answer` is turned into
LangChain objects by the caller that reads it. That moves the conversion off the loop thread, and lets the fast
batch path build the one object its caller keeps (the final ``AIMessage``: id and ``response_metadata`` as
LangChain's ``_generate_with_cache`` sets them) without the ``ChatGeneration``/``ChatResult`` in between.

The final message is built without revalidating fields this module has just made (``fast_ai_message``): pydantic
validation of ``AIMessage`` cost ~6 µs of the client's ~75 µs per request, and ``model_construct`` is no cheaper
(it inspects each default factory's signature on every call, ~300 µs). The object is the one validation would
give: the same ``__dict__`` in field order, the same set of fields given, the same extra and private state. That is
checked once at import against a validated message, and the fast path switches itself off if a langchain-core
release changes the fields (``FAST_MESSAGES``); ``tests/unit/test_answers.py`` compares both ways on every answer
shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX  # message ids are f"{LC_ID_PREFIX}-{run_id}-{index}"

from langchain_qwen_fast._convert import (
    ai_message_fields,
    chat_response_to_result,
    check_shape,
    completion_choice_to_result,
    generation_info,
    mapping,
    response_meta,
    split_completions,
    token_usage_of,
    usage_to_metadata,
)


class Answer(NamedTuple):
    """One input's answer: the parsed response (shared by every prompt of a list), this input's choice and usage.
    A tuple: one is made per input on the loop thread, and a tuple is the cheapest object to make."""

    resp: Mapping[str, Any]
    choice: Mapping[str, Any]
    usage: Mapping[str, Any] | None  # chat: the response's; list: this prompt's own share (None: unknown)
    model: str  # the model name to report when the server names none
    chat: bool  # a chat answer (``message``) or one prompt of a completions list (``text``)
    meta: dict[str, Any]  # the response-level metadata every prompt of the response shares (``response_meta``)


def chat_answer(resp: Any, model: str) -> Answer:
    """A ``/v1/chat/completions`` body; ``InvalidResponseError`` when it is not OpenAI-shaped."""
    choices = check_shape(resp)
    usage = resp.get("usage")
    return Answer(resp, choices[0], mapping(usage, "usage") if usage else None, model, True,
                  response_meta(resp, model))


def list_answers(resp: Any, n: int, model: str) -> list[Answer]:
    """A ``/v1/completions`` list body, one answer per prompt in order; raises when any prompt has none."""
    parts = split_completions(resp, n)
    meta = response_meta(resp, model)
    return [Answer(resp, choice, usage, model, False, meta) for choice, usage in parts]


def to_result(a: Answer) -> ChatResult:
    """The ``ChatResult`` ``_generate`` returns (every choice of a chat answer with ``n > 1``)."""
    if a.chat:
        return chat_response_to_result(a.resp["choices"], a.usage, a.meta)
    return completion_choice_to_result(a.choice, a.usage, a.meta)


def finish(result: ChatResult, run_id: Any) -> AIMessage:
    """The message ``.batch`` returns for ``result``, finished as LangChain's ``_generate_with_cache`` finishes
    it: the id from the run, ``response_metadata`` from the generation info and (one generation) the response."""
    gen = result.generations[0]
    assert isinstance(gen.message, AIMessage)
    if gen.message.id is None:
        gen.message.id = f"{LC_ID_PREFIX}-{run_id}-0"
    gen.message.response_metadata = {**(gen.generation_info or {}), **gen.message.response_metadata}
    if len(result.generations) == 1 and result.llm_output is not None:
        gen.message.response_metadata = {**result.llm_output, **gen.message.response_metadata}
    return gen.message


def to_message(a: Answer, run_id: Any) -> AIMessage:
    """``finish(to_result(a), run_id)``, built directly where the answer allows it (one choice, no tool calls)."""
    # Tool calls (valid or not: the message has either kind exactly when the answer has any) and several choices
    # take the ChatResult path; decided before the fields are made, which that path makes again.
    if not FAST_MESSAGES or (a.chat and (a.choice["message"].get("tool_calls") or len(a.resp["choices"]) > 1)):
        return finish(to_result(a), run_id)
    fields = ai_message_fields(a.choice["message"] if a.chat else {"content": a.choice.get("text") or ""})
    usage = usage_to_metadata(a.usage) if a.usage else None
    # {**llm_output_of(a.meta, ...), **generation_info(...)} without the intermediate dict
    metadata = {"token_usage": token_usage_of(a.usage), **a.meta, **generation_info(a.choice)}
    return fast_ai_message(fields["content"], fields.get("additional_kwargs"), metadata,
                           f"{LC_ID_PREFIX}-{run_id}-0", usage)


# -- building a message without revalidating it ------------------------------------------------------------
_FIELDS = ("content", "additional_kwargs", "response_metadata", "type", "name", "id", "tool_calls",
           "invalid_tool_calls", "usage_metadata")


def fast_ai_message(content: str, additional: dict[str, Any] | None, metadata: dict[str, Any], id_: str,
                    usage: Any) -> AIMessage:
    """The ``AIMessage`` that ``AIMessage(content=..., [additional_kwargs=...]), then setting usage_metadata
    (when there is usage), id and response_metadata`` gives, without running pydantic on fields made here."""
    given = {"content", "id", "response_metadata"}
    if additional:
        given.add("additional_kwargs")
    if usage is not None:
        given.add("usage_metadata")
    msg = AIMessage.__new__(AIMessage)
    object.__setattr__(msg, "__dict__", {
        "content": content, "additional_kwargs": additional or {}, "response_metadata": metadata, "type": "ai",
        "name": None, "id": id_, "tool_calls": [], "invalid_tool_calls": [], "usage_metadata": usage,
    })
    object.__setattr__(msg, "__pydantic_fields_set__", given)
    object.__setattr__(msg, "__pydantic_extra__", {})
    object.__setattr__(msg, "__pydantic_private__", None)
    return msg


def _validated_twin(content: str, additional: dict[str, Any] | None, metadata: dict[str, Any], id_: str,
                    usage: Any) -> AIMessage:
    msg = AIMessage(content=content, **({"additional_kwargs": additional} if additional else {}))
    if usage is not None:
        msg.usage_metadata = usage
    msg.id = id_
    msg.response_metadata = metadata
    return msg


def _fast_messages_hold() -> bool:
    """Whether :func:`fast_ai_message` still makes what validation makes, on this langchain-core."""
    if tuple(AIMessage.model_fields) != _FIELDS:
        return False
    sample = ("x", {"reasoning_content": "r"}, {"model_name": "m"}, "lc_run--1-0",
              {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3})
    fast, slow = fast_ai_message(*sample), _validated_twin(*sample)  # type: ignore[arg-type]
    return (fast.__dict__ == slow.__dict__ and list(fast.__dict__) == list(slow.__dict__)
            and fast.model_fields_set == slow.model_fields_set
            and fast.__pydantic_extra__ == slow.__pydantic_extra__
            and fast.__pydantic_private__ == slow.__pydantic_private__)


FAST_MESSAGES = _fast_messages_hold()
