"""``qwen-fast doctor`` against the simulator (fast): table, JSON, exit codes, the /v1, scheme,
unreachable, not-HTTP and model-name cases, credentials in URLs, priority scheduling, and replica
lists; and against a scripted fake vLLM (httpx.MockTransport) for the verdicts the simulator cannot
provoke (missing parsers, a template without the thinking switch or unlike ChatML, a server that
rejects priorities, replicas with different templates). The real-vLLM versions of the parser cases
live in tests/vllm_tier/test_doctor.py.

Covers: doctor/, cli/__init__.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from support import check, free_port, statuses

from langchain_qwen_fast import render_chatml
from langchain_qwen_fast.doctor import (
    FIX_PRIORITY,
    FIX_REASONING,
    FIX_SAME,
    FIX_TOOLS,
    FIX_WIRE,
    diagnose,
    main,
    run_checks,
    split_urls,
)
from langchain_qwen_fast.doctor.probes import what_speaks
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.sim
MODEL = "Qwen/Qwen3-0.6B"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero")) as srv:
        yield srv


@pytest.fixture(scope="module")
def sim_other() -> Iterator[SimServer]:
    """A second replica that serves another model name."""
    with SimServer(SimConfig(latency="zero", model_name="Other")) as srv:
        yield srv


@pytest.fixture(scope="module")
def sim_twin() -> Iterator[SimServer]:
    """A second replica equal to ``sim``."""
    with SimServer(SimConfig(latency="zero")) as srv:
        yield srv


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QWEN_MODEL", "QWEN_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE",
                 "QWEN_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# -- the simulator ---------------------------------------------------------------------------------
def test_healthy_simulator_passes_with_what_a_simulator_lacks_as_info(sim: SimServer) -> None:
    report = run_checks(sim.base_url, model=MODEL)
    assert statuses(report) == {
        "reachable": "ok", "base_url": "ok", "model": "ok",
        "thinking_switch": "info",  # the simulator has no /tokenize: behavioural check only
        "template": "info",  # no /tokenize: prompt token counts compared instead
        "reasoning_parser": "ok", "tools": "ok", "json_schema": "ok", "completions_list": "ok",
        "priority_scheduling": "info",  # the simulator's default policy is fcfs, as vLLM's
    }
    assert report.exit_code == 0 and report.summary()["warn"] == 0
    assert "simulated" in check(report, "reachable").finding
    assert "counts agree" in check(report, "template").finding
    assert "`reasoning`" in check(report, "reasoning_parser").finding
    priority = check(report, "priority_scheduling")
    assert "the client's queue applies priorities" in priority.finding and priority.fix is None
    assert "--scheduling-policy priority" in priority.finding


def test_a_real_server_without_tokenize_and_with_fcfs_still_warns() -> None:
    # The same findings as the simulator's, from a server that does not say it is one: warnings.
    report = run_checks(URL, model=MODEL, transport=fake_vllm(tokenize=False, policy="fcfs"))
    got = statuses(report)
    assert (got["thinking_switch"], got["template"], got["priority_scheduling"]) == ("warn", "warn", "warn")
    assert check(report, "priority_scheduling").fix == FIX_PRIORITY


def test_table_lists_every_check_and_exits_zero(sim: SimServer, capsys: Any) -> None:
    assert main(["--base-url", sim.base_url, "--model", MODEL]) == 0
    out = capsys.readouterr().out
    for name in ("reachable", "base_url", "model", "thinking_switch", "template",
                 "reasoning_parser", "tools", "json_schema", "completions_list",
                 "priority_scheduling"):
        assert f"\n{name} " in out
    assert "7 ok, 0 warn, 0 fail, 0 skipped, 3 info: no failures" in out
    assert "\033[" not in out  # no colour when stdout is not a terminal


def test_json_output_is_machine_readable(sim: SimServer, capsys: Any) -> None:
    assert main(["--base-url", sim.base_url, "--model", MODEL, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == 0 and data["model"] == MODEL
    assert data["summary"] == {"ok": 7, "warn": 0, "fail": 0, "skipped": 0, "info": 3}
    assert data["across_replicas"] == []
    (replica,) = data["replicas"]
    assert replica["base_url"] == sim.base_url and replica["served_models"] == [MODEL]
    assert replica["summary"] == data["summary"] and replica["checked_model"] == MODEL
    keys = {tuple(sorted(c)) for c in replica["checks"]}
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


@pytest.mark.parametrize(("suffix", "why"), [
    ("", "the /v1 prefix is missing"),
    ("/v2", "the API is under /v1, not /v2"),
    ("/api/v1", "the API is under /v1, not /api/v1"),
    ("/v1/chat/completions", "base_url ends with the endpoint /chat/completions"),
    ("/v1/completions", "base_url ends with the endpoint /completions"),
    ("/completions", "base_url ends with the endpoint /completions"),
])
def test_a_wrong_prefix_is_diagnosed_with_the_url_that_answers(sim: SimServer, suffix: str, why: str) -> None:
    # The simulator answers only under /v1 at its root, as vLLM does.
    report = run_checks(sim.url + suffix, model=MODEL)
    reach, base = check(report, "reachable"), check(report, "base_url")
    assert reach.status == "ok" and " 200" in reach.finding and "404" not in reach.finding, reach.finding
    assert base.status == "fail" and why in base.finding, base.finding
    assert base.fix == f'use base_url="{sim.base_url}"'
    assert report.effective_base_url == sim.base_url and check(report, "completions_list").status == "ok"


def test_unreachable_port_fails_and_skips_the_rest(capsys: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["--base-url", url, "--model", MODEL, "--json"]) == 1
    checks = json.loads(capsys.readouterr().out)["replicas"][0]["checks"]
    first = checks[0]
    assert first["status"] == "fail" and "connection refused" in first["finding"]
    assert "start the server" in first["fix"]
    assert {c["status"] for c in checks[1:]} == {"skipped"}


def test_base_url_without_scheme_fails_with_the_url_to_use(sim: SimServer) -> None:
    report = run_checks(sim.base_url.removeprefix("http://"), model=MODEL)
    assert check(report, "base_url").status == "fail"
    assert check(report, "base_url").fix == f'use base_url="{sim.base_url}"'


def test_explicit_model_that_is_not_served_fails(sim: SimServer) -> None:
    report = run_checks(sim.base_url, model="Qwen/Qwen3-8B", model_source="--model")
    model = check(report, "model")
    assert model.status == "fail" and MODEL in model.finding and "(--model)" in model.finding
    assert "--served-model-name Qwen/Qwen3-8B" in model.fix and f'model="{MODEL}"' in model.fix
    assert check(report, "json_schema").status == "ok"  # later checks use the served name
    assert report.checked_model == MODEL and report.model == "Qwen/Qwen3-8B"


def test_no_model_named_and_one_other_model_served_passes_as_the_client_would_use_it(
        capsys: Any, no_env: None) -> None:
    # A new user passes only the URL to a server started as a widely copied guide does (Qwen-0.6B):
    # BatchedChatQwen() takes the one model served, and so do the doctor's checks.
    with SimServer(SimConfig(latency="zero", model_name="Qwen-0.6B")) as other:
        assert main(["--base-url", other.base_url]) == 0
    out = capsys.readouterr().out
    assert "model: none named; BatchedChatQwen uses Qwen-0.6B, the one model served" in out
    line = next(x for x in out.splitlines() if x.startswith("model "))
    assert " ok " in line and "no model named (--model, QWEN_MODEL)" in line
    assert "0 fail" in out


def test_no_model_named_and_several_others_served_fails_naming_field_and_env_var(no_env: None) -> None:
    from langchain_qwen_fast.doctor.cli import model_defaults

    _, default, _ = model_defaults()  # what BatchedChatQwen() would use: the unnamed default
    report = run_checks(URL, model=default, transport=fake_vllm(served=["Qwen-0.6B", "lora-a"]))
    model = check(report, "model")
    assert model.status == "fail" and "no model named" in model.finding
    assert "Qwen-0.6B, lora-a" in model.finding
    assert 'BatchedChatQwen(model="Qwen-0.6B") or QWEN_MODEL=Qwen-0.6B' in model.fix
    assert report.checked_model == "Qwen-0.6B"  # the later checks use a model that is served


def test_model_from_env_that_is_not_served_says_it_came_from_qwen_model(
        sim: SimServer, capsys: Any, no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_MODEL", "Qwen/Qwen3-8B")
    assert main(["--base-url", sim.base_url, "--json"]) == 1
    model = check_dict(json.loads(capsys.readouterr().out)["replicas"][0], "model")
    assert model["status"] == "fail" and "(from QWEN_MODEL)" in model["finding"]


def test_several_served_models_are_all_named_in_the_fix() -> None:
    report = run_checks(URL, model="Qwen/Qwen3-0.6B", transport=fake_vllm(served=["Qwen-0.6B", "lora-a"]))
    model = check(report, "model")
    assert model.status == "fail" and "one of Qwen-0.6B, lora-a" in model.fix


def check_dict(replica: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in replica["checks"] if c["name"] == name)


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


V0_PRIORITY = "Got priority -1 but Priority scheduling is not enabled."


def fake_vllm(template: Template = lambda m, t: render_chatml(m, enable_thinking=t),
              tool_parser: bool = True, reasoning_parser: bool = True,
              policy: str | None = "priority", rejects_priority: bool = False,
              served: tuple[str, ...] | list[str] = (MODEL,), tokenize: bool = True) -> httpx.MockTransport:
    """vLLM's answers for this doctor's requests; tokens are characters of the rendered text.

    ``policy``: what dev-mode ``/server_info`` says (None: not served, vLLM's default);
    ``rejects_priority``: answer a non-zero priority like vLLM's V0 engine did."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        thinking = (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list",
                                             "data": [{"id": m} for m in served]})
        if path == "/server_info" and policy is not None:
            return httpx.Response(200, json={"vllm_config": {"scheduler_config": {
                "policy": policy}}, "vllm_env": {}, "system_env": {}})
        if path == "/tokenize" and tokenize:
            text = template(body["messages"], thinking) if "messages" in body else body["prompt"]
            return httpx.Response(200, json={"tokens": [ord(c) for c in text]})
        if path == "/v1/chat/completions":
            if body.get("priority", 0) and rejects_priority:
                return httpx.Response(400, json={"error": {"message": V0_PRIORITY}})
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
    assert "server_priority=True" in check(report, "priority_scheduling").finding


