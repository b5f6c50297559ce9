"""Turning one call (messages + the model's fields + per-call kwargs) into a dispatcher Item.

Kept apart from ``chat_models.py`` so the class holds only fields and LangChain hooks, and so a
batch builds its shared parameters once rather than once per input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from langchain_core.messages import BaseMessage

from langchain_qwen_fast._convert import messages_to_dicts
from langchain_qwen_fast._dispatch.item import CHAT, LIST, Item
from langchain_qwen_fast._qwen import can_render, render_chatml, render_user_text

#: Parameters a ``/v1/completions`` list request can carry with the same meaning as in chat.
_LIST_SAFE = frozenset({
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "seed", "stop", "stop_token_ids", "ignore_eos",
    "min_tokens", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "user", "logit_bias", "return_token_ids", "priority",
})
#: Keyword arguments LangChain passes along that are not request parameters.
_INTERNAL = ("ls_structured_output_format", "structured_output_format", "run_manager")
_CHAT_TEMPLATE = "chat_template_kwargs"


@dataclass(frozen=True)
class CallSpec:
    """Everything shared by the inputs of one call or batch."""

    params: dict[str, Any]
    headers: Mapping[str, str]
    timeout: float | None
    model: str
    enable_thinking: bool
    list_eligible: bool
    list_key: bytes | None
    list_params: dict[str, Any] | None
    priority: int = 0
    max_tokens: int = 0  # params' max_tokens (0: unset), for each list item's token estimate


def _merge_template_kwargs(params: dict[str, Any], thinking: bool | None, default: bool) -> bool:
    """Put ``enable_thinking`` into ``chat_template_kwargs`` without clobbering the caller's keys.

    Precedence: a per-call ``enable_thinking`` kwarg, then an explicit key in the caller's
    ``extra_body``/``model_kwargs`` template kwargs, then the model's field.
    """
    user = dict(params.get(_CHAT_TEMPLATE) or {})
    if thinking is not None:
        user["enable_thinking"] = bool(thinking)
    else:
        user.setdefault("enable_thinking", default)
    params[_CHAT_TEMPLATE] = user
    return bool(user["enable_thinking"])


def request_headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The headers every request of a model carries (the key only when there is one)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if extra:
        headers.update(extra)
    return headers


def with_model_extra_body(model_extra: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """A call's kwargs with the model's ``extra_body`` merged under the call's own; ``chat_template_kwargs``
    one level deeper, so a call's template kwargs add to the model's and never replace them."""
    if not model_extra:
        return kwargs
    call_extra = kwargs.get("extra_body") or {}
    merged = {**model_extra, **call_extra}
    if isinstance(model_extra.get(_CHAT_TEMPLATE), Mapping) and isinstance(call_extra.get(_CHAT_TEMPLATE), Mapping):
        merged[_CHAT_TEMPLATE] = {**model_extra[_CHAT_TEMPLATE], **call_extra[_CHAT_TEMPLATE]}
    return {**kwargs, "extra_body": merged}


def build_spec(
    base: Mapping[str, Any], headers: Mapping[str, str], timeout: float | None, model: str,
    default_thinking: bool, wire_mode: str, stop: Sequence[str] | str | None, kwargs: Mapping[str, Any],
    *, priority: int = 0, server_priority: bool = False,
) -> CallSpec:
    """Merge per-call kwargs over the model's parameters (as ChatOpenAI does) and pick the wire.

    ``priority`` orders the client's queue (higher first); with ``server_priority`` it is also sent
    as vLLM's request ``priority``, whose convention is the opposite (lower is handled first).
    """
    kw = dict(kwargs)
    for k in _INTERNAL:
        kw.pop(k, None)
    thinking = kw.pop("enable_thinking", None)
    prio = kw.pop("priority", None)
    prio = priority if prio is None else prio
    if not isinstance(prio, int) or isinstance(prio, bool):
        raise ValueError(f"priority must be an integer (higher is served first), got {prio!r}")
    extra = kw.pop("extra_body", None) or {}
    params = {**base, **kw}
    for k, v in extra.items():
        if k == _CHAT_TEMPLATE and isinstance(v, Mapping):
            params[k] = {**(params.get(k) or {}), **v}
        else:
            params[k] = v
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else list(stop)
    if "max_completion_tokens" in params:
        params["max_tokens"] = params.pop("max_completion_tokens")
    mt = params.get("max_tokens")
    if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt <= 0):
        raise ValueError(f"max_tokens must be a positive integer, got {mt!r}")
    if params.get("n") == 1:
        params.pop("n")  # the server default; dropping it keeps the call eligible for lists
    thinking_on = _merge_template_kwargs(params, thinking, default_thinking)
    if server_priority:
        params["priority"] = -prio
    params = {k: v for k, v in params.items() if v is not None}

    eligible = (
        wire_mode == "completions"
        and params.get("max_tokens") is not None  # /v1/completions defaults to 16 tokens, chat does not
        and set(params[_CHAT_TEMPLATE]) <= {"enable_thinking"}
        and all(k in _LIST_SAFE or k == _CHAT_TEMPLATE for k in params)
    )
    list_params = list_key = None
    if eligible:
        list_params = {k: v for k, v in params.items() if k != _CHAT_TEMPLATE}
        # Exact per-prompt usage needs each choice's token ids (vLLM >= 0.10.2; ignored elsewhere).
        # model_kwargs={"return_token_ids": False} saves the server that work; usage is then omitted.
        list_params.setdefault("return_token_ids", True)
        # A list goes out with one set of headers and one deadline, so only items that agree on those
        # (and on every sampling parameter) may share one: two instances with different api keys
        # share a dispatcher, never a request.
        list_key = orjson.dumps([list_params, sorted(headers.items()), timeout], option=orjson.OPT_SORT_KEYS)
    return CallSpec(params, headers, timeout, model, thinking_on, eligible, list_key, list_params, prio,
                    int(params.get("max_tokens") or 0))


def make_item(spec: CallSpec, messages: Sequence[BaseMessage]) -> Item:
    """One input -> Item. Raises ValueError for bad input, before anything is sent."""
    return item_of_dicts(spec, messages_to_dicts(messages))


def item_of_text(spec: CallSpec, text: str) -> Item:
    """:func:`item_of_dicts` for one user turn given as a string (what ``.batch(["..."])`` sends), without
    making its message list unless a chat request needs it."""
    if spec.list_eligible:
        return _list_item(spec, render_user_text(text, enable_thinking=spec.enable_thinking), text)
    return item_of_dicts(spec, [{"role": "user", "content": text}])


def item_of_dicts(spec: CallSpec, dicts: list[dict[str, Any]]) -> Item:
    """An Item for messages already in the request's form (:func:`messages_to_dicts`'s output)."""
    if spec.list_eligible and can_render(dicts):
        return _list_item(spec, render_chatml(dicts, enable_thinking=spec.enable_thinking), dicts)
    payload = dict(spec.params)
    payload["messages"] = dicts
    return Item(CHAT, spec.headers, spec.timeout, spec.model, payload=payload)


def _list_item(spec: CallSpec, prompt: str, chat: Any) -> Item:
    """A list item: it travels as its prompt plus the shared list parameters; ``chat`` (the messages, or the one
    user turn's text) stays for the chat request a server that refuses lists gets instead (``Item.as_chat``)."""
    return Item(LIST, spec.headers, spec.timeout, spec.model, None, prompt, spec.list_key, spec.list_params,
                len(prompt) // 3 + spec.max_tokens, chat, spec.params)
