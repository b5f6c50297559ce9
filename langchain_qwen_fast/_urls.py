"""URL and header helpers used across layers: where a server's API is, one entry per server, credentials hidden.

A leaf (standard library only), so the field checks, the transport's health probe, error messages and
the doctor share one definition instead of reaching into each other's layers. The base_url hints live
here for that reason: the client's 404 message and the doctor's prefix diagnosis suggest the same URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

#: Endpoint paths a base_url sometimes wrongly ends with (a base_url is the prefix they live under).
ENDPOINTS = ("/chat/completions", "/completions", "/models", "/embeddings", "/responses")
_VERSION = re.compile(r"v\d+")
#: Header names whose values are credentials: shown as ``***`` in repr, logs and errors.
_SECRET_HEADER = re.compile(r"auth|key|token|secret|passw|cookie|session|signature|credential", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``http://user:secret@host/v1`` -> ``http://***@host/v1``: messages and logs never carry
    credentials that were put into a base_url."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user[:password]@`` (which HTTP clients send as ``Authorization: Basic``)."""
    return "@" in urlsplit(url).netloc


def server_root(base_url: str) -> str:
    """Where ``/health`` (and vLLM's ``/version``, ``/tokenize``) live: the base_url without its ``/v1``."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def origin(url: str) -> str:
    """``scheme://host:port`` (credentials kept): where vLLM and SGLang serve ``/health`` and ``/v1``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def endpoint_suffix(base_url: str) -> str | None:
    """The endpoint path ``base_url`` ends with (``/chat/completions``, ...), or None."""
    path = urlsplit(base_url).path.rstrip("/")
    return next((e for e in ENDPOINTS if path.endswith(e)), None)


def base_url_candidates(base_url: str) -> list[str]:
    """Where the OpenAI-compatible prefix probably is when ``base_url`` does not answer, likeliest first.

    An endpoint path at the end is cut off (``.../v1/chat/completions`` -> ``.../v1``); a path with a
    ``v1`` segment is cut after it; another version (``/v2``) becomes ``v1``; a path without a version
    gets ``/v1`` appended (a router's prefix); and last, ``/v1`` at the server's root, where vLLM and
    SGLang serve it (``/api/v1`` -> ``/v1``). ``base_url`` itself is never among them.
    """
    given = base_url.rstrip("/")
    parts = urlsplit(given)
    path = parts.path.rstrip("/")
    if (suffix := endpoint_suffix(given)) is not None:
        path = path[: -len(suffix)]
    segs = [s for s in path.split("/") if s]
    root = origin(given)
    if "v1" in segs:
        first = root + "/" + "/".join(segs[: segs.index("v1") + 1])
    elif segs and _VERSION.fullmatch(segs[-1]):
        first = root + "/" + "/".join([*segs[:-1], "v1"])
    else:
        first = root + "/" + "/".join([*segs, "v1"])
    out: list[str] = []
    for c in (first, root + "/v1"):
        if c != given and c not in out:
            out.append(c)
    return out


def suggest_base_url(base_url: str) -> str | None:
    """The one URL to suggest when nothing answers under ``base_url``; None when it already is the
    server's ``/v1``, the prefix vLLM and SGLang use (a 404 there is about something else)."""
    if base_url.rstrip("/") == origin(base_url) + "/v1":
        return None
    candidates = base_url_candidates(base_url)
    return candidates[0] if candidates else None


def check_distinct(urls: Sequence[str]) -> None:
    """Each server once: two entries for one server (trailing slashes aside) would double its admission."""
    if len({u.rstrip("/") for u in urls}) != len(urls):
        raise ValueError("base_url lists the same server twice; list each replica once")


def is_secret_header(name: str) -> bool:
    """``Authorization``, ``X-API-Key``, ``X-Auth-Token``, ``Cookie``...: a value never shown."""
    return bool(_SECRET_HEADER.search(name))


def redact_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The headers with every credential's value replaced by ``***`` (names kept, to say what was set)."""
    if headers is None:
        return None
    return {k: "***" if is_secret_header(k) else v for k, v in headers.items()}
