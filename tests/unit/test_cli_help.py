"""Every command's ``--help`` as a new user reads it: it exits 0, shows each option's default where there is
one, and carries no docstring markup (double backquotes, ``:class:`` roles).

Each ``--help`` runs through ``qwen-fast``'s own entry point; the parsers it prints are caught on the way, so
each option's printed text is checked against that option's default.

Covers: cli/help.py, cli/__init__.py, cli/worker.py, cli/demo.py, bench/cli.py, bench/replicas.py,
bench/fairness.py, doctor/cli.py, testing/sim_engine.py.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from langchain_qwen_fast import cli
from langchain_qwen_fast.testing import sim_engine

COMMANDS = [[], ["demo"], ["bench"], ["bench", "replicas"], ["bench", "fairness"], ["doctor"], ["engines"],
            ["worker"]]
MARKUP = re.compile(r"``|:(class|func|meth|mod|attr|data|obj):`")


def _shows_default(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    text = " ".join(parser._get_formatter()._format_action(action).split()).lower()
    return "default" in text


def _needs_default(action: argparse.Action) -> bool:
    d = action.default
    return not (action.required or d is None or d is False or d == [] or d is argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction))


def _help(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
          ) -> tuple[str, list[argparse.ArgumentParser]]:
    printed: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.print_help

    def record(self: argparse.ArgumentParser, file: Any = None) -> None:
        printed.append(self)
        original(self, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    try:
        code = cli.main([*argv, "--help"])
    except SystemExit as e:  # argparse's --help
        code = int(e.code or 0)
    assert code == 0, argv
    return capsys.readouterr().out, printed


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "qwen-fast")
def test_every_help_shows_defaults_and_no_markup(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, parsers = _help(argv, capsys, monkeypatch)
    assert out.strip() and not MARKUP.search(out), MARKUP.search(out)
    assert len(parsers) == (0 if not argv else 1)
    for parser in parsers:
        missing = [a.option_strings[0] for a in parser._actions if _needs_default(a) and not _shows_default(parser, a)]
        assert not missing, f"qwen-fast {' '.join(argv)} --help shows no default for {missing}"


def test_the_worker_help_shows_the_defaults_the_issue_asked_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = _help(["worker"], capsys, monkeypatch)
    flat = " ".join(out.split())
    for shown in ("another takes it over (default: 60.0)", "dead-lettered (default: 5)", "(default: 30.0)",
                  "(default: 9464)", "(default: WARNING)"):
        assert shown in flat, shown
    assert "Answer jobs from a Redis stream with BatchedChatQwen" in out


def test_the_simulator_help_shows_its_defaults_and_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    parser = sim_engine.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--api-key" in out and "(default: Qwen/Qwen3-0.6B)" in out and not MARKUP.search(out)
    assert [a.option_strings[0] for a in parser._actions if _needs_default(a) and not _shows_default(parser, a)] == []
