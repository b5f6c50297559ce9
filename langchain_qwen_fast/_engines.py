"""HTTP engines under the transport: the bytes-in, bytes-out layer.

Three engines share one small interface, so everything above them is engine-agnostic:

- :class:`AiohttpEngine` (default). Measured on 2 cores against a zero-latency server it costs
  about as much client CPU per request as raw aiohttp, where httpx's default transport costs
  20-30x more and fails at 256 in flight (docs/benchmarks.md, transport table).
- :class:`HttpxEngine` wraps an ``httpx.AsyncClient``: the caller's own (``http_async_client``:
  proxies, certificates, respx mocks) or one we build when ``http_engine="httpx"``.
- :class:`SyncHttpxEngine` wraps a caller's sync ``httpx.Client`` (``http_client``); each request
  runs in a worker thread, so it works but gives up the speed.

Engine methods run only on the runtime's loop; nothing here is thread-safe by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx

from langchain_qwen_fast._errors import connection_error


@dataclass(frozen=True)
class Limits:
    """Connection pool limits. The default connection cap sits above any admission limit."""

    max_connections: int = 2048
    keepalive_expiry: float = 30.0
    connect_timeout: float = 10.0


@dataclass
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class StreamHandle(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Engine(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse: ...

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse: ...

    async def open_stream(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> StreamHandle: ...

    async def aclose(self) -> None: ...


_AIOHTTP_NOT_SENT = (aiohttp.ClientConnectorError,)
_AIOHTTP_CONN = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)


class _AiohttpStream:
    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp, self._url = resp, url
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except _AIOHTTP_CONN as e:
            raise connection_error(self._url, e, maybe_sent=True) from e

    async def lines(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        try:
            async for line in self._resp.content:
                yield line
        except _AIOHTTP_CONN as e:
            raise connection_error(self._url, e, maybe_sent=True) from e

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
        try:
            async with self._sess().post(url, data=body, headers=headers, timeout=self._timeout(timeout)) as r:
                return RawResponse(r.status, r.headers, await r.read())
        except _AIOHTTP_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except _AIOHTTP_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        """A health probe: ``GET`` with the whole exchange bounded by ``timeout``."""
        try:
            async with self._sess().get(url, headers=headers, timeout=self._timeout(timeout)) as r:
                return RawResponse(r.status, r.headers, await r.read())
        except _AIOHTTP_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except _AIOHTTP_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e

    async def open_stream(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> StreamHandle:
        try:
            resp = await self._sess().post(url, data=body, headers=headers, timeout=self._timeout(timeout))
        except _AIOHTTP_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except _AIOHTTP_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e
        return _AiohttpStream(resp, url)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
_HTTPX_CONN = (httpx.TransportError,)


class _HttpxStream:
    def __init__(self, resp: httpx.Response, url: str) -> None:
        self._resp, self._url = resp, url
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except _HTTPX_CONN as e:
            raise connection_error(self._url, e, maybe_sent=True) from e

    async def lines(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        try:
            async for line in self._resp.aiter_lines():
                yield line.encode()
        except _HTTPX_CONN as e:
            raise connection_error(self._url, e, maybe_sent=True) from e

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxEngine:
    """An ``httpx.AsyncClient``; ``owned`` says whether closing the model closes the client."""

    def __init__(self, client: httpx.AsyncClient | None = None, limits: Limits | None = None) -> None:
        self.owned = client is None
        if client is None:
            lim = limits or Limits()
            client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=lim.max_connections,
                    max_keepalive_connections=lim.max_connections,
                    keepalive_expiry=lim.keepalive_expiry,
                ),
                timeout=httpx.Timeout(None, connect=lim.connect_timeout),
            )
        self.client = client

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        try:
            r = await self.client.post(url, content=body, headers=dict(headers), timeout=timeout)
        except _HTTPX_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except httpx.TimeoutException:
            raise asyncio.TimeoutError from None
        except _HTTPX_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e
        return RawResponse(r.status_code, r.headers, r.content)

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        try:
            r = await self.client.get(url, headers=dict(headers), timeout=timeout)
        except _HTTPX_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except httpx.TimeoutException:
            raise asyncio.TimeoutError from None
        except _HTTPX_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e
        return RawResponse(r.status_code, r.headers, r.content)

    async def open_stream(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> StreamHandle:
        req = self.client.build_request("POST", url, content=body, headers=dict(headers), timeout=timeout)
        try:
            resp = await self.client.send(req, stream=True)
        except _HTTPX_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except httpx.TimeoutException:
            raise asyncio.TimeoutError from None
        except _HTTPX_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e
        return _HttpxStream(resp, url)

    async def aclose(self) -> None:
        if self.owned:
            await self.client.aclose()


class SyncHttpxEngine:
    """A caller's sync ``httpx.Client``, driven from worker threads (correct, not fast)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        try:
            r = self.client.post(url, content=body, headers=dict(headers), timeout=timeout)
        except _HTTPX_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except httpx.TimeoutException:
            raise asyncio.TimeoutError from None
        except _HTTPX_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e
        return RawResponse(r.status_code, r.headers, r.content)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        return await asyncio.get_running_loop().run_in_executor(None, self._post, url, body, headers, timeout)

    def _get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        try:
            r = self.client.get(url, headers=dict(headers), timeout=timeout)
        except _HTTPX_NOT_SENT as e:
            raise connection_error(url, e, maybe_sent=False) from e
        except httpx.TimeoutException:
            raise asyncio.TimeoutError from None
        except _HTTPX_CONN as e:
            raise connection_error(url, e, maybe_sent=True) from e
        return RawResponse(r.status_code, r.headers, r.content)

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        return await asyncio.get_running_loop().run_in_executor(None, self._get, url, headers, timeout)

    async def open_stream(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> StreamHandle:
        # A sync client cannot hand lines to the loop as they come; read the whole stream, then replay it.
        raw = await self.post(url, body, headers, timeout)
        return _BufferedStream(raw)

    async def aclose(self) -> None:
        return None


class _BufferedStream:
    def __init__(self, raw: RawResponse) -> None:
        self.status, self.headers, self._body = raw.status, raw.headers, raw.body

    async def read(self) -> bytes:
        return self._body

    async def lines(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        for line in self._body.splitlines(keepends=True):
            yield line

    async def close(self) -> None:
        return None


def make_engine(kind: str, limits: Limits, async_client: Any = None, sync_client: Any = None) -> Engine:
    if async_client is not None:
        return HttpxEngine(async_client)
    if sync_client is not None:
        return SyncHttpxEngine(sync_client)
    if kind == "httpx":
        return HttpxEngine(None, limits)
    if kind != "aiohttp":
        raise ValueError(f"http_engine must be 'aiohttp' or 'httpx', got {kind!r}")
    return AiohttpEngine(limits)


async def close_quietly(engine: Engine) -> None:
    with contextlib.suppress(Exception):
        await engine.aclose()
