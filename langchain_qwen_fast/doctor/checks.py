"""The checks against one server, in order (connection, URL, model, template here; the server's
features in ``features``); each ends in one :class:`~.report.Check`.

Why these checks: each is a way a server can look healthy and still break this package quietly
(an https URL for a plain-http server, a port that is not an HTTP server at all, a base_url
without ``/v1``, a model name the server does not serve, a template that ignores
``enable_thinking`` or differs from the ChatML the completions wire mode renders, missing tool or
reasoning parsers, no prompt lists on ``/v1/completions``, priorities the server ignores). Plain
sync httpx, short ``max_tokens`` and small timeouts, so a run takes seconds. The api key is sent,
never printed; URLs are shown with ``user:pass@`` removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from langchain_qwen_fast._qwen import EMPTY_THINK, render_chatml
from langchain_qwen_fast._served import choose, fix, is_named
from langchain_qwen_fast._urls import base_url_candidates, endpoint_suffix, origin, redact_url, server_root

from . import features
from . import probes as p
from .report import CHECKS, FAIL, INFO, OK, SKIPPED, WARN, Report, scrub
from .session import Session


# -- connection and URL ---------------------------------------------------------------------
def reachable(s: Session) -> bool:
    t0 = time.perf_counter()
    parts = urlsplit(s.base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        s.scheme_problem = f"{redact_url(s.given)!r} has no http:// or https:// scheme"
        s.base = "http://" + s.base.split("://")[-1]
        parts = urlsplit(s.base)
    host = parts.netloc.rsplit("@", 1)[-1]
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not parts.hostname:
            raise ValueError("no host name")
    except ValueError as e:  # one bad entry must not sink the report of every replica
        s.add("reachable", FAIL, f"{redact_url(s.given)!r} is not a valid URL: {e}",
              "use e.g. base_url=\"http://HOST:8000/v1\"", t0)
        return False
    try:
        root = s.root
        r = s.http.get(root + "/health")
        if r.status_code == 404 and origin(s.base) != root:  # a base_url under a wrong prefix (/api/v1)
            alt = s.http.get(origin(s.base) + "/health")
            if alt.status_code < 400:
                root, r = origin(s.base), alt
    except httpx.ConnectError as e:
        if parts.scheme == "https" and p.is_tls_failure(e):
            return _tls_failed(s, host, e, t0)
        s.add("reachable", FAIL, f"cannot connect to {host}: {p.reason(e)}",
              f"start the server (vllm serve MODEL --port {port}) "
              "or fix host:port in base_url", t0)
        return False
    except httpx.TimeoutException:
        s.add("reachable", FAIL, f"{host} did not answer GET /health in time",
              "check host:port and firewalls; a loading vLLM answers once it is up", t0)
        return False
    except httpx.HTTPError as e:
        return _not_http(s, host, port, parts.scheme, e, t0)
    version = ""
    try:
        v = s.http.get(root + "/version")
        if v.status_code == 200 and p.as_json(v).get("version"):
            version = f"; server version {p.as_json(v)['version']}"
            s.simulated = p.as_json(v).get("simulator") is True
    except httpx.HTTPError:
        pass
    where = "" if root == s.root else f" at {redact_url(root)}"
    if r.status_code >= 500:
        s.add("reachable", WARN, f"{host} answers, but /health{where} is {r.status_code}{version}",
              "read the server log: the engine may be dead or still loading", t0)
    else:
        s.add("reachable", OK, f"{host} answers; /health{where} {r.status_code}{version}", None, t0)
    return True


def _tls_failed(s: Session, host: str, e: httpx.HTTPError, t0: float) -> bool:
    """An https URL whose TLS handshake failed: a plain-http server is the usual reason."""
    plain = "http://" + s.base.split("://", 1)[1]
    root = server_root(plain)
    try:
        answered = s.http.get(root + "/health").status_code < 500
    except httpx.HTTPError:
        answered = False
    if not answered:
        s.add("reachable", FAIL, f"the TLS handshake with {host} failed: {p.reason(e)}",
              "check the scheme (http or https) and the server's certificate", t0)
        return False
    s.add("reachable", FAIL, f"{host} speaks plain HTTP, not TLS: the https:// URL "
          f"cannot connect ({p.reason(e)}); http:// answers", f'use base_url="'
          f'{redact_url(plain)}" (vLLM serves plain http unless given --ssl-certfile)', t0)
    s.base = plain  # the other checks run against what answers, like a missing /v1
    return True


def _not_http(s: Session, host: str, port: int, scheme: str, e: httpx.HTTPError,
              t0: float) -> bool:
    data = p.first_bytes(urlsplit(s.base).hostname or host, port, min(s.timeout, 3.0))
    kind = p.what_speaks(data) if data is not None else None
    if kind is None:
        s.add("reachable", FAIL, f"{host}: {type(e).__name__}: {p.reason(e)}",
              "check the scheme (http or https) and host:port", t0)
    elif kind[1] == "tls" and scheme == "http":
        tls = "https://" + s.base.split("://", 1)[1]
        s.add("reachable", FAIL, f"{host} is not a plain HTTP server: {kind[0]}",
              f'use base_url="{redact_url(tls)}"', t0)
    else:
        s.add("reachable", FAIL, f"{host} is not an HTTP server: {kind[0]}",
              "this port belongs to another program: point base_url at the port vLLM "
              "listens on (vllm serve ... --port N; 8000 by default)", t0)
    return False


def v1_prefix(s: Session) -> list[str] | None:
    """``{base}/models`` must be the OpenAI model list; return the served ids."""
    t0 = time.perf_counter()
    r = s.http.get(s.base + "/models")
    if r.status_code in (401, 403):
        s.add("base_url", FAIL, f"{s.shown}/models is {r.status_code}: the server wants "
              "an API key", "pass --api-key (the key given to vllm serve --api-key; "
              "BatchedChatQwen reads api_key or QWEN_API_KEY)", t0)
        return None
    ids = p.model_ids(r)
    if ids is not None:
        if s.scheme_problem:
            s.add("base_url", FAIL, s.scheme_problem, f'use base_url="{s.shown}"', t0)
        else:
            s.add("base_url", OK, f"{s.shown}/models lists the served models", None, t0)
        return ids
    tried = base_url_candidates(s.base)
    for candidate in tried:
        try:
            alt = p.model_ids(s.http.get(candidate + "/models"))
        except httpx.HTTPError:
            continue
        if alt is not None:
            also = f"; and {s.scheme_problem}" if s.scheme_problem else ""
            shown = redact_url(candidate)
            s.add("base_url", FAIL, f"{s.shown}/models is {r.status_code}, but "
                  f"{shown}/models answers: {_prefix_problem(s.base, candidate)}{also}",
                  f'use base_url="{shown}"', t0)
            s.base = candidate
            return alt
    s.add("base_url", FAIL, f"{s.shown}/models is {r.status_code}, and so is every likely "
          f"prefix ({', '.join(redact_url(c) + '/models' for c in tried)})",
          "point base_url at the OpenAI-compatible prefix, e.g. http://HOST:8000/v1", t0)
    return None


def _prefix_problem(base: str, found: str) -> str:
    """Why ``base`` was not the API's prefix, in the words of its shape (``found`` answered)."""
    if (suffix := endpoint_suffix(base)) is not None:
        return f"base_url ends with the endpoint {suffix}, but it is the prefix the endpoints live under"
    if found == base.rstrip("/") + "/v1":
        return "the /v1 prefix is missing"
    return f"the API is under {urlsplit(found).path}, not {urlsplit(base).path.rstrip('/') or '/'}"


