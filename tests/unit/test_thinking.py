"""The Qwen3 thinking switch in the payload, and where reasoning lands in the answer.

Covers: _calls/request.py, _qwen.py, _convert.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body

from langchain_qwen_fast import QWEN3_NON_THINKING, QWEN3_THINKING


def _template_kwargs(payload: dict[str, Any]) -> Any:
    return payload.get("chat_template_kwargs")


def test_default_payload_turns_thinking_off_at_top_level(mock_model: Any) -> None:
    model, rec = mock_model()
    model.invoke("hi")
    assert _template_kwargs(rec.last) == {"enable_thinking": False}
    assert "extra_body" not in rec.last


def test_invoke_kwarg_turns_thinking_on_for_that_call_only(mock_model: Any) -> None:
    model, rec = mock_model()
    model.invoke("hi", enable_thinking=True)
    assert _template_kwargs(rec.last) == {"enable_thinking": True}
    model.invoke("hi")
    assert _template_kwargs(rec.last) == {"enable_thinking": False}


def test_bind_enable_thinking_turns_thinking_on(mock_model: Any) -> None:
    model, rec = mock_model()
    model.bind(enable_thinking=True).invoke("hi")
    assert _template_kwargs(rec.last) == {"enable_thinking": True}


def test_field_enable_thinking_true_is_sent(mock_model: Any) -> None:
    model, rec = mock_model(enable_thinking=True)
    model.invoke("hi")
    assert _template_kwargs(rec.last) == {"enable_thinking": True}
    model.invoke("hi", enable_thinking=False)
    assert _template_kwargs(rec.last) == {"enable_thinking": False}


def test_extra_body_template_kwargs_are_merged_not_clobbered(mock_model: Any) -> None:
    model, rec = mock_model(extra_body={"chat_template_kwargs": {"foo": 1}, "top_k": 5})
    model.invoke("hi")
    assert _template_kwargs(rec.last) == {"foo": 1, "enable_thinking": False}
    assert rec.last["top_k"] == 5
    model.invoke("hi", enable_thinking=True)
    assert _template_kwargs(rec.last) == {"foo": 1, "enable_thinking": True}


def test_per_call_extra_body_template_kwargs_are_merged(mock_model: Any) -> None:
    model, rec = mock_model(extra_body={"chat_template_kwargs": {"foo": 1}})
    model.invoke("hi", extra_body={"chat_template_kwargs": {"bar": 2}})
    assert _template_kwargs(rec.last) == {"foo": 1, "bar": 2, "enable_thinking": False}


def test_explicit_extra_body_enable_thinking_wins_over_field_default(mock_model: Any) -> None:
    model, rec = mock_model(extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    model.invoke("hi")
    assert _template_kwargs(rec.last) == {"enable_thinking": True}


def test_per_call_extra_body_enable_thinking_wins_over_field_default(mock_model: Any) -> None:
    model, rec = mock_model()
    model.invoke("hi", extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert _template_kwargs(rec.last) == {"enable_thinking": True}


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_field_lands_in_additional_kwargs_and_content_blocks(
    field: str, mock_model: Any
) -> None:
    model, _ = mock_model(
        lambda p, r: httpx.Response(200, json=chat_body("42", **{field: "Six times seven."}))
    )
    msg = model.invoke("q", enable_thinking=True)
    assert msg.content == "42"
    assert msg.additional_kwargs["reasoning_content"] == "Six times seven."
    blocks = msg.content_blocks
    assert {"type": "reasoning", "reasoning": "Six times seven."} in [
        {k: b.get(k) for k in ("type", "reasoning")} for b in blocks
    ]
    assert any(b["type"] == "text" and b["text"] == "42" for b in blocks)


def test_reasoning_field_is_preferred_over_reasoning_content(mock_model: Any) -> None:
    body = chat_body("a", reasoning="new", reasoning_content="old")
    model, _ = mock_model(lambda p, r: httpx.Response(200, json=body))
    assert model.invoke("q").additional_kwargs["reasoning_content"] == "new"


def test_inline_think_block_is_stripped_into_reasoning(mock_model: Any) -> None:
    body = chat_body("<think>\nLet me add.\n</think>\n\n4")
    model, _ = mock_model(lambda p, r: httpx.Response(200, json=body))
    msg = model.invoke("2+2?", enable_thinking=True)
    assert msg.content == "4"
    assert msg.additional_kwargs["reasoning_content"] == "Let me add."
    assert "<think>" not in msg.content and "</think>" not in msg.content
    assert any(b["type"] == "reasoning" for b in msg.content_blocks)


def test_empty_inline_think_block_leaves_only_the_answer(mock_model: Any) -> None:
    model, _ = mock_model(
        lambda p, r: httpx.Response(200, json=chat_body("<think>\n\n</think>\n\nHello"))
    )
    assert model.invoke("hi").content == "Hello"


def test_no_reasoning_means_no_reasoning_key(mock_model: Any) -> None:
    model, _ = mock_model(lambda p, r: httpx.Response(200, json=chat_body("plain")))
    msg = model.invoke("hi")
    assert "reasoning_content" not in msg.additional_kwargs
    assert [b["type"] for b in msg.content_blocks] == ["text"]


def test_non_thinking_preset_has_documented_values() -> None:
    assert QWEN3_NON_THINKING.as_kwargs() == {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "min_p": 0.0,
    }
    assert QWEN3_THINKING.as_kwargs() == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "min_p": 0.0,
    }


def test_non_thinking_preset_values_reach_the_payload(mock_model: Any) -> None:
    model, rec = mock_model(**QWEN3_NON_THINKING.as_kwargs())
    model.invoke("hi")
    sent = rec.last
    assert sent["temperature"] == 0.7
    assert sent["top_p"] == 0.8
    assert sent["top_k"] == 20
    assert "min_p" in sent and sent["min_p"] == 0.0
