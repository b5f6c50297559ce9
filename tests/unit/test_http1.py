"""http1.py: the asyncio engine's response reader and request head, fed bytes directly.

Every well-formed response is also fed one byte at a time: a packet may end anywhere, and the reader
must give the same answer wherever it does.

Covers: _engines/http1.py.
"""

from __future__ import annotations

import gzip
import zlib

import pytest

from langchain_qwen_fast._engines.http1 import (
    BadHttp,
    NotHttp,
    ResponseReader,
    ServerDisconnected,
    Unsendable,
    header_block,
)


def _read(data: bytes, *, step: int = 0, eof: bool = False) -> ResponseReader:
    r = ResponseReader()
    if step:
        for i in range(0, len(data), step):
            r.feed(data[i : i + step])
    else:
        r.feed(data)
    if eof:
        r.eof()
    return r


def _both(data: bytes, eof: bool = False) -> list[ResponseReader]:
    """The reader fed all at once and byte by byte."""
    return [_read(data, eof=eof), _read(data, step=1, eof=eof)]


def test_a_body_framed_by_content_length_is_read_whole_and_the_connection_kept() -> None:
    for r in _both(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"):
        assert (r.done, r.status, r.take(), r.keep_alive) == (True, 200, b'{"ok":true}', True)
        assert r.headers["content-type"] == "application/json"


def test_a_chunked_body_with_extensions_and_trailers_is_joined() -> None:
    data = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n1 ; x=\"q\"\r\n,\r\n6\r\n world\r\n0;last\r\nX-Trailer: t\r\n\r\n")
    for r in _both(data):
        assert (r.done, r.take(), r.keep_alive) == (True, b"hello, world", True)


def test_chunks_are_handed_out_as_they_arrive() -> None:
    r = ResponseReader()
    r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\ndata: 1")
    assert r.head_done and not r.done and r.take() == b"data: 1"
    r.feed(b"\r\n7\r\ndata: 2\r\n0\r\n\r\n")
    assert r.done and r.take() == b"data: 2"


def test_a_body_without_length_is_read_until_the_close_and_the_connection_not_kept() -> None:
    for r in _both(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", eof=True):
        assert (r.done, r.take(), r.keep_alive) == (True, b"all of it", False)
    r = _read(b"HTTP/1.1 200 OK\r\n\r\npart")
    assert not r.done  # until the close


def test_connection_close_and_http_1_0_are_honoured() -> None:
    assert not _read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert not _read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert _read(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert _read(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive


def test_interim_1xx_responses_are_skipped() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" \
           b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    for r in _both(data):
        assert (r.status, r.take(), "link" in r.headers) == (201, b"{}", False)


def test_headers_are_found_whatever_their_case_and_repeats_are_joined() -> None:
    r = _read(b"HTTP/1.1 429 Too Many\r\nRETRY-after: 3\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")
    assert r.headers.get("retry-after") == r.headers.get("Retry-After") == r.headers["RETRY-AFTER"] == "3"
    assert r.headers["X-A"] == "1, 2" and "x-A" in r.headers and r.headers.get("nope") is None
    assert dict(r.headers) == {"retry-after": "3", "x-a": "1, 2", "content-length": "0"}


def test_a_repeated_framing_header_is_joined_and_must_agree() -> None:
    r = _read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n{}")
    assert r.done and r.take() == b"{}" and r.headers["content-length"] == "2, 2"
    with pytest.raises(BadHttp, match="conflicting Content-Length"):
        _read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    r = _read(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert r.done and not r.keep_alive


def test_no_content_and_not_modified_have_no_body() -> None:
    for status in (b"204 No Content", b"304 Not Modified"):
        r = _read(b"HTTP/1.1 " + status + b"\r\n\r\n")
        assert r.done and r.take() == b"" and r.keep_alive


def test_a_compressed_body_is_decoded() -> None:
    for enc, packed in (("gzip", gzip.compress(b"x" * 500)), ("deflate", zlib.compress(b"x" * 500))):
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {enc}\r\nContent-Length: {len(packed)}\r\n\r\n".encode()
        for r in _both(head + packed):
            assert r.take() == b"x" * 500


def test_bytes_after_a_complete_response_make_the_connection_unusable() -> None:
    r = _read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk")
    assert r.done and r.take() == b"{}" and not r.keep_alive


@pytest.mark.parametrize("banner", [b"SSH-2.0-OpenSSH_9.6p1 Ubuntu", b"\x16\x03\x01\x02\x00", b"FOO 200 OK", b"<html>"])
def test_a_port_that_is_not_http_is_recognised_at_its_first_bytes(banner: bytes) -> None:
    r = ResponseReader()
    with pytest.raises(NotHttp) as ei:
        r.feed(banner[:7])  # no line end, no blank line: the verdict comes from the first bytes
    assert repr(banner[:7]) in str(ei.value)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"HTTP/1.1 abc\r\nContent-Length: 2\r\n\r\n{}", "bad status line"),
        (b"HTTP/1.1 2000 OK\r\n", "bad status line"),
        (b"HTTP/2 200\r\n\r\n", "unsupported HTTP version"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\x00\x01\x02 junk\r\n\r\n{}", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n{}", "conflicting Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}}\r\n0\r\n\r\n", "longer than its size"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", "cannot decode"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "cannot be decoded"),
    ],
)
def test_a_response_that_breaks_http_is_a_bad_http_fault(data: bytes, what: str) -> None:
    with pytest.raises(BadHttp, match=what):
        _read(data)
    with pytest.raises(BadHttp, match=what):
        _read(data, step=1)


def test_a_close_before_any_byte_is_unanswered_and_after_some_is_cut_short() -> None:
    with pytest.raises(ServerDisconnected) as ei:
        ResponseReader().eof()
    assert not ei.value.answered
    for partial, where in ((b"HTTP/1.1 200 OK\r\nContent-", "headers"),
                           (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}", "7 bytes of the body"),
                           (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "last chunk")):
        with pytest.raises(ServerDisconnected, match=where) as ei:
            _read(partial, eof=True)
        assert ei.value.answered
    with pytest.raises(ServerDisconnected) as ei:
        _read(b"HTTP/1.1 100 Continue\r\n\r\n", eof=True)
    assert ei.value.answered  # an interim response is an answer: never resent as a stale connection


def test_the_request_head_refuses_line_breaks_and_never_shows_the_value() -> None:
    assert header_block({"A": "1", "Content-Type": "x/y"}) == b"A: 1\r\nContent-Type: x/y\r\n"
    with pytest.raises(Unsendable, match="'Authorization'") as ei:
        header_block({"Authorization": "Bearer sk-SECRET\r\nX-Injected: 1"})
    assert "SECRET" not in str(ei.value)
    with pytest.raises(Unsendable, match="Latin-1") as ei:
        header_block({"X-Key": "sk-SECRET-\u2603"})
    assert "SECRET" not in str(ei.value)
    assert header_block({"X-Name": "caf\u00e9"}) == b"X-Name: caf\xe9\r\n"
