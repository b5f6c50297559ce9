"""The asyncio engine: HTTP/1.1 keep-alive straight on asyncio transports (``http_engine="asyncio"``).

Why another engine: on the chat wire (one request per input) the HTTP client was most of the client's
CPU. aiohttp's ``ClientSession.post`` + ``read()`` measured 225-258 µs of CPU per request against a
zero-latency server (64 in flight, uvloop, 2 cores): a request object, a response object, a writer
task, a timeout handle, connector bookkeeping and header multidicts, per request. This engine writes
each request as one ``bytes`` (the head preformatted per URL), parses the response in the protocol's
``data_received`` (``http1.py``) and wakes the caller once; one alarm per engine bounds every
exchange (``asyncio_pool.py``). docs/architecture.md has the measurements that made it the default.

The deadline: ``timeout`` bounds the whole exchange (waiting for a connection, connecting, writing,
reading); connecting is bounded by ``connect_timeout`` too. A request that passes its deadline, is
cancelled, or fails closes its connection: a half-read connection never goes back to the pool.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote, unquote, urlsplit

from langchain_qwen_fast._engines.asyncio_pool import Connection, Pool, Slots
from langchain_qwen_fast._engines.base import Limits, RawResponse, StreamHandle
from langchain_qwen_fast._engines.http1 import ServerDisconnected, Unsendable, header_block
from langchain_qwen_fast._engines.mapping import mapped

#: Bodies up to this size go out in the same ``write`` as the head (one copy, one send).
_JOIN_BELOW = 256 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class _Route:
    """What one URL needs on every request: its pool, and its request heads up to ``Content-Length``
    (one per method and set of headers, formatted once: a batch sends thousands with the same ones)."""

    __slots__ = ("auth", "heads", "host", "pool", "target")

    def __init__(self, pool: Pool, target: bytes, host: bytes, auth: bytes = b"") -> None:
        self.pool, self.target, self.host, self.auth = pool, target, host, auth
        self.heads: dict[tuple[object, ...], bytes] = {}

    def request(self, method: bytes, headers: Mapping[str, str], body: bytes | None) -> tuple[bytes, bytes | None]:
        """The bytes to write first (the head, and the body too when it is small), and the body when it is
        written on its own after them."""
        key = (method, *headers.items())
        head = self.heads.get(key)
        if head is None:
            head = self._head(method, headers)
            if len(self.heads) >= 64:  # a model has one set of headers; this only bounds misuse
                self.heads.clear()
            self.heads[key] = head
        if body is None:
            return head + b"\r\n", None
        if len(body) < _JOIN_BELOW:
            return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body), None
        return b"%sContent-Length: %d\r\n\r\n" % (head, len(body)), body

    def _head(self, method: bytes, headers: Mapping[str, str]) -> bytes:
        host = b"" if "Host" in headers or "host" in headers else self.host  # the caller's own Host wins
        # user:password in the URL is HTTP basic auth, as aiohttp and httpx send it; an Authorization header given
        # with the call wins (the model refuses a URL's credentials together with an api key up front)
        auth = b"" if any(k.lower() == "authorization" for k in headers) else self.auth
        return b"".join((method, b" ", self.target, b" HTTP/1.1\r\n", host, auth, header_block(headers)))


class AsyncioEngine:
    """HTTP/1.1 over asyncio transports, one keep-alive pool per (scheme, host, port); see the module
    docstring. Created anywhere, bound to the running loop on first use (and rebound, with fresh
    pools, if a later call runs on another loop)."""

    #: ``timeout`` bounds the whole exchange here (the pool's deadline alarm), so the transport adds no timer.
    enforces_deadline = True

    def __init__(self, limits: Limits, ssl_context: ssl.SSLContext | bool = True) -> None:
        self.limits = limits
        self._ssl = ssl_context
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: Slots | None = None
        self._routes: dict[str, _Route] = {}

    @property
    def connections(self) -> int:
        """Connections open or being opened now (at most ``limits.max_connections``)."""
        return self._slots.open if self._slots is not None else 0

    # -- requests --------------------------------------------------------------------------------
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse:
        with mapped(url):
            conn = await self._exchange(b"POST", url, body, headers, timeout, False)
            return self._finish(conn)

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse:
        """A health probe: ``GET`` with the whole exchange bounded by ``timeout``."""
        with mapped(url):
            conn = await self._exchange(b"GET", url, None, headers, timeout, False)
            return self._finish(conn)

    async def open_stream(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> StreamHandle:
        with mapped(url):
            conn = await self._exchange(b"POST", url, body, headers, timeout, True)
        return _Stream(conn, url)

    @staticmethod
    def _finish(conn: Connection) -> RawResponse:
        r = conn.reader
        assert r is not None
        resp = RawResponse(r.status, r.headers, r.take())
        conn.pool.release(conn)
        return resp

    async def _exchange(
        self, method: bytes, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float,
        streaming: bool,
    ) -> Connection:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        deadline = loop.time() + timeout
        route = self._routes.get(url) or self._route(url)
        data, rest = route.request(method, headers, body)
        pool = route.pool
        conn: Connection | None = await pool.acquire(deadline)
        try:
            try:
                await self._send(conn, data, rest, deadline, streaming)
                return conn  # type: ignore[return-value]
            except ServerDisconnected as e:
                # A kept-alive connection the server closed in order before it answered anything: the
                # idle-close race (uvicorn closes idle connections after 5 s; the request crossed its FIN).
                # Once, at once, on a fresh connection; never when any byte of a response arrived, and
                # never after a reset (a server that read the request and died: the transport's retry).
                if e.answered or e.__cause__ is not None or conn is None or not conn.reused or pool.slots.closed:
                    raise
            pool.drop(conn, keep_slot=True)
            conn = None  # the slot is the fresh connection's now (connect gives it back if it fails)
            conn = await pool.connect(deadline)
            await self._send(conn, data, rest, deadline, streaming)
            return conn
        except BaseException:
            if conn is not None:
                pool.drop(conn)
            raise

    @staticmethod
    async def _send(conn: Connection | None, data: bytes, rest: bytes | None, deadline: float, streaming: bool) -> None:
        assert conn is not None
        if rest is not None:
            conn.transport.write(data)  # the head; the body follows in its own write
            data = rest
        await conn.exchange(data, deadline, streaming)

    # -- routes and loops ------------------------------------------------------------------------
    def _route(self, url: str) -> _Route:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise Unsendable(f"unsupported URL scheme {scheme!r} (http and https are)")
        host = parts.hostname
        if not host:
            raise Unsendable("the URL has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as e:
            raise Unsendable(f"bad port in the URL: {e}") from None
        # Host carries no userinfo; an IPv6 literal keeps its brackets; a default port is left out.
        shown = f"[{host}]" if ":" in host else host
        if parts.port is not None and parts.port != (443 if scheme == "https" else 80):
            shown += f":{port}"
        target = quote(parts.path or "/", safe=_PATH_SAFE) + (f"?{parts.query}" if parts.query else "")
        assert self._slots is not None
        key = (scheme, host, port)
        pool = self._slots.pools.get(key)
        if pool is None:
            pool = Pool(self._slots, host, port, self._context() if scheme == "https" else None,
                        self.limits.connect_timeout)
            self._slots.pools[key] = pool
        try:
            host_line = f"Host: {shown}\r\n".encode("ascii")
            target_bytes = target.encode("ascii")
            auth_line = b""
            if parts.username is not None:
                pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
                auth_line = b"Authorization: Basic " + base64.b64encode(pair) + b"\r\n"
        except UnicodeEncodeError:
            raise Unsendable("the URL's host or path is not ASCII; IDNA-encode the host") from None
        if len(self._routes) >= 1024:  # URLs are base_url + a few paths; this only guards against misuse
            self._routes.clear()
        route = self._routes[url] = _Route(pool, target_bytes, host_line, auth_line)
        return route

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            if isinstance(self._ssl, ssl.SSLContext):
                self._tls = self._ssl
            elif self._ssl:
                self._tls = ssl.create_default_context()  # certificates verified against the system's CAs
            else:
                self._tls = ssl.create_default_context()
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        return self._tls

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Pools belong to one loop; a call on another loop (a new ``asyncio.run``) starts fresh ones.
        The old loop's connections are left to it: its transports cannot be touched from this one."""
        self._loop = loop
        self._slots = Slots(loop, self.limits.max_connections, self.limits.keepalive_expiry)
        self._routes.clear()

    async def aclose(self) -> None:
        slots, loop = self._slots, self._loop
        self._slots, self._loop = None, None
        self._routes.clear()
        if slots is not None and loop is asyncio.get_running_loop():
            slots.close()


