"""``qwen-fast doctor`` against the real vLLM CPU tier: the full server passes every check; the
bare one (no tool parser, no reasoning parser) gets the flags that fix it; a base_url without
/v1 and a dead port get the URL and the hint to use.

Each report is printed, so ``pytest -rP`` shows the tables as a user sees them.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from vllm_server import VllmCpuServer

from langchain_qwen_fast.doctor import FIX_REASONING, FIX_TOOLS, Report, main, run_checks

ALL_OK = {"reachable": "ok", "base_url": "ok", "model": "ok", "thinking_switch": "ok",
          "template": "ok", "reasoning_parser": "ok", "tools": "ok", "json_schema": "ok",
          "completions_list": "ok"}


def statuses(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def check(report: Report, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


@pytest.fixture(scope="module")
def full_report(vllm_server: VllmCpuServer) -> Report:
    report = run_checks(vllm_server.base_url, model=vllm_server.model)
    print(report.render_text())
    return report


def test_full_server_passes_every_check(full_report: Report) -> None:
    assert statuses(full_report) == ALL_OK, full_report.render_text()
    assert full_report.exit_code == 0
    assert "version 0.32" in check(full_report, "reachable").finding
    assert "token for token" in check(full_report, "template").finding
    assert "doctor_ping(" in check(full_report, "tools").finding


def test_full_server_cli_exits_zero(vllm_server: VllmCpuServer, capsys: Any) -> None:
    assert main(["--base-url", vllm_server.base_url, "--model", vllm_server.model]) == 0
    out = capsys.readouterr().out
    assert "9 ok, 0 warn, 0 fail, 0 skipped: no failures" in out


def test_base_url_without_v1_names_the_url_to_use(vllm_server: VllmCpuServer) -> None:
    report = run_checks(vllm_server.root_url, model=vllm_server.model)
    print(report.render_text())
    base = check(report, "base_url")
    assert base.status == "fail" and base.fix == f'use base_url="{vllm_server.base_url}"'
    assert "/models is 404" in base.finding
    # Every other check ran against the corrected URL and passed.
    assert {k: v for k, v in statuses(report).items() if k != "base_url"} == {
        k: v for k, v in ALL_OK.items() if k != "base_url"}
    assert report.exit_code == 1


def test_unreachable_port_says_start_the_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = run_checks(f"http://127.0.0.1:{port}/v1", model="Qwen-0.6B", timeout=3)
    print(report.render_text())
    reach = check(report, "reachable")
    assert reach.status == "fail" and "connection refused" in reach.finding
    assert "start the server" in reach.fix
    assert {c.status for c in report.checks[1:]} == {"skipped"}
    assert report.exit_code == 1


def test_bare_server_gets_the_parser_flags(vllm_server_bare: VllmCpuServer) -> None:
    report = run_checks(vllm_server_bare.base_url, model=vllm_server_bare.model)
    print(report.render_text())
    tools, reasoning = check(report, "tools"), check(report, "reasoning_parser")
    assert tools.status == "fail", report.render_text()
    assert tools.fix == FIX_TOOLS
    assert "--enable-auto-tool-choice --tool-call-parser hermes" in tools.fix
    assert "requires" in tools.finding and "--tool-call-parser" in tools.finding  # vLLM's own words
    assert reasoning.status == "warn" and reasoning.fix == FIX_REASONING
    assert "--reasoning-parser qwen3" in reasoning.fix
    assert "inline" in reasoning.finding
    # What needs no parser still works: the template, structured output, prompt lists.
    rest = {k: v for k, v in statuses(report).items() if k not in ("tools", "reasoning_parser")}
    assert rest == {k: v for k, v in ALL_OK.items() if k in rest}
    assert report.exit_code == 1
