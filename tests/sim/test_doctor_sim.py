"""``qwen-fast doctor`` against the simulator (fast): table, JSON, exit codes, the /v1 and
unreachable cases; and against a scripted fake vLLM (httpx.MockTransport) for the verdicts the
simulator cannot provoke (missing parsers, a template without the thinking switch or unlike
ChatML). The real-vLLM versions of the parser cases live in tests/integration/test_doctor.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from langchain_qwen_fast import render_chatml
from langchain_qwen_fast.doctor import FIX_REASONING, FIX_TOOLS, FIX_WIRE, main, run_checks
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.sim
MODEL = "Qwen-0.6B"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero")) as srv:
        yield srv


def statuses(report: Any) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def check(report: Any, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the simulator ---------------------------------------------------------------------------------
def test_healthy_simulator_passes_with_tokenize_checks_as_warnings(sim: SimServer) -> None:
    report = run_checks(sim.base_url, model=MODEL)
    assert statuses(report) == {
        "reachable": "ok", "base_url": "ok", "model": "ok",
        "thinking_switch": "warn",  # no /tokenize: behavioural check only
        "template": "warn",  # no /tokenize: prompt token counts compared instead
        "reasoning_parser": "ok", "tools": "ok", "json_schema": "ok", "completions_list": "ok",
    }
    assert report.exit_code == 0
    assert "counts agree" in check(report, "template").finding
    assert "`reasoning`" in check(report, "reasoning_parser").finding


def test_table_lists_every_check_and_exits_zero(sim: SimServer, capsys: Any) -> None:
    assert main(["--base-url", sim.base_url, "--model", MODEL]) == 0
    out = capsys.readouterr().out
    for name in ("reachable", "base_url", "model", "thinking_switch", "template",
                 "reasoning_parser", "tools", "json_schema", "completions_list"):
        assert f"\n{name} " in out
    assert "7 ok, 2 warn, 0 fail, 0 skipped: no failures" in out
    assert "\033[" not in out  # no colour when stdout is not a terminal


def test_json_output_is_machine_readable(sim: SimServer, capsys: Any) -> None:
    assert main(["--base-url", sim.base_url, "--model", MODEL, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == 0 and data["model"] == MODEL
    assert data["summary"] == {"ok": 7, "warn": 2, "fail": 0, "skipped": 0}
    keys = {tuple(sorted(c)) for c in data["checks"]}
    assert keys == {("finding", "fix", "ms", "name", "status")}


def test_cli_subcommand_runs_doctor(sim: SimServer) -> None:
    proc = subprocess.run([sys.executable, "-m", "langchain_qwen_fast.cli", "doctor", "--base-url",
                           sim.base_url, "--model", MODEL, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["fail"] == 0


def test_base_url_without_v1_fails_with_the_url_to_use(sim: SimServer, capsys: Any) -> None:
    assert main(["--base-url", sim.url, "--model", MODEL]) == 1
    out = capsys.readouterr().out
    assert f'fix: use base_url="{sim.url}/v1"' in out
    report = run_checks(sim.url, model=MODEL)
    assert check(report, "base_url").status == "fail"
    # The other checks still run, against the corrected URL.
    assert report.effective_base_url == sim.base_url
    assert check(report, "completions_list").status == "ok"


def test_base_url_with_endpoint_path_is_cut_back_to_v1(sim: SimServer) -> None:
    report = run_checks(sim.base_url + "/chat/completions", model=MODEL)
    assert check(report, "base_url").fix == f'use base_url="{sim.base_url}"'


def test_unreachable_port_fails_and_skips_the_rest(capsys: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["--base-url", url, "--model", MODEL, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    first = data["checks"][0]
    assert first["status"] == "fail" and "connection refused" in first["finding"]
    assert "start the server" in first["fix"]
    assert {c["status"] for c in data["checks"][1:]} == {"skipped"}


def test_base_url_without_scheme_fails_with_the_url_to_use(sim: SimServer) -> None:
    report = run_checks(sim.base_url.removeprefix("http://"), model=MODEL)
    assert check(report, "base_url").status == "fail"
    assert check(report, "base_url").fix == f'use base_url="{sim.base_url}"'


def test_explicit_model_that_is_not_served_fails(sim: SimServer) -> None:
    report = run_checks(sim.base_url, model="Qwen/Qwen3-8B")
    model = check(report, "model")
    assert model.status == "fail" and MODEL in model.finding
    assert "--served-model-name Qwen/Qwen3-8B" in model.fix and f'model="{MODEL}"' in model.fix
    assert check(report, "json_schema").status == "ok"  # later checks use the served name


def test_default_model_that_is_not_served_only_warns(sim: SimServer) -> None:
    report = run_checks(sim.base_url, model="Qwen/Qwen3-0.6B", model_explicit=False)
    assert check(report, "model").status == "warn"
    assert report.exit_code == 0


def test_api_key_is_sent_but_never_printed(sim: SimServer, capsys: Any) -> None:
    secret = "sk-doctor-secret-123"
    assert main(["--base-url", sim.base_url, "--model", MODEL, "--api-key", secret]) == 0
    assert main(["--base-url", sim.base_url, "--model", MODEL, "--api-key", secret, "--json"]) == 0
    assert secret not in capsys.readouterr().out


def test_old_reasoning_field_name_is_recognised() -> None:
    with SimServer(SimConfig(latency="zero", reasoning_field="reasoning_content")) as srv:
        report = run_checks(srv.base_url, model=MODEL)
    assert check(report, "reasoning_parser").status == "ok"
    assert "`reasoning_content`" in check(report, "reasoning_parser").finding


def test_completions_endpoint_failure_points_to_chat_wire_mode() -> None:
    with SimServer(SimConfig(latency="zero", faults=("status=404:on=completions",))) as srv:
        report = run_checks(srv.base_url, model=MODEL)
    lists = check(report, "completions_list")
    assert lists.status == "fail" and lists.fix == FIX_WIRE
    assert report.exit_code == 1


# -- a scripted fake vLLM for the verdicts the simulator cannot provoke --------------------------
NO_PARSER = ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
             "to be set")
Template = Callable[[list[dict[str, Any]], bool], str]


def fake_vllm(template: Template = lambda m, t: render_chatml(m, enable_thinking=t),
              tool_parser: bool = True, reasoning_parser: bool = True) -> httpx.MockTransport:
    """vLLM's answers for this doctor's requests; tokens are characters of the rendered text."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": MODEL}]})
        if path == "/tokenize":
            text = template(body["messages"], thinking) if "messages" in body else body["prompt"]
            return httpx.Response(200, json={"tokens": [ord(c) for c in text]})
        if path == "/v1/chat/completions":
            if body.get("tool_choice") is not None and not tool_parser:
                return httpx.Response(400, json={"error": {"message": NO_PARSER}})
            message: dict[str, Any] = {"role": "assistant", "content": "Hello!"}
            if body.get("tool_choice", "auto") != "auto":
                message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1",
                           "type": "function", "function": {"name": "doctor_ping",
                                                            "arguments": '{"ok": true}'}}]}
            elif body.get("response_format"):
                message["content"] = '{"ok":true}'
            elif thinking and reasoning_parser:
                message.update(content="\n\nHello!", reasoning="Hmm")
            elif thinking:
                message["content"] = "<think>Hmm</think>\n\nHello!"
            return httpx.Response(200, json={"choices": [{"index": 0, "message": message,
                                                          "finish_reason": "stop"}]})
        if path == "/v1/completions":
            n = len(body["prompt"]) if isinstance(body["prompt"], list) else 1
            return httpx.Response(200, json={"choices": [{"index": i, "text": "Hello!"}
                                                         for i in range(n)]})
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handler)


