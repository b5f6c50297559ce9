"""_sse.py: SSE lines -> event objects, golden cases written by hand (``golden/sse.json``).

Covers: _upstream/sse.py."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest

from langchain_qwen_fast import _errors
from langchain_qwen_fast._upstream.sse import DONE, sse_event

_GOLDEN = json.loads((Path(__file__).parent / "golden" / "sse.json").read_text())
URL = "http://127.0.0.1:8000/v1/chat/completions"


def parse_sse(lines: Iterable[bytes], url: str = "") -> Iterator[dict[str, Any]]:
    """SSE lines -> event objects up to ``[DONE]``, one ``sse_event`` per line, as the transport reads a stream."""
    for line in lines:
        event = sse_event(line, url)
        if event is DONE:
            return
        if event is not None:
            yield event


@pytest.mark.parametrize("case", _GOLDEN["cases"], ids=itemgetter("name"))
def test_sse_lines_become_the_written_events(case: dict[str, Any]) -> None:
    assert list(parse_sse((x.encode() for x in case["lines"]), URL)) == case["events"]


@pytest.mark.parametrize("case", _GOLDEN["errors"], ids=itemgetter("name"))
def test_sse_lines_that_are_not_events_raise_the_written_error_after_the_events_before_them(
    case: dict[str, Any]
) -> None:
    got: list[dict[str, Any]] = []
    with pytest.raises(getattr(_errors, case["error"]), match=case["match"]) as ei:
        for event in parse_sse((x.encode() for x in case["lines"]), URL):
            got.append(event)
    assert len(got) == case["events_before"]
    assert URL in str(ei.value)


def test_one_line_at_a_time_says_done_none_or_the_event() -> None:
    assert sse_event(b"data: [DONE]\n", URL) is DONE
    assert sse_event(b"\n", URL) is None
    assert sse_event(b": ping\n", URL) is None
    assert sse_event(b'data: {"x": [1]}\n', URL) == {"x": [1]}
