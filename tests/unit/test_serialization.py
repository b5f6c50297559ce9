"""Serialization keeps the api key out and round-trips when the class is allowed explicitly.

Covers: chat_models.py."""

from __future__ import annotations

import json

from langchain_core.load import dumpd, dumps, load

from langchain_qwen_fast import BatchedChatQwen


def test_dumpd_replaces_api_key_with_secret_reference(monkeypatch):
    monkeypatch.setenv("QWEN_API_KEY", "sk-very-secret-value")
    model = BatchedChatQwen(base_url="http://127.0.0.1:9/v1", max_tokens=7)
    ser = dumpd(model)
    assert ser["kwargs"]["api_key"] == {"lc": 1, "type": "secret", "id": ["QWEN_API_KEY"]}
    assert "sk-very-secret-value" not in dumps(model)
    assert "sk-very-secret-value" not in json.dumps(ser)


def test_load_round_trip_restores_fields_and_key_from_env(monkeypatch):
    monkeypatch.setenv("QWEN_API_KEY", "sk-from-env")
    model = BatchedChatQwen(base_url="http://127.0.0.1:9/v1", max_tokens=7, enable_thinking=True,
                            wire_mode="completions")
    loaded = load(dumpd(model), valid_namespaces=["langchain_qwen_fast"], allowed_objects=[BatchedChatQwen],
                  secrets_from_env=True)
    assert isinstance(loaded, BatchedChatQwen)
    assert loaded.asdict() == model.asdict()
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == "sk-from-env"
    assert loaded.wire_mode == "completions" and loaded.enable_thinking is True
