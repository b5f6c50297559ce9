"""Errors, mapped onto ``langchain_core.exceptions`` so provider-agnostic code can catch them.

Hierarchy (each also carries ``status_code``, ``body`` and ``url`` where there was a response)::

    ModelError (langchain_core)
    ├── ModelInvalidRequestError   <- BadRequestError            400, 409, 413, 422 (never retried)
    ├── ContextOverflowError       <- ContextLengthError         400 "maximum context length" (never retried)
    ├── ModelAuthenticationError   <- AuthenticationError        401 (never retried)
    ├── ModelPermissionDeniedError <- PermissionDeniedError      403 (never retried)
    ├── ModelNotFoundError         <- NotFoundError              404 (names the base_url or model to use)
    ├── ModelRateLimitError        <- RateLimitError             429 (retried, honours Retry-After)
    ├── ModelAPIError              <- ServerError                5xx (retried)
    │                              <- InvalidResponseError       a non-JSON / HTML / malformed body (quotes it),
    │                                                            or an answer that is not HTTP (never retried)
    ├── ModelConnectionError       <- APIConnectionError         reset, refused, DNS, truncated body (retried);
    │                                                            the only server down (cannot connect to it)
    │                              <- AllReplicasDownError       every one of several replicas down
    └── ModelTimeoutError          <- DeadlineExceededError      the call's one deadline, or 408 (408 retried)
    RuntimeError                   <- ClientClosedError          the model was closed while the call waited

Every exception an HTTP library raises becomes one of these once, at the engine
(``_engines.mapped``); nothing from aiohttp or httpx reaches a caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)

from langchain_qwen_fast._urls import base_url_candidates, endpoint_suffix, redact_url, suggest_base_url

_CONTEXT_MARKERS = (
    "maximum context length",
    "context length",
    "reduce the length",
    "longer than the maximum model length",
    "exceeds the model's",
    "too many tokens",
)


class _HTTPInfo:
    status_code: int | None = None
    body: str | None = None
    url: str | None = None
    retry_after: float | None = None

    def _attach(self, status: int | None, body: str | None, url: str | None, retry_after: float | None) -> None:
        self.status_code, self.body, self.url, self.retry_after = status, body, url, retry_after


class BadRequestError(ModelInvalidRequestError, _HTTPInfo):
    """The server rejected the request as invalid; retrying the same request cannot help."""


class ContextLengthError(ContextOverflowError, _HTTPInfo):
    """The prompt plus ``max_tokens`` is longer than the served model's context."""


class AuthenticationError(ModelAuthenticationError, _HTTPInfo):
    """401: the server was started with ``--api-key`` and ours is missing or wrong."""


class PermissionDeniedError(ModelPermissionDeniedError, _HTTPInfo):
    """403."""


class NotFoundError(ModelNotFoundError, _HTTPInfo):
    """404: usually a base_url without ``/v1`` or a model name the server does not serve."""


class RateLimitError(ModelRateLimitError, _HTTPInfo):
    """429 after the retries were spent (or when Retry-After would pass the deadline)."""


class ServerError(ModelAPIError, _HTTPInfo):
    """5xx after the retries were spent."""


class InvalidResponseError(ModelAPIError, _HTTPInfo):
    """A body that is not the JSON an OpenAI-compatible server sends (e.g. a proxy's HTML page)."""

    is_retryable = False


class APIConnectionError(ModelConnectionError, _HTTPInfo):
    """The connection failed: refused, reset, DNS, or the body was cut short."""

    #: False when the failure happened before the request could have reached the server.
    maybe_sent: bool = True
    #: False for failures a retry cannot fix (a TLS certificate that fails verification).
    retryable: bool = True
    #: What failed, in the HTTP library's words, without the URL (None where no library error caused it).
    detail: str | None = None


class AllReplicasDownError(APIConnectionError):
    """Every replica of several is ejected; the message names each URL and the last error seen there.
    (A model with one server says "cannot connect to URL" with a plain :class:`APIConnectionError`.)"""

    retryable = False
    maybe_sent = False


