"""HTTP engines under the transport: the bytes-in, bytes-out layer.

Three engines share one small interface, so everything above them is engine-agnostic:

- :class:`AiohttpEngine` (default). Measured on 2 cores against a zero-latency server it costs
  about as much client CPU per request as raw aiohttp, where httpx's default transport costs
  20-30x more and fails at 256 in flight (docs/benchmarks.md, transport table).
- ``HttpxEngine`` wraps an ``httpx.AsyncClient``: the caller's own (``http_async_client``:
  proxies, certificates, respx mocks) or one we build when ``http_engine="httpx"``.
- ``SyncHttpxEngine`` wraps a caller's sync ``httpx.Client`` (``http_client``); each request
  runs in a worker thread, so it works but gives up the speed.

The two httpx engines live in ``_engines_httpx.py``, imported only when one is made, so the default
path never loads httpx.

Engine methods run only on the runtime's loop; nothing here is thread-safe by itself.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from aiohttp import http_exceptions

from langchain_qwen_fast._errors import (
    ClientClosedError,
    _HTTPInfo,
    cause_chain,
    connection_error,
    invalid_http,
    not_http,
)


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


# -- the one seam where library exceptions become package errors -------------------------------------
def _cause_of(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s cause chain (``exc`` included)."""
    return next((e for e in cause_chain(exc) if isinstance(e, kind)), None)


def _classes(module: Any, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes this aiohttp has (some came in 3.10 and later; we accept 3.9)."""
    return tuple(c for c in (getattr(module, n, None) for n in names) if isinstance(c, type))


_UNDECODABLE = _classes(http_exceptions, "ContentEncodingError", "DecompressSizeError")
_BAD_REDIRECT = _classes(aiohttp, "RedirectClientError")
_BAD_URL = _classes(aiohttp, "InvalidURL", "NonHttpUrlClientError")
_NEVER_SENT = _classes(aiohttp, "ClientConnectorError", "ConnectionTimeoutError")


def _from_aiohttp(url: str, e: aiohttp.ClientError) -> Exception:
    if isinstance(e, aiohttp.ClientPayloadError):
        if _cause_of(e, _UNDECODABLE):
            return invalid_http(url, f"the body cannot be decoded: {e}")
        return connection_error(url, e, maybe_sent=True, why="the response was cut short")
    if isinstance(e, aiohttp.ClientHttpProxyError):  # the proxy refused to connect us
        return connection_error(url, e, maybe_sent=False, retryable=e.status >= 500)
    if isinstance(e, aiohttp.ClientResponseError):
        parse = _cause_of(e, http_exceptions.HttpProcessingError)
        if isinstance(parse, http_exceptions.BadStatusLine) or "status line" in e.message.lower():
            return not_http(url, e.message)
        if parse is not None:  # a bad header or chunk line
            return invalid_http(url, getattr(parse, "message", "") or e.message)
        return invalid_http(url, f"{type(e).__name__}: {e.message}")  # redirects, content type
    if isinstance(e, _BAD_REDIRECT):  # the server redirected to a URL we cannot follow
        return invalid_http(url, f"{type(e).__name__}: {e}")
    if isinstance(e, (*_BAD_URL, aiohttp.ServerFingerprintMismatch)):
        return connection_error(url, e, maybe_sent=False, retryable=False)
    if isinstance(e, _NEVER_SENT):  # refused, DNS, TLS, proxy, connect timeout: it never reached the server
        return connection_error(url, e, maybe_sent=False)
    return connection_error(url, e, maybe_sent=True)  # disconnected, reset, read timeout, any newer ClientError


def map_error(url: str, e: BaseException) -> BaseException:
    """The package error for whatever an engine call raised; ``e`` itself where it passes unchanged.

    Unchanged: package errors, ``asyncio.TimeoutError`` (the transport makes it the call's
    DeadlineExceededError), and what is not an ``Exception`` (cancellation, GeneratorExit).
    Anything else the libraries raise, even what they do not document (a RuntimeError from deep
    inside on a garbage response), becomes a package error, so ``except ModelError`` holds.
    """
    if not isinstance(e, Exception) or isinstance(e, (_HTTPInfo, ClientClosedError)):
        return e
    if isinstance(e, aiohttp.ClientError):  # before TimeoutError: aiohttp's timeouts subclass both
        return _from_aiohttp(url, e)
    hx = sys.modules.get("httpx")  # not loaded: nothing raised can be an httpx error
    if hx is not None and isinstance(e, hx.HTTPError):
        from langchain_qwen_fast._engines_httpx import from_httpx

        return from_httpx(url, e)
    if isinstance(e, asyncio.TimeoutError):
        return e
    if isinstance(e, http_exceptions.HttpProcessingError):  # aiohttp's readline raises LineTooLong bare
        return invalid_http(url, f"{type(e).__name__}: {e.message}")
    if isinstance(e, OSError):
        return connection_error(url, e, maybe_sent=not isinstance(e, ConnectionRefusedError))
    return connection_error(url, e, maybe_sent=True, retryable=False, why="the HTTP client failed unexpectedly")


class mapped:
    """``with mapped(url): ...`` raises what :func:`map_error` makes of an exception, chained to it.

    The one place library exceptions become package errors: every engine call runs inside one.
    A class, not ``contextlib.contextmanager``: it is entered once per request on the hot path.
    """

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if e is None:
            return
        out = map_error(self.url, e)
        if out is not e:
            raise out from e


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


def make_engine(kind: str, limits: Limits, async_client: Any = None, sync_client: Any = None) -> Engine:
    if kind not in ("aiohttp", "httpx"):
        raise ValueError(f"http_engine must be 'aiohttp' or 'httpx', got {kind!r}")
    if async_client is None and sync_client is None and kind == "aiohttp":
        return AiohttpEngine(limits)
    # httpx loads only here: the default path never imports it (~5 MiB, docs/architecture.md)
    from langchain_qwen_fast._engines_httpx import HttpxEngine, SyncHttpxEngine

    if async_client is not None:
        return HttpxEngine(async_client)
    if sync_client is not None:
        return SyncHttpxEngine(sync_client)
    return HttpxEngine(None, limits)
