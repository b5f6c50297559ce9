"""Helpers shared by the test tiers (on ``sys.path`` through ``pythonpath`` in pyproject.toml): free loopback
ports, raw TCP servers on loopback, a self-signed certificate, the doctor report's statuses, vLLM's ``/tokenize``,
a model's four batch entry points run alike. Standard library only at import time, so the vLLM tier's server helper
(``tests/servers/vllm_server.py``) may use it too."""

from __future__ import annotations

import asyncio
import random
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

#: A chat model's batch entry points: each takes (inputs, config, return_exceptions=..., **kwargs).
ENTRY_POINTS = ("batch", "abatch", "batch_as_completed", "abatch_as_completed")


def free_port() -> int:
    """A loopback port nothing listens on right now (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports (for a launcher that takes a first port)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range")


def statuses(report: Any) -> dict[str, str]:
    """A doctor report as ``{check name: status}``."""
    return {c.name: c.status for c in report.checks}


def check(report: Any, name: str) -> Any:
    """The doctor report's check called ``name``."""
    return next(c for c in report.checks if c.name == name)


def tokenize(http: Any, model: str, **body: Any) -> list[int]:
    """vLLM's ``POST /tokenize`` through an ``httpx.Client`` whose base URL is the server's root."""
    r = http.post("/tokenize", json={"model": model, **body})
    assert r.status_code == 200, r.text
    tokens: list[int] = r.json()["tokens"]
    return tokens


def run_entry_point(model: Any, entry: str, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
    """``model.<entry>(inputs, config, **kwargs)`` (one of :data:`ENTRY_POINTS`) from sync code, its outputs in input
    order. The ``_as_completed`` forms must yield each index exactly once."""
    if entry.startswith("a"):
        return asyncio.run(arun_entry_point(model, entry, inputs, config, **kwargs))
    if entry == "batch":
        return list(model.batch(inputs, config, **kwargs))
    if entry != "batch_as_completed":
        raise ValueError(f"unknown entry point {entry!r}; one of {ENTRY_POINTS}")
    return _in_order(list(model.batch_as_completed(inputs, config, **kwargs)), len(inputs))


async def arun_entry_point(model: Any, entry: str, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
    """:func:`run_entry_point` for the async entry points, from a running event loop."""
    if entry == "abatch":
        return list(await model.abatch(inputs, config, **kwargs))
    if entry != "abatch_as_completed":
        raise ValueError(f"not an async entry point: {entry!r}; one of {ENTRY_POINTS}")
    return _in_order([pair async for pair in model.abatch_as_completed(inputs, config, **kwargs)], len(inputs))


def _in_order(pairs: list[tuple[int, Any]], n: int) -> list[Any]:
    indexes = sorted(i for i, _ in pairs)
    assert indexes == list(range(n)), f"yielded indexes {indexes} for {n} inputs"
    by_index = dict(pairs)
    return [by_index[i] for i in range(n)]


def run_invoke(model: Any, entry: str, text: Any, config: Any = None, **kwargs: Any) -> Any:
    """What LangChain's per-call path gives ``text`` beside an entry point: ``invoke`` for a sync one, ``ainvoke``
    (under ``asyncio.run``) for an async one."""
    if entry.startswith("a"):
        return asyncio.run(model.ainvoke(text, config, **kwargs))
    return model.invoke(text, config, **kwargs)


def self_signed_cert(directory: Any) -> tuple[Any, Any]:
    """A certificate and key for 127.0.0.1, ::1 and localhost, made by the ``openssl`` command in
    ``directory`` (a ``pathlib.Path``): ``(cert_path, key_path)``. Trusting the cert file trusts the server."""
    import subprocess

    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class LoopbackTcpServer:
    """A raw TCP server on loopback: ``serve(sock)`` runs for each accepted connection in its own daemon thread
    (``socketserver``), so unit-level fixtures need no event loop. ``stop`` sets ``stopping`` first, so
    connections that wait for the client can end, then closes the listening socket."""

    def __init__(self, serve: Callable[[socket.socket], None], family: int = socket.AF_INET,
                 name: str = "loopback-server") -> None:
        self.family = family
        self.stopping = threading.Event()

        class Server(socketserver.ThreadingTCPServer):
            address_family = family
            daemon_threads = True

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                serve(self.request)

        self._server = Server(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_request(recv: Callable[[], bytes | None], data: bytes = b"") -> tuple[bytes, bytes, bytes] | None:
    """One HTTP/1.1 request (framed by Content-Length) off a connection: ``(head, body, what followed)``,
    or None when ``recv`` reports the end (``b""`` or None) first. ``data`` is what was read already."""
    while b"\r\n\r\n" not in data:
        more = recv()
        if not more:
            return None
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        more = recv()
        if not more:
            return None
        rest += more
    return head, rest[:length], rest[length:]
