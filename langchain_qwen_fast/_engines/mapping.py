"""The one seam where the HTTP libraries' exceptions become package errors.

Every engine call runs inside :class:`mapped`; :func:`map_error` decides by meaning (never reached
the server, cut short, not HTTP, bad framing), so ``except ModelError`` holds for whatever aiohttp or
httpx raise, documented or not. httpx's own mapping lives with its engine and is reached only when
httpx is loaded. The asyncio engine raises faults that already say their meaning (``http1.py``).
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import http_exceptions

from langchain_qwen_fast._engines import http1
from langchain_qwen_fast._errors import (
    ClientClosedError,
    _HTTPInfo,
    cause_chain,
    connection_error,
    invalid_http,
    not_http,
)


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


def _from_fault(url: str, e: http1.Fault) -> Exception:
    """The asyncio engine's faults; the message shows the OS or TLS error underneath where there is one."""
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
    if isinstance(e, http1.ServerDisconnected):
        why = "the response was cut short" if e.answered else ""
        if cause is not e:  # an OS error (a reset): say what it ended
            why = f"{e} ({why})" if why else str(e)
        return connection_error(url, cause, maybe_sent=True, why=why)
    if isinstance(e, http1.NotHttp):
        return not_http(url, str(e))
    if isinstance(e, http1.BadHttp):
        return invalid_http(url, str(e))
    if isinstance(e, http1.Unsendable):
        return connection_error(url, e, maybe_sent=False, retryable=False)
    if isinstance(e, http1.ConnectFailed) and isinstance(e.__cause__, (ValueError, TypeError)) \
            and not isinstance(e.__cause__, OSError):  # a URL the socket layer cannot use
        return connection_error(url, cause, maybe_sent=False, retryable=False)
    return connection_error(url, cause, maybe_sent=False)  # ConnectFailed: refused, DNS, TLS, connect timeout


def map_error(url: str, e: BaseException) -> BaseException:
    """The package error for whatever an engine call raised; ``e`` itself where it passes unchanged.

    Unchanged: package errors, ``asyncio.TimeoutError`` (the transport makes it the call's
    DeadlineExceededError), and what is not an ``Exception`` (cancellation, GeneratorExit).
    Anything else the libraries raise, even what they do not document (a RuntimeError from deep
    inside on a garbage response), becomes a package error, so ``except ModelError`` holds.
    """
    if not isinstance(e, Exception) or isinstance(e, (_HTTPInfo, ClientClosedError)):
        return e
    if isinstance(e, http1.Fault):
        return _from_fault(url, e)
    if isinstance(e, aiohttp.ClientError):  # before TimeoutError: aiohttp's timeouts subclass both
        return _from_aiohttp(url, e)
    hx = sys.modules.get("httpx")  # not loaded: nothing raised can be an httpx error
    if hx is not None and isinstance(e, hx.HTTPError):
        from langchain_qwen_fast._engines.httpx_engine import from_httpx

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
