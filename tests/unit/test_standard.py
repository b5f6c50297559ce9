"""langchain-tests' ChatModelUnitTests: the external check that BatchedChatQwen is a proper chat model.

Covers: chat_models.py."""

from __future__ import annotations

import pytest
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_qwen_fast import BatchedChatQwen


class TestBatchedChatQwenStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BatchedChatQwen]:
        return BatchedChatQwen

    @property
    def chat_model_params(self) -> dict:
        return {"model": "Qwen-0.6B", "base_url": "http://127.0.0.1:9/v1", "temperature": 0, "api_key": "test-key"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"QWEN_API_KEY": "env-key", "QWEN_BASE_URL": "http://127.0.0.1:8000/v1", "QWEN_MODEL": "Qwen-0.6B"},
            {},
            {"api_key": "env-key", "base_url": "http://127.0.0.1:8000/v1", "model_name": "Qwen-0.6B"},
        )

    @pytest.mark.xfail(
        reason="langchain-core 1.8 load(allowed_objects='all') permits only classes on core's built-in "
        "allowlist, so no third-party integration can be loaded; the same round trip with this class "
        "allowed explicitly is tests/unit/test_serialization.py",
        strict=True,
    )
    def test_serdes(self, model, snapshot) -> None:  # type: ignore[no-untyped-def]
        super().test_serdes(model, snapshot)