URL = "http://vllm.test:8000/v1"


def test_fake_vllm_with_every_flag_is_all_ok() -> None:
    report = run_checks(URL, model=MODEL, transport=fake_vllm())
    assert set(statuses(report).values()) == {"ok"}


def test_missing_tool_and_reasoning_parsers_give_their_flags() -> None:
    report = run_checks(URL, model=MODEL,
                        transport=fake_vllm(tool_parser=False, reasoning_parser=False))
    tools, reasoning = check(report, "tools"), check(report, "reasoning_parser")
    assert (tools.status, tools.fix) == ("fail", FIX_TOOLS)
    assert "--enable-auto-tool-choice --tool-call-parser hermes" in tools.fix
    assert (reasoning.status, reasoning.fix) == ("warn", FIX_REASONING)
    assert report.exit_code == 1


def test_template_without_thinking_switch_fails_with_chat_template_fix() -> None:
    report = run_checks(URL, model=MODEL,
                        transport=fake_vllm(lambda m, t: render_chatml(m, enable_thinking=True)))
    switch = check(report, "thinking_switch")
    assert switch.status == "fail" and "--chat-template" in switch.fix


def test_template_unlike_chatml_fails_with_chat_wire_fix() -> None:
    def default_system(messages: list[dict[str, Any]], thinking: bool) -> str:
        if messages[0]["role"] != "system":  # like templates that inject a default system prompt
            messages = [{"role": "system", "content": "You are helpful."}, *messages]
        return render_chatml(messages, enable_thinking=thinking).replace("中文", "中 文")

    report = run_checks(URL, model=MODEL, transport=fake_vllm(default_system))
    template = check(report, "template")
    assert template.status == "fail" and template.fix == FIX_WIRE
    assert "differs from the server's template at token" in template.finding
    assert check(report, "thinking_switch").status == "ok"
