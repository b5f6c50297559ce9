"""The doctor over a ``base_url`` list: every replica checked (at once, one thread each), then
the checks across them.

Why compare: BatchedChatQwen sends any call to any replica, so replicas that serve other model
names answer some calls with 404, and replicas whose templates differ give one prompt two
meanings (in the completions wire mode the client renders ChatML once, which can match at most
one of them). Both are failures, and the finding names the replicas on each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .checks import first_difference, run_checks
from .report import FAIL, OK, SKIPPED, Check, Diagnosis, Report, scrub

_MAX_THREADS = 8
FIX_SAME = ("start every replica from the same model files with the same --served-model-name, "
            "--chat-template and vLLM version: a call may land on any of them")


def split_urls(value: str | Sequence[str] | None) -> list[str]:
    """``"a,b"``, ``["a", "b,c"]`` -> ``["a", "b", "c"]``: blanks dropped, repeats (ignoring a
    trailing slash) kept once, order kept."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    urls: list[str] = []
    seen: set[str] = set()
    for item in items:
        for url in str(item).split(","):
            url = url.strip()
            if url and url.rstrip("/") not in seen:
                seen.add(url.rstrip("/"))
                urls.append(url)
    return urls


def diagnose(base_url: str | Sequence[str], *, model: str | None = None,
             api_key: str | None = None, timeout: float = 15.0,
             model_source: str = "the model given",
             transport: httpx.BaseTransport | None = None) -> Diagnosis:
    """Check every replica of ``base_url`` (a URL, a comma-separated string or a list) and,
    when there are several, whether they agree."""
    urls = split_urls(base_url)
    if not urls:
        raise ValueError("no base_url to check")

    def one(url: str) -> Report:
        return run_checks(url, model=model, api_key=api_key, timeout=timeout,
                          model_source=model_source, transport=transport)

    if len(urls) == 1:
        return Diagnosis([one(urls[0])])
    with ThreadPoolExecutor(max_workers=min(len(urls), _MAX_THREADS)) as pool:
        reports = list(pool.map(one, urls))
    across = [same_models(reports), same_template(reports)]
    scrub(across, [api_key or ""], urls)
    return Diagnosis(reports, across)


def same_models(reports: list[Report]) -> Check:
    answered = [r for r in reports if r.served_models is not None]
    if len(answered) < 2:
        return Check("same_models", SKIPPED, _too_few(answered, "listed its models"))
    groups = _group(answered, lambda r: tuple(sorted(r.served_models or [])))
    if len(groups) == 1:
        names = ", ".join(answered[0].served_models or []) or "no model"
        return Check("same_models", OK, f"all {len(answered)} replicas serve {names}")
    sides = "; ".join(f"{_names(rs)} serve{'s' if len(rs) == 1 else ''} "
                      f"{', '.join(key) or 'no model'}" for key, rs in groups)
    return Check("same_models", FAIL, f"the replicas serve different models: {sides}", FIX_SAME)


def same_template(reports: list[Report]) -> Check:
    """Token ids where every replica has /tokenize, else the prompt size chat reports; and
    whether each takes completions lists."""
    seen = [r for r in reports if r.fingerprint.prompt_tokens is not None
            or r.fingerprint.tokens is not None]
    if len(seen) < 2:
        return Check("same_template", SKIPPED, _too_few(seen, "rendered the probe conversation"))
    exact = all(r.fingerprint.tokens is not None for r in seen)
    groups = _group(seen, lambda r: r.fingerprint.tokens if exact else r.fingerprint.prompt_tokens)
    problems = []
    if len(groups) > 1:
        base_key, base = groups[0]
        sides = [f"{_names(base)}: {_size(base[0])}"]
        for key, rs in groups[1:]:
            how = _size(rs[0])
            if exact:
                a, b = base_key, key
                i, on = _where(a, b)  # type: ignore[arg-type]
                how += f", first difference at token {i} (thinking {'on' if on else 'off'})"
            sides.append(f"{_names(rs)}: {how}")
        what = "token ids" if exact else "prompt token counts (no /tokenize on every replica)"
        problems.append(f"the probe conversation renders differently, by {what}: "
                        + "; ".join(sides))
    lists = _group([r for r in seen if r.fingerprint.lists is not None],
                   lambda r: r.fingerprint.lists)
    if len(lists) > 1:
        without = next(rs for key, rs in lists if not key)
        problems.append(f"{_names(without)} answer{'s' if len(without) == 1 else ''} no "
                        "completions list of 2 prompts, the others do")
    if problems:
        return Check("same_template", FAIL, "; and ".join(problems), FIX_SAME)
    how = "token for token" if exact else f"by prompt token count ({_size(seen[0])}; no /tokenize)"
    return Check("same_template", OK, f"all {len(seen)} replicas render the probe conversation "
                 f"alike, {how}")


def _group(reports: list[Report], key: Any) -> list[tuple[Any, list[Report]]]:
    """Reports grouped by ``key(report)``, groups in first-seen order."""
    groups: dict[Any, list[Report]] = {}
    for r in reports:
        groups.setdefault(key(r), []).append(r)
    return list(groups.items())


def _where(a: tuple[tuple[int, ...], ...], b: tuple[tuple[int, ...], ...]) -> tuple[int, bool]:
    for on in (False, True):
        if a[on] != b[on]:
            return first_difference(a[on], b[on]), on
    return 0, False


def _size(r: Report) -> str:
    fp = r.fingerprint
    n = len(fp.tokens[0]) if fp.tokens is not None else fp.prompt_tokens
    return f"{n} tokens"


def _names(reports: list[Report]) -> str:
    return ", ".join(r.effective_base_url for r in reports)


def _too_few(reports: list[Report], did: str) -> str:
    return f"only {len(reports)} replica{'' if len(reports) == 1 else 's'} {did}; nothing to compare"