class _Stream:
    """A response read as it arrives: ``lines()`` for SSE, ``read()`` for an error body."""

    def __init__(self, conn: Connection, url: str) -> None:
        self._conn: Connection | None = conn
        self._url = url
        r = conn.reader
        assert r is not None
        self._reader = r
        self.status = r.status
        self.headers: Mapping[str, str] = r.headers

    async def _more(self) -> bool:
        """Wait for body bytes (or the end); False when the body is complete and all taken."""
        conn, r = self._conn, self._reader
        if conn is None:
            return False
        while not r.size:
            if r.done:
                return False
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return True

    async def read(self) -> bytes:
        out: list[bytes] = []
        with mapped(self._url):
            while await self._more():
                out.append(self._take())
        return b"".join(out)

    def _take(self) -> bytes:
        data = self._reader.take()
        if self._conn is not None:
            self._conn.resume()
        return data

    async def lines(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        """Each line as soon as it is complete; when the connection breaks, the complete lines already
        received come out first, then the error (docs/architecture.md, bytes before a cut)."""
        buf = b""
        with mapped(self._url):
            while True:
                # Every byte taken is split into lines and handed out at once, and _more returns what
                # arrived before it reports a stored error: the lines come out first by construction.
                if not await self._more():
                    if buf:
                        yield buf
                    return
                buf += self._take()
                if b"\n" in buf:
                    *complete, buf = buf.split(b"\n")
                    for line in complete:
                        yield line + b"\n"

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pool.release(conn)  # kept only when the body was read to its end
