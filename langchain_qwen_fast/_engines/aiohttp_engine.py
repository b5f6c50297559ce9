"""The aiohttp engine (``http_engine="aiohttp"``): one aiohttp session with a keep-alive connector.

It was the default until the asyncio engine (``asyncio_engine.py``) measured a third of its client CPU
per request; it costs about as much as raw aiohttp, where httpx's default transport costs 20-30x more
and fails at 256 in flight (docs/benchmarks.md, transport table).
"""

from __future__ import annotations

import collections
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp

from langchain_qwen_fast._engines.base import Limits, RawResponse, StreamHandle
from langchain_qwen_fast._engines.mapping import mapped


def _held_lines(content: aiohttp.StreamReader) -> list[bytes]:
    """Complete lines aiohttp received before a connection broke but will not hand out.

    Every ``StreamReader`` read raises a stored error before it returns buffered bytes
    (aio-libs/aiohttp#3026): when the last events and the close arrive while the reader is busy,
    ``readline`` raises at once and the events already received are lost. They are still in the
    reader's buffer; read it defensively (private attributes: ``[]`` if they change, which
    ``tests/unit/test_engines.py`` would notice).
    """
    buffer = getattr(content, "_buffer", None)
    offset = getattr(content, "_buffer_offset", 0)
    if not isinstance(buffer, collections.deque) or not isinstance(offset, int):
        return []
    data = b"".join(bytes(b) for b in buffer)[offset:]
    *complete, _partial = data.split(b"\n")  # an unterminated last line is not an event
    return [line + b"\n" for line in complete]


class _AiohttpStream:
    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp, self._url = resp, url
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        with mapped(self._url):
            return await self._resp.read()

    async def lines(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        content = self._resp.content
        with mapped(self._url):
            try:
                async for line in content:
                    yield line
            except aiohttp.ClientPayloadError:
                for line in _held_lines(content):  # what arrived before the cut, then the error
                    yield line
                raise

    async def close(self) -> None:
        self._resp.release()


class AiohttpEngine:
    """aiohttp session with one keep-alive connector, created lazily on the running loop."""

    #: aiohttp's ``ClientTimeout(total=...)`` bounds the whole exchange, so no extra timer is needed.
    enforces_deadline = True

    def __init__(self, limits: Limits, ssl_context: ssl.SSLContext | bool = True) -> None:
        self.limits = limits
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections,
                limit_per_host=0,
                keepalive_timeout=self.limits.keepalive_expiry,
                ttl_dns_cache=300,
                ssl=self._ssl,  # True: certificates are verified unless the caller says otherwise
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.limits.connect_timeout),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _timeout(self, timeout: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, self.limits.connect_timeout))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        with mapped(url):
            async with self._sess().post(url, data=body, headers=headers, timeout=self._timeout(timeout)) as r:
                return RawResponse(r.status, r.headers, await r.read())

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        """A health probe: ``GET`` with the whole exchange bounded by ``timeout``."""
        with mapped(url):
            async with self._sess().get(url, headers=headers, timeout=self._timeout(timeout)) as r:
                return RawResponse(r.status, r.headers, await r.read())

    async def open_stream(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> StreamHandle:
        with mapped(url):
            resp = await self._sess().post(url, data=body, headers=headers, timeout=self._timeout(timeout))
        return _AiohttpStream(resp, url)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
