"""The httpx engines: a caller's ``httpx.AsyncClient`` or sync ``httpx.Client``, or one built for
``http_engine="httpx"``.

A module of its own so that httpx is imported only when one of these is made: ``_engines.make_engine``
and ``_engines.map_error`` reach it lazily, and the default aiohttp path never loads httpx (5 MiB of the
resident set and its import time; docs/architecture.md, batch memory). Errors map at the same seam as
aiohttp's (``_engines.mapped``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import httpx

from langchain_qwen_fast._engines.base import Limits, RawResponse, StreamHandle
from langchain_qwen_fast._engines.mapping import mapped
from langchain_qwen_fast._errors import connection_error, from_status, invalid_http, not_http

#: How h11 and httpcore word a connection that ended early (any other protocol error is bad HTTP).
_CUT_SHORT = ("peer closed connection", "server disconnected")


def from_httpx(url: str, e: httpx.HTTPError) -> BaseException:
    """The package error for an httpx exception (``_engines.map_error`` sends them here)."""
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError)):
        return connection_error(url, e, maybe_sent=False)
    if isinstance(e, httpx.UnsupportedProtocol):
        return connection_error(url, e, maybe_sent=False, retryable=False)
    if isinstance(e, httpx.TimeoutException):
        return asyncio.TimeoutError()  # httpx times out per phase with the time left: the call's deadline
    if isinstance(e, httpx.RemoteProtocolError):
        text = str(e)
        if any(m in text.lower() for m in _CUT_SHORT):
            no_answer = "without sending a response" in text
            why = ("the server closed the connection without an HTTP response" if no_answer
                   else "the response was cut short")
            return connection_error(url, e, maybe_sent=True, why=why)
        if "status line" in text:
            return not_http(url, text)
        return invalid_http(url, text)
    if isinstance(e, (httpx.DecodingError, httpx.TooManyRedirects)):
        return invalid_http(url, f"{type(e).__name__}: {e}")
    if isinstance(e, httpx.HTTPStatusError):
        return from_status(e.response.status_code, b"", url)
    if isinstance(e, httpx.LocalProtocolError):  # the request itself is not valid HTTP (a header with a newline)
        return connection_error(url, e, maybe_sent=False, retryable=False)
    return connection_error(url, e, maybe_sent=True)  # read/write/close errors, any newer transport error


class _HttpxStream:
    def __init__(self, resp: httpx.Response, url: str) -> None:
        self._resp, self._url = resp, url
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        with mapped(self._url):
            return await self._resp.aread()

    async def lines(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        with mapped(self._url):
            async for line in self._resp.aiter_lines():
                yield line.encode()

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken stream must not hide why it broke
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
        with mapped(url):
            r = await self.client.post(url, content=body, headers=dict(headers), timeout=timeout)
            return RawResponse(r.status_code, r.headers, r.content)

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        with mapped(url):
            r = await self.client.get(url, headers=dict(headers), timeout=timeout)
            return RawResponse(r.status_code, r.headers, r.content)

    async def open_stream(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> StreamHandle:
        with mapped(url):
            req = self.client.build_request("POST", url, content=body, headers=dict(headers), timeout=timeout)
            resp = await self.client.send(req, stream=True)
        return _HttpxStream(resp, url)

    async def aclose(self) -> None:
        if self.owned:
            await self.client.aclose()


class SyncHttpxEngine:
    """A caller's sync ``httpx.Client``, driven from worker threads (correct, not fast)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        with mapped(url):  # in a worker thread: the mapping does not need the loop
            r = self.client.post(url, content=body, headers=dict(headers), timeout=timeout)
            return RawResponse(r.status_code, r.headers, r.content)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        return await asyncio.get_running_loop().run_in_executor(None, self._post, url, body, headers, timeout)

    def _get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        with mapped(url):
            r = self.client.get(url, headers=dict(headers), timeout=timeout)
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
