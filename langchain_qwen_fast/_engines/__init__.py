"""HTTP engines under the transport: the bytes-in, bytes-out layer.

Four engines share one small interface (:class:`~langchain_qwen_fast._engines.base.HttpEngine`), so
everything above them is engine-agnostic:

- ``AsyncioEngine`` (default, ``http_engine="asyncio"``): HTTP/1.1 keep-alive straight on asyncio
  transports (``asyncio_engine.py``, its pool in ``asyncio_pool.py``, the wire format in ``http1.py``),
  a third of aiohttp's client CPU per request (docs/architecture.md, the engine).
- ``AiohttpEngine`` (``http_engine="aiohttp"``, ``aiohttp_engine.py``).
- ``HttpxEngine`` wraps an ``httpx.AsyncClient``: the caller's own (``http_async_client``: proxies,
  certificates, respx mocks) or one built for ``http_engine="httpx"``.
- ``SyncHttpxEngine`` wraps a caller's sync ``httpx.Client`` (``http_client``); each request runs in a
  worker thread, so it works but gives up the speed.

The httpx engines live in ``httpx_engine.py``, imported only when one is made, so the default path never
loads httpx. Library exceptions become package errors in ``mapping.py``.
"""

from __future__ import annotations

from typing import Any

from langchain_qwen_fast._engines.aiohttp_engine import AiohttpEngine
from langchain_qwen_fast._engines.asyncio_engine import AsyncioEngine
from langchain_qwen_fast._engines.base import HttpEngine, Limits, RawResponse, StreamHandle
from langchain_qwen_fast._engines.mapping import map_error, mapped

__all__ = ["ENGINES", "AiohttpEngine", "AsyncioEngine", "HttpEngine", "Limits", "RawResponse", "StreamHandle",
           "make_engine", "map_error", "mapped"]


ENGINES = ("asyncio", "aiohttp", "httpx")


def make_engine(kind: str, limits: Limits, async_client: Any = None, sync_client: Any = None) -> HttpEngine:
    if kind not in ENGINES:
        raise ValueError(f"http_engine must be one of {', '.join(map(repr, ENGINES))}, got {kind!r}")
    if async_client is None and sync_client is None:
        if kind == "asyncio":
            return AsyncioEngine(limits)
        if kind == "aiohttp":
            return AiohttpEngine(limits)
    # httpx loads only here: the default path never imports it (~5 MiB, docs/architecture.md)
    from langchain_qwen_fast._engines.httpx_engine import HttpxEngine, SyncHttpxEngine

    if async_client is not None:
        return HttpxEngine(async_client)
    if sync_client is not None:
        return SyncHttpxEngine(sync_client)
    return HttpxEngine(None, limits)
