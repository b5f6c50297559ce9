"""Kept so that ``python -m langchain_qwen_fast.launch`` still starts the servers; the command is ``cli/engines.py``."""

import sys

from langchain_qwen_fast.cli.engines import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
