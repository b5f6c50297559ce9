"""The checks of what the server can do, given a reachable server and a served model: the
reasoning parser, tool calls, json_schema, completions lists and priority scheduling."""

from __future__ import annotations

import time

import httpx

from langchain_qwen_fast._qwen import render_chatml

from . import probes as p
from .report import FAIL, INFO, OK, WARN
from .session import Session


# -- server features ------------------------------------------------------------------------
def reasoning_parser(s: Session) -> None:
    t0 = time.perf_counter()
    r = s.chat(chat_template_kwargs={"enable_thinking": True})
    msg = p.message(r)
    content = (msg or {}).get("content") or ""
    if msg is None:
        s.add("reasoning_parser", FAIL, "a chat with enable_thinking=true failed: "
              f"{p.said(r)}", None, t0)
    elif p.reasoning(msg):
        name = "reasoning" if msg.get("reasoning") else "reasoning_content"
        s.add("reasoning_parser", OK, f"thinking on: the reasoning comes back in `{name}`, "
              "apart from content", None, t0)
    elif "<think>" in content or "</think>" in content:
        s.add("reasoning_parser", WARN, "thinking on: <think>...</think> arrives inline in "
              "content (no reasoning parser; BatchedChatQwen strips it, other clients do "
              "not)", p.FIX_REASONING, t0)
    else:
        s.add("reasoning_parser", WARN, "thinking on, yet neither reasoning nor <think> "
              "came back within 8 tokens", p.FIX_REASONING, t0)


def tools(s: Session) -> None:
    t0 = time.perf_counter()
    auto = s.chat(tools=[p.TOOL], tool_choice="auto", max_tokens=48)
    named = s.chat(tools=[p.TOOL], tool_choice=p.NAMED, max_tokens=48)
    parts = ["auto: " + ("accepted" if auto.status_code == 200 else p.said(auto))]
    msg, named_ok = p.message(named), False
    if msg is None:
        parts.append(f"named: {p.said(named)}")
    else:
        calls = msg.get("tool_calls") or [{}]
        fn = calls[0].get("function") or {}
        named_ok = fn.get("name") == "doctor_ping" and isinstance(p.loads(fn.get("arguments")),
                                                                   dict)
        got = f"doctor_ping({fn.get('arguments')})" if named_ok else (
            "cut at 48 tokens" if p.finish(named) == "length"
            else f"200 without a valid tool call: {str(msg)[:80]!r}")
        parts.append(f"named: {got}")
    finding = "; ".join(parts)
    flagged = any(m in p.said(x).lower() for x in (auto, named) for m in p.TOOL_ERRORS)
    if named_ok and auto.status_code == 200:
        s.add("tools", OK, finding, None, t0)
    elif named_ok:
        s.add("tools", WARN, finding, p.FIX_AUTO_TOOLS if flagged else None, t0)
    elif p.finish(named) == "length" and not flagged:
        s.add("tools", WARN, finding, None, t0)
    else:
        s.add("tools", FAIL, finding, p.FIX_TOOLS, t0)


def json_schema(s: Session) -> None:
    t0 = time.perf_counter()
    fmt = {"type": "json_schema",
           "json_schema": {"name": "doctor_check", "schema": p.FLAG, "strict": True}}
    r = s.chat(max_tokens=32, response_format=fmt)
    msg = p.message(r)
    if msg is None:
        s.add("json_schema", FAIL, f"response_format json_schema failed: {p.said(r)}",
              p.FIX_STRUCTURED, t0)
        return
    content = (msg.get("content") or "").strip()
    value = p.loads(content)
    if isinstance(value, dict) and set(value) == {"ok"} and isinstance(value["ok"], bool):
        s.add("json_schema", OK, f"valid JSON for the schema: {content}", None, t0)
    elif p.finish(r) == "length":
        s.add("json_schema", WARN, f"the JSON was cut at 32 tokens: {content[:60]!r}",
              None, t0)
    else:
        s.add("json_schema", FAIL, f"response_format was not honoured: {content[:60]!r}",
              p.FIX_STRUCTURED, t0)


