"""``qwen-fast doctor``'s command line: the defaults BatchedChatQwen would use, then one run over
every replica, printed as a table or as JSON. Exit code 0 when nothing failed, 1 otherwise."""

from __future__ import annotations

import argparse
import json
import os
import sys

from langchain_qwen_fast._urls import redact_url
from langchain_qwen_fast.cli.help import DefaultsHelpFormatter

from .replicas import diagnose, split_urls


def model_defaults() -> tuple[str | list[str], str, str | None]:
    """What ``BatchedChatQwen()`` would use: its own env-aware field defaults (``base_url`` as
    the field holds it: one URL, a comma-separated ``QWEN_BASE_URL``, or a list)."""
    from langchain_qwen_fast.chat_models import BatchedChatQwen

    f = BatchedChatQwen.model_fields
    base = f["base_url"].default_factory()  # type: ignore[call-arg,misc]
    model = f["model_name"].default_factory()  # type: ignore[call-arg,misc]
    key = f["api_key"].default_factory()  # type: ignore[call-arg,misc]
    base = [str(u) for u in base] if isinstance(base, (list, tuple)) else str(base)
    return base, model, (key.get_secret_value() if key is not None else None)  # model may be a DefaultName


def model_source(given: str | None) -> str:
    """Where the model name came from, in the words the ``model`` check quotes."""
    if given is not None:
        return "--model"
    if "QWEN_MODEL" in os.environ:
        return "from QWEN_MODEL"
    return "BatchedChatQwen's default: no --model given and QWEN_MODEL is unset"


def main(argv: list[str]) -> int:
    base, model, key = model_defaults()
    shown = ",".join(redact_url(u) for u in split_urls(base))
    ap = argparse.ArgumentParser(
        prog="qwen-fast doctor",
        formatter_class=DefaultsHelpFormatter,
        description="Check vLLM/SGLang servers for BatchedChatQwen. Each check says ok, warn, "
        "fail, skipped or info, what it found, and the flag or URL that fixes it; with several "
        "replicas, each is checked and so is whether they serve the same models and template. "
        "Exit code 1 when a check fails.")
    ap.add_argument("--base-url", action="append", metavar="URL[,URL...]",
                    help="a server, or replicas: repeat the flag or separate URLs by commas "
                    f"(default: QWEN_BASE_URL/OPENAI_BASE_URL, else {shown})")
    ap.add_argument("--model", help=f"the served name you use (default: QWEN_MODEL or {model})")
    ap.add_argument("--api-key", help="default: QWEN_API_KEY / OPENAI_API_KEY; never printed")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default 15)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    urls = split_urls(args.base_url) or split_urls(base)
    if not urls:
        ap.error("--base-url is empty")
    result = diagnose(urls, model=args.model or model, api_key=args.api_key or key,
                      timeout=args.timeout, model_source=model_source(args.model))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(result.render_text(color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return result.exit_code
