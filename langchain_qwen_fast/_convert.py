"""Pure conversions: LangChain messages -> OpenAI payload dicts; server JSON -> LangChain results.

No I/O and no state. Everything that can be wrong with a caller's input is found here, before
anything is sent, and raised as ``ValueError`` naming the message and the problem.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from langchain_qwen_fast._errors import malformed_response
from langchain_qwen_fast._qwen import split_reasoning

MODEL_PROVIDER = "qwen"
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "developer": "system"}
_KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool"})
#: Content parts that duplicate an AIMessage's tool calls: Anthropic's ``tool_use`` and the v1 blocks.
_TOOL_CALL_PARTS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call"})


def _text_of(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Return string content, or a list of text parts; reject what a text model cannot read."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind in ("reasoning", "thinking"):
            continue  # earlier reasoning is never sent back, as Qwen3's template drops it
        elif kind in _TOOL_CALL_PARTS:
            # a call travels in the message's tool_calls; its content-block copy is dropped, as ChatOpenAI does
            continue
        else:
            raise ValueError(
                f"{where}: unsupported content part of type {kind!r}; Qwen3-0.6B is a text-only model, "
                "so only text parts can be sent"
            )
    if all(p["type"] == "text" for p in parts) and len(parts) == 1:
        return str(parts[0]["text"])
    return parts


def _tool_call_to_openai(tc: Mapping[str, Any], where: str) -> dict[str, Any]:
    args = tc.get("args")
    if not isinstance(args, dict):
        raise ValueError(
            f"{where}: tool call {tc.get('name')!r} has args of type {type(args).__name__}; "
            "args must be a dict (it is sent as a JSON string)"
        )
    try:
        arguments = orjson.dumps(args).decode()
    except TypeError as e:
        raise ValueError(f"{where}: tool call {tc.get('name')!r} args are not JSON-serialisable: {e}") from e
    return {"id": tc.get("id"), "type": "function", "function": {"name": tc["name"], "arguments": arguments}}


def _raw_tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    out = []
    for tc in raw:
        fn = tc.get("function") or {}
        if not isinstance(fn.get("arguments"), str):
            raise ValueError(
                f"{where}: raw tool call {fn.get('name')!r} has non-string 'arguments' "
                f"({type(fn.get('arguments')).__name__}); the OpenAI format needs a JSON string"
            )
        out.append(tc)
    return out


def message_to_dict(message: BaseMessage, index: int = 0) -> dict[str, Any]:
    """Convert one LangChain message into an OpenAI chat message dict."""
    where = f"message {index} ({type(message).__name__})"
    if isinstance(message, ChatMessage):
        role = _ROLE_ALIASES.get(message.role, message.role)
        if role not in _KNOWN_ROLES:
            raise ValueError(f"{where}: unknown role {message.role!r}; use one of system, user, assistant, tool")
        return {"role": role, "content": _text_of(message.content, where)}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": _text_of(message.content, where)}
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": _text_of(message.content, where)}
    if isinstance(message, AIMessage):
        out: dict[str, Any] = {"role": "assistant", "content": _text_of(message.content, where)}
        calls = [_tool_call_to_openai(tc, where) for tc in message.tool_calls]
        calls += [
            {
                "id": tc.get("id"),
                "type": "function",
                "function": {"name": tc.get("name"), "arguments": tc.get("args") or ""},
            }
            for tc in message.invalid_tool_calls
        ]
        if not calls and message.additional_kwargs.get("tool_calls"):
            calls = _raw_tool_calls(message.additional_kwargs["tool_calls"], where)
        if calls:
            out["tool_calls"] = calls
            if out["content"] in ("", []):
                out["content"] = None
        return out
    if isinstance(message, ToolMessage):
        content = _text_of(message.content, where)
        if not isinstance(content, str):
            # vLLM joins a list of text parts with newlines; do the same so both forms agree.
            content = "\n".join(p.get("text", "") for p in content)
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}
    raise ValueError(f"{where}: unsupported message type; use System/Human/AI/Tool messages")


def messages_to_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    if not messages:
        raise ValueError("empty message list: at least one message is needed")
    return [message_to_dict(m, i) for i, m in enumerate(messages)]


def usage_to_metadata(usage: Mapping[str, Any]) -> UsageMetadata:
    """Same mapping as ChatOpenAI's, so token accounting code keeps working."""
    inp = usage.get("prompt_tokens") or 0
    out = usage.get("completion_tokens") or 0
    total = usage.get("total_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    if not prompt_details and not completion_details:  # a list prompt's own share has none: no detail to map
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": total if total is not None else inp + out,
                "input_token_details": {}, "output_token_details": {}}
    prompt_details = prompt_details or {}
    completion_details = completion_details or {}
    in_details = {
        "audio": prompt_details.get("audio_tokens"),
        "cache_read": prompt_details.get("cached_tokens"),
        "cache_creation": prompt_details.get("cache_write_tokens"),
    }
    out_details = {
        "audio": completion_details.get("audio_tokens"),
        "reasoning": completion_details.get("reasoning_tokens"),
    }
    return UsageMetadata(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=total if total is not None else inp + out,
        input_token_details=InputTokenDetails(**{k: v for k, v in in_details.items() if v is not None}),  # type: ignore[typeddict-item]
        output_token_details=OutputTokenDetails(**{k: v for k, v in out_details.items() if v is not None}),  # type: ignore[typeddict-item]
    )


