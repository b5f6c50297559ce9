"""Server-sent events of an OpenAI-compatible stream: lines in, event objects out. No I/O.

vLLM and SGLang send one ``data: {json}`` line per event, a blank line after each, and
``data: [DONE]`` at the end; an error that happens mid-stream arrives as ``data: {"error": ...}``.
Other SSE lines (comments, ``event:``/``id:``/``retry:`` fields, and, as the SSE rules say, lines
of no known field) carry nothing for us and are skipped. A ``data:`` line that is not a JSON
object, or a bare JSON line (a server that ignored ``stream: true``), is a broken server or
proxy, never something to hand on as an event or to skip.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import orjson

from langchain_qwen_fast._errors import from_status, invalid_body


class _Done(enum.Enum):
    """The ``data: [DONE]`` line: the stream finished as the server meant it to (an enum, so that
    ``event is DONE`` narrows the type)."""

    DONE = "[DONE]"


DONE: Final = _Done.DONE


def sse_event(line: bytes, url: str) -> dict[str, Any] | Literal[_Done.DONE] | None:
    """One line -> its event object, :data:`DONE`, or None for a line that carries no event.

    Raises ``InvalidResponseError`` for a data line that is not a JSON object, and the error an
    HTTP status would give (``from_status``) for an error event, keeping the server's message.
    """
    line = line.strip()
    if not line.startswith(b"data:"):
        if line.startswith(b"{"):  # not SSE at all: a whole JSON answer, from a server that ignored stream=true
            raise invalid_body(200, line, url, "a JSON body where an SSE stream was asked for")
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return DONE
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise invalid_body(200, data, url, "an SSE event that is not JSON") from None
    if not isinstance(obj, dict):
        raise invalid_body(200, data, url, f"an SSE event that is a JSON {type(obj).__name__}, not an object")
    if obj.get("error"):
        err = obj["error"]
        code = err.get("code") if isinstance(err, dict) else None
        raise from_status(code if isinstance(code, int) and code >= 400 else 500, data, url)
    return obj
