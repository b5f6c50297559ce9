"""Qwen3 specifics: ChatML rendering, the thinking switch, ``<think>`` handling, sampling presets.

The completions wire mode sends prompts that this module renders, so :func:`render_chatml` must
produce exactly what Qwen3's own chat template produces for plain text turns. The reference is the
official template of Qwen/Qwen3-0.6B: ``tests/unit/test_qwen_render_official.py`` compares thousands
of conversations with it byte for byte, and the real-vLLM tier serves it and checks token for token
through the server's ``/tokenize``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: What Qwen3's template appends after the generation prompt when thinking is off.
EMPTY_THINK = "<think>\n\n</think>\n\n"

TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

_PLAIN_ROLES = frozenset({"system", "user", "assistant"})


def _is_tool_response(content: str) -> bool:
    # A user turn wholly wrapped in <tool_response>…</tool_response> is a tool result sent back as
    # text (ReAct style), not a query.
    return content.startswith(TOOL_RESPONSE_OPEN) and content.endswith(TOOL_RESPONSE_CLOSE)


def _last_query_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the last real user query, as Qwen3's template finds it (the last turn if there is none)."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m["role"] == "user" and not _is_tool_response(m["content"]):
            return i
    return len(messages) - 1


def _split_think(content: str) -> tuple[str, str]:
    """``(reasoning, content)`` of an assistant turn, split exactly as Qwen3's template splits it.

    Reasoning is what lies between the last ``<think>`` before the first ``</think>`` and that
    ``</think>``, without surrounding newlines; content is what follows the *last* ``</think>``,
    without leading newlines. Without ``</think>`` nothing is split, and an unclosed ``<think>``
    stays in the content.
    """
    if THINK_CLOSE not in content:
        return "", content
    head = content.partition(THINK_CLOSE)[0].rstrip("\n")
    reasoning = head.rpartition(THINK_OPEN)[2].lstrip("\n")
    return reasoning, content.rpartition(THINK_CLOSE)[2].lstrip("\n")


def can_render(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether :func:`render_chatml` reproduces the server's template for these messages.

    Only plain text conversations qualify: a system turn only in first place, string contents,
    no tool calls or tool results, and a final user turn (the server appends the generation
    prompt after it).
    """
    if not messages or messages[-1].get("role") != "user":
        return False
    if len(messages) == 1:  # the common case, one user turn: the checks below, for it alone
        m = messages[0]
        return isinstance(m.get("content"), str) and len(m) == 2
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in _PLAIN_ROLES or (role == "system" and i != 0):
            return False
        if not isinstance(m.get("content"), str):
            return False
        if set(m) - {"role", "content"}:
            return False
    return True


def render_chatml(messages: Sequence[Mapping[str, Any]], *, enable_thinking: bool) -> str:
    """Render a plain text conversation the way Qwen3's chat template does.

    Inline ``<think>…</think>`` of an assistant turn is dropped up to the last real user query.
    After it (a ReAct loop whose tool results come back as ``<tool_response>`` user turns) the
    template keeps non-empty reasoning as ``<think>\\n…\\n</think>\\n\\n`` before the content, so
    the model sees the reasoning of the loop it is in; rendered here the same way, the prompt is the
    one the chat endpoint would build.

    Callers must check :func:`can_render` first; anything else goes to the chat endpoint, where
    the server applies its own template.
    """
    if len(messages) == 1 and messages[0]["role"] == "user":  # the common case: the loop below, unrolled
        return render_user_text(messages[0]["content"], enable_thinking=enable_thinking)
    last_query = _last_query_index(messages)
    parts: list[str] = []
    for i, m in enumerate(messages):
        content = m["content"]
        if m["role"] == "assistant":
            reasoning, content = _split_think(content)
            # The template's "loop.last" case (a final assistant turn) cannot occur: can_render
            # requires a final user turn.
            if i > last_query and reasoning:
                # The template strips again here; both are no-ops after _split_think, kept to mirror it.
                reasoning, content = reasoning.strip("\n"), content.lstrip("\n")
                content = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}"
        parts.append(f"{IM_START}{m['role']}\n{content}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    if not enable_thinking:
        parts.append(EMPTY_THINK)
    return "".join(parts)


def render_user_text(text: str, *, enable_thinking: bool) -> str:
    """``render_chatml([{"role": "user", "content": text}], ...)``: one user turn, the most common input."""
    head = f"{IM_START}user\n{text}{IM_END}\n{IM_START}assistant\n"
    return head if enable_thinking else head + EMPTY_THINK


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Split inline ``<think>…</think>`` from generated text: ``(reasoning, content)``.

    Used when the server runs no reasoning parser (and always for ``/v1/completions``). A
    ``<think>`` that never closes, as when ``max_tokens`` cuts it, is all reasoning.
    """
    stripped = text.lstrip()
    if THINK_CLOSE in text:
        head, _, tail = text.partition(THINK_CLOSE)
        head = head.strip()
        if head.startswith(THINK_OPEN):
            head = head[len(THINK_OPEN) :]
        return head.strip("\n"), tail.lstrip("\n")
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN) :].lstrip("\n"), ""
    return None, text


@dataclass(frozen=True)
class SamplingPreset:
    """A named set of sampling parameters; pass ``**preset.as_kwargs()`` to the constructor."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    presence_penalty: float | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


#: Qwen's recommendation for non-thinking mode (Qwen3 model card: T=0.7, TopP=0.8, TopK=20, MinP=0).
QWEN3_NON_THINKING = SamplingPreset(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)
#: Qwen's recommendation for thinking mode (T=0.6, TopP=0.95, TopK=20, MinP=0). Never greedy.
QWEN3_THINKING = SamplingPreset(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