def _reasoning_of(msg: Mapping[str, Any]) -> str | None:
    # vLLM >= 0.10 says `reasoning`; older vLLM and SGLang say `reasoning_content`.
    value = msg.get("reasoning")
    if value is None:
        value = msg.get("reasoning_content")
    return value


def ai_message_fields(msg: Mapping[str, Any], *, split_think: bool = True) -> dict[str, Any]:
    """The fields an ``AIMessage`` is made with for a response ``message``; bad tool JSON goes to
    invalid_tool_calls. Only the fields that carry data are there: the values are the same (the others
    default to empty), and pydantic's per-instance set of given fields then stays at 4 entries with the id,
    usage and metadata added later (216 bytes instead of 728, a fifth of each result: 100,000 results held
    49 MiB less; docs/architecture.md, "Memory")."""
    content = msg.get("content") or ""
    reasoning = _reasoning_of(msg)
    if reasoning is None and split_think and ("</think>" in content or content.lstrip().startswith("<think>")):
        reasoning, content = split_reasoning(content)
    elif reasoning:
        # A reasoning parser leaves the template's "\n\n" after </think> on the answer; drop it, as
        # split_reasoning does, so both wire modes and streaming give the same content.
        content = content.lstrip("\n")
    additional: dict[str, Any] = {}
    if reasoning is not None:
        additional["reasoning_content"] = reasoning
    if msg.get("refusal"):
        additional["refusal"] = msg["refusal"]
    tool_calls, invalid = [], []
    for raw in msg.get("tool_calls") or []:
        try:
            tool_calls.append(parse_tool_call(raw, return_id=True))
        except Exception as e:  # a malformed call is data, never an exception for the caller
            invalid.append(make_invalid_tool_call(raw, str(e)))
    fields: dict[str, Any] = {"content": content}
    if additional:
        fields["additional_kwargs"] = additional
    if tool_calls:
        fields["tool_calls"] = tool_calls
    if invalid:
        fields["invalid_tool_calls"] = invalid
    return fields


def dict_to_ai_message(msg: Mapping[str, Any], *, split_think: bool = True) -> AIMessage:
    """Convert a response ``message`` into an AIMessage (:func:`ai_message_fields`)."""
    return AIMessage(**ai_message_fields(msg, split_think=split_think))


#: The usage fields the openai SDK's ``CompletionUsage`` always has, so ChatOpenAI's ``token_usage``
#: always has them too (None where the server sent none).
_USAGE_FIELDS = ("completion_tokens", "prompt_tokens", "total_tokens", "completion_tokens_details",
                 "prompt_tokens_details")


def token_usage_of(usage: Any) -> dict[str, Any] | None:
    """``response_metadata["token_usage"]`` as ChatOpenAI has it: the server's usage object with the
    SDK's five top-level fields present; other fields the server sent are kept, as the SDK keeps them.
    (The SDK also fills the fields of the nested ``*_details`` objects with None; those stay as sent.)"""
    if not usage:
        return None
    return {**dict.fromkeys(_USAGE_FIELDS), **mapping(usage, "usage")}


def llm_output_of(meta: Mapping[str, Any], token_usage: dict[str, Any] | None) -> dict[str, Any]:
    """The response-level ``response_metadata`` keys, as ChatOpenAI's ``_create_chat_result`` sets them:
    ``token_usage`` (the response's for chat, one prompt's share of a list for completions), then ``meta``."""
    return {"token_usage": token_usage, **meta}


