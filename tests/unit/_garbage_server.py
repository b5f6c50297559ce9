"""A raw TCP server on loopback that answers requests with something other than a good HTTP response.

The first path segment picks the misbehaviour, so one server serves every case: a model with
``base_url=f"{server.url}/ssh/v1"`` talks to a port that answers with an SSH banner. Each
connection reads the whole request first (so closing sends a FIN, not a reset, unless the case
wants a reset) and counts it, so tests can tell whether a failure was retried.

A thread per connection (``socketserver``) keeps this unit-level fixture free of event loops;
``stop`` closes the listening socket and wakes the connections that wait.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable

from support import LoopbackTcpServer, read_request

# Connection: close, as each connection serves one request; a client that reused it would fail on
# that instead of on the case under test.
_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
#: A first SSE event as vLLM sends it, and a content delta: what a cut stream delivers before the cut.
ROLE_EVENT = (
    b'data: {"id":"chatcmpl-g","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
)
CONTENT_EVENT = (
    b'data: {"id":"chatcmpl-g","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
)
BINARY = random.Random(7).randbytes(512)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Conn:
    """One accepted connection: what a case may do to it."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self.sock, self.stopping = sock, stopping

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def half_close(self) -> None:
        """FIN our side, keep reading until the client goes away (or the server stops)."""
        self.sock.shutdown(socket.SHUT_WR)
        self.wait_for_client()

    def wait_for_client(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                if not self.sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _sse(events: bytes, *, finish: bool = True) -> Callable[[_Conn], None]:
    """A chunked SSE body; ``finish=False`` closes without the last chunk: a stream cut short."""

    def act(c: _Conn) -> None:
        c.send(_SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(events) + (b"0\r\n\r\n" if finish else b""))

    return act


def _headers_then_half_close(c: _Conn) -> None:
    c.send(_JSON_HEAD + b"Content-Length: 64\r\n\r\n")
    c.half_close()


#: name -> what the server does after reading the request (then it closes the socket).
CASES: dict[str, Callable[[_Conn], None]] = {
    # not HTTP at all
    "ssh": lambda c: c.send(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n"),
    "status_abc": lambda c: c.send(b"HTTP/1.1 abc\r\nContent-Length: 2\r\n\r\n{}"),
    "status_foo": lambda c: c.send(b"FOO 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
    "binary": lambda c: c.send(BINARY),
    "bad_header": lambda c: c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\x00\x01\x02 junk\r\n\r\n{}"),
    # HTTP, cut short
    "empty_close": lambda c: None,
    "reset": lambda c: c.reset(),
    "cut_body": lambda c: c.send(_JSON_HEAD + b"Content-Length: 400\r\n\r\n" + b'{"id": "chatcmpl-1", "choices": ['),
    "headers_half_close": _headers_then_half_close,
    "chunked_cut": lambda c: c.send(
        _JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b'{"id": "chatcmpl-1", "cho'
    ),
    "bad_chunk_size": lambda c: c.send(_JSON_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    # HTTP, but not what an OpenAI-compatible server sends
    "json_not_openai": lambda c: c.send(_JSON_HEAD + b'Content-Length: 17\r\n\r\n{"hello":"world"}'),
    "sse_not_json": _sse(b"data: \x00\xff\xfe this is not json\n\ndata: [DONE]\n\n"),
    "sse_not_object": _sse(b"data: 42\n\ndata: [DONE]\n\n"),
    "sse_binary": _sse(BINARY),
    "sse_cut": _sse(ROLE_EVENT + CONTENT_EVENT + b'data: {"id":"chatc', finish=False),
    "sse_done_only": _sse(b"data: [DONE]\n\n"),
    # the server never answers
    "silent": lambda c: c.wait_for_client(),
}


class GarbageServer(LoopbackTcpServer):
    """``with GarbageServer() as srv: srv.base_url("ssh")`` -> ``http://127.0.0.1:PORT/ssh/v1``."""

    def __init__(self) -> None:
        super().__init__(self._serve, name="garbage-server")
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    def base_url(self, case: str) -> str:
        if case not in CASES:
            raise ValueError(f"unknown garbage case {case!r}; cases: {', '.join(CASES)}")
        return f"http://127.0.0.1:{self.port}/{case}/v1"

    def count(self, case: str) -> int:
        with self._lock:
            return self.requests[case]

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            got = read_request(lambda: sock.recv(65536))
            if got is None:
                return
            head = got[0]
            path = head.split(b" ")[1].decode()
            case = path.split("/")[1]
            with self._lock:
                self.requests[case] += 1
            CASES[case](_Conn(sock, self.stopping))
        except OSError:
            pass  # the client went away first: nothing to tell it
        finally:
            sock.close()
