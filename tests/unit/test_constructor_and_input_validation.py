"""Constructor and input validation: warnings for unsupported fields, errors before sending.

Covers: chat_models.py, _calls/fields.py, _calls/request.py."""

from __future__ import annotations

import warnings
from typing import Any

import httpx
import pytest
from _qwen_fakes import MOCK_URL
from langchain_core.messages import ChatMessage, HumanMessage

from langchain_qwen_fast import BatchedChatQwen


@pytest.mark.parametrize(
    ("field", "value"),
    [("organization", "org-123"), ("reasoning_effort", "high"), ("use_responses_api", True)],
)
def test_unsupported_chatopenai_field_warns_naming_it(field: str, value: Any) -> None:
    with pytest.warns(UserWarning, match=field):
        model = BatchedChatQwen(base_url=MOCK_URL, **{field: value})
    assert field not in model.model_kwargs


def test_unknown_kwarg_warns_and_is_sent_in_the_body(mock_model: Any) -> None:
    with pytest.warns(UserWarning, match="repetition_penalty"):
        model, rec = mock_model(repetition_penalty=1.1)
    assert model.model_kwargs == {"repetition_penalty": 1.1}
    model.invoke("hi")
    assert rec.last["repetition_penalty"] == 1.1


def test_model_kwargs_are_sent_without_warning(mock_model: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, rec = mock_model(model_kwargs={"repetition_penalty": 1.05})
    model.invoke("hi")
    assert rec.last["repetition_penalty"] == 1.05


@pytest.mark.parametrize("url", ["localhost:8000/v1", "127.0.0.1:8000", "ftp://host/v1"])
def test_base_url_without_http_scheme_raises_naming_the_url(url: str) -> None:
    with pytest.raises(ValueError) as ei:
        BatchedChatQwen(base_url=url)
    assert url in str(ei.value)


def test_base_url_list_with_a_bad_entry_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="gpu-2:8000"):
        BatchedChatQwen(base_url=["http://gpu-1:8000/v1", "gpu-2:8000/v1"])


def test_api_key_over_plain_http_to_remote_host_warns() -> None:
    with pytest.warns(UserWarning, match="plain http"):
        BatchedChatQwen(base_url="http://10.1.2.3:8000/v1", api_key="sk-abc")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "https://remote.example/v1"]
)
def test_api_key_over_loopback_or_https_does_not_warn(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BatchedChatQwen(base_url=url, api_key="sk-abc")


def test_max_tokens_zero_in_constructor_fails_before_sending(mock_model: Any) -> None:
    calls: list[Any] = []

    def respond(p: dict[str, Any], r: httpx.Request) -> httpx.Response:
        calls.append(p)
        return httpx.Response(200, json={})

    with pytest.raises(ValueError, match="max_tokens"):
        model, _ = mock_model(respond, max_tokens=0)
        model.invoke("hi")
    assert calls == []


@pytest.mark.parametrize("bad", [0, -5])
def test_max_tokens_zero_or_negative_per_call_raises_before_sending(
    bad: int, mock_model: Any
) -> None:
    model, rec = mock_model()
    with pytest.raises(ValueError, match="max_tokens"):
        model.invoke("hi", max_tokens=bad)
    assert rec.count == 0


async def test_max_tokens_zero_per_call_async_raises_before_sending(mock_model: Any) -> None:
    model, rec = mock_model()
    with pytest.raises(ValueError, match="max_tokens"):
        await model.ainvoke("hi", max_tokens=0)
    assert rec.count == 0


def test_empty_message_list_raises_value_error(mock_model: Any) -> None:
    model, rec = mock_model()
    with pytest.raises(ValueError, match="empty"):
        model.invoke([])
    assert rec.count == 0


def test_unknown_role_raises_value_error_naming_the_role(mock_model: Any) -> None:
    model, rec = mock_model()
    with pytest.raises(ValueError, match="wizard"):
        model.invoke([ChatMessage(role="wizard", content="abracadabra")])
    assert rec.count == 0


def test_image_content_raises_value_error_before_sending(mock_model: Any) -> None:
    model, rec = mock_model()
    msg = HumanMessage(
        content=[
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        ]
    )
    with pytest.raises(ValueError, match="text-only"):
        model.invoke([msg])
    assert rec.count == 0


def test_chatopenai_aliases_are_accepted(mock_model: Any) -> None:
    model, rec = mock_model(max_completion_tokens=12, stop_sequences=["END"], request_timeout=7)
    assert model.max_tokens == 12 and model.timeout == 7.0
    model.invoke("hi")
    assert rec.last["max_tokens"] == 12 and rec.last["stop"] == ["END"]


def test_per_call_stop_and_sampling_kwargs_reach_the_payload(mock_model: Any) -> None:
    model, rec = mock_model(temperature=0.1)
    model.invoke("hi", stop=["\n\n"], temperature=0.9, seed=7)
    assert rec.last["stop"] == ["\n\n"]
    assert rec.last["temperature"] == 0.9
    assert rec.last["seed"] == 7
    assert rec.last["model"] == "Qwen/Qwen3-0.6B"
