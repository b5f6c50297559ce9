"""langchain-qwen-fast: a drop-in ChatOpenAI replacement that keeps a Qwen3-0.6B server busy."""

from langchain_qwen_fast._errors import (
    AllReplicasDownError,
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ContextLengthError,
    DeadlineExceededError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from langchain_qwen_fast._loop.run_batch import run_batch, run_batch_as_completed
from langchain_qwen_fast._qwen import QWEN3_NON_THINKING, QWEN3_THINKING, SamplingPreset, render_chatml
from langchain_qwen_fast.chat_models import BatchedChatQwen

__all__ = [
    "QWEN3_NON_THINKING",
    "QWEN3_THINKING",
    "APIConnectionError",
    "AllReplicasDownError",
    "AuthenticationError",
    "BadRequestError",
    "BatchedChatQwen",
    "ClientClosedError",
    "ContextLengthError",
    "DeadlineExceededError",
    "InvalidResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "SamplingPreset",
    "ServerError",
    "render_chatml",
    "run_batch",
    "run_batch_as_completed",
]
__version__ = "0.1.0"
