"""bind_tools and with_structured_output: the payload, parsing, and no mutation of the model.

Covers: _calls/structured.py, _convert.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _qwen_fakes import chat_body
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict


class GetWeather(BaseModel):
    """Get the current weather for a city."""

    city: str = Field(description="City name")


def get_time(tz: str) -> str:
    """Get the time in a timezone.

    Args:
        tz: IANA timezone name.
    """
    return "12:00"


@tool
def search(query: str) -> str:
    """Search the web."""
    return "result"


DICT_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look up a record.",
        "parameters": {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
        },
    },
}


def _names(payload: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in payload["tools"]]


def test_bind_tools_converts_pydantic_function_basetool_and_dict(mock_model: Any) -> None:
    model, rec = mock_model()
    model.bind_tools([GetWeather, get_time, search, DICT_TOOL]).invoke("hi")
    sent = rec.last
    assert _names(sent) == ["GetWeather", "get_time", "search", "lookup"]
    assert all(t["type"] == "function" for t in sent["tools"])
    weather = sent["tools"][0]["function"]
    assert weather["description"] == "Get the current weather for a city."
    assert weather["parameters"]["properties"]["city"]["type"] == "string"
    assert weather["parameters"]["required"] == ["city"]
    assert sent["tools"][1]["function"]["parameters"]["properties"]["tz"]["type"] == "string"
    assert sent["tools"][3] == DICT_TOOL
    assert "tool_choice" not in sent  # the server default (auto) unless asked


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("required", "required"),
        ("any", "required"),
        ("none", "none"),
        ("GetWeather", {"type": "function", "function": {"name": "GetWeather"}}),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {"type": "function", "function": {"name": "get_time"}},
        ),
    ],
)
def test_tool_choice_reaches_payload(choice: Any, expected: Any, mock_model: Any) -> None:
    model, rec = mock_model()
    model.bind_tools([GetWeather, get_time], tool_choice=choice).invoke("hi")
    assert rec.last["tool_choice"] == expected


def test_tool_choice_true_with_one_tool_names_it(mock_model: Any) -> None:
    model, rec = mock_model()
    model.bind_tools([GetWeather], tool_choice=True).invoke("hi")
    assert rec.last["tool_choice"] == {"type": "function", "function": {"name": "GetWeather"}}


def test_tool_choice_naming_an_unbound_tool_raises(mock_model: Any) -> None:
    model, _ = mock_model()
    with pytest.raises(ValueError, match="nope"):
        model.bind_tools([GetWeather], tool_choice="nope")


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_tool_calls_reaches_payload(parallel: bool, mock_model: Any) -> None:
    model, rec = mock_model()
    model.bind_tools([GetWeather], parallel_tool_calls=parallel).invoke("hi")
    assert rec.last["parallel_tool_calls"] is parallel


def test_bound_tool_call_response_is_parsed(mock_model: Any) -> None:
    body = chat_body(
        None,
        finish_reason="tool_calls",
        tool_calls=[
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "GetWeather", "arguments": '{"city": "Rome"}'},
            }
        ],
    )
    model, _ = mock_model(lambda p, r: httpx.Response(200, json=body))
    msg = model.bind_tools([GetWeather]).invoke("weather in Rome?")
    assert msg.tool_calls == [
        {"name": "GetWeather", "args": {"city": "Rome"}, "id": "call_1", "type": "tool_call"}
    ]


# -- structured output ---------------------------------------------------------------------------


class Person(BaseModel):
    """A person."""

    name: str
    age: int


class PersonTD(TypedDict):
    """A person."""

    name: str
    age: int


PERSON_DICT_SCHEMA = {
    "title": "Person",
    "description": "A person.",
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}

ANSWER = {"name": "Ann", "age": 33}


def _json_answer(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
    if payload.get("tools"):
        name = payload["tools"][0]["function"]["name"]
        return httpx.Response(
            200,
            json=chat_body(
                None,
                finish_reason="tool_calls",
                tool_calls=[
                    {
                        "id": "call_s",
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(ANSWER)},
                    }
                ],
            ),
        )
    return httpx.Response(200, json=chat_body(json.dumps(ANSWER)))


SCHEMAS = {"pydantic": Person, "typeddict": PersonTD, "dict": PERSON_DICT_SCHEMA}


def _expected(kind: str) -> Any:
    return Person(**ANSWER) if kind == "pydantic" else ANSWER


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_structured_output_json_schema_is_the_default(kind: str, mock_model: Any) -> None:
    model, rec = mock_model(_json_answer)
    before = model.model_dump()
    result = model.with_structured_output(SCHEMAS[kind]).invoke("who?")
    assert result == _expected(kind)
    rf = rec.last["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["name"] == ("PersonTD" if kind == "typeddict" else "Person")
    schema = rf["json_schema"]["schema"]
    assert set(schema["properties"]) == {"name", "age"}
    assert sorted(schema["required"]) == ["age", "name"]
    assert "tools" not in rec.last
    assert model.model_dump() == before


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_structured_output_function_calling(kind: str, mock_model: Any) -> None:
    model, rec = mock_model(_json_answer)
    before = model.model_dump()
    result = model.with_structured_output(SCHEMAS[kind], method="function_calling").invoke("who?")
    assert result == _expected(kind)
    sent = rec.last
    name = sent["tools"][0]["function"]["name"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": name}}
    assert "response_format" not in sent
    assert model.model_dump() == before


@pytest.mark.parametrize("kind", ["pydantic", "dict"])
def test_structured_output_json_mode(kind: str, mock_model: Any) -> None:
    model, rec = mock_model(_json_answer)
    schema = SCHEMAS[kind] if kind == "pydantic" else None
    result = model.with_structured_output(schema, method="json_mode").invoke("who? answer in JSON")
    assert result == _expected(kind)
    assert rec.last["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_include_raw(method: str, mock_model: Any) -> None:
    model, _ = mock_model(_json_answer)
    before = model.model_dump()
    out = model.with_structured_output(Person, method=method, include_raw=True).invoke("who?")
    assert set(out) == {"raw", "parsed", "parsing_error"}
    assert out["parsed"] == Person(**ANSWER)
    assert out["parsing_error"] is None
    assert out["raw"].response_metadata["finish_reason"] in ("stop", "tool_calls")
    assert model.model_dump() == before


def test_structured_output_include_raw_keeps_parsing_error(mock_model: Any) -> None:
    model, _ = mock_model(lambda p, r: httpx.Response(200, json=chat_body("not json at all")))
    out = model.with_structured_output(Person, include_raw=True).invoke("who?")
    assert out["parsed"] is None
    assert out["parsing_error"] is not None
    assert out["raw"].content == "not json at all"


def test_structured_output_keeps_thinking_switch_and_model_unchanged(mock_model: Any) -> None:
    model, rec = mock_model(_json_answer)
    before = model.model_dump()
    model.with_structured_output(Person).invoke("who?")
    model.bind_tools([GetWeather], tool_choice="any").invoke("hi")
    assert rec.payloads[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert model.model_dump() == before
    model.invoke("plain")
    assert "tools" not in rec.last and "response_format" not in rec.last
