"""Kept so that ``python -m langchain_qwen_fast.integrations.worker`` still runs the queue worker; the command
is ``cli/worker.py``."""

import sys

from langchain_qwen_fast.cli.worker import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
