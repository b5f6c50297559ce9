"""``qwen-fast doctor``: check a vLLM/SGLang server the way a new user needs it checked.

    qwen-fast doctor [--base-url URL] [--model NAME] [--api-key KEY] [--timeout S] [--json]

Every check ends ok / warn / fail / skipped with a one-line finding and, where something is
wrong, the one change that fixes it: the ``vllm serve`` flag to add, or the URL or field to use.
Exit code 0 when nothing failed, 1 otherwise.

Why these checks: each is a way a server can look healthy and still break this package quietly
(a base_url without ``/v1``, a template that ignores ``enable_thinking``, a template that differs
from the ChatML the completions wire mode renders, missing tool or reasoning parsers, no prompt
lists on ``/v1/completions``). Plain sync httpx, short ``max_tokens`` and small timeouts, so a
run takes seconds. The defaults come from :class:`BatchedChatQwen` itself (``QWEN_BASE_URL``,
``QWEN_MODEL``, ``QWEN_API_KEY``, ...), so without arguments it checks what the model would use.
The api key is sent, never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from langchain_qwen_fast._errors import server_message
from langchain_qwen_fast._qwen import EMPTY_THINK, render_chatml

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
STATUSES = (OK, WARN, FAIL, SKIPPED)
CHECKS = ("reachable", "base_url", "model", "thinking_switch", "template", "reasoning_parser",
          "tools", "json_schema", "completions_list")

FIX_TOOLS = "vllm serve ... --enable-auto-tool-choice --tool-call-parser hermes"
FIX_AUTO_TOOLS = "vllm serve ... --enable-auto-tool-choice"
FIX_REASONING = "vllm serve ... --reasoning-parser qwen3"
FIX_TEMPLATE = ("vllm serve ... --chat-template QWEN3.jinja "
                "(a Qwen3 template, which has the enable_thinking switch)")
FIX_WIRE = 'BatchedChatQwen(..., wire_mode="chat")'
FIX_STRUCTURED = ("vllm serve ... --structured-outputs-config '{\"backend\":\"xgrammar\"}' "
                  "(or upgrade vLLM)")

_HELLO = [{"role": "user", "content": "Say hello."}]
#: A system turn, an earlier answer whose reasoning the template must drop, and non-ASCII text:
#: where a hand-written ChatML most often drifts from the model's template.
_CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "<think>\nhidden\n</think>\n\nHello!"},
    {"role": "user", "content": "And again, in 中文?"},
]
_FLAG = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
         "additionalProperties": False}
_TOOL = {"type": "function", "function": {"name": "doctor_ping", "parameters": _FLAG,
                                          "description": "Confirm that the check worked."}}
_NAMED = {"type": "function", "function": {"name": "doctor_ping"}}
_TOOL_ERRORS = ("tool-call-parser", "tool_call_parser", "auto-tool-choice", "auto tool choice")


@dataclass
class Check:
    name: str
    status: str
    finding: str
    fix: str | None = None
    ms: float = 0.0


@dataclass
class Report:
    base_url: str
    effective_base_url: str
    model: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == FAIL for c in self.checks) else 0

    def summary(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "effective_base_url": self.effective_base_url,
                "model": self.model, "exit_code": self.exit_code, "summary": self.summary(),
                "checks": [asdict(c) for c in self.checks]}

    def render_text(self, color: bool = False) -> str:
        paint = {OK: "32", WARN: "33", FAIL: "31", SKIPPED: "2"}
        w = max([len(c.name) for c in self.checks] + [5])
        url = self.effective_base_url
        if url != self.base_url.rstrip("/"):
            url = f"{self.base_url} (checked as {url})"
        lines = [f"qwen-fast doctor: {url}  (model: {self.model or '?'})", "",
                 f"{'check':<{w}}  status   finding", f"{'-' * w}  -------  {'-' * 60}"]
        for c in self.checks:
            status = f"{c.status:<7}"
            if color:
                status = f"\033[{paint[c.status]}m{status}\033[0m"
            lines.append(f"{c.name:<{w}}  {status}  {c.finding}")
            if c.fix:
                lines.append(f"{'':<{w}}           fix: {c.fix}")
        s = self.summary()
        verdict = "no failures" if self.exit_code == 0 else "FAILED"
        counts = ", ".join(f"{s[k]} {k}" for k in STATUSES)
        lines += ["", f"{counts}: {verdict}"]
        return "\n".join(lines)


class _Doctor:
    """The checks, in order; each appends one :class:`Check` to ``self.report``."""

    def __init__(self, base_url: str, model: str | None, model_explicit: bool,
                 api_key: str | None, timeout: float,
                 transport: httpx.BaseTransport | None) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # trust_env=False: the model's aiohttp engine ignores HTTP(S)_PROXY too; check that path.
        self.http = httpx.Client(headers=headers, transport=transport, trust_env=False,
                                 timeout=httpx.Timeout(timeout, connect=min(3.0, timeout)))
        self.given = base_url
        self.base = base_url.rstrip("/")
        self.model, self.model_explicit = model, model_explicit
        self.report = Report(base_url, self.base, model)
        self.tokenize_works = False
        self.scheme_problem: str | None = None

    @property
    def root(self) -> str:
        """Where /health, /version and /tokenize live: the base_url without ``/v1``."""
        return self.base[: -len("/v1")] if self.base.endswith("/v1") else self.base

    def add(self, name: str, status: str, finding: str, fix: str | None = None,
            t0: float | None = None) -> None:
        ms = round((time.perf_counter() - t0) * 1000, 1) if t0 is not None else 0.0
        self.report.checks.append(Check(name, status, finding, fix, ms))

    def post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(url, json=body)

    def chat(self, **body: Any) -> httpx.Response:
        payload = {"model": self.model, "messages": _HELLO, "max_tokens": 8, "temperature": 0,
                   "chat_template_kwargs": {"enable_thinking": False}, **body}
        return self.post(self.base + "/chat/completions", payload)

    def tokenize(self, **body: Any) -> list[int] | None:
        try:
            r = self.post(self.root + "/tokenize", {"model": self.model, **body})
        except httpx.HTTPError:
            return None
        tokens = _json(r).get("tokens") if r.status_code == 200 else None
        return tokens if isinstance(tokens, list) else None

    # -- connection and URL ---------------------------------------------------------------------
    def reachable(self) -> bool:
        t0 = time.perf_counter()
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.scheme_problem = f"{self.given!r} has no http:// or https:// scheme"
            self.base = self.report.effective_base_url = "http://" + self.base.split("://")[-1]
            parts = urlsplit(self.base)
        host = parts.netloc
        try:
            r = self.http.get(self.root + "/health")
        except httpx.ConnectError as e:
            self.add("reachable", FAIL, f"cannot connect to {host}: {_reason(e)}",
                     f"start the server (vllm serve MODEL --port {parts.port or 80}) "
                     "or fix host:port in base_url", t0)
            return False
        except httpx.TimeoutException:
            self.add("reachable", FAIL, f"{host} did not answer GET /health in time",
                     "check host:port and firewalls; a loading vLLM answers once it is up", t0)
            return False
        except httpx.HTTPError as e:
            self.add("reachable", FAIL, f"{host}: {type(e).__name__}: {_reason(e)}",
                     "check the scheme (http or https) and host:port", t0)
            return False
        version = ""
        try:
            v = self.http.get(self.root + "/version")
            if v.status_code == 200 and _json(v).get("version"):
                version = f"; server version {_json(v)['version']}"
        except httpx.HTTPError:
            pass
        if r.status_code >= 500:
            self.add("reachable", WARN, f"{host} answers, but /health is {r.status_code}{version}",
                     "read the server log: the engine may be dead or still loading", t0)
        else:
            self.add("reachable", OK, f"{host} answers; /health {r.status_code}{version}", None, t0)
        return True

    def base_url(self) -> list[str] | None:
        """``{base}/models`` must be the OpenAI model list; return the served ids."""
        t0 = time.perf_counter()
        r = self.http.get(self.base + "/models")
        if r.status_code in (401, 403):
            self.add("base_url", FAIL, f"{self.base}/models is {r.status_code}: the server wants "
                     "an API key", "pass --api-key (the key given to vllm serve --api-key; "
                     "BatchedChatQwen reads api_key or QWEN_API_KEY)", t0)
            return None
        ids = _model_ids(r)
        if ids is not None:
            if self.scheme_problem:
                self.add("base_url", FAIL, self.scheme_problem, f'use base_url="{self.base}"', t0)
            else:
                self.add("base_url", OK, f"{self.base}/models lists the served models", None, t0)
            return ids
        for candidate in _v1_candidates(self.base):
            try:
                alt = _model_ids(self.http.get(candidate + "/models"))
            except httpx.HTTPError:
                continue
            if alt is not None:
                also = f"; and {self.scheme_problem}" if self.scheme_problem else ""
                self.add("base_url", FAIL, f"{self.base}/models is {r.status_code}, but "
                         f"{candidate}/models answers: the /v1 prefix is missing{also}",
                         f'use base_url="{candidate}"', t0)
                self.base = self.report.effective_base_url = candidate
                return alt
        self.add("base_url", FAIL, f"{self.base}/models is {r.status_code}, and no /v1 variant "
                 "answers", "point base_url at the OpenAI-compatible prefix, e.g. "
                 "http://HOST:8000/v1", t0)
        return None

    def served_model(self, ids: list[str]) -> None:
        t0 = time.perf_counter()
        served = ", ".join(ids)
        if not ids:
            self.add("model", FAIL, "/models lists no model", "read the server log", t0)
        elif self.model in ids:
            self.add("model", OK, f"serves {served}; '{self.model}' matches", None, t0)
        else:
            whose = "--model" if self.model_explicit else "BatchedChatQwen's default"
            self.add("model", FAIL if self.model_explicit else WARN,
                     f"'{self.model}' ({whose}) is not served; served: {served}",
                     f'pass model="{ids[0]}" (or set QWEN_MODEL), or start vLLM with '
                     f"--served-model-name {self.model}", t0)
            self.model = self.report.model = ids[0]  # the later checks use what is served

    # -- the template ---------------------------------------------------------------------------
    def thinking_switch(self) -> None:
        t0 = time.perf_counter()
        off = self.tokenize(messages=_HELLO, chat_template_kwargs={"enable_thinking": False})
        if off is None:
            return self._thinking_by_behaviour(t0)
        self.tokenize_works = True
        on = self.tokenize(messages=_HELLO, chat_template_kwargs={"enable_thinking": True}) or []
        empty = self.tokenize(prompt=EMPTY_THINK, add_special_tokens=False) or [-1]
        n, shown = len(empty), EMPTY_THINK.encode("unicode_escape").decode()
        if off[-n:] == empty and on[-n:] != empty:
            self.add("thinking_switch", OK, f"enable_thinking=false ends the prompt with {shown} "
                     f"({n} tokens); true leaves the think block to the model", None, t0)
        elif off[-n:] != empty:
            self.add("thinking_switch", FAIL, "the template ignores enable_thinking=false: the "
                     f"prompt does not end with {shown}, so every call reasons", FIX_TEMPLATE, t0)
        else:
            self.add("thinking_switch", WARN, "the template closes the think block even with "
                     "enable_thinking=true: thinking cannot be switched on", FIX_TEMPLATE, t0)

    def _thinking_by_behaviour(self, t0: float) -> None:
        r = self.chat()
        msg = _message(r)
        if msg is None:
            self.add("thinking_switch", WARN, "no /tokenize, and a chat with enable_thinking=false "
                     f"failed: {_said(r)}", None, t0)
        elif _reasoning(msg) or "think>" in (msg.get("content") or ""):
            self.add("thinking_switch", FAIL, "no /tokenize; a chat with enable_thinking=false "
                     "still reasoned", FIX_TEMPLATE, t0)
        else:
            self.add("thinking_switch", WARN, f"no /tokenize at {self.root} to inspect the "
                     "template; a chat with enable_thinking=false came back without reasoning",
                     "for the exact check use vLLM (it serves POST /tokenize at the root)", t0)

    def template(self) -> None:
        t0 = time.perf_counter()
        if not self.tokenize_works:
            return self._template_by_usage(t0)
        total = 0
        for thinking in (False, True):
            server = self.tokenize(messages=_CONVERSATION,
                                   chat_template_kwargs={"enable_thinking": thinking})
            ours = self.tokenize(prompt=render_chatml(_CONVERSATION, enable_thinking=thinking),
                                 add_special_tokens=False)
            if server is None or ours is None:
                self.add("template", WARN, "/tokenize stopped answering", None, t0)
                return None
            if server != ours:
                i = next((k for k, (a, b) in enumerate(zip(server, ours)) if a != b),  # noqa: B905
                         min(len(server), len(ours)))
                self.add("template", FAIL, "render_chatml differs from the server's template at "
                         f"token {i} (thinking {'on' if thinking else 'off'}: server "
                         f"{server[i:i + 3]}, ours {ours[i:i + 3]}); the completions wire mode "
                         "would send other prompts than chat does", FIX_WIRE, t0)
                return None
            total += len(server)
        self.add("template", OK, "render_chatml equals the server's template token for token "
                 f"({len(_CONVERSATION)} turns, thinking on and off, {total} tokens)", None, t0)
        return None

    def _template_by_usage(self, t0: float) -> None:
        # Without /tokenize, compare what each endpoint counts for the same conversation.
        chat = _prompt_tokens(self.chat(messages=_CONVERSATION, max_tokens=1))
        prompt = render_chatml(_CONVERSATION, enable_thinking=False)
        comp = _prompt_tokens(self.post(self.base + "/completions", {
            "model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0}))
        if chat is None or comp is None:
            self.add("template", WARN, "no /tokenize and no usage to compare render_chatml with "
                     "the server's template", f"if chat and completions answers differ: {FIX_WIRE}",
                     t0)
        elif chat != comp:
            self.add("template", FAIL, f"render_chatml gives {comp} prompt tokens, the server's "
                     f"template {chat} (no /tokenize for an exact check)", FIX_WIRE, t0)
        else:
            self.add("template", WARN, "no /tokenize for a token-for-token check; prompt token "
                     f"counts agree ({chat} via chat and via render_chatml on /completions)",
                     f"vLLM's /tokenize gives the exact check; if in doubt: {FIX_WIRE}", t0)

    # -- server features ------------------------------------------------------------------------
    def reasoning_parser(self) -> None:
        t0 = time.perf_counter()
        r = self.chat(chat_template_kwargs={"enable_thinking": True})
        msg = _message(r)
        content = (msg or {}).get("content") or ""
        if msg is None:
            self.add("reasoning_parser", FAIL, "a chat with enable_thinking=true failed: "
                     f"{_said(r)}", None, t0)
        elif _reasoning(msg):
            name = "reasoning" if msg.get("reasoning") else "reasoning_content"
            self.add("reasoning_parser", OK, f"thinking on: the reasoning comes back in `{name}`, "
                     "apart from content", None, t0)
        elif "<think>" in content or "</think>" in content:
            self.add("reasoning_parser", WARN, "thinking on: <think>...</think> arrives inline in "
                     "content (no reasoning parser; BatchedChatQwen strips it, other clients do "
                     "not)", FIX_REASONING, t0)
        else:
            self.add("reasoning_parser", WARN, "thinking on, yet neither reasoning nor <think> "
                     "came back within 8 tokens", FIX_REASONING, t0)

    def tools(self) -> None:
        t0 = time.perf_counter()
        auto = self.chat(tools=[_TOOL], tool_choice="auto", max_tokens=48)
        named = self.chat(tools=[_TOOL], tool_choice=_NAMED, max_tokens=48)
        parts = ["auto: " + ("accepted" if auto.status_code == 200 else _said(auto))]
        msg, named_ok = _message(named), False
        if msg is None:
            parts.append(f"named: {_said(named)}")
        else:
            calls = msg.get("tool_calls") or [{}]
            fn = calls[0].get("function") or {}
            named_ok = fn.get("name") == "doctor_ping" and isinstance(_loads(fn.get("arguments")),
                                                                       dict)
            got = f"doctor_ping({fn.get('arguments')})" if named_ok else (
                "cut at 48 tokens" if _finish(named) == "length"
                else f"200 without a valid tool call: {str(msg)[:80]!r}")
            parts.append(f"named: {got}")
        finding = "; ".join(parts)
        flagged = any(m in _said(x).lower() for x in (auto, named) for m in _TOOL_ERRORS)
        if named_ok and auto.status_code == 200:
            self.add("tools", OK, finding, None, t0)
        elif named_ok:
            self.add("tools", WARN, finding, FIX_AUTO_TOOLS if flagged else None, t0)
        elif _finish(named) == "length" and not flagged:
            self.add("tools", WARN, finding, None, t0)
        else:
            self.add("tools", FAIL, finding, FIX_TOOLS, t0)

    def json_schema(self) -> None:
        t0 = time.perf_counter()
        fmt = {"type": "json_schema",
               "json_schema": {"name": "doctor_check", "schema": _FLAG, "strict": True}}
        r = self.chat(max_tokens=32, response_format=fmt)
        msg = _message(r)
        if msg is None:
            self.add("json_schema", FAIL, f"response_format json_schema failed: {_said(r)}",
                     FIX_STRUCTURED, t0)
            return
        content = (msg.get("content") or "").strip()
        value = _loads(content)
        if isinstance(value, dict) and set(value) == {"ok"} and isinstance(value["ok"], bool):
            self.add("json_schema", OK, f"valid JSON for the schema: {content}", None, t0)
        elif _finish(r) == "length":
            self.add("json_schema", WARN, f"the JSON was cut at 32 tokens: {content[:60]!r}",
                     None, t0)
        else:
            self.add("json_schema", FAIL, f"response_format was not honoured: {content[:60]!r}",
                     FIX_STRUCTURED, t0)

    def completions_list(self) -> None:
        t0 = time.perf_counter()
        prompts = [render_chatml([{"role": "user", "content": text}], enable_thinking=False)
                   for text in ("Hi.", "Bye.")]
        r = self.post(self.base + "/completions", {"model": self.model, "prompt": prompts,
                                                   "max_tokens": 8, "temperature": 0})
        choices = _json(r).get("choices") if r.status_code == 200 else None
        if not isinstance(choices, list):
            self.add("completions_list", FAIL, f"/completions with a list of 2 prompts: {_said(r)}",
                     FIX_WIRE, t0)
            return
        indexes = sorted(c.get("index", -1) for c in choices if isinstance(c, dict))
        if indexes == [0, 1]:
            self.add("completions_list", OK, "a list of 2 prompts came back as 2 choices "
                     "(index 0 and 1)", None, t0)
        else:
            self.add("completions_list", FAIL, "a list of 2 prompts came back with choice "
                     f"indexes {indexes}", FIX_WIRE, t0)


# -- small helpers ----------------------------------------------------------------------------
def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _model_ids(r: httpx.Response) -> list[str] | None:
    data = _json(r).get("data") if r.status_code == 200 else None
    if not isinstance(data, list):
        return None
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


def _v1_candidates(base: str) -> list[str]:
    """Where the OpenAI prefix probably is: cut after a ``/v1`` segment, or append one."""
    parts = urlsplit(base)
    segs = parts.path.split("/")
    if "v1" not in segs:
        return [base + "/v1"]
    cut = f"{parts.scheme}://{parts.netloc}{'/'.join(segs[: segs.index('v1') + 1])}"
    return [cut] if cut != base else []


def _message(r: httpx.Response) -> dict[str, Any] | None:
    choices = _json(r).get("choices") if r.status_code == 200 else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    msg = choices[0].get("message")
    return msg if isinstance(msg, dict) else None


def _finish(r: httpx.Response) -> str | None:
    choices = _json(r).get("choices")
    ok = isinstance(choices, list) and choices and isinstance(choices[0], dict)
    return choices[0].get("finish_reason") if ok else None  # type: ignore[index]


def _reasoning(msg: dict[str, Any]) -> str | None:
    return msg.get("reasoning") or msg.get("reasoning_content")


def _prompt_tokens(r: httpx.Response) -> int | None:
    usage = _json(r).get("usage") if r.status_code == 200 else None
    return usage.get("prompt_tokens") if isinstance(usage, dict) else None


def _said(r: httpx.Response) -> str:
    return "200" if r.status_code == 200 else f"{r.status_code} {server_message(r.content)[:140]!r}"


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return "connection refused" if "refused" in text.lower() else text


def run_checks(base_url: str, *, model: str | None = None, api_key: str | None = None,
               timeout: float = 15.0, model_explicit: bool = True,
               transport: httpx.BaseTransport | None = None) -> Report:
    """Run every check against one server. ``transport`` lets tests replace the network."""
    doc = _Doctor(base_url, model, model_explicit, api_key, timeout, transport)
    later: list[tuple[str, Callable[[], None]]] = [
        ("thinking_switch", doc.thinking_switch), ("template", doc.template),
        ("reasoning_parser", doc.reasoning_parser), ("tools", doc.tools),
        ("json_schema", doc.json_schema), ("completions_list", doc.completions_list)]
    try:
        ids, why = None, "server not reachable"
        if doc.reachable():
            ids, why = doc.base_url(), "no OpenAI-compatible API at base_url"
        if ids is not None:
            doc.served_model(ids)
            why = "no served model"
        for name in ("base_url", "model"):
            if not any(c.name == name for c in doc.report.checks):
                doc.add(name, SKIPPED, why)
        for name, check in later:
            if not ids:
                doc.add(name, SKIPPED, why)
                continue
            t0 = time.perf_counter()
            try:
                check()
            except httpx.TimeoutException:
                doc.add(name, FAIL, f"no answer within {timeout:g} s",
                        "raise --timeout, or look at the server's load", t0)
            except httpx.HTTPError as e:
                doc.add(name, FAIL, f"{type(e).__name__}: {_reason(e)}", None, t0)
    finally:
        doc.http.close()
    doc.report.checks.sort(key=lambda c: CHECKS.index(c.name))
    if api_key:  # belt and braces: a server or proxy may echo the header in an error message
        for c in doc.report.checks:
            c.finding = c.finding.replace(api_key, "***")
            c.fix = c.fix.replace(api_key, "***") if c.fix else c.fix
    return doc.report


def _model_defaults() -> tuple[str, str, str | None]:
    """What ``BatchedChatQwen()`` would use: its own env-aware field defaults."""
    from langchain_qwen_fast.chat_models import BatchedChatQwen

    f = BatchedChatQwen.model_fields
    base = f["base_url"].default_factory()  # type: ignore[call-arg,misc]
    model = f["model_name"].default_factory()  # type: ignore[call-arg,misc]
    key = f["api_key"].default_factory()  # type: ignore[call-arg,misc]
    base = base[0] if isinstance(base, list) else base
    return str(base), str(model), (key.get_secret_value() if key is not None else None)


def main(argv: list[str]) -> int:
    base, model, key = _model_defaults()
    ap = argparse.ArgumentParser(
        prog="qwen-fast doctor",
        description="Check a vLLM/SGLang server for BatchedChatQwen. Each check says ok, warn, "
        "fail or skipped, what it found, and the flag or URL that fixes it. Exit code 1 when "
        "a check fails.")
    ap.add_argument("--base-url", help=f"default: QWEN_BASE_URL/OPENAI_BASE_URL or {base}")
    ap.add_argument("--model", help=f"the served name you use (default: QWEN_MODEL or {model})")
    ap.add_argument("--api-key", help="default: QWEN_API_KEY / OPENAI_API_KEY; never printed")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default 15)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    report = run_checks(args.base_url or base, model=args.model or model,
                        api_key=args.api_key or key, timeout=args.timeout,
                        model_explicit=args.model is not None)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.render_text(color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
