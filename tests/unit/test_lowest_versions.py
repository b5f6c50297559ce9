"""The lowest-versions run (tests/lowest/): pins from pyproject.toml's lower bounds, skips only for absent extras.

Covers: tests/lowest/."""

from __future__ import annotations

import constraints
import pytest
import skip_optional


def test_a_lower_bound_becomes_a_pin_and_keeps_its_marker() -> None:
    assert constraints.lower_bound("langchain-core>=1.6.0,<2") == "langchain-core==1.6.0"
    assert constraints.lower_bound("uvloop>=0.17.0,<1; sys_platform != 'win32'") == (
        "uvloop==0.17.0; sys_platform != 'win32'"
    )
    assert constraints.lower_bound("ray[data] >= 2.60, <3") == "ray==2.60"


@pytest.mark.parametrize("requirement", ["httpx", "httpx<1", "httpx==0.27.0", "httpx>=0.27,>=0.28"])
def test_a_direct_dependency_without_one_lower_bound_is_refused(requirement: str) -> None:
    with pytest.raises(ValueError, match="exactly one '>=' lower bound"):
        constraints.lower_bound(requirement)


def test_every_declared_dependency_has_a_pin() -> None:
    pyproject = constraints.load_pyproject()
    pins = constraints.constraints(pyproject, list(constraints.PINNED_EXTRAS))
    names = {p.split("==")[0] for p in pins}
    assert {constraints.dist_name(r) for r in pyproject["project"]["dependencies"]} <= names
    with pytest.raises(ValueError, match="no extra 'nope'"):
        constraints.constraints(pyproject, ["nope"])


def test_an_extra_alone_is_pinned_without_its_own_extras() -> None:
    queue = ["redis[hiredis]>=5.0.1", "prom>=0.20; python_version>'3'"]
    pyproject = {"project": {"dependencies": ["x>=1"], "optional-dependencies": {"queue": queue}}}
    assert constraints.extra_only(pyproject, "queue") == ["redis==5.0.1", "prom==0.20; python_version>'3'"]
    with pytest.raises(ValueError, match="no extra 'nope'"):
        constraints.extra_only(pyproject, "nope")
    # the real file: the queue overlay that `make test-lowest-queue` installs
    real = constraints.extra_only(constraints.load_pyproject(), "queue")
    assert real == ["redis==5.0.1", "prometheus-client==0.20.0"]


def test_only_a_missing_module_of_an_extra_is_skipped() -> None:
    missing = ModuleNotFoundError("No module named 'langchain_openai'", name="langchain_openai.chat_models")
    assert skip_optional.skip_reason(missing) == (
        "needs langchain-openai (extra [test]), which the lowest-versions run does not install"
    )
    wrapped = RuntimeError("ImportError while importing test module")  # what a collection error carries
    wrapped.__cause__ = missing
    assert skip_optional.skip_reason(wrapped) is not None
    assert skip_optional.skip_reason(ModuleNotFoundError("x", name="httpx")) is None  # a core dependency fails
    assert skip_optional.skip_reason(ModuleNotFoundError("x", name="qf_typo_module")) is None
    assert skip_optional.skip_reason(AttributeError("_fields")) is None
