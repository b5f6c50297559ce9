"""``qwen-fast``: the command table, --help/--version, and a missing extra as one line with exit code 2.

Covers: cli/, bench/cli.py."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

import langchain_qwen_fast
from langchain_qwen_fast import cli
from langchain_qwen_fast.bench import cli as bench_cli
from langchain_qwen_fast.cli import COMMANDS, Command


def test_help_lists_every_command_with_its_one_line_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, cmd in COMMANDS.items():
        assert any(line.split() and line.split()[0] == name and line.endswith(cmd.summary) for line in lines), name
    assert "--version" in out


def test_the_table_holds_the_five_commands_each_in_its_own_module() -> None:
    assert {name: cmd.module for name, cmd in COMMANDS.items()} == {
        "demo": "langchain_qwen_fast.cli.demo",
        "bench": "langchain_qwen_fast.bench.cli",
        "doctor": "langchain_qwen_fast.doctor",
        "engines": "langchain_qwen_fast.cli.engines",
        "worker": "langchain_qwen_fast.cli.worker",
    }
    for cmd in COMMANDS.values():
        if importlib.util.find_spec(cmd.module) is not None:  # the ones that exist expose main(argv)
            assert callable(importlib.import_module(cmd.module).main), cmd.module


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"qwen-fast {langchain_qwen_fast.__version__}\n"


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().err
    assert cli.main(["bnech"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'bnech'" in err and "demo, bench, doctor" in err


@pytest.mark.parametrize("name", ["demo", "bench"])
def test_demo_and_bench_without_langchain_openai_name_the_bench_extra(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_openai", None)  # as on a core install: the import fails
    monkeypatch.chdir(tmp_path)
    assert cli.main([name]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"qwen-fast {name}: needs langchain-openai, which the core install leaves out: "
        "pip install 'langchain-qwen-fast[bench]'"
    ]
    assert list(tmp_path.iterdir()) == []  # checked before anything started or was written


def test_a_command_asks_for_its_help_without_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_openai", None)
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    assert "(default: qwen-fast-bench)" in capsys.readouterr().out


def _command_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    (tmp_path / "qf_fake_command.py").write_text(f"def main(argv):\n    {body}\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "qf_fake_command", raising=False)
    return "qf_fake_command"


def test_an_extra_missing_while_the_command_runs_is_one_line_naming_that_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "queue" in cli.extras_by_module()["prometheus_client"]  # from the installed package's metadata
    module = _command_module(tmp_path, monkeypatch, "import prometheus_client")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(COMMANDS, "fake", Command(module, "a command that needs the queue extra", "queue"))
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "qwen-fast fake: needs prometheus-client, which the core install leaves out: "
        "pip install 'langchain-qwen-fast[queue]'"
    ]


def test_a_command_whose_module_is_not_installed_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(COMMANDS, "later", Command("langchain_qwen_fast.not_there_yet", "not written yet"))
    assert cli.main(["later"]) == 2
    err = capsys.readouterr().err
    assert "not available in this installation" in err and "langchain_qwen_fast.not_there_yet" in err


def test_a_missing_module_that_no_extra_brings_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _command_module(tmp_path, monkeypatch, "import qf_no_such_module_anywhere")
    monkeypatch.setitem(COMMANDS, "buggy", Command(module, "a command with a bug"))
    with pytest.raises(ModuleNotFoundError, match="qf_no_such_module_anywhere"):
        cli.main(["buggy"])


def test_a_command_summary_is_one_line_and_needs_name_their_extra() -> None:
    with pytest.raises(ValueError, match="one non-empty line"):
        Command("m", "two\nlines")
    with pytest.raises(ValueError, match="name the extra"):
        Command("m", "needs redis", needs=("redis",))


def test_bench_help_describes_every_option_and_shows_its_default() -> None:
    parser = bench_cli.build_parser()
    for action in parser._actions:
        assert action.help, action.dest
    text = parser.format_help()
    for default in ("3", "1000", "30", "15.0", "qwen-fast-bench"):
        assert f"(default: {default})" in text
    assert "benchmarks/results" not in text
    assert parser.parse_args([]).out == "qwen-fast-bench"



@pytest.mark.parametrize("plan", ["replicas", "fairness"])
def test_bench_plans_have_their_own_help(plan: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", plan, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"qwen-fast bench {plan}" in out and "--rounds" in out and "(default:" in out