def test_priority_accepted_without_server_info_warns_that_fcfs_ignores_it() -> None:
    # vLLM's V1 engine takes priority=-1 under its default FCFS policy and ignores it; without
    # dev-mode /server_info the doctor cannot tell, and says so instead of claiming ok.
    report = run_checks(URL, model=MODEL, transport=fake_vllm(policy=None))
    priority = check(report, "priority_scheduling")
    assert priority.status == "warn" and "not visible" in priority.finding
    assert "VLLM_SERVER_DEV_MODE=1" in priority.finding and priority.fix == FIX_PRIORITY
    assert report.exit_code == 0


def test_server_that_rejects_priority_warns_fcfs_with_the_flag() -> None:
    report = run_checks(URL, model=MODEL, transport=fake_vllm(rejects_priority=True))
    priority = check(report, "priority_scheduling")
    assert priority.status == "warn" and priority.finding.startswith("FCFS: the server rejects")
    assert "Priority scheduling is not enabled" in priority.finding  # the server's own words
    assert "server_priority=True would make such calls fail" in priority.finding
    assert priority.fix == FIX_PRIORITY


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


# -- priority scheduling on the simulator -------------------------------------------------------
def test_simulator_with_priority_policy_passes_the_priority_check() -> None:
    with SimServer(SimConfig(latency="zero", scheduling_policy="priority")) as srv:
        report = run_checks(srv.base_url, model=MODEL)
    priority = check(report, "priority_scheduling")
    assert priority.status == "ok" and priority.fix is None
    assert "`server_priority=True`" in priority.finding


