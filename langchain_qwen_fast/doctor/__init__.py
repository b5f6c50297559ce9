"""``qwen-fast doctor``: check vLLM/SGLang servers the way a new user needs them checked.

    qwen-fast doctor [--base-url URL[,URL...]]... [--model NAME] [--api-key KEY] [--timeout S] [--json]

Every check ends ok / warn / fail / skipped / info with a one-line finding and, where something is
wrong, the one change that fixes it: the ``vllm serve`` flag to add, or the URL or field to use.
A ``base_url`` list (repeated ``--base-url``, commas, or a comma-separated ``QWEN_BASE_URL``) is
checked replica by replica, then across replicas (same models, same template). Exit code 0 when
nothing failed, 1 otherwise. The defaults come from :class:`BatchedChatQwen` itself
(``QWEN_BASE_URL``, ``QWEN_MODEL``, ``QWEN_API_KEY``, ...), so without arguments it checks what the
model would use.

Modules: ``checks`` (one server), ``replicas`` (a list, and the comparison), ``report`` (results,
table, JSON), ``probes`` (request bodies, fixes, answer helpers), ``cli`` (the command line).
"""

from __future__ import annotations

from .checks import run_checks
from .cli import main
from .probes import (
    FIX_AUTO_TOOLS,
    FIX_PRIORITY,
    FIX_REASONING,
    FIX_STRUCTURED,
    FIX_TEMPLATE,
    FIX_TOOLS,
    FIX_WIRE,
)
from .replicas import FIX_SAME, diagnose, split_urls
from .report import ACROSS, CHECKS, FAIL, INFO, OK, SKIPPED, STATUSES, WARN, Check, Diagnosis, Report

__all__ = [
    "ACROSS", "CHECKS", "FAIL", "FIX_AUTO_TOOLS", "FIX_PRIORITY", "FIX_REASONING", "FIX_SAME",
    "FIX_STRUCTURED", "FIX_TEMPLATE", "FIX_TOOLS", "FIX_WIRE", "INFO", "OK", "SKIPPED", "STATUSES", "WARN",
    "Check", "Diagnosis", "Report", "diagnose", "main", "run_checks", "split_urls",
]
