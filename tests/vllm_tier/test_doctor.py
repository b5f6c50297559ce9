"""``qwen-fast doctor`` against the real vLLM CPU tier: the full server passes every check (and
vLLM's default FCFS policy takes ``priority: -1`` without a word, so the priority check can only
warn); the bare one (no tool parser, no reasoning parser) gets the flags that fix it; a base_url
without /v1 and a dead port get the URL and the hint to use; as a replica list, the same server
under two host names agrees token for token, and vLLM beside the simulator (same model name,
another tokenizer) is a template mismatch.

Each report is printed, so ``pytest -rP`` shows the tables as a user sees them.

Covers: doctor/.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support import check, free_port, statuses
from vllm_server import VllmCpuServer

from langchain_qwen_fast.doctor import (
    FIX_PRIORITY,
    FIX_REASONING,
    FIX_SAME,
    FIX_TOOLS,
    Report,
    diagnose,
    main,
    run_checks,
)
from langchain_qwen_fast.doctor.probes import CONVERSATION
from langchain_qwen_fast.testing import SimConfig, SimServer

# The tier's vLLM runs the default FCFS policy without dev mode: priority=-1 is accepted and the
# policy is not visible, which the doctor reports as a warning.
ALL_OK = {"reachable": "ok", "base_url": "ok", "model": "ok", "thinking_switch": "ok",
          "template": "ok", "reasoning_parser": "ok", "tools": "ok", "json_schema": "ok",
          "completions_list": "ok", "priority_scheduling": "warn"}


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


def test_fcfs_vllm_accepts_a_priority_so_the_check_says_it_cannot_tell(full_report: Report) -> None:
    # vLLM 0.32's V1 engine: no "Priority scheduling is not enabled" error (that was the V0
    # engine); the request succeeds and /server_info is absent without VLLM_SERVER_DEV_MODE.
    priority = check(full_report, "priority_scheduling")
    assert priority.finding.startswith("priority=-1 is accepted, but the policy is not visible")
    assert priority.fix == FIX_PRIORITY and "--scheduling-policy priority" in priority.fix


def test_full_server_cli_exits_zero(vllm_server: VllmCpuServer, capsys: Any) -> None:
    assert main(["--base-url", vllm_server.base_url, "--model", vllm_server.model]) == 0
    out = capsys.readouterr().out
    assert "9 ok, 1 warn, 0 fail, 0 skipped, 0 info: no failures" in out


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
    port = free_port()
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


def test_same_server_under_two_host_names_agrees_token_for_token(vllm_server: VllmCpuServer) -> None:
    other = vllm_server.base_url.replace("127.0.0.1", "localhost")
    result = diagnose([vllm_server.base_url, other], model=vllm_server.model)
    print(result.render_text())
    assert [statuses(r) for r in result.replicas] == [ALL_OK, ALL_OK]
    across = {c.name: c for c in result.across}
    assert across["same_models"].status == "ok"
    assert across["same_template"].status == "ok"
    assert across["same_template"].finding.endswith("alike, token for token")
    assert result.exit_code == 0


def test_vllm_beside_the_simulator_is_a_template_mismatch(vllm_server: VllmCpuServer) -> None:
    # Same served name, other tokenizer: the model check passes on both, the comparison does not.
    with SimServer(SimConfig(latency="zero", model_name=vllm_server.model)) as sim:
        result = diagnose([vllm_server.base_url, sim.base_url], model=vllm_server.model)
        counts = [prompt_size(url, vllm_server.model) for url in (vllm_server.base_url,
                                                                   sim.base_url)]
    print(result.render_text())
    assert counts[0] != counts[1], f"the tokenizers agree on the probe ({counts}): pick another"
    across = {c.name: c for c in result.across}
    assert across["same_models"].status == "ok"
    template = across["same_template"]
    assert template.status == "fail" and template.fix == FIX_SAME
    assert "by prompt token counts (no /tokenize on every replica)" in template.finding
    assert f"{vllm_server.base_url}: {counts[0]} tokens" in template.finding
    assert f"{sim.base_url}: {counts[1]} tokens" in template.finding
    assert result.exit_code == 1


def prompt_size(base_url: str, model: str) -> int:
    """What chat reports as prompt_tokens for the doctor's probe conversation (thinking off)."""
    r = httpx.post(base_url + "/chat/completions", timeout=60, json={
        "model": model, "messages": CONVERSATION, "max_tokens": 1,
        "chat_template_kwargs": {"enable_thinking": False}})
    r.raise_for_status()
    return int(r.json()["usage"]["prompt_tokens"])