# -- what is listening is not an HTTP server ----------------------------------------------------
@pytest.fixture
def banner_port() -> Iterator[Callable[[bytes], int]]:
    """A loopback TCP port that greets every connection with given bytes, like sshd does."""
    socks: list[socket.socket] = []

    def start(banner: bytes) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        socks.append(srv)

        def serve() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(banner)
                    conn.settimeout(0.5)
                    with contextlib.suppress(OSError):
                        conn.recv(4096)

        threading.Thread(target=serve, daemon=True).start()
        return int(srv.getsockname()[1])

    yield start
    for srv in socks:
        srv.close()


def test_ssh_server_is_reported_as_not_an_http_server(banner_port: Any, capsys: Any) -> None:
    port = banner_port(b"SSH-2.0-OpenSSH_9.2\r\n")
    assert main(["--base-url", f"http://127.0.0.1:{port}/v1", "--model", MODEL, "--json"]) == 1
    checks = json.loads(capsys.readouterr().out)["replicas"][0]["checks"]
    reach = checks[0]
    assert reach["status"] == "fail"
    assert reach["finding"] == (f"127.0.0.1:{port} is not an HTTP server: it sent "
                                "'SSH-2.0-OpenSSH_9.2': an SSH server")
    assert "another program" in reach["fix"] and "start the server" not in reach["fix"]
    assert {c["status"] for c in checks[1:]} == {"skipped"}


