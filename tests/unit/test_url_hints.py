"""The URL a message suggests when a base_url is not the server's API prefix: right for each shape a user
types (an endpoint at the end, ``/v2``, ``/api/v1``, no ``/v1``), never a worse URL.

Covers: _urls.py, _errors.py, _calls/fields.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from langchain_qwen_fast import BatchedChatQwen, NotFoundError
from langchain_qwen_fast._urls import base_url_candidates, suggest_base_url

ROOT = "http://127.0.0.1:9"


@pytest.mark.parametrize(("given", "expected"), [
    (ROOT, [f"{ROOT}/v1"]),
    (f"{ROOT}/", [f"{ROOT}/v1"]),
    (f"{ROOT}/v2", [f"{ROOT}/v1"]),
    (f"{ROOT}/api/v1", [f"{ROOT}/v1"]),
    (f"{ROOT}/api", [f"{ROOT}/api/v1", f"{ROOT}/v1"]),
    (f"{ROOT}/v1/chat/completions", [f"{ROOT}/v1"]),
    (f"{ROOT}/v1/completions/", [f"{ROOT}/v1"]),
    (f"{ROOT}/chat/completions", [f"{ROOT}/v1"]),
    (f"{ROOT}/v1/models", [f"{ROOT}/v1"]),
    (f"{ROOT}/v1", []),
])
def test_candidates_for_each_shape_never_repeat_or_grow_the_url(given: str, expected: list[str]) -> None:
    assert base_url_candidates(given) == expected
    assert suggest_base_url(given) == (expected[0] if expected else None)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/completions", "/chat/completions",
                                  "/v1/models"])
def test_a_base_url_ending_with_an_endpoint_is_refused_with_the_prefix_to_use(path: str) -> None:
    with pytest.raises(ValueError) as ei:
        BatchedChatQwen(base_url=ROOT + path)
    msg = str(ei.value)
    assert f"base_url={ROOT + '/v1'!r}" in msg and "ends with the endpoint" in msg
    assert f"{ROOT}{path}/v1" not in msg  # the old hint appended /v1 to the endpoint


def _not_found(payload: dict[str, Any], request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"detail": "Not Found"})


@pytest.mark.parametrize(("path", "suggested"), [
    ("", f"{ROOT}/v1"), ("/v2", f"{ROOT}/v1"), ("/api/v1", f"{ROOT}/v1"), ("/api", f"{ROOT}/api/v1"),
])
@pytest.mark.parametrize("wire", ["chat", "completions"])
def test_a_404_under_a_wrong_prefix_names_the_v1_url(mock_model: Any, path: str, suggested: str, wire: str) -> None:
    model, _ = mock_model(_not_found, base_url=ROOT + path, wire_mode=wire, max_tokens=4)
    with pytest.raises(NotFoundError) as ei:
        model.invoke("hi")
    msg = str(ei.value)
    assert f'use base_url="{suggested}"' in msg, msg
    if suggested != f"{ROOT}{path}/v1":  # the old hint appended /v1 to whatever was given: /v2/v1, /api/v1/v1
        assert f'{ROOT}{path}/v1"' not in msg, msg


def test_a_404_for_the_model_suggests_no_url(mock_model: Any) -> None:
    unserved = {"error": {"message": "The model `x` does not exist."}}
    model, _ = mock_model(lambda p, r: httpx.Response(404, json=unserved), base_url=f"{ROOT}/api/v1")
    with pytest.raises(NotFoundError) as ei:
        model.invoke("hi")
    assert "use base_url=" not in str(ei.value)
