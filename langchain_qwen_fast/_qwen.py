"""Qwen3 specifics: ChatML rendering, the thinking switch, ``<think>`` handling, sampling presets.

The completions wire mode sends prompts that this module renders, so :func:`render_chatml` must
produce exactly what Qwen3's own chat template produces for plain text turns; the real-vLLM test
tier checks that token for token through the server's ``/tokenize``.
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

_PLAIN_ROLES = frozenset({"system", "user", "assistant"})


def _strip_history_reasoning(content: str) -> str:
    # Qwen3's template drops the reasoning of earlier assistant turns.
    if THINK_CLOSE in content:
        content = content.split(THINK_CLOSE)[-1].lstrip("\n")
    return content


def can_render(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether :func:`render_chatml` reproduces the server's template for these messages.

    Only plain text conversations qualify: a system turn only in first place, string contents,
    no tool calls or tool results, and a final user turn (the server appends the generation
    prompt after it).
    """
    if not messages or messages[-1].get("role") != "user":
        return False
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

    Callers must check :func:`can_render` first; anything else goes to the chat endpoint, where
    the server applies its own template.
    """
    parts: list[str] = []
    for m in messages:
        content = m["content"]
        if m["role"] == "assistant":
            content = _strip_history_reasoning(content)
        parts.append(f"{IM_START}{m['role']}\n{content}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    if not enable_thinking:
        parts.append(EMPTY_THINK)
    return "".join(parts)


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