def test_tls_server_on_an_http_url_gets_the_https_url(banner_port: Any) -> None:
    # What a TLS server sends back for plain text: an alert record (21, version 3.x).
    port = banner_port(bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]))
    report = run_checks(f"http://127.0.0.1:{port}/v1", model=MODEL, timeout=3)
    reach = check(report, "reachable")
    assert reach.status == "fail" and "TLS record" in reach.finding
    assert reach.fix == f'use base_url="https://127.0.0.1:{port}/v1"'


def test_first_bytes_are_named_by_protocol() -> None:
    assert what_speaks(b"HTTP/1.1 400 Bad Request\r\n") is None
    assert what_speaks(b"SSH-2.0-dropbear\r\n") == ("it sent 'SSH-2.0-dropbear': an SSH server",
                                                       "other")
    assert what_speaks(bytes([0x16, 0x03, 0x01, 0x00])) is not None
    assert what_speaks(bytes([0x16, 0x03, 0x01, 0x00]))[1] == "tls"  # type: ignore[index]
    assert what_speaks(b"")[0] == "it closed the connection without answering"  # type: ignore[index]
    assert what_speaks(b"-ERR unknown command\r\n")[0] == "it sent '-ERR unknown command'"  # type: ignore[index]


def test_https_url_against_plain_http_server_says_use_http(sim: SimServer) -> None:
    https = sim.base_url.replace("http://", "https://")
    report = run_checks(https, model=MODEL)
    reach = check(report, "reachable")
    assert reach.status == "fail" and "speaks plain HTTP, not TLS" in reach.finding
    assert reach.fix.startswith(f'use base_url="{sim.base_url}"')
    assert "start the server" not in reach.fix
    # The other checks ran against the http URL that answers.
    assert report.effective_base_url == sim.base_url
    assert check(report, "completions_list").status == "ok" and report.exit_code == 1


# -- credentials in URLs ------------------------------------------------------------------------
def test_credentials_in_base_url_are_never_printed(sim: SimServer, capsys: Any) -> None:
    secret = "s3cret-pw"
    with_creds = sim.url.replace("http://", f"http://bob:{secret}@")  # no /v1: the fix names a URL
    assert main(["--base-url", with_creds, "--model", MODEL]) == 1
    text = capsys.readouterr().out
    assert main(["--base-url", with_creds, "--model", MODEL, "--json"]) == 1
    raw = capsys.readouterr().out
    assert secret not in text and secret not in raw and "bob" not in text and "bob" not in raw
    shown = sim.base_url.replace("http://", "http://***@")
    assert f'fix: use base_url="{shown}"' in text
    replica = json.loads(raw)["replicas"][0]
    assert replica["base_url"] == sim.url.replace("http://", "http://***@")
    assert replica["effective_base_url"] == shown


# -- a list of replicas -------------------------------------------------------------------------
def test_split_urls_takes_commas_and_lists_and_drops_repeats() -> None:
    assert split_urls("http://a/v1, http://b/v1,,") == ["http://a/v1", "http://b/v1"]
    assert split_urls(["http://a/v1", "http://b/v1,http://a/v1/"]) == ["http://a/v1", "http://b/v1"]
    assert split_urls(None) == [] and split_urls(" ") == []


