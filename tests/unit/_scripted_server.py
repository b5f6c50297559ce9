"""A loopback HTTP/1.1 server whose answers a test scripts byte for byte, and which counts what a client
does to it: connections accepted, connections open at once, requests and their raw heads.

``answer(request) -> Reply`` is called for each request read off a connection; the reply's bytes go out
as given (any framing, good or bad), then the connection is kept for the next request, closed, or reset
as the reply says. A thread per connection (``socketserver``), IPv4 or IPv6, plain or TLS.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from support import LoopbackTcpServer, read_request


@dataclass(frozen=True)
class Request:
    head: bytes  # request line and headers, without the blank line
    body: bytes
    connection: int  # which accepted connection (1, 2, ...) carried it
    index: int  # its place on that connection (1 for the first)

    @property
    def path(self) -> str:
        return self.head.split(b" ")[1].decode()

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name.lower().encode():
                return v.strip().decode("latin-1")
        return None


@dataclass(frozen=True)
class Reply:
    data: bytes = b""
    delay: float = 0.0  # seconds before anything is sent
    then: str = "keep"  # "keep" the connection, "close" it (FIN), "reset" it (RST), or "stall" (never answer)
    pause_after: float = 0.0  # seconds between sending and closing


def ok(body: bytes = b'{"ok":true}', *, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    """A complete response framed by Content-Length."""
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


@dataclass
class _Counts:
    accepted: int = 0
    open_now: int = 0
    max_open: int = 0
    requests: list[Request] = field(default_factory=list)
    closed_by_client: int = 0


class ScriptedServer(LoopbackTcpServer):
    """``with ScriptedServer(answer) as srv: srv.url("/v1")`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, answer: Callable[[Request], Reply], *, family: int = socket.AF_INET,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(self._serve, family, name="scripted-server")
        self.answer, self.tls = answer, tls
        self.counts = _Counts()
        self._lock = threading.Lock()

    def url(self, path: str = "", scheme: str = "") -> str:
        host = "[::1]" if self.family == socket.AF_INET6 else "127.0.0.1"
        return f"{scheme or ('https' if self.tls else 'http')}://{host}:{self.port}{path}"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self.counts.requests)

    def _count(self, **delta: int) -> int:
        with self._lock:
            c = self.counts
            for k, v in delta.items():
                setattr(c, k, getattr(c, k) + v)
            c.max_open = max(c.max_open, c.open_now)
            return c.accepted

    def _serve(self, sock: socket.socket) -> None:
        number = self._count(accepted=1, open_now=1)
        try:
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return
            sock.settimeout(0.1)
            data, index = b"", 0
            while not self.stopping.is_set():
                req, data = self._read(sock, data, number, index + 1)
                if req is None:
                    return
                index += 1
                with self._lock:
                    self.counts.requests.append(req)
                reply = self.answer(req)
                if not self._act(sock, reply):
                    return
        finally:
            self._count(open_now=-1)
            sock.close()

    def _read(self, sock: socket.socket, data: bytes, number: int, index: int) -> tuple[Request | None, bytes]:
        ended: list[bytes | None] = []

        def recv() -> bytes | None:
            more = self._recv(sock)
            if not more:
                ended.append(more)
            return more

        got = read_request(recv, data)
        if got is None:
            if ended == [b""] and not data:
                self._count(closed_by_client=1)  # closed between requests, as a pool closes an idle connection
            return None, b""
        head, body, rest = got
        return Request(head, body, number, index), rest

    def _recv(self, sock: socket.socket) -> bytes | None:
        """Bytes, b"" when the client closed, None when the server stops or the socket broke."""
        while not self.stopping.is_set():
            try:
                return sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
        return None

    def _act(self, sock: socket.socket, reply: Reply) -> bool:
        """Send the reply; False when the connection is done."""
        if reply.delay:
            time.sleep(reply.delay)
        if reply.data:
            try:
                sock.sendall(reply.data)
            except OSError:
                return False
        if reply.then == "keep":
            return True
        if reply.pause_after:
            time.sleep(reply.pause_after)
        if reply.then == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif reply.then == "stall":
            while not self.stopping.is_set() and self._recv(sock):
                pass
        return False