def response_meta(resp: Mapping[str, Any], model_fallback: str) -> dict[str, Any]:
    """The response-level keys but ``token_usage``: what every prompt of a list shares (made once per list)."""
    out: dict[str, Any] = {
        "model_provider": MODEL_PROVIDER,
        "model_name": resp.get("model") or model_fallback,
        # ChatOpenAI (through the openai SDK) reports None when the server sends no fingerprint.
        "system_fingerprint": resp.get("system_fingerprint"),
    }
    if "id" in resp:
        out["id"] = resp["id"]
    if resp.get("service_tier"):  # ChatOpenAI: only when set (vLLM sends null)
        out["service_tier"] = resp["service_tier"]
    return out


def generation_info(choice: Mapping[str, Any]) -> dict[str, Any]:
    # The openai SDK's Choice always has ``logprobs``, so ChatOpenAI's response_metadata always has the key.
    # The reason is one of a few words; interned, 100,000 answers share them instead of holding a copy each.
    reason = choice.get("finish_reason")
    return {"finish_reason": sys.intern(reason) if isinstance(reason, str) else reason,
            "logprobs": choice.get("logprobs")}


def mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise malformed_response(f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def check_shape(resp: Any) -> list[Mapping[str, Any]]:
    """The response's choices, each an object; anything else is an ``InvalidResponseError``."""
    if not isinstance(resp, Mapping):
        raise malformed_response(f"expected a JSON object, got a JSON {type(resp).__name__}")
    if resp.get("error"):
        raise malformed_response(f"an error object in a 200 answer: {str(resp['error'])[:200]}")
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices:
        raise malformed_response(f"no choices (keys: {sorted(resp)[:10]})")
    for c in choices:
        if type(c) is dict:  # what JSON parsing gives: a plain dict (the ABC check costs 1 µs a choice)
            message = c.get("message") or c.get("delta")
            if message is None or type(message) is dict:
                continue
        if not isinstance(c, Mapping) or not isinstance(c.get("message") or c.get("delta") or {}, Mapping):
            raise malformed_response(f"a choice that is not an object with a message: {str(c)[:120]}")
    return choices


def chat_response_to_result(
    choices: Sequence[Mapping[str, Any]], usage: Mapping[str, Any] | None, meta: Mapping[str, Any]
) -> ChatResult:
    """A ``/v1/chat/completions`` body as a ChatResult, ChatOpenAI-style: its choices (as
    :func:`check_shape` returns them), its usage object (None when it has none) and :func:`response_meta`."""
    gens = []
    for choice in choices:
        message = dict_to_ai_message(choice.get("message") or {})
        if usage:
            message.usage_metadata = usage_to_metadata(usage)
        gens.append(ChatGeneration(message=message, generation_info=generation_info(choice)))
    return ChatResult(generations=gens, llm_output=llm_output_of(meta, token_usage_of(usage)))


def completion_choice_to_result(
    choice: Mapping[str, Any], usage: Mapping[str, Any] | None, meta: Mapping[str, Any]
) -> ChatResult:
    """One prompt's share of a ``/v1/completions`` list response, shaped like a chat result.

    ``usage`` is this prompt's own usage (from ``token_ids``), or None where the server gave only
    the list's total; ``meta`` is the list's :func:`response_meta`.
    """
    message = dict_to_ai_message({"content": choice.get("text") or ""})
    if usage:
        message.usage_metadata = usage_to_metadata(usage)
    out = llm_output_of(meta, token_usage_of(usage))
    gen = ChatGeneration(message=message, generation_info=generation_info(choice))
    return ChatResult(generations=[gen], llm_output=out)


def split_completions(resp: Mapping[str, Any], n_prompts: int) -> list[tuple[Mapping[str, Any], dict[str, Any] | None]]:
    """Match a list response's choices to prompts by ``index``; raise if any is missing, or if the list's
    ``usage`` is not an object (each prompt's metadata uses its own share, so this is the one check of it).

    Each choice's token id lists are taken out of it once counted: nothing shows them, and freed here they are
    never in the way of the garbage collector, which a batch of lists otherwise spends more time on than on
    building the results (docs/architecture.md, "Client CPU")."""
    choices = check_shape(resp)
    if resp.get("usage"):
        mapping(resp["usage"], "usage")
    by_index: dict[int, Mapping[str, Any]] = {}
    for c in choices:
        index = c.get("index", 0)
        by_index[index if isinstance(index, int) else -1] = c
    missing = [i for i in range(n_prompts) if i not in by_index]
    if missing:
        raise malformed_response(f"no choices for prompt indexes {missing[:10]} of {n_prompts}")
    out = []
    for i in range(n_prompts):
        c = by_index[i]
        usage = None
        if isinstance(c, dict) and c.get("token_ids") is not None and c.get("prompt_token_ids") is not None:
            p, o = len(c.pop("prompt_token_ids")), len(c.pop("token_ids"))
            usage = {"prompt_tokens": p, "completion_tokens": o, "total_tokens": p + o}
        elif n_prompts == 1 and resp.get("usage"):
            usage = dict(resp["usage"])
        out.append((c, usage))
    return out


class StreamAssembler:
    """Turns SSE chunk dicts into ChatGenerationChunks; reasoning deltas go to additional_kwargs."""

    def __init__(self, model_fallback: str) -> None:
        self.model_fallback = model_fallback
        self._in_think = False
        self._after_think = False

    def convert(self, chunk: Mapping[str, Any]) -> ChatGenerationChunk | None:
        usage = chunk.get("usage")
        choices = chunk.get("choices") or []
        if not choices:
            if not usage:
                return None
            msg = AIMessageChunk(content="", usage_metadata=usage_to_metadata(mapping(usage, "usage")))
            return ChatGenerationChunk(message=msg, generation_info={})
        choice = check_shape(chunk)[0]
        delta = choice.get("delta") or {}
        content = delta.get("content") or ""
        reasoning = _reasoning_of(delta)
        if reasoning:  # the server parsed the think block: the answer that follows starts after it
            self._after_think = True
            if content:
                content = self._drop_leading_newlines(content)
        elif reasoning is None and content:
            reasoning, content = self._split_inline(content)
        elif content and self._after_think:
            content = self._drop_leading_newlines(content)
        additional: dict[str, Any] = {}
        if reasoning:
            additional["reasoning_content"] = reasoning
        chunks = [
            tool_call_chunk(
                name=(tc.get("function") or {}).get("name"),
                args=(tc.get("function") or {}).get("arguments"),
                id=tc.get("id"),
                index=tc.get("index"),
            )
            for tc in delta.get("tool_calls") or []
        ]
        # As ChatOpenAI: every chunk with a choice names the provider; the finishing one adds the model,
        # and the fingerprint, service tier and logprobs come when the server sent them.
        msg = AIMessageChunk(content=content, additional_kwargs=additional, tool_call_chunks=chunks,
                             response_metadata={"model_provider": MODEL_PROVIDER})
        if usage:
            msg.usage_metadata = usage_to_metadata(mapping(usage, "usage"))
        info: dict[str, Any] = {}
        if choice.get("finish_reason") is not None:
            info["finish_reason"] = choice["finish_reason"]
            info["model_name"] = chunk.get("model") or self.model_fallback
            if chunk.get("id"):  # not in ChatOpenAI's stream metadata: kept, as invoke has it
                info["id"] = chunk["id"]
            for key in ("system_fingerprint", "service_tier"):
                if chunk.get(key):
                    info[key] = chunk[key]
        if choice.get("logprobs"):
            info["logprobs"] = choice["logprobs"]
        return ChatGenerationChunk(message=msg, generation_info=info or None)

    def _split_inline(self, content: str) -> tuple[str | None, str]:
        # Without a reasoning parser the think block arrives inline, token by token.
        if not self._in_think and content.lstrip().startswith("<think>"):
            self._in_think = True
            content = content.lstrip()[len("<think>") :]
        if self._in_think:
            if "</think>" in content:
                head, _, tail = content.partition("</think>")
                self._in_think = False
                self._after_think = True
                return head, self._drop_leading_newlines(tail)
            return content, ""
        if self._after_think:
            return None, self._drop_leading_newlines(content)
        return None, content

    def _drop_leading_newlines(self, text: str) -> str:
        # As split_reasoning does; the "\n\n" after </think> is usually a delta of its own.
        text = text.lstrip("\n")
        if text:
            self._after_think = False
        return text
