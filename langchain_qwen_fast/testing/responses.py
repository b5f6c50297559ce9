"""Deterministic, visibly simulated Qwen3 output: token counting, ChatML, answers, tool calls, JSON.

Everything here is a pure function of the conversation, so the same conversation gives the same
answer whether it arrives as chat messages or as a ChatML prompt on /v1/completions (the client's
"completions wire mode" relies on that equivalence), and tests can predict lengths without a model.

Tokenizer contract (documented in docs/simulator.md): one token per run of up to 4 word characters
(with any whitespace before it), one per other non-space character, one per ChatML special.
Generated answers are built from such pieces, so ``count_tokens(content) == completion_tokens``
when thinking is off; thinking adds 5 wrapper tokens (``<think>``, ``\\n``, ``\\n``,
``</think>``, ``\\n\\n``).
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

SPECIALS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
)
_TOKEN_RE = re.compile(
    r"\s*(?:" + "|".join(re.escape(s) for s in SPECIALS) + r"|\w{1,4}|[^\w\s])|\s+"
)
_TURN_RE = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n?", re.DOTALL)
_ASSISTANT_OPEN = "<|im_start|>assistant\n"
_THINK_OFF = "<think>\n\n</think>\n\n"
THINK_WRAPPER_TOKENS = 5
# Short filler words (<= 4 chars each, so each " word" is exactly one token).
_FILLER = tuple(" " + w for w in [
    "lo", "rem", "ip", "sum", "do", "lor", "sit", "amet", "con", "sec", "ad", "ipi", "sed", "eius",
    "mod", "tem", "por", "ut", "la", "bore", "et", "dolo", "re", "mag", "na", "ali", "qua", "enim",
    "min", "im", "ven", "quis", "nos", "trud", "exer", "ci", "tati", "ul", "lam", "co",
])
_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def token_pieces(text: str) -> list[str]:
    """Split text into simulated tokens; ``"".join(token_pieces(t)) == t`` for any ``t``."""
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Number of simulated tokens in ``text`` (prompts are counted on their ChatML rendering)."""
    return len(_TOKEN_RE.findall(text))


def stable_hash(text: str) -> int:
    """Deterministic 32-bit hash (``hash()`` is salted per process): crc32, then murmur3's
    finaliser, because crc32 alone maps near-identical prompts to related values."""
    h = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


