"""``qwen-fast``: one entry point, one line per subcommand in ``COMMANDS``, each imported on use.

Importing a subcommand only when it runs keeps ``qwen-fast --help`` fast and lets the core install
(no extras) list every command: what a command needs beyond the core (langchain-openai for the demo,
redis for the worker) is checked before it is imported, and a missing extra is one line naming the
``pip install`` that brings it, exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

DIST = "langchain-qwen-fast"


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose ``main(argv) -> int`` runs it, and what it needs beyond the core."""

    module: str
    summary: str
    #: the extra that brings what it needs (named in the error when something is missing)
    extra: str | None = None
    #: modules checked before the command is imported
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.summary or "\n" in self.summary:
            raise ValueError(f"{self.module}: a command's summary is one non-empty line")
        if self.needs and not self.extra:
            raise ValueError(f"{self.module}: name the extra that brings {', '.join(self.needs)}")


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "langchain_qwen_fast.cli.demo",
        "one LCEL pipeline three ways (ChatOpenAI.batch, BatchedChatQwen.batch/.abatch), with a table",
        "bench",
        ("langchain_openai",),
    ),
    "bench": Command(
        "langchain_qwen_fast.bench.cli",
        "the CPU benchmark: every scenario beside ChatOpenAI on the simulator; JSON lines, tables, a plot",
        "bench",
        ("langchain_openai",),
    ),
    "doctor": Command(
        "langchain_qwen_fast.doctor", "check a vLLM/SGLang server; each problem comes with the flag that fixes it"
    ),
    "engines": Command(
        "langchain_qwen_fast.cli.engines",
        "start N vLLM servers per GPU under one MPS daemon; print their base_url list",
    ),
    "worker": Command(
        "langchain_qwen_fast.cli.worker",
        "consume a Redis stream of jobs and answer them with BatchedChatQwen",
        "queue",
        ("redis",),
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: qwen-fast COMMAND [options]   (qwen-fast COMMAND --help: its options and defaults)",
        "",
        "BatchedChatQwen's tools: a drop-in ChatOpenAI that keeps a Qwen3-0.6B vLLM/SGLang server busy.",
        "",
        "commands:",
        *(f"  {name:{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help     show this help and exit",
        "  -V, --version  print the version and exit",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help", "help"):
        print(usage())
        return 0
    if first in ("-V", "--version"):
        from langchain_qwen_fast import __version__

        print(f"qwen-fast {__version__}")
        return 0
    cmd = COMMANDS.get(first)
    if cmd is None:
        print(f"qwen-fast: unknown command {first!r} (choose from {', '.join(COMMANDS)}; see qwen-fast --help)",
              file=sys.stderr)
        return 2
    asking_help = any(a in ("-h", "--help") for a in rest)
    missing = [] if asking_help else [m for m in cmd.needs if importlib.util.find_spec(m) is None]
    if missing:
        return _fail(first, _install_hint(cmd, missing))
    try:
        run: Callable[[list[str]], int | None] = importlib.import_module(cmd.module).main
        return int(run(rest) or 0)
    except ModuleNotFoundError as e:
        hint = _explain(first, cmd, e)
        if hint is None:  # not a missing extra: a bug, whose traceback is the useful message
            raise
        return _fail(first, hint)


def _fail(name: str, message: str) -> int:
    print(f"qwen-fast {name}: {message}", file=sys.stderr)
    return 2


def _install_hint(cmd: Command, modules: list[str], extra: str | None = None) -> str:
    extra = extra or cmd.extra
    names = " and ".join(m.replace("_", "-") for m in modules)
    return f"needs {names}, which the core install leaves out: pip install '{DIST}[{extra}]'"


def _explain(name: str, cmd: Command, e: ModuleNotFoundError) -> str | None:
    """The one-line message for a module that is missing while importing or running ``cmd``, or None."""
    missing = e.name or ""
    top = missing.split(".")[0]
    if missing == cmd.module or (top == "langchain_qwen_fast" and cmd.module.startswith(missing + ".")):
        return f"not available in this installation of {DIST} (no module {cmd.module}); upgrade {DIST}"
    extras = extras_by_module().get(top, [])
    if top in cmd.needs or (cmd.extra and cmd.extra in extras):
        return _install_hint(cmd, [top])
    if extras:  # listed by another extra ("test" last: it is for developers)
        return _install_hint(cmd, [top], sorted(extras, key=lambda x: (x == "test", x))[0])
    return None


def extras_by_module() -> dict[str, list[str]]:
    """Import name -> the extras that bring it, from the installed package's metadata (empty if not installed)."""
    try:
        requires = importlib.metadata.requires(DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    out: dict[str, list[str]] = {}
    for req in requires:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*).*extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if m:
            out.setdefault(re.sub(r"[-.]+", "_", m.group(1)).lower(), []).append(m.group(2))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
