"""URL helpers used across layers: where a server's root is, one entry per server, credentials hidden.

A leaf (standard library only), so the field checks, the transport's health probe, error messages and
the doctor share one definition instead of reaching into each other's layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``http://user:secret@host/v1`` -> ``http://***@host/v1``: messages and logs never carry
    credentials that were put into a base_url."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def server_root(base_url: str) -> str:
    """Where ``/health`` (and vLLM's ``/version``, ``/tokenize``) live: the base_url without its ``/v1``."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def check_distinct(urls: Sequence[str]) -> None:
    """Each server once: two entries for one server (trailing slashes aside) would double its admission."""
    if len({u.rstrip("/") for u in urls}) != len(urls):
        raise ValueError("base_url lists the same server twice; list each replica once")