# ---------------------------------------------------------------------------------- conversations
@dataclass(frozen=True)
class Conversation:
    """A normalised conversation: what both endpoints reduce a request to before generating."""

    turns: tuple[tuple[str, str], ...]
    thinking: bool

    @property
    def last_role(self) -> str:
        return self.turns[-1][0] if self.turns else "user"

    @property
    def last_text(self) -> str:
        return self.turns[-1][1] if self.turns else ""

    @property
    def last_user(self) -> str:
        return next((text for role, text in reversed(self.turns) if role == "user"), "")

    @cached_property
    def key(self) -> int:
        """Hash of the canonical rendering: the same for chat and for a faithful ChatML prompt."""
        return stable_hash(render_chatml(self.turns, self.thinking))


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts; only text parts matter here
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _tool_call_text(call: dict[str, Any]) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments", "{}")
    try:
        parsed = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        parsed = args
    body = json.dumps({"name": fn.get("name", ""), "arguments": parsed}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def conversation_from_messages(messages: Sequence[dict[str, Any]], thinking: bool) -> Conversation:
    """Normalise OpenAI chat messages (text parts, assistant tool_calls, tool results)."""
    turns: list[tuple[str, str]] = []
    for msg in messages:
        role = str(msg.get("role", "user"))
        role = "system" if role == "developer" else role
        text = _text_of(msg.get("content"))
        if role == "assistant" and "</think>" in text:  # Qwen3's template drops old reasoning
            text = text.split("</think>")[-1].lstrip("\n")
        if role == "assistant" and msg.get("tool_calls"):
            calls = "\n".join(_tool_call_text(c) for c in msg["tool_calls"])
            text = f"{text}\n{calls}" if text else calls
        turns.append((role, text))
    return Conversation(tuple(turns), thinking)


def render_chatml(
    turns: Sequence[tuple[str, str]], thinking: bool, tools: Sequence[dict[str, Any]] | None = None
) -> str:
    """Render like the project's Qwen3 template (tool results as user turns, tools in system)."""
    parts: list[str] = []
    if tools:
        defs = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        block = _TOOLS_HEADER + defs + _TOOLS_FOOTER
        if turns and turns[0][0] == "system":
            turns = [("system", f"{turns[0][1]}\n\n{block}"), *turns[1:]]
        else:
            turns = [("system", block), *turns]
    for role, text in turns:
        if role == "tool":
            parts.append(f"<|im_start|>user\n<tool_response>\n{text}\n</tool_response><|im_end|>\n")
        else:
            parts.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    parts.append(_ASSISTANT_OPEN)
    if not thinking:
        parts.append(_THINK_OFF)
    return "".join(parts)


def parse_chatml(prompt: str) -> Conversation:
    """Parse a ChatML prompt back into turns; a prompt that is not ChatML is one user turn."""
    turns: list[tuple[str, str]] = []
    end = 0
    for m in _TURN_RE.finditer(prompt):
        role, text = m.group(1), m.group(2)
        if role == "user" and text.startswith("<tool_response>\n") and text.endswith(
            "\n</tool_response>"
        ):
            role, text = "tool", text[16:-17]
        turns.append((role, text))
        end = m.end()
    if not turns:
        return Conversation((("user", prompt),), False)
    tail = prompt[end:]
    thinking = True
    if tail.startswith(_ASSISTANT_OPEN):
        thinking = "</think>" not in tail[len(_ASSISTANT_OPEN):]
    return Conversation(tuple(turns), thinking)


# ------------------------------------------------------------------------------------- generation
@dataclass(slots=True)
class Generation:
    """One choice's output. ``reasoning`` is None when thinking is off; ``content`` is None when the
    budget ran out inside the reasoning (as vLLM's reasoning parser reports it)."""

    reasoning: str | None
    content: str | None
    finish_reason: str
    completion_tokens: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def completion_text(self) -> str:
        """The raw text /v1/completions returns: no reasoning parser there, think tags inline."""
        body = self.content or ""
        if self.tool_calls:
            body = "\n".join(_tool_call_text(c) for c in self.tool_calls)
        if self.reasoning is None:
            return body
        if self.content is None and not self.tool_calls:
            return f"<think>\n{self.reasoning}"
        return f"<think>\n{self.reasoning}\n</think>\n\n{body}"


def _cut_at_stop(text: str, pieces: list[str], stop: Sequence[str]) -> tuple[int, str] | None:
    """Earliest stop string: (tokens generated up to the end of the match, text before it)."""
    hits = [(i, len(s)) for s in stop if s and (i := text.find(s)) >= 0]
    if not hits:
        return None
    idx, n = min(hits)
    used = pos = 0
    while pos < idx + n:
        pos += len(pieces[used])
        used += 1
    return used, text[:idx]


def reasoning_text(conv: Conversation) -> str:
    """What the simulated model "thinks": a fixed phrase plus the first words it answers to."""
    words = (conv.last_text if conv.last_role == "tool" else conv.last_user).split()[:8]
    return "Let me think about: " + " ".join(words)


def answer_source(conv: Conversation) -> str:
    """What the answer echoes: the last user text, or the tool result when a tool spoke last."""
    if conv.last_role == "tool":
        return "[sim] tool said: " + conv.last_text[:60].strip()
    return "[sim] " + conv.last_user[:80].strip()


def generate(
    conv: Conversation,
    max_tokens: int | None,
    ignore_eos: bool,
    choice: int = 0,
    stop: Sequence[str] = (),
) -> Generation:
    """Generate the text answer: echo, then filler up to a hash-chosen length or max_tokens.

    The answer's natural length is 8..48 tokens (hash of the conversation), and at least the echo's
    length when that fits in 48, so that the whole echo is there unless max_tokens cuts it.

    The budget is spent in order: ``<think>\\n``, reasoning, ``\\n</think>\\n\\n``, answer; so with
    thinking on, a small max_tokens ends inside the reasoning (content None, finish "length").
    """
    h = stable_hash(f"{conv.key}:{choice}") if choice else conv.key
    echo = token_pieces(answer_source(conv))
    natural = max(8 + h % 41, min(len(echo), 48))  # the whole echo whenever it fits in 48
    reasoning_pieces: list[str] = []
    if conv.thinking:
        reasoning_pieces = token_pieces(reasoning_text(conv))
        natural += len(reasoning_pieces) + THINK_WRAPPER_TOKENS
    budget = max_tokens if max_tokens is not None else natural
    total = budget if ignore_eos else min(natural, budget)
    finish = "length" if ignore_eos or natural > budget else "stop"
    reasoning: str | None = None
    left = total
    if conv.thinking:
        rp = reasoning_pieces[: max(0, left - 2)]
        reasoning = "".join(rp)
        if left < len(reasoning_pieces) + THINK_WRAPPER_TOKENS:
            return Generation(reasoning, None, "length", total)
        left -= len(reasoning_pieces) + THINK_WRAPPER_TOKENS
    # Plain truncation keeps "[sim]" (3 tokens) and a first word of up to 20 chars when left >= 8.
    pieces = echo[:left]
    pieces += [_FILLER[((h >> 8) + i) % len(_FILLER)] for i in range(left - len(pieces))]
    content = "".join(pieces)
    cut = _cut_at_stop(content, pieces, stop) if stop else None
    if cut is not None:
        return Generation(reasoning, cut[1], "stop", total - left + cut[0])
    return Generation(reasoning, content, finish, total)


def structured(
    conv: Conversation, body: str = "", tool_calls: list[dict[str, Any]] | None = None
) -> Generation:
    """A JSON body or tool calls, never truncated by max_tokens (a real server would emit broken
    JSON; truncation is what the fault knobs are for). Tokens: reasoning + wrapper + the raw text
    the model would emit (hermes ``<tool_call>`` blocks for tool calls)."""
    calls = tool_calls or []
    raw = "\n".join(_tool_call_text(c) for c in calls) if calls else body
    reasoning = reasoning_text(conv) if conv.thinking else None
    tokens = count_tokens(raw)
    if reasoning is not None:
        tokens += count_tokens(reasoning) + THINK_WRAPPER_TOKENS
    return Generation(reasoning, None if calls else body, "tool_calls" if calls else "stop", tokens,
                      calls)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------- JSON from a schema
_FORMATS = {
    "date": "2025-01-01", "date-time": "2025-01-01T00:00:00Z", "time": "00:00:00Z",
    "email": "sim@example.com", "uri": "https://example.com/sim", "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1", "hostname": "example.com",
}


class _SchemaGen:
    """Build an instance valid against a JSON schema; strings come from the prompt's words.

    Covers what LangChain/pydantic/OpenAI tool schemas use: type (incl. lists), properties/required,
    items/prefixItems/minItems/maxItems, enum/const, anyOf/oneOf/allOf, $ref into $defs/definitions,
    string length and common formats, numeric bounds and multipleOf. Objects get every property.
    """

    def __init__(self, root: dict[str, Any], words: Sequence[str], seed: int) -> None:
        self.root = root
        self.words = [w for w in (re.sub(r"\W+", "", w) for w in words) if w] or ["sim"]
        self.seed = seed

    def _word(self) -> str:
        self.seed += 1
        return self.words[self.seed % len(self.words)]

    def _resolve(self, ref: str) -> Any:
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")] if part else node
        return node

    def make(self, schema: Any, depth: int = 0) -> Any:
        if depth > 24:
            return None  # runaway $ref recursion: give up rather than loop
        if not isinstance(schema, dict):
            return self._word()  # `true` / unknown: anything is valid
        if "$ref" in schema:
            return self.make(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][self.seed % len(schema["enum"])]
        opts = schema.get("anyOf") or schema.get("oneOf")
        if opts:
            real = [o for o in opts if not (isinstance(o, dict) and o.get("type") == "null")]
            pick = (real or opts)[0]
            return self.make(pick, depth + 1)
        if schema.get("allOf"):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                merged = _merge(merged, self._resolve(sub["$ref"]) if "$ref" in sub else sub)
            return self.make(merged, depth)
        typ = schema.get("type")
        if isinstance(typ, list):
            typ = next((t for t in typ if t != "null"), "null")
        if typ is None:
            typ = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if typ == "object":
            props: dict[str, Any] = schema.get("properties") or {}
            req = list(schema.get("required") or [])
            names = req if depth > 8 else list(props) + [r for r in req if r not in props]
            return {k: self.make(props.get(k, {"type": "string"}), depth + 1) for k in names}
        if typ == "array":
            return self._array(schema, depth)
        if typ in ("integer", "number"):
            return self._num(schema, typ == "integer")
        if typ in ("boolean", "null"):
            return typ == "boolean" or None
        return self._string(schema)

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        out = [self.make(s, depth + 1) for s in schema.get("prefixItems") or []]
        n = max(int(schema.get("minItems", 0)), 1 if depth <= 8 else 0, len(out))
        n = min(n, int(schema.get("maxItems", n)))
        items = schema.get("items", {"type": "string"})
        while len(out) < n:
            self.seed += 1  # vary items so uniqueItems holds for enums and strings
            out.append(self.make(items, depth + 1))
        return out[:n]

    def _string(self, schema: dict[str, Any]) -> str:
        s = _FORMATS.get(schema.get("format") or "") or self._word()
        s = s.ljust(int(schema.get("minLength", 0)), "x")
        return s[: int(schema["maxLength"])] if "maxLength" in schema else s

    def _num(self, schema: dict[str, Any], integer: bool) -> float:
        step, v = (1, 1 + self.seed % 97) if integer else (0.5, 1.5 + self.seed % 97)
        lo, hi = schema.get("minimum"), schema.get("maximum")
        ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if isinstance(ex_lo, (int, float)) and not isinstance(ex_lo, bool):
            lo = ex_lo + step if lo is None else max(lo, ex_lo + step)
        if isinstance(ex_hi, (int, float)) and not isinstance(ex_hi, bool):
            hi = ex_hi - step if hi is None else min(hi, ex_hi - step)
        v = min(v, hi) if hi is not None else v
        v = max(v, lo) if lo is not None else v
        if schema.get("multipleOf"):
            m = schema["multipleOf"]
            v = math.ceil(v / m) * m
            v = v - m if hi is not None and v > hi else v
        if integer:
            return math.ceil(v) if lo is not None and v <= lo else math.floor(v)
        return float(v)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    out["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
    out["required"] = list(dict.fromkeys([*a.get("required", []), *b.get("required", [])]))
    return out


def instance_for_schema(schema: dict[str, Any], words: Sequence[str], seed: int = 0) -> Any:
    """A JSON value valid against ``schema``; deterministic for given words and seed."""
    return _SchemaGen(schema, words, seed).make(schema)


def choose_tools(
    tools: Sequence[dict[str, Any]], tool_choice: Any, parallel: bool, conv: Conversation
) -> list[dict[str, Any]]:
    """Which tools to call: named -> that one; required -> first (or every named one when parallel);
    auto -> those whose name appears in the last user text; none, or a tool result last -> none.
    Raises ValueError (a 400) for what vLLM rejects."""
    fns = [t.get("function", t) for t in tools]
    if tool_choice not in ("none", "auto", "required") and not isinstance(tool_choice, dict):
        raise ValueError(f"Invalid tool_choice: {tool_choice!r}")
    if tool_choice not in ("none", "auto") and not fns:
        raise ValueError("When using `tool_choice`, `tools` must be set.")
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if not any(f.get("name") == name for f in fns):
            raise ValueError(f"Tool '{name}' has not been passed in `tools`.")
    if not fns or tool_choice == "none":
        return []
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        return [f for f in fns if f.get("name") == name][:1]
    if conv.last_role == "tool" and tool_choice != "required":
        return []
    text = conv.last_user
    mentioned = [f for f in fns if f.get("name") and f["name"] in text]
    if tool_choice == "required":
        return mentioned if parallel and mentioned else (mentioned[:1] or fns[:1])
    return mentioned if parallel else mentioned[:1]


def make_tool_calls(fns: Sequence[dict[str, Any]], conv: Conversation) -> list[dict[str, Any]]:
    """OpenAI tool_calls with vLLM-style ids and schema-valid JSON arguments (hermes dumps)."""
    names = {fn.get("name") for fn in fns}
    words = [w for w in conv.last_user.split() if w not in names]
    calls = []
    for i, fn in enumerate(fns):
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        args = instance_for_schema(params, words, conv.key + i)
        function = {"name": fn.get("name", ""), "arguments": json.dumps(args, ensure_ascii=False)}
        calls.append({"id": new_id("chatcmpl-tool"), "type": "function", "function": function})
    return calls
