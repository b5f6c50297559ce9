"""Tests are findable by module: every test module's docstring ends with a ``Covers:`` line naming the modules
(package-relative, or repository-relative for test tooling) it exercises, each of which exists, and every
module of the pipeline and its leaves is named by at least one test module.

Covers: tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "langchain_qwen_fast"
#: The pipeline's layers and leaves (pyproject.toml's import contracts); each needs a test module naming it.
PIPELINE = ("chat_models.py", "_calls", "_loop", "_dispatch", "_upstream", "_engines", "_convert.py", "_qwen.py",
            "_errors.py", "_stats.py", "_process.py", "_urls.py")


def _covers(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    _, found, rest = doc.rpartition("Covers:")
    assert found, f"{path.relative_to(ROOT)}: its docstring has no 'Covers:' line"
    return [entry.strip() for entry in rest.strip().rstrip(".").split(",") if entry.strip()]


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def _test_modules() -> list[Path]:
    return sorted((ROOT / "tests").rglob("test_*.py"))


def _exists(entry: str) -> bool:
    return (PKG / entry).exists() or (ROOT / entry).exists()


def test_every_test_module_names_modules_that_exist() -> None:
    modules = _test_modules()
    assert len(modules) > 40
    for path in modules:
        entries = _covers(path)
        assert entries, path
        missing = [e for e in entries if not _exists(e)]
        assert not missing, f"{path.relative_to(ROOT)} covers modules that do not exist: {missing}"


def test_every_pipeline_module_is_covered_by_a_test_module() -> None:
    named = {entry.rstrip("/") for path in _test_modules() for entry in _covers(path)}
    modules = [p for part in PIPELINE for p in ([PKG / part] if part.endswith(".py") else (PKG / part).glob("*.py"))]
    uncovered = []
    for module in modules:
        rel = module.relative_to(PKG)
        if rel.name == "__init__.py" and _docstring_only(module):
            continue
        # the module itself, or a folder above it, is named somewhere
        if not ({str(rel)} | {str(parent) for parent in rel.parents if str(parent) != "."}) & named:
            uncovered.append(str(rel))
    assert not uncovered, f"no test module says it covers {uncovered}"
