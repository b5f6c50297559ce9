"""HTTP/1.1 on the wire for the asyncio engine: the request head, an incremental response reader, and
the faults it reports.

Pure (no I/O, no event loop), so every framing rule is tested by feeding bytes. The reader is what
makes the engine cheap: a response that arrives in one packet is one ``bytes.find`` for the end of the
head, one pass over the header lines, and one slice for the body. What it accepts: HTTP/1.0 and 1.1
responses framed by ``Content-Length``, ``Transfer-Encoding: chunked`` (extensions and trailers
skipped) or the end of the connection; interim ``1xx`` responses skipped; gzip/deflate bodies decoded
(it never asks for them: a server that compresses anyway is still understood). Anything else is a
fault, and the faults say what they mean, so ``mapping.py`` can turn each into the package error that
fits without guessing from a message.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

#: A head larger than this is not an HTTP server's answer (aiohttp and h11 stop at 8-64 KiB too).
MAX_HEAD = 64 * 1024
_HEX = b"0123456789abcdefABCDEF"
#: The characters of an RFC 9110 token: what a header name is made of.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class Fault(Exception):
    """What the asyncio engine raises; ``mapping.map_error`` makes each a package error."""


class ConnectFailed(Fault):
    """The connection could not be opened (refused, DNS, TLS, connect timeout): nothing was sent."""


class ServerDisconnected(Fault):
    """The connection ended (closed or reset) before the response was complete.

    ``answered`` says whether any byte of a response had arrived. The OS error of a reset, if it was
    one, is the ``__cause__``: a reused keep-alive connection that the server closed in order (a FIN)
    before answering at all is the idle-close race, retried on a fresh one; a reset is a server that
    took the request and died, which is the transport's to retry (counted, and bounded by max_retries)."""

    def __init__(self, answered: bool, detail: str) -> None:
        super().__init__(detail)
        self.answered = answered


class NotHttp(Fault):
    """The port answered with something that is not an HTTP status line (an SSH banner, binary bytes)."""


class BadHttp(Fault):
    """An HTTP response that breaks the protocol: a bad status line, header, length or chunk."""


class Unsendable(Fault):
    """The request itself cannot be sent: a header with a line break or non-Latin-1 text, a URL that is not
    http(s) or has no host. A retry would fail the same way."""


