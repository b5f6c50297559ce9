"""pytest plugin for the lowest-versions run: checks the pins, and skips tests that need an absent extra.

    PYTHONPATH=tests/lowest .venv-lowest/bin/python -m pytest tests/unit -p skip_optional

``make test-lowest`` installs the direct dependencies at their declared lower bounds and only the
test runner, so langchain-openai, langchain-tests, langgraph (and any other extra's package) are
absent. Rather than a list of test files, which would go stale as tests are added, the plugin turns
exactly one failure into a skip: a ``ModuleNotFoundError`` whose missing module is the import name of
a package that pyproject.toml lists only under an optional extra, raised while collecting a test
module (an import at the top, also through a helper module) or while running a test (an import
inside it). Anything else, a missing core dependency included, still fails. The normal run has
every extra installed and does not load the plugin, so nothing is skipped there.

At start-up it also checks that each pinned distribution is installed at its declared lower bound
(a stale ``.venv-lowest`` would otherwise test other versions without saying so) and prints them.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from constraints import PINNED_EXTRAS, constraints, dist_name, load_pyproject

_PYPROJECT = load_pyproject()


def optional_modules(pyproject: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Import name -> (distribution, extra) for every package that only an optional extra brings."""
    project = pyproject["project"]
    core = {dist_name(r) for r in project["dependencies"]}
    out: dict[str, tuple[str, str]] = {}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for r in reqs:
            dist = dist_name(r)
            if dist not in core:
                out.setdefault(dist.replace("-", "_"), (dist, extra))
    return out


OPTIONAL = optional_modules(_PYPROJECT)


def skip_reason(exc: BaseException | None) -> str | None:
    """The skip reason when ``exc`` (or what caused it) is a missing optional module, else None."""
    for _ in range(8):  # a collection error carries the ImportError as its __cause__
        if exc is None:
            return None
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            hit = OPTIONAL.get(exc.name.split(".")[0])
            if not hit:
                return None
            dist, extra = hit
            return f"needs {dist} (extra [{extra}]), which the lowest-versions run does not install"
        exc = exc.__cause__ or exc.__context__
    return None


def _norm(version: str) -> tuple[int | str, ...]:
    parts: list[int | str] = [int(p) if p.isdigit() else p for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def pins() -> list[str]:
    """The pins pip was given (``constraints.txt`` in the venv, as ``make test-lowest`` writes it), else computed."""
    written = Path(sys.prefix) / "constraints.txt"
    if written.exists():
        return [x.strip() for x in written.read_text().splitlines() if x.strip() and not x.startswith("#")]
    return constraints(_PYPROJECT, list(PINNED_EXTRAS))


def pinned_versions() -> list[tuple[str, str, str | None]]:
    """(distribution, pinned version, installed version or None) for every pin."""
    out = []
    for pin in pins():
        spec, _, marker = pin.partition(";")
        name, _, version = spec.partition("==")
        try:
            installed: str | None = importlib.metadata.version(name.strip())
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None and marker:  # its marker left it out on this platform
            continue
        out.append((name.strip(), version.strip(), installed))
    return out


def pytest_configure(config: pytest.Config) -> None:
    wrong = [
        f"{n} {i or 'missing'} (pyproject declares >={v})"
        for n, v, i in pinned_versions()
        if i is None or _norm(i) != _norm(v)
    ]
    if wrong:
        raise pytest.UsageError(
            "the lowest-versions run must have every direct dependency at its lower bound: "
            + ", ".join(wrong)
            + ". Rebuild it: rm -rf .venv-lowest && make test-lowest"
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line("lowest declared versions: " + ", ".join(f"{n} {i}" for n, _, i in pinned_versions()))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, Any]:
    rep = yield
    call = getattr(rep, "call", None)
    reason = skip_reason(call.excinfo.value) if rep.failed and call and call.excinfo else None
    if reason:
        rep.outcome, rep.longrepr = "skipped", (str(collector.path), 0, f"Skipped: {reason}")
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    rep = yield
    reason = skip_reason(call.excinfo.value) if rep.failed and call.excinfo else None
    if reason:
        path, lineno, _ = item.location
        rep.outcome, rep.longrepr = "skipped", (path, (lineno or 0) + 1, f"Skipped: {reason}")
    return rep
