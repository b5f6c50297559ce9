"""Checks and conversions behind ``BatchedChatQwen``'s field validators: pure functions, no pydantic.

Kept apart from ``chat_models.py`` so the class holds only fields and LangChain hooks. Each function
takes the raw value and returns the value to keep, or raises ``ValueError`` naming the problem; warnings
name the field and why it is ignored.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Collection, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from langchain_qwen_fast._urls import base_url_candidates, check_distinct, endpoint_suffix, has_userinfo, redact_url

#: ChatOpenAI fields that mean nothing for a vLLM/SGLang Qwen server: accepted, warned about, dropped.
UNSUPPORTED = {
    "organization": "OpenAI organisations do not exist on a self-hosted server",
    "openai_organization": "OpenAI organisations do not exist on a self-hosted server",
    "openai_proxy": "pass an http_async_client configured with the proxy instead",
    "tiktoken_model_name": "token counting uses the server, not tiktoken",
    "use_responses_api": "the Responses API is not served for Qwen3; this model uses chat/completions",
    "reasoning_effort": "Qwen3 has an on/off switch instead: use enable_thinking",
    "reasoning": "Qwen3 has an on/off switch instead: use enable_thinking",
    "include_response_headers": "not supported",
    "service_tier": "not supported by vLLM/SGLang",
    "store": "not supported by vLLM/SGLang",
    "verbosity": "not supported by vLLM/SGLang",
    "default_query": "put query parameters into base_url",
    "disabled_params": "not needed: parameters are sent as given",
}
DEFAULT_BASE_URL = "http://localhost:8000/v1"


def drop_unsupported_and_collect_extra(values: dict[str, Any], known: Collection[str]) -> dict[str, Any]:
    """Warn about and drop ChatOpenAI-only fields; move unknown arguments into ``model_kwargs`` (sent in
    the body, as ChatOpenAI does), with a warning each."""
    values = dict(values)
    for key, why in UNSUPPORTED.items():
        if key in values:
            value = values.pop(key)
            if value not in (None, False):
                warnings.warn(f"BatchedChatQwen ignores {key}={value!r}: {why}", UserWarning, stacklevel=5)
    extra = {k: values.pop(k) for k in list(values) if k not in known}
    if extra:
        mk = dict(values.get("model_kwargs") or {})
        for k, v in extra.items():
            warnings.warn(
                f"{k!r} is not a BatchedChatQwen field; it is sent to the server in the request body "
                "(as ChatOpenAI does with unknown arguments). Put it in model_kwargs to silence this.",
                UserWarning,
                stacklevel=5,
            )
            mk[k] = v
        values["model_kwargs"] = mk
    return values


def coerce_timeout(v: Any) -> float | None:
    """A number, ChatOpenAI's ``(connect, read)`` tuple (the deadline is the read part), or an ``httpx.Timeout``."""
    if v is None or isinstance(v, (int, float)):
        return None if v is None else float(v)
    if isinstance(v, tuple):
        return float(v[-1]) if v and v[-1] is not None else None
    read = getattr(v, "read", None)
    return float(read) if read is not None else None


def split_base_url(v: Any) -> Any:
    """``QWEN_BASE_URL=http://a:8000/v1,http://b:8000/v1`` (what ``qwen-fast engines`` prints) is a list."""
    if isinstance(v, str) and "," in v:
        return [u.strip() for u in v.split(",") if u.strip()]
    return v


def check_base_urls(urls: list[str]) -> None:
    if not urls:
        raise ValueError("base_url list is empty")
    check_distinct(urls)
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url {u!r} has no http:// or https:// scheme; use e.g. 'http://{u.split('://')[-1]}'")
        if (suffix := endpoint_suffix(u)) is not None:
            fixed = redact_url(base_url_candidates(u)[0])
            raise ValueError(f"base_url {redact_url(u)!r} ends with the endpoint {suffix}; base_url is the prefix "
                             f"the endpoints live under, as for ChatOpenAI: use base_url={fixed!r}")


def key_source(fields_set: Collection[str], environ: Mapping[str, str]) -> str:
    """Where an api key came from, in the words an error names it by."""
    if "api_key" in fields_set:
        return "the api_key argument"
    return next((f"the environment variable {v}" for v in ("QWEN_API_KEY", "OPENAI_API_KEY") if environ.get(v)),
                "the environment")


def is_placeholder_key(key: str | None) -> bool:
    """No key at all, or the ``"EMPTY"`` that OpenAI-compatible examples pass for "no key"."""
    return not key or key == "EMPTY"


def check_credentials(urls: Iterable[str], key: str | None, source: str, headers: Mapping[str, str] | None) -> None:
    """A base_url with ``user:password@`` and an api key (or an ``Authorization`` header) would both need the
    one ``Authorization`` header a request has: the HTTP client refuses such a request (aiohttp) or drops one
    of them (httpx). Refused here, once, naming both sources and what to change."""
    creds = next((u for u in urls if has_userinfo(u)), None)
    if creds is None:
        return
    if not is_placeholder_key(key):
        other = f"an api key from {source} (sent as `Authorization: Bearer ...`)"
        drop = "api_key=None" + (f", or unset {source.rsplit(' ', 1)[-1]}" if "environment variable" in source else "")
    elif headers and any(k.lower() == "authorization" for k in headers):
        other, drop = "an Authorization header in default_headers", "remove it from default_headers"
    else:
        return
    raise ValueError(
        f"base_url {redact_url(creds)!r} carries user:password (sent as `Authorization: Basic ...`) and there is "
        f"{other}, but a request has one Authorization header. For a proxy with basic auth in front of the server, "
        f"keep the URL's user:password and drop the other: {drop} (if the server behind the proxy wants its own "
        "--api-key, let the proxy set that header); for a server that wants the key, take user:password@ out of "
        "base_url.")


def _is_loopback(host: str | None) -> bool:
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_key_over_http(key: str, urls: Iterable[str]) -> None:
    """A real api key sent over plain http to a host that is not loopback deserves a warning."""
    if key in ("", "EMPTY"):
        return
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            warnings.warn(
                f"an api_key will be sent over plain http to {parts.hostname}; use https for non-local servers",
                UserWarning,
                stacklevel=4,
            )
