"""``qwen-fast``: demo, bench and doctor. Each subcommand lives in its own module, imported on use."""

from __future__ import annotations

import sys
from collections.abc import Callable


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run: Callable[[list[str]], int | None]
    usage = "usage: qwen-fast {demo,bench,doctor} [options]   (qwen-fast CMD --help for each)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "demo":
        from langchain_qwen_fast.demo import main as run
    elif cmd == "bench":
        from langchain_qwen_fast.bench.cli import main as run
    elif cmd == "doctor":
        from langchain_qwen_fast.doctor import main as run
    else:
        print(f"unknown command {cmd!r}\n{usage}", file=sys.stderr)
        return 2
    return int(run(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
