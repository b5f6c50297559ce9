"""``python -m langchain_qwen_fast.doctor``: the same as ``qwen-fast doctor``."""

from __future__ import annotations

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
