"""The state of one server's check: an httpx client, the URL as corrected so far (a missing
``/v1`` or a wrong scheme is fixed for the later checks, as the finding says), the model the checks
use, and the :class:`~.report.Report` the checks append to."""

from __future__ import annotations

import time
from typing import Any

import httpx

from langchain_qwen_fast._urls import redact_url, server_root

from . import probes as p
from .report import Check, Report


class Session:
    """One server being checked: the HTTP client, the URL as corrected so far, the model the
    checks use, and the report each check appends its :class:`Check` to."""

    def __init__(self, base_url: str, model: str | None, model_source: str,
                 api_key: str | None, timeout: float,
                 transport: httpx.BaseTransport | None) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # trust_env=False: the model's own engines ignore HTTP(S)_PROXY too; check that path.
        self.http = httpx.Client(headers=headers, transport=transport, trust_env=False,
                                 timeout=httpx.Timeout(timeout, connect=min(3.0, timeout)))
        self.timeout = timeout
        self.given = base_url
        self.base = base_url.rstrip("/")  # raw (credentials kept) for requests; shown redacted
        self.model, self.model_source = model, model_source
        self.report = Report(redact_url(base_url), redact_url(self.base), model)
        self.tokenize_works = False
        self.scheme_problem: str | None = None
        #: A server that says it is the project's simulator (``/version``): what it lacks by design is
        #: ``info``, not a warning (a real vLLM's same finding stays a warning).
        self.simulated = False

    @property
    def root(self) -> str:
        """Where /health, /version, /tokenize and /server_info live: the base_url without /v1."""
        return server_root(self.base)

    @property
    def shown(self) -> str:
        return redact_url(self.base)

    def add(self, name: str, status: str, finding: str, fix: str | None = None,
            t0: float | None = None) -> None:
        ms = round((time.perf_counter() - t0) * 1000, 1) if t0 is not None else 0.0
        self.report.checks.append(Check(name, status, finding, fix, ms))

    def post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(url, json=body)

    def chat(self, **body: Any) -> httpx.Response:
        payload = {"model": self.model, "messages": p.HELLO, "max_tokens": 8, "temperature": 0,
                   "chat_template_kwargs": {"enable_thinking": False}, **body}
        return self.post(self.base + "/chat/completions", payload)

    def tokenize(self, **body: Any) -> list[int] | None:
        try:
            r = self.post(self.root + "/tokenize", {"model": self.model, **body})
        except httpx.HTTPError:
            return None
        tokens = p.as_json(r).get("tokens") if r.status_code == 200 else None
        return tokens if isinstance(tokens, list) else None

    def close(self) -> None:
        self.http.close()