def completions_list(s: Session) -> None:
    t0 = time.perf_counter()
    prompts = [render_chatml([{"role": "user", "content": text}], enable_thinking=False)
               for text in ("Hi.", "Bye.")]
    r = s.post(s.base + "/completions", {"model": s.model, "prompt": prompts,
                                         "max_tokens": 8, "temperature": 0})
    choices = p.as_json(r).get("choices") if r.status_code == 200 else None
    s.report.fingerprint.lists = False
    if not isinstance(choices, list):
        if r.status_code == 400 and _takes_a_string(s, prompts[0]):
            s.add("completions_list", WARN, f"/completions refuses a list of prompts ({p.said(r)}) but takes one "
                  "prompt as a string (vLLM's Rust front end does so): BatchedChatQwen notices it on the first "
                  "list and sends this server chat requests instead, at lower throughput", p.FIX_LISTS, t0)
            return
        s.add("completions_list", FAIL, "/completions with a list of 2 prompts: "
              f"{p.said(r)}", p.FIX_WIRE, t0)
        return
    indexes = sorted(c.get("index", -1) for c in choices if isinstance(c, dict))
    if indexes == [0, 1]:
        s.report.fingerprint.lists = True
        s.add("completions_list", OK, "a list of 2 prompts came back as 2 choices "
              "(index 0 and 1)", None, t0)
    else:
        s.add("completions_list", FAIL, "a list of 2 prompts came back with choice "
              f"indexes {indexes}", p.FIX_WIRE, t0)


def _takes_a_string(s: Session, prompt: str) -> bool:
    r = s.post(s.base + "/completions", {"model": s.model, "prompt": prompt, "max_tokens": 8, "temperature": 0})
    return r.status_code == 200 and isinstance(p.as_json(r).get("choices"), list)


def priority_scheduling(s: Session) -> None:
    """One tiny chat with ``priority: -1``, then the policy where the server tells it.

    vLLM's V1 engine (0.11 and later) takes a non-zero priority under its default FCFS policy
    too and ignores it, so an accepted request alone does not prove priority scheduling; the
    V0 engine and some servers reject it instead. -1 rather than +1: a probe that is not
    starved behind a loaded server's traffic, and it asks for one token only.
    """
    t0 = time.perf_counter()
    r = s.chat(max_tokens=1, priority=-1)
    if r.status_code != 200:
        words = p.said(r)
        if r.status_code in (400, 422) and "priorit" in words.lower():
            s.add("priority_scheduling", WARN, "FCFS: the server rejects priority=-1 "
                  f"({words}); priorities are applied only in the client's queue, and "
                  "server_priority=True would make such calls fail", p.FIX_PRIORITY, t0)
        else:
            s.add("priority_scheduling", WARN, f"a chat with priority=-1 failed: {words}",
                  None, t0)
        return
    policy = _policy(s)
    if policy == "priority":
        s.add("priority_scheduling", OK, "the server schedules by priority; set "
              "`server_priority=True` to pass BatchedChatQwen's priority on", None, t0)
    elif policy is not None and s.simulated:
        s.add("priority_scheduling", INFO, f"the simulator runs {policy!r} (vLLM's default): it "
              "takes priority=-1 and ignores it, and the client's queue applies priorities "
              "(--scheduling-policy priority simulates vLLM's priority policy)", None, t0)
    elif policy is not None:
        s.add("priority_scheduling", WARN, f"FCFS (scheduling policy {policy!r}, from "
              "/server_info): the server takes priority=-1 and ignores it; priorities "
              "are applied only in the client's queue", p.FIX_PRIORITY, t0)
    else:
        s.add("priority_scheduling", WARN, "priority=-1 is accepted, but the policy is "
              "not visible (no /server_info; vLLM serves it with VLLM_SERVER_DEV_MODE=1) "
              "and vLLM's default FCFS takes priorities and ignores them: unless vLLM "
              "was started with --scheduling-policy priority, priorities are applied "
              "only in the client's queue", p.FIX_PRIORITY, t0)


def _policy(s: Session) -> str | None:
    try:
        r = s.http.get(s.root + "/server_info", params={"config_format": "json"})
    except httpx.HTTPError:
        return None
    config = p.as_json(r).get("vllm_config") if r.status_code == 200 else None
    sched = config.get("scheduler_config") if isinstance(config, dict) else None
    policy = sched.get("policy") if isinstance(sched, dict) else None
    return str(policy) if policy else None