class DeadlineExceededError(ModelTimeoutError, _HTTPInfo):
    """The call's deadline (``timeout``) passed, retries and backoff included."""


class ClientClosedError(RuntimeError):
    """The model (or its shared pool) was closed while this call was pending."""


def _preview(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def server_message(body: bytes) -> str:
    """The human message inside an error body (vLLM new/old shapes, SGLang), else a preview."""
    import orjson

    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _preview(body)
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
        if data.get("detail"):
            return str(data["detail"])
    return _preview(body)


def from_status(status: int, body: bytes, url: str, retry_after: float | None = None) -> Exception:
    """Build the exception for a non-2xx response, keeping the server's own message."""
    url = redact_url(url)
    msg = server_message(body)
    text = f"HTTP {status} from {url}: {msg}"
    cls: type[_HTTPInfo]
    if status == 404:
        cls = NotFoundError
        text += _prefix_hint(url, msg)
    elif status in (400, 413, 422) and any(m in msg.lower() for m in _CONTEXT_MARKERS):
        cls = ContextLengthError
    elif status in (400, 409, 413, 422):
        cls = BadRequestError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 408:
        cls = DeadlineExceededError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500:
        cls = ServerError
    else:
        cls = BadRequestError
    exc = cls(text)  # type: ignore[call-arg]
    exc._attach(status, msg, url, retry_after)
    return exc  # type: ignore[return-value]


def _prefix_hint(url: str, msg: str) -> str:
    """For a 404 that is not about the model: the base_url the server probably wants (``_urls``)."""
    if "model" in msg.lower():
        return ""  # "The model `X` does not exist": the URL is right (the transport adds what is served)
    base = url.split("?")[0]
    if (suffix := endpoint_suffix(base)) is not None:  # the path the client appended to base_url
        base = base[: -len(suffix)]
    if suggest_base_url(base) is None:
        return ""
    candidates = base_url_candidates(base)
    hint = (f" -- nothing answers under {base}; OpenAI-compatible servers answer under a /v1 prefix: "
            f'use base_url="{candidates[0]}"')
    if len(candidates) > 1:
        hint += f' (vLLM and SGLang serve it at the root: "{candidates[1]}")'
    return hint


#: ``scheme://user:pass@`` anywhere in a text, also inside a quoted repr such as ``URL('http://a:b@h')``.
_USERINFO = re.compile(r"""([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'"]*@""")


def _redact_text(text: str) -> str:
    """Library messages may quote the request URL, credentials included (aiohttp does)."""
    return _USERINFO.sub(r"\1***@", text) if "@" in text else text


_QUOTED_BYTES = re.compile(r"""b(['"]).*?(?<!\\)\1""", re.DOTALL)


def _quoted_bytes(message: str) -> bytes | None:
    """The first ``b'...'`` literal in a library's message: the line it could not parse."""
    import ast

    m = _QUOTED_BYTES.search(message)
    try:
        value = ast.literal_eval(m.group(0)) if m else None
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


def model_not_chosen(why: str) -> NotFoundError:
    """No model was named and the replicas do not settle one (``_served.choose``): every call would 404 somewhere."""
    exc = NotFoundError(why)
    exc._attach(None, why, None, None)
    return exc


def not_http(url: str, message: str) -> InvalidResponseError:
    """The port answered, but not in HTTP (an SSH banner, binary bytes). A retry gets the same answer.

    ``message`` is the HTTP library's; the line it quotes (aiohttp and h11 both show ``b'...'``) is
    what the port sent."""
    url = redact_url(url)
    received = _quoted_bytes(message)
    if received:
        shown = repr(received[:60]) + ("…" if len(received) > 60 else "")
        what = f"it answered {shown} where an HTTP status line belongs"
    else:
        what = "its answer does not start with an HTTP status line"
    exc = InvalidResponseError(f"{url} is not an HTTP server: {what} (is another service listening on this port?)")
    exc._attach(None, _preview(received or b""), url, None)
    return exc


def invalid_http(url: str, detail: str) -> InvalidResponseError:
    """An HTTP response that breaks the protocol (a bad header or chunk): a broken server or proxy."""
    url = redact_url(url)
    detail = _preview(_redact_text(detail), 200)
    exc = InvalidResponseError(f"{url} sent a response that is not valid HTTP: {detail}")
    exc._attach(None, detail, url, None)
    return exc


def malformed_response(why: str) -> InvalidResponseError:
    """JSON that parses but is not shaped as an OpenAI-compatible answer (no choices, a choice that is
    not an object). Raised where the JSON is read, which knows no URL."""
    exc = InvalidResponseError(
        f"the server's answer is not an OpenAI-compatible response: {why} "
        "(is a proxy or another API answering at this base_url?)"
    )
    exc._attach(200, why, None, None)
    return exc


def invalid_body(status: int, body: bytes, url: str, why: str) -> InvalidResponseError:
    url = redact_url(url)
    exc = InvalidResponseError(
        f"HTTP {status} from {url}: {why}; the body starts with {_preview(body, 120)!r} "
        "(is a proxy or a non-OpenAI server answering at this base_url?)"
    )
    exc._attach(status, _preview(body), url, None)
    return exc


def cause_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from or during (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _is_certificate_error(cause: BaseException) -> bool:
    """A TLS certificate that failed verification, anywhere in the cause chain (aiohttp, httpx)."""
    import ssl

    bad = (ssl.SSLCertVerificationError, ssl.CertificateError)
    return any(isinstance(e, bad) or "CERTIFICATE_VERIFY_FAILED" in str(e) for e in cause_chain(cause))


def connection_error(
    url: str, cause: BaseException, *, maybe_sent: bool, retryable: bool = True, why: str = ""
) -> APIConnectionError:
    """``retryable=False`` for failures a retry cannot fix; ``why`` says in words what the cause means."""
    detail = f"{type(cause).__name__}: {_redact_text(str(cause))}"
    if why:
        detail += f" -- {why}"
    cert = _is_certificate_error(cause)
    if cert:
        detail += (" -- the server's TLS certificate failed verification; for a private CA pass "
                   "http_async_client=httpx.AsyncClient(verify=...) with its bundle")
    url = redact_url(url)
    exc = APIConnectionError(f"connection to {url} failed: {detail}")
    exc._attach(None, None, url, None)
    exc.maybe_sent = maybe_sent
    exc.retryable = retryable and not cert  # the same certificate fails the same way on every retry
    exc.detail = detail
    return exc


def server_down(base_url: str, what: str, *, answered: bool) -> APIConnectionError:
    """The error of a model whose only server is down, worded for someone who gave one ``base_url``.

    ``answered``: the server answered since the pool was created, so calls waited for it to come back
    before this; else it never did (a wrong URL, or a server not started yet). ``what`` says what failed.
    Final (``retryable=False``): the transport's retries are what came before it."""
    url = redact_url(base_url)
    head = f"{url} stopped answering and calls fail until it answers again" if answered else f"cannot connect to {url}"
    check = f"qwen-fast doctor --base-url {url}"
    exc = APIConnectionError(f"{head} ({what}); is the server running? (check with `{check}`)")
    exc._attach(None, None, url, None)
    exc.maybe_sent = False
    exc.retryable = False
    return exc


def deadline_error(url: str, timeout: float | None) -> DeadlineExceededError:
    url = redact_url(url)
    exc = DeadlineExceededError(
        f"request to {url} passed its deadline of {timeout} s (retries included)"
    )
    exc._attach(None, None, url, None)
    return exc


def is_retryable(exc: BaseException) -> bool:
    """Connection errors, 408, 429 and 5xx retry; 4xx, deadlines and bad bodies never do."""
    if isinstance(exc, DeadlineExceededError):
        return exc.status_code == 408
    if isinstance(exc, APIConnectionError):
        return exc.retryable
    return isinstance(exc, (RateLimitError, ServerError))