def served_model(s: Session, ids: list[str]) -> None:
    t0 = time.perf_counter()
    served = ", ".join(ids)
    s.report.served_models = list(ids)
    if not ids:
        s.add("model", FAIL, "/models lists no model", "read the server log", t0)
        return
    if s.model is None:
        s.add("model", OK, f"serves {served}; no model given, so the checks use {ids[0]}",
              None, t0)
    elif not is_named(s.model):
        _unnamed_model(s, ids, t0)
    elif s.model in ids:
        s.add("model", OK, f"serves {served}; '{s.model}' matches", None, t0)
    else:
        which = f'"{ids[0]}"' if len(ids) == 1 else f"one of {served}"
        s.add("model", FAIL, f"'{s.model}' ({s.model_source}) is not served, so "
              f"every call would answer 404 (model does not exist); served: {served}",
              f'set the model to {which}: BatchedChatQwen(model="{ids[0]}") or '
              f"QWEN_MODEL={ids[0]} (qwen-fast doctor --model {ids[0]}); or start vLLM "
              f"with --served-model-name {s.model}", t0)
    if s.model not in ids:
        s.model = ids[0]
    s.report.checked_model = s.model  # the later checks use what is served


def _unnamed_model(s: Session, ids: list[str], t0: float) -> None:
    """No --model and no QWEN_MODEL: the check applies BatchedChatQwen's own rule (``_served.choose``). Where
    the default is not served, the later checks use ``ids[0]`` (``served_model`` sets it): the one model
    served, when that is what BatchedChatQwen discovers."""
    assert s.model is not None
    served = ", ".join(ids)
    choice = choose(s.model, {s.shown: ids})
    if choice.name is None:
        s.add("model", FAIL, f"no model named (--model, QWEN_MODEL) and the default {s.model} is not "
              f"served; the server serves {served}, so BatchedChatQwen cannot pick one",
              f"name one: {fix(ids[0])} (qwen-fast doctor --model {ids[0]})", t0)
        s.report.model_note = f"model: none named and {s.model} is not served; the checks below use {ids[0]}"
    elif choice.how == "discovered":
        s.add("model", OK, f"serves {served}; no model named (--model, QWEN_MODEL), so "
              f"BatchedChatQwen uses {choice.name}, the one model served", None, t0)
        s.report.model_note = f"model: none named; BatchedChatQwen uses {choice.name}, the one model served"
    else:
        s.add("model", OK, f"serves {served}; no model named, so BatchedChatQwen uses the default "
              f"{choice.name}", None, t0)


