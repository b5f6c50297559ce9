"""The doctor's results: one :class:`Report` per server, one :class:`Diagnosis` per run (every
replica of a ``base_url`` list, plus the checks across them), rendered as a table or as JSON.

Every URL in here is already redacted (``user:pass@`` removed); :func:`scrub` is the last pass
that also takes out the api key and any credential a server or an exception echoed back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

OK, WARN, FAIL, SKIPPED, INFO = "ok", "warn", "fail", "skipped", "info"
#: ``info``: shown, never a problem: what a simulated server lacks by design (no /tokenize, ...).
STATUSES = (OK, WARN, FAIL, SKIPPED, INFO)
CHECKS = ("reachable", "base_url", "model", "thinking_switch", "template", "reasoning_parser",
          "tools", "json_schema", "completions_list", "priority_scheduling")
ACROSS = ("same_models", "same_template")
_PAINT = {OK: "32", WARN: "33", FAIL: "31", SKIPPED: "2", INFO: "36"}


@dataclass
class Check:
    name: str
    status: str
    finding: str
    fix: str | None = None
    ms: float = 0.0


@dataclass
class Fingerprint:
    """What a server did with the probe conversation, kept to compare replicas (not printed).

    ``tokens``: its template's token ids (thinking off, on) where ``/tokenize`` answers;
    ``prompt_tokens``: the prompt size chat reports for it; ``lists``: whether a completions
    list came back as one choice per prompt (None: not tried).
    """

    tokens: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    prompt_tokens: int | None = None
    lists: bool | None = None


@dataclass
class Report:
    """One server. ``model`` is the name configured; ``checked_model`` the one the checks used
    (the first served name when the configured one is not served)."""

    base_url: str
    effective_base_url: str
    model: str | None
    checked_model: str | None = None
    served_models: list[str] | None = None
    checks: list[Check] = field(default_factory=list)
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    #: The model line's words when no model was named and the rule decided (``checks._unnamed_model``).
    model_note: str | None = None

    @property
    def exit_code(self) -> int:
        return _exit_code(self.checks)

    def summary(self) -> dict[str, int]:
        return _count(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "effective_base_url": self.effective_base_url,
                "model": self.model, "checked_model": self.checked_model,
                "served_models": self.served_models, "exit_code": self.exit_code,
                "summary": self.summary(), "checks": [asdict(c) for c in self.checks]}

    def title(self) -> str:
        url = self.effective_base_url
        if url != self.base_url.rstrip("/"):
            url = f"{self.base_url} (checked as {url})"
        return url

    def model_line(self) -> str:
        if self.model_note:
            return self.model_note
        if self.model is None and self.checked_model:
            return f"model: none given; the checks use {self.checked_model}"
        if self.checked_model and self.checked_model != self.model:
            return (f"model: {self.model or '?'} is not served; the checks below use "
                    f"{self.checked_model}")
        return f"model: {self.model or '?'}"

    def render_text(self, color: bool = False) -> str:
        lines = [f"qwen-fast doctor: {self.title()}  ({self.model_line()})", "",
                 *_table(self.checks, color)]
        return "\n".join([*lines, "", _verdict(self.checks)])


@dataclass
class Diagnosis:
    """A whole run: every replica's report, in the order given, and the checks across them."""

    replicas: list[Report]
    across: list[Check] = field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        return [c for r in self.replicas for c in r.checks] + self.across

    @property
    def exit_code(self) -> int:
        return _exit_code(self.checks)

    def summary(self) -> dict[str, int]:
        return _count(self.checks)

    def to_dict(self) -> dict[str, Any]:
        first = self.replicas[0] if self.replicas else None
        return {"exit_code": self.exit_code, "summary": self.summary(),
                "model": first.model if first else None,
                "replicas": [r.to_dict() for r in self.replicas],
                "across_replicas": [asdict(c) for c in self.across]}

    def render_text(self, color: bool = False) -> str:
        if len(self.replicas) == 1 and not self.across:
            return self.replicas[0].render_text(color)
        first = self.replicas[0]
        lines = [f"qwen-fast doctor: {len(self.replicas)} replicas  (model: {first.model or '?'})"]
        for i, r in enumerate(self.replicas, 1):
            lines += ["", f"[{i}/{len(self.replicas)}] {r.title()}"]
            if r.checked_model and r.checked_model != r.model:
                lines.append(f"      {r.model_line()}")
            lines += _table(r.checks, color)
        if self.across:
            lines += ["", "across replicas", *_table(self.across, color)]
        return "\n".join([*lines, "", _verdict(self.checks)])


def scrub(checks: list[Check], secrets: list[str], urls: list[str]) -> None:
    """Remove the api key and each URL's ``user:pass@`` from every finding and fix, in place.

    The texts are built from redacted URLs already; this also catches what a server, a proxy or
    an exception message echoed back (belt and braces)."""
    pairs = [(s, "***") for s in secrets if s]
    for url in urls:
        netloc = urlsplit(url).netloc
        if "@" in netloc:
            pairs.append((f"//{netloc.rsplit('@', 1)[0]}@", "//***@"))
    for c in checks:
        for raw, shown in pairs:
            c.finding = c.finding.replace(raw, shown)
            c.fix = c.fix.replace(raw, shown) if c.fix else c.fix


def _count(checks: list[Check]) -> dict[str, int]:
    return {s: sum(c.status == s for c in checks) for s in STATUSES}


def _exit_code(checks: list[Check]) -> int:
    """1 when any check failed (what the verdict line calls FAILED), else 0."""
    return 1 if any(c.status == FAIL for c in checks) else 0


def _table(checks: list[Check], color: bool) -> list[str]:
    w = max([len(c.name) for c in checks] + [5])
    lines = [f"{'check':<{w}}  status   finding", f"{'-' * w}  -------  {'-' * 60}"]
    for c in checks:
        status = f"{c.status:<7}"
        if color:
            status = f"\033[{_PAINT[c.status]}m{status}\033[0m"
        lines.append(f"{c.name:<{w}}  {status}  {c.finding}")
        if c.fix:
            lines.append(f"{'':<{w}}           fix: {c.fix}")
    return lines


def _verdict(checks: list[Check]) -> str:
    s = _count(checks)
    verdict = "FAILED" if s[FAIL] else "no failures"
    return ", ".join(f"{s[k]} {k}" for k in STATUSES) + f": {verdict}"