def test_replicas_that_agree_pass_and_json_has_each(sim: SimServer, sim_twin: SimServer,
                                                    capsys: Any) -> None:
    assert main(["--base-url", sim.base_url, "--base-url", sim_twin.base_url, "--model", MODEL,
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["base_url"] for r in data["replicas"]] == [sim.base_url, sim_twin.base_url]
    assert all(r["summary"] == {"ok": 7, "warn": 0, "fail": 0, "skipped": 0, "info": 3}
               for r in data["replicas"])
    across = {c["name"]: c for c in data["across_replicas"]}
    assert across["same_models"]["status"] == "ok"
    assert across["same_models"]["finding"] == f"all 2 replicas serve {MODEL}"
    assert across["same_template"]["status"] == "ok"
    assert "by prompt token count" in across["same_template"]["finding"]
    assert data["summary"] == {"ok": 16, "warn": 0, "fail": 0, "skipped": 0, "info": 6}


def test_comma_separated_qwen_base_url_checks_every_replica(
        sim: SimServer, sim_twin: SimServer, capsys: Any, no_env: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_BASE_URL", f"{sim.base_url},{sim_twin.base_url}")
    assert main(["--model", MODEL]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"qwen-fast doctor: 2 replicas  (model: {MODEL})")
    assert f"\n[1/2] {sim.base_url}\n" in out and f"\n[2/2] {sim_twin.base_url}\n" in out
    assert "\nacross replicas\n" in out and "\nsame_models " in out
    assert main(["--base-url", f"{sim.base_url},{sim_twin.base_url}", "--model", MODEL]) == 0
    assert capsys.readouterr().out.count("\npriority_scheduling ") == 2


def test_replicas_serving_different_models_fail_naming_each(sim: SimServer, sim_other: SimServer,
                                                            capsys: Any) -> None:
    assert main(["--base-url", f"{sim.base_url},{sim_other.base_url}", "--model", MODEL,
                 "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert len(data["replicas"]) == 2
    assert check_dict(data["replicas"][0], "model")["status"] == "ok"
    assert check_dict(data["replicas"][1], "model")["status"] == "fail"
    models = next(c for c in data["across_replicas"] if c["name"] == "same_models")
    assert models["status"] == "fail" and models["fix"] == FIX_SAME
    assert models["finding"] == (f"the replicas serve different models: {sim.base_url} serves "
                                 f"{MODEL}; {sim_other.base_url} serves Other")


def test_replicas_with_different_templates_fail_naming_the_token() -> None:
    def default_system(messages: list[dict[str, Any]], thinking: bool) -> str:
        if messages[0]["role"] != "system":
            messages = [{"role": "system", "content": "You are helpful."}, *messages]
        return render_chatml(messages, enable_thinking=thinking).replace("中文", "中 文")

    a, b = fake_vllm(), fake_vllm(default_system)
    both = httpx.MockTransport(
        lambda r: (a if r.url.host == "a.test" else b).handle_request(r))
    result = diagnose(["http://a.test:8000/v1", "http://b.test:8000/v1"], model=MODEL,
                      transport=both)
    across = {c.name: c for c in result.across}
    assert across["same_models"].status == "ok"
    template = across["same_template"]
    assert template.status == "fail" and template.fix == FIX_SAME
    assert "by token ids" in template.finding
    assert "http://a.test:8000/v1: " in template.finding and "http://b.test:8000/v1: " in template.finding
    assert "first difference at token" in template.finding and result.exit_code == 1


def test_replica_without_completions_lists_fails_the_template_comparison(sim: SimServer) -> None:
    with SimServer(SimConfig(latency="zero", faults=("status=404:on=completions",))) as broken:
        result = diagnose([sim.base_url, broken.base_url], model=MODEL)
    template = next(c for c in result.across if c.name == "same_template")
    assert template.status == "fail"
    assert f"{broken.base_url} answers no completions list of 2 prompts" in template.finding


def test_unreachable_replica_is_left_out_of_the_comparison(sim: SimServer,
                                                           sim_twin: SimServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = diagnose([sim.base_url, dead, sim_twin.base_url], model=MODEL)
    assert check(result.replicas[1], "reachable").status == "fail"
    assert {c.name: c.status for c in result.across} == {"same_models": "ok",
                                                         "same_template": "ok"}
    assert result.exit_code == 1
    only = diagnose([sim.base_url, dead], model=MODEL)
    assert {c.status for c in only.across} == {"skipped"}


def test_malformed_url_in_a_list_fails_alone(sim: SimServer) -> None:
    result = diagnose([sim.base_url, "http://127.0.0.1:99999/v1"], model=MODEL)
    bad = check(result.replicas[1], "reachable")
    assert bad.status == "fail" and "is not a valid URL: Port out of range" in bad.finding
    assert check(result.replicas[0], "completions_list").status == "ok"