# -- the template ---------------------------------------------------------------------------
def thinking_switch(s: Session) -> None:
    t0 = time.perf_counter()
    off = s.tokenize(messages=p.HELLO, chat_template_kwargs={"enable_thinking": False})
    if off is None:
        return _thinking_by_behaviour(s, t0)
    s.tokenize_works = True
    on = s.tokenize(messages=p.HELLO, chat_template_kwargs={"enable_thinking": True}) or []
    empty = s.tokenize(prompt=EMPTY_THINK, add_special_tokens=False) or [-1]
    n, shown = len(empty), EMPTY_THINK.encode("unicode_escape").decode()
    if off[-n:] == empty and on[-n:] != empty:
        s.add("thinking_switch", OK, f"enable_thinking=false ends the prompt with {shown} "
              f"({n} tokens); true leaves the think block to the model", None, t0)
    elif off[-n:] != empty:
        s.add("thinking_switch", FAIL, "the template ignores enable_thinking=false: the "
              f"prompt does not end with {shown}, so every call reasons", p.FIX_TEMPLATE, t0)
    else:
        s.add("thinking_switch", WARN, "the template closes the think block even with "
              "enable_thinking=true: thinking cannot be switched on", p.FIX_TEMPLATE, t0)


def _thinking_by_behaviour(s: Session, t0: float) -> None:
    r = s.chat()
    msg = p.message(r)
    if msg is None:
        s.add("thinking_switch", WARN, "no /tokenize, and a chat with enable_thinking=false "
              f"failed: {p.said(r)}", None, t0)
    elif p.reasoning(msg) or "think>" in (msg.get("content") or ""):
        s.add("thinking_switch", FAIL, "no /tokenize; a chat with enable_thinking=false "
              "still reasoned", p.FIX_TEMPLATE, t0)
    elif s.simulated:
        s.add("thinking_switch", INFO, "the simulator has no /tokenize; a chat with "
              "enable_thinking=false came back without reasoning", None, t0)
    else:
        s.add("thinking_switch", WARN, f"no /tokenize at {redact_url(s.root)} to inspect "
              "the template; a chat with enable_thinking=false came back without reasoning",
              "for the exact check use vLLM (it serves POST /tokenize at the root)", t0)


