"""``bind_tools`` and ``with_structured_output``. Both return new runnables; the model is never mutated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    names = [t["function"]["name"] for t in tools]
    if choice is None or isinstance(choice, dict):
        return choice
    if isinstance(choice, bool):
        if not choice:
            return None
        if len(tools) != 1:
            raise ValueError(f"tool_choice=True needs exactly one tool, got {len(tools)}")
        return {"type": "function", "function": {"name": names[0]}}
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    if isinstance(choice, str):
        if choice not in names:
            raise ValueError(f"tool_choice {choice!r} names no bound tool; bound tools: {names}")
        return {"type": "function", "function": {"name": choice}}
    raise ValueError(f"unsupported tool_choice {choice!r}")


def bind_tools(
    model: BaseChatModel,
    tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
    *,
    tool_choice: Any = None,
    strict: bool | None = None,
    parallel_tool_calls: bool | None = None,
    **kwargs: Any,
) -> Runnable[Any, Any]:
    formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
    choice = _tool_choice(tool_choice, formatted)
    if choice is not None:
        kwargs["tool_choice"] = choice
    if parallel_tool_calls is not None:
        kwargs["parallel_tool_calls"] = parallel_tool_calls
    return model.bind(tools=formatted, **kwargs)


def _schema_name(schema: Any, json_schema: dict[str, Any]) -> str:
    return str(json_schema.get("title") or getattr(schema, "__name__", None) or "output")


def with_structured_output(
    model: BaseChatModel,
    schema: dict[str, Any] | type | None,
    *,
    method: str = "json_schema",
    include_raw: bool = False,
    strict: bool | None = None,
    **kwargs: Any,
) -> Runnable[Any, Any]:
    if kwargs:
        raise ValueError(f"unexpected keyword arguments: {sorted(kwargs)}")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    ls_format = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    if method == "function_calling":
        if schema is None:
            raise ValueError("schema is required for method='function_calling'")
        tool = convert_to_openai_tool(schema, strict=strict)
        name = tool["function"]["name"]
        llm = bind_tools(model, [schema], tool_choice=name, strict=strict, parallel_tool_calls=False,
                         ls_structured_output_format=ls_format)
        parser: Runnable[Any, Any] = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    elif method == "json_schema":
        if schema is None:
            raise ValueError("schema is required for method='json_schema'")
        json_schema = convert_to_json_schema(schema)
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(schema, json_schema), "schema": json_schema,
                            **({"strict": strict} if strict is not None else {})},
        }
        llm = model.bind(response_format=response_format, ls_structured_output_format=ls_format)
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
    elif method == "json_mode":
        llm = model.bind(response_format={"type": "json_object"}, ls_structured_output_format=ls_format)
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
    else:
        raise ValueError(f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}")

    if not include_raw:
        return llm | parser
    parser_assign = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
    with_fallback = parser_assign.with_fallbacks([parser_none], exception_key="parsing_error")
    return RunnableMap(raw=llm) | with_fallback
