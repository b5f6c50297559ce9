"""The import contracts in pyproject.toml (``[tool.importlinter]``): they hold on the tree, and each one fails
on a violation planted in a copy of the package, type-only imports included.

Covers: pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[2]


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
           "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, not the editable install
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "langchain_qwen_fast", tmp_path / "langchain_qwen_fast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / "langchain_qwen_fast" / module
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text, module
    path.write_text(text.replace(anchor, anchor + line + "\n", 1))


def test_the_package_keeps_every_contract(tmp_path: Path) -> None:
    out = _lint(_copy(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout
    for contract in ("layers point down", "leaves", "tools beside the pipeline"):
        assert _verdict(out.stdout, contract) == "KEPT"


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the engines (lowest layer) reaching up to the dispatcher
        ("_engines/base.py", "from langchain_qwen_fast._dispatch.item import Item", "layers point down"),
        # a type-only upward import counts as well (the old _scheduler -> _batcher.Item was one)
        ("_dispatch/scheduler.py",
         "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from langchain_qwen_fast._calls.request import CallSpec",
         "layers point down"),
        # the replicas reaching up to the model class
        ("_upstream/replicas.py", "import langchain_qwen_fast.chat_models", "layers point down"),
        # a leaf importing a layer
        ("_qwen.py", "import langchain_qwen_fast._upstream.sse", "leaves"),
        # a tool importing a private layer instead of the public face
        ("doctor/report.py", "from langchain_qwen_fast._loop.runtime import get_runtime", "tools beside the pipeline"),
    ],
    ids=["engines->dispatch", "type-only dispatch->calls", "upstream->chat_models", "leaf->upstream",
         "doctor->loop"],
)
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    _plant(tree, module, line)
    out = _lint(tree)
    assert out.returncode != 0, out.stdout
    assert "1 broken" in out.stdout
    assert _verdict(out.stdout, contract) == "BROKEN", out.stdout


def _verdict(report: str, contract: str) -> str:
    """KEPT or BROKEN for the contract whose name starts with ``contract`` (names wrap in the report)."""
    text = " ".join(report.split())
    m = re.search(re.escape(contract) + r".*? (KEPT|BROKEN)\b", text)
    assert m is not None, report
    return m.group(1)