def template(s: Session) -> None:
    t0 = time.perf_counter()
    if not s.tokenize_works:
        return _template_by_usage(s, t0)
    rendered: dict[bool, tuple[list[int], list[int]]] = {}
    for thinking in (False, True):
        server = s.tokenize(messages=p.CONVERSATION,
                            chat_template_kwargs={"enable_thinking": thinking})
        ours = s.tokenize(prompt=render_chatml(p.CONVERSATION, enable_thinking=thinking),
                          add_special_tokens=False)
        if server is None or ours is None:
            s.add("template", WARN, "/tokenize stopped answering", None, t0)
            return None
        rendered[thinking] = (server, ours)
    fp = s.report.fingerprint
    fp.tokens = (tuple(rendered[False][0]), tuple(rendered[True][0]))
    fp.prompt_tokens = len(rendered[False][0])
    for thinking, (server, ours) in rendered.items():
        if server != ours:
            i = first_difference(server, ours)
            s.add("template", FAIL, "render_chatml differs from the server's template at "
                  f"token {i} (thinking {'on' if thinking else 'off'}: server "
                  f"{server[i:i + 3]}, ours {ours[i:i + 3]}); the completions wire mode "
                  "would send other prompts than chat does", p.FIX_WIRE, t0)
            return None
    total = sum(len(server) for server, _ in rendered.values())
    s.add("template", OK, "render_chatml equals the server's template token for token "
          f"({len(p.CONVERSATION)} turns, thinking on and off, {total} tokens)", None, t0)
    return None


def _template_by_usage(s: Session, t0: float) -> None:
    # Without /tokenize, compare what each endpoint counts for the same conversation.
    chat = p.prompt_tokens(s.chat(messages=p.CONVERSATION, max_tokens=1))
    s.report.fingerprint.prompt_tokens = chat
    prompt = render_chatml(p.CONVERSATION, enable_thinking=False)
    comp = p.prompt_tokens(s.post(s.base + "/completions", {
        "model": s.model, "prompt": prompt, "max_tokens": 1, "temperature": 0}))
    if chat is None or comp is None:
        s.add("template", WARN, "no /tokenize and no usage to compare render_chatml with "
              "the server's template", f"if chat and completions answers differ: "
              f"{p.FIX_WIRE}", t0)
    elif chat != comp:
        s.add("template", FAIL, f"render_chatml gives {comp} prompt tokens, the server's "
              f"template {chat} (no /tokenize for an exact check)", p.FIX_WIRE, t0)
    elif s.simulated:
        s.add("template", INFO, "the simulator has no /tokenize for a token-for-token check; "
              f"prompt token counts agree ({chat} via chat and via render_chatml on /completions)",
              None, t0)
    else:
        s.add("template", WARN, "no /tokenize for a token-for-token check; prompt token "
              f"counts agree ({chat} via chat and via render_chatml on /completions)",
              f"vLLM's /tokenize gives the exact check; if in doubt: {p.FIX_WIRE}", t0)


def first_difference(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y),  # noqa: B905
                min(len(a), len(b)))


def run_checks(base_url: str, *, model: str | None = None, api_key: str | None = None,
               timeout: float = 15.0, model_source: str = "the model given",
               transport: httpx.BaseTransport | None = None) -> Report:
    """Run every check against one server. ``model_source`` says where the name came from (it
    is quoted when the name is not served); ``transport`` lets tests replace the network."""
    doc = Session(base_url, model, model_source, api_key, timeout, transport)
    later: list[tuple[str, Callable[[Session], None]]] = [
        ("thinking_switch", thinking_switch), ("template", template),
        ("reasoning_parser", features.reasoning_parser), ("tools", features.tools),
        ("json_schema", features.json_schema), ("completions_list", features.completions_list),
        ("priority_scheduling", features.priority_scheduling)]
    try:
        ids, why = None, "server not reachable"
        if reachable(doc):
            ids, why = v1_prefix(doc), "no OpenAI-compatible API at base_url"
        if ids is not None:
            served_model(doc, ids)
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
                check(doc)
            except httpx.TimeoutException:
                doc.add(name, FAIL, f"no answer within {timeout:g} s",
                        "raise --timeout, or look at the server's load", t0)
            except httpx.HTTPError as e:
                doc.add(name, FAIL, f"{type(e).__name__}: {p.reason(e)}", None, t0)
    finally:
        doc.close()
    report = doc.report
    report.effective_base_url = doc.shown
    report.checks.sort(key=lambda c: CHECKS.index(c.name))
    scrub(report.checks, [api_key or ""], [base_url])
    return report
