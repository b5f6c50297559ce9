"""The api key is sent to the server and shown nowhere else: repr, dumps, errors, logs. Credential headers in
``default_headers`` show as ``***``; a URL's ``user:password@`` and an api key, which would both need the one
Authorization header, are refused together at construction.

Covers: chat_models.py, _errors.py, _urls.py, _calls/fields.py."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from _qwen_fakes import MOCK_URL
from langchain_core.load import dumpd, dumps

from langchain_qwen_fast import AuthenticationError, BatchedChatQwen, ServerError

SECRET = "sk-SECRET-7f3a9c-do-not-print"
PROMPT = "my-private-prompt-text-4821"


def test_authorization_header_carries_the_key(mock_model: Any) -> None:
    model, rec = mock_model(api_key=SECRET)
    model.invoke("hi")
    assert rec.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"


def test_key_from_env_is_sent(mock_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_API_KEY", "sk-from-env-123")
    model, rec = mock_model()
    model.invoke("hi")
    assert rec.requests[0]["headers"]["authorization"] == "Bearer sk-from-env-123"


def test_no_key_means_no_authorization_header(
    mock_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QWEN_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model, rec = mock_model()
    model.invoke("hi")
    assert "authorization" not in rec.requests[0]["headers"]


def test_default_headers_are_sent(mock_model: Any) -> None:
    model, rec = mock_model(default_headers={"X-Team": "search"})
    model.invoke("hi")
    assert rec.requests[0]["headers"]["x-team"] == "search"


def test_key_absent_from_repr_str_dump_and_ls_params(mock_model: Any) -> None:
    model, _ = mock_model(api_key=SECRET)
    assert model.api_key is not None and model.api_key.get_secret_value() == SECRET
    for text in (
        repr(model),
        str(model),
        model.model_dump_json(),
        str(model.model_dump()),
        dumps(model),
        json.dumps(dumpd(model)),
        str(model._get_ls_params()),
        str(model._identifying_params),
        str(model._get_invocation_params()),
    ):
        assert SECRET not in text


def test_key_absent_from_auth_error_message(mock_model: Any) -> None:
    model, _ = mock_model(
        lambda p, r: httpx.Response(
            401, json={"error": {"message": "Invalid API key", "code": 401}}
        ),
        api_key=SECRET,
    )
    with pytest.raises(AuthenticationError) as ei:
        model.invoke("hi")
    exc = ei.value
    assert "Invalid API key" in str(exc)
    for text in (str(exc), repr(exc), str(exc.body), str(exc.url), str(exc.args)):
        assert SECRET not in text


def test_key_and_prompt_absent_from_debug_logs(
    mock_model: Any, fast_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    model, _ = mock_model(api_key=SECRET)
    failing, frec = mock_model(
        lambda p, r: httpx.Response(503, json={"error": {"message": "overloaded", "code": 503}}),
        api_key=SECRET,
        base_url=[MOCK_URL, "http://127.0.0.2:9/v1"],
        max_retries=2,
    )
    unauthorised, _ = mock_model(
        lambda p, r: httpx.Response(401, json={"error": {"message": "bad key", "code": 401}}),
        api_key=SECRET,
    )
    with caplog.at_level(logging.DEBUG):
        assert model.invoke(PROMPT).content == f"echo:{PROMPT}"
        for _ in range(3):
            with pytest.raises(ServerError):
                failing.invoke(PROMPT)
        with pytest.raises(AuthenticationError):
            unauthorised.invoke(PROMPT)
    assert frec.count == 9
    ours = [r for r in caplog.records if r.name.startswith("langchain_qwen_fast")]
    assert ours, "expected some DEBUG records from langchain_qwen_fast (replica ejection)"
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert SECRET not in text
    assert PROMPT not in " ".join(r.getMessage() for r in ours)


def test_credentials_in_a_base_url_appear_in_neither_repr_nor_stats(mock_model: Any) -> None:
    model, _ = mock_model(base_url=["http://alice:s3cret@127.0.0.1:9/v1", "http://127.0.0.2:9/v1"])
    assert model.invoke("hi").content == "echo:hi"
    text = repr(model) + str(model)
    assert "s3cret" not in text and "alice" not in text and "***@127.0.0.1:9/v1" in text
    keys = list(model.stats()["endpoints"])
    assert keys == ["http://***@127.0.0.1:9/v1", "http://127.0.0.2:9/v1"]
    assert "s3cret" not in str(model.stats())
    assert model.base_urls[0] == "http://alice:s3cret@127.0.0.1:9/v1"  # the field itself keeps what was given


TOKEN = "tok-HEADER-SECRET-5521"


def test_credential_headers_show_as_stars_in_repr_stats_errors_and_logs(
    mock_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-API-Key": TOKEN, "X-Session-Token": TOKEN, "X-Team": "search"}
    model, rec = mock_model(
        lambda p, r: httpx.Response(401, json={"error": {"message": "Unauthorized", "code": 401}}),
        default_headers=headers, max_retries=0,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as ei:
        model.invoke("hi")
    assert rec.requests[0]["headers"]["authorization"] == f"Bearer {TOKEN}"  # sent as given
    shown = repr(model)
    assert "'Authorization': '***'" in shown and "'X-API-Key': '***'" in shown and "'X-Session-Token': '***'" in shown
    assert "'X-Team': 'search'" in shown  # other headers stay readable
    for text in (shown, str(model), str(model.stats()), caplog.text, str(ei.value), repr(ei.value.args)):
        assert TOKEN not in text


@pytest.mark.parametrize(("source", "named"), [
    ("argument", "the api_key argument"),
    ("OPENAI_API_KEY", "the environment variable OPENAI_API_KEY"),
    ("QWEN_API_KEY", "the environment variable QWEN_API_KEY"),
    ("header", "an Authorization header in default_headers"),
])
def test_url_credentials_with_an_api_key_are_refused_naming_both_sources(
    monkeypatch: pytest.MonkeyPatch, source: str, named: str
) -> None:
    for var in ("QWEN_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    fields: dict[str, Any] = {}
    if source == "argument":
        fields["api_key"] = SECRET
    elif source == "header":
        fields["default_headers"] = {"Authorization": f"Bearer {SECRET}"}
    else:
        monkeypatch.setenv(source, SECRET)
    with pytest.raises(ValueError) as ei:
        BatchedChatQwen(base_url="http://proxyuser:pw-SECRET-3@127.0.0.1:18809/v1", **fields)
    msg = str(ei.value)
    assert "base_url 'http://***@127.0.0.1:18809/v1' carries user:password" in msg and named in msg
    assert "one Authorization header" in msg and "take user:password@ out of base_url" in msg
    if source != "header":
        assert "api_key=None" in msg
    if source not in ("argument", "header"):
        assert f"unset {source}" in msg
    assert SECRET not in msg and "pw-SECRET-3" not in msg and "proxyuser" not in msg


def test_url_credentials_alone_or_with_the_empty_placeholder_send_no_bearer(
    mock_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("QWEN_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for fields in ({}, {"api_key": "EMPTY"}):
        model, rec = mock_model(base_url="http://proxyuser:pw@127.0.0.1:9/v1", **fields)
        model.invoke("hi")
        sent = rec.requests[0]["headers"].get("authorization", "")
        assert "Bearer" not in sent, sent