class Headers(Mapping[str, str]):
    """A response's headers, looked up case-insensitively; repeated headers are joined with ``", "``.

    Built from the raw header lines on first use: a successful answer's headers are never looked at
    (the transport reads them for errors only), so most responses never pay for the dict."""

    __slots__ = ("_d", "_raw")

    def __init__(self, raw: bytes = b"", lowered: dict[str, str] | None = None) -> None:
        self._raw, self._d = raw, lowered

    def _dict(self) -> dict[str, str]:
        if self._d is None:
            self._d = parse_fields(self._raw)
        return self._d

    def __getitem__(self, name: str) -> str:
        return self._dict()[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._dict().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"Headers({self._dict()!r})"


def parse_fields(fields: bytes) -> dict[str, str]:
    """Header lines (CRLF-separated) -> ``{lowercased name: value}``; a line that is not ``token: value``
    is a :class:`BadHttp`."""
    headers: dict[str, str] = {}
    for raw in fields.split(b"\r\n"):
        if not raw:
            continue
        name, colon, value = raw.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN):
            raise BadHttp(f"bad header line {raw[:60]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = headers[key] + ", " + text if key in headers else text
    return headers


#: A head in the shape almost every server sends: checked in one match, its header lines parsed later.
_PLAIN_HEAD = re.compile(rb"HTTP/1\.([01]) (\d\d\d)(?: [^\r\n]*)?((?:\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\r\n]*)*)")
#: The fields that decide framing and reuse, found in one scan of the header lines.
_FRAMING = re.compile(rb"\r\n(transfer-encoding|content-length|connection|content-encoding):[ \t]*([^\r\n]*)", re.I)
_FRAMING_NAMES = ("transfer-encoding", "content-length", "connection", "content-encoding")


def _framing_fields(fields: bytes) -> dict[str, str] | None:
    """The framing fields (lowercased names and values) without parsing every line; None when one of
    them is repeated (the full parse joins repeats)."""
    out: dict[str, str] = {}
    for name, value in _FRAMING.findall(fields):
        key = name.decode("ascii").lower()
        if key in out:
            return None
        out[key] = value.rstrip(b" \t").decode("latin-1").lower()
    return out


def header_block(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` per header; a line break inside a name or value would start another header
    (or end the head) on the wire, so it is refused rather than sent."""
    block = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    n = block.count("\n")
    if n != block.count("\r") or n != len(headers):
        bad = [k for k, v in headers.items() if "\r" in k or "\n" in k or "\r" in v or "\n" in v]
        raise Unsendable(f"header {bad[0]!r} contains a line break, which HTTP/1.1 cannot carry")
    try:
        return block.encode("latin-1")
    except UnicodeEncodeError:
        bad = [k for k, v in headers.items() if not _latin1(k + v)]
        raise Unsendable(f"header {bad[0]!r} has characters HTTP/1.1 cannot carry (only Latin-1 text)") from None


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _first_line(data: bytes) -> bytes:
    return data.split(b"\n", 1)[0].rstrip(b"\r")[:120]


# reader states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


#: The headers of a response whose head has not arrived: empty, already parsed, shared (never changed).
_NO_HEADERS = Headers(b"", {})

class ResponseReader:
    """One response, fed the bytes as they arrive.

    After :meth:`feed`: ``head_done`` once the status and headers are known; ``body`` holds decoded
    body bytes not yet taken (``size`` of them); ``done`` once the response is complete. ``keep_alive``
    says whether the connection may carry another request afterwards. :meth:`eof` is the connection's
    end: it completes a body framed by the close, and is a :class:`ServerDisconnected` otherwise.
    """

    __slots__ = (
        "_inflate",
        "_left",
        "_pending",
        "_state",
        "body",
        "done",
        "head_done",
        "headers",
        "keep_alive",
        "received",
        "size",
        "status",
    )

    def __init__(self) -> None:
        self.status = 0
        self.headers: Headers = _NO_HEADERS  # until the head is read (``_head`` sets the response's own)
        self.body: list[bytes] = []
        self.size = 0
        self.head_done = self.done = False
        self.keep_alive = True
        self.received = 0
        self._state = _HEAD
        self._left = 0
        self._pending = b""
        self._inflate: Any = None

    def take(self) -> bytes:
        """The body bytes received so far (all of it once ``done``), handed out once."""
        body = self.body
        out = body[0] if len(body) == 1 else b"".join(body)
        self.body, self.size = [], 0
        return out

    def eof(self) -> None:
        if self._state == _UNTIL_CLOSE:
            self._finish(b"")
            return
        if self._state != _DONE:
            if not self.received:
                raise ServerDisconnected(False, "the server closed the connection without sending a response")
            raise ServerDisconnected(True, f"the server closed the connection {self._where()}")

    def _where(self) -> str:
        if self._state == _HEAD:
            return "in the middle of the response headers"
        if self._state == _LENGTH:
            return f"with {self._left} bytes of the body still to come"
        return "before the last chunk of the body"

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self._pending:
            data, self._pending = self._pending + data, b""
        while data:
            state = self._state
            if state == _LENGTH:
                left = self._left
                if len(data) < left:
                    self._left = left - len(data)
                    self._add(data)
                    return
                self._add(data[:left] if len(data) > left else data)
                self._finish(data[left:])
                return
            if state == _HEAD:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    self._incomplete_head(data)
                    return
                data = self._head(data[:end], data[end + 4 :])
            elif state == _CHUNK_SIZE:
                end = data.find(b"\r\n")
                if end < 0:
                    if len(data) > 4096:
                        raise BadHttp(f"a chunk size line longer than 4096 bytes: {data[:60]!r}")
                    self._pending = data
                    return
                line = data[:end]
                size = line.split(b";", 1)[0].strip(b" \t")  # a chunk extension is skipped
                if not size or len(size) > 16 or size.translate(None, _HEX):
                    raise BadHttp(f"bad chunk size line {line[:60]!r}")
                self._left = int(size, 16)
                self._state = _CHUNK_DATA if self._left else _TRAILER
                data = data[end + 2 :]
            elif state == _CHUNK_DATA:
                left = self._left
                self._add(data[:left] if len(data) > left else data)
                if len(data) < left:
                    self._left = left - len(data)
                    return
                self._state = _CHUNK_END
                data = data[left:]
            elif state == _CHUNK_END:
                if len(data) < 2:
                    self._pending = data
                    return
                if data[:2] != b"\r\n":
                    raise BadHttp(f"a chunk is longer than its size line said: {data[:60]!r}")
                self._state = _CHUNK_SIZE
                data = data[2:]
            elif state == _TRAILER:
                end = data.find(b"\r\n")
                if end < 0:
                    if len(data) > MAX_HEAD:
                        raise BadHttp("the trailer section is too long")
                    self._pending = data
                    return
                if end == 0:
                    self._finish(data[2:])
                    return
                data = data[end + 2 :]  # a trailer field: not needed
            elif state == _UNTIL_CLOSE:
                self._add(data)
                return
            else:  # _DONE: more bytes than the response said it had
                self.keep_alive = False
                return

    def _incomplete_head(self, data: bytes) -> None:
        """Reject a port that is not HTTP at its first bytes (an SSH banner may never be followed by
        a blank line), and a status line that cannot be one as soon as it is complete."""
        if not b"HTTP/"[: len(data)] == data[:5]:
            raise NotHttp(f"Bad status line {_first_line(data)!r}")
        if b"\r\n" in data:
            self._status(data.split(b"\r\n", 1)[0])
        if len(data) > MAX_HEAD:
            raise BadHttp(f"the response head is longer than {MAX_HEAD} bytes")
        self._pending = data

    @staticmethod
    def _status(line: bytes) -> int:
        parts = line.split(b" ", 2)
        version = parts[0]
        if not version.startswith(b"HTTP/"):
            raise NotHttp(f"Bad status line {line[:120]!r}")
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise BadHttp(f"unsupported HTTP version in the status line {line[:120]!r}")
        code = parts[1] if len(parts) > 1 else b""
        if len(code) != 3 or not code.isdigit():
            raise BadHttp(f"bad status line {line[:120]!r}")
        return int(code)

    def _head(self, head: bytes, rest: bytes) -> bytes:
        plain = _PLAIN_HEAD.fullmatch(head)
        framing = _framing_fields(plain.group(3)) if plain is not None else None
        if plain is not None and framing is not None:
            status, fields, http10 = int(plain.group(2)), plain.group(3), plain.group(1) == b"0"
            headers = Headers(fields)
        else:  # the careful path: it says what is wrong, or joins repeated framing fields
            line, _, fields = head.partition(b"\r\n")
            status, http10 = self._status(line), line.startswith(b"HTTP/1.0")
            parsed = parse_fields(fields)
            framing = {k: parsed[k].lower() for k in _FRAMING_NAMES if k in parsed}
            headers = Headers(fields, parsed)
        if 100 <= status < 200:
            if status == 101:
                raise BadHttp("the server switched protocols (101), which was not asked for")
            return rest  # an interim response: the real one follows
        self.status, self.headers, self.head_done = status, headers, True
        te, length = framing.get("transfer-encoding"), framing.get("content-length")
        conn, enc = framing.get("connection"), framing.get("content-encoding")
        if http10:
            self.keep_alive = False
        if conn is not None:
            if "close" in conn:
                self.keep_alive = False
            elif "keep-alive" in conn:  # HTTP/1.0 asking to keep the connection
                self.keep_alive = True
        if enc is not None and enc != "identity":
            wbits = _DECODERS.get(enc)
            if wbits is None:
                raise BadHttp(f"the body is encoded as {enc!r}, which this engine cannot decode (it never asks for it)")
            self._inflate = zlib.decompressobj(wbits)
        if status in (204, 304):
            self._finish(rest)
        elif te is not None:
            if te.rsplit(",", 1)[-1].strip() == "chunked":
                self._state = _CHUNK_SIZE
                if length is not None:  # both: chunked wins, and the connection is not trusted again
                    self.keep_alive = False
            else:
                self._state, self.keep_alive = _UNTIL_CLOSE, False
        elif length is not None:
            self._left = self._length(length)
            self._state = _LENGTH
            if not self._left:
                self._finish(rest)
        else:
            self._state, self.keep_alive = _UNTIL_CLOSE, False
        return b"" if self.done else rest

    @staticmethod
    def _length(value: str) -> int:
        if value.isascii() and value.isdigit():
            return int(value)
        values = {v.strip() for v in value.split(",")}
        if len(values) != 1:
            raise BadHttp(f"conflicting Content-Length values {value!r}")
        v = values.pop()
        if not v.isdigit() or not v.isascii():
            raise BadHttp(f"bad Content-Length {value[:40]!r}")
        return int(v)

    def _add(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error as e:
                raise BadHttp(f"the body cannot be decoded: {e}") from None
        if data:
            self.body.append(data)
            self.size += len(data)

    def _finish(self, extra: bytes) -> None:
        if self._inflate is not None:
            tail = self._inflate.flush()
            if tail:
                self.body.append(tail)
                self.size += len(tail)
        self._state, self.done = _DONE, True
        if extra:  # bytes after the response: the connection's framing cannot be trusted
            self.keep_alive = False
