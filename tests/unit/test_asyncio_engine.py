"""The asyncio engine against a loopback server that scripts its answers byte for byte and counts
connections: keep-alive reuse, the connection cap, the stale keep-alive retry, framing on the wire,
deadlines, cancellation, IPv6, TLS and streams.

Covers: _engines/asyncio_engine.py, _engines/asyncio_pool.py, _engines/mapping.py.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
from _scripted_server import Reply, Request, ScriptedServer, ok
from support import free_port

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._engines import AsyncioEngine, Limits
from langchain_qwen_fast._errors import APIConnectionError, is_retryable

pytestmark = pytest.mark.timeout(30)
JSON = {"Content-Type": "application/json"}
Serve = Callable[..., ScriptedServer]


def _chat_answer(text: str = "hi") -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[ScriptedServer] = []

    def start(answer: Callable[[Request], Reply], **kw: object) -> ScriptedServer:
        srv = ScriptedServer(answer, **kw).start()  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
async def engine() -> AsyncIterator[AsyncioEngine]:
    eng = AsyncioEngine(Limits())
    yield eng
    await eng.aclose()


async def _settle(cond: Callable[[], bool], within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while not cond() and time.monotonic() < end:
        await asyncio.sleep(0.01)
    return cond()


# -- keep-alive and the request on the wire -----------------------------------------------------------
async def test_sequential_requests_share_one_keep_alive_connection(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(ok(r.body)))
    for i in range(5):
        raw = await engine.post(srv.url("/v1/chat/completions"), b'{"n":%d}' % i, JSON, 5.0)
        assert (raw.status, raw.body) == (200, b'{"n":%d}' % i)
    assert srv.counts.accepted == 1 and len(srv.requests) == 5
    head = srv.requests[0].head.split(b"\r\n")
    assert head == [b"POST /v1/chat/completions HTTP/1.1", f"Host: 127.0.0.1:{srv.port}".encode(),
                    b"Content-Type: application/json", b"Content-Length: 7"]  # keep-alive is 1.1's default


async def test_a_body_below_and_above_the_join_size_arrives_whole_with_its_length(
    serve: Serve, engine: AsyncioEngine
) -> None:
    """Small bodies go out in the head's write, large ones (a long prompt list) in a write of their own."""
    srv = serve(lambda r: Reply(ok(b"{}")))
    small, large = b'{"p":"%s"}' % (b"x" * 1000), b'{"p":"%s"}' % (b"y" * (300 * 1024))
    for body in (small, large, small):
        assert (await engine.post(srv.url("/v1/completions"), body, JSON, 5.0)).status == 200
    assert [r.body for r in srv.requests] == [small, large, small] and srv.counts.accepted == 1
    assert [r.header("content-length") for r in srv.requests] == [str(len(b)) for b in (small, large, small)]


async def test_the_host_header_never_carries_the_urls_userinfo(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(ok()))
    url = srv.url("/v1/x").replace("http://", "http://alice:s3cret@")
    assert (await engine.post(url, b"{}", JSON, 5.0)).status == 200
    req = srv.requests[0]
    assert req.header("host") == f"127.0.0.1:{srv.port}" and b"s3cret" not in req.head and b"alice" not in req.head


async def test_a_health_probe_is_a_get_without_a_body(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(ok(b"")))
    raw = await engine.get(srv.url("/health"), {}, 5.0)
    assert raw.status == 200 and srv.requests[0].head.startswith(b"GET /health HTTP/1.1\r\n")
    assert srv.requests[0].header("content-length") is None


# -- framing from a real socket ------------------------------------------------------------------------
async def test_a_chunked_body_with_extensions_is_read_and_the_connection_kept(
    serve: Serve, engine: AsyncioEngine
) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;ext=1\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\nTrailer: x\r\n\r\n")
    srv = serve(lambda r: Reply(chunked))
    for _ in range(2):
        assert (await engine.post(srv.url("/x"), b"{}", JSON, 5.0)).body == b'{"a":1}\n'
    assert srv.counts.accepted == 1


async def test_a_body_read_until_the_close_is_whole_and_its_connection_not_reused(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nevery byte", then="close",
                                pause_after=0.05))
    for _ in range(2):
        assert (await engine.post(srv.url("/x"), b"{}", JSON, 5.0)).body == b"every byte"
    assert srv.counts.accepted == 2


async def test_connection_close_from_the_server_is_honoured(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(ok(extra=b"Connection: close\r\n")))  # the server itself leaves it open
    for _ in range(3):
        assert (await engine.post(srv.url("/x"), b"{}", JSON, 5.0)).status == 200
    assert srv.counts.accepted == 3
    assert await _settle(lambda: engine.connections == 0)


async def test_an_interim_100_continue_is_skipped(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"x":1}')))
    raw = await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    assert (raw.status, raw.body) == (200, b'{"x":1}')


async def test_response_headers_are_looked_up_case_insensitively(serve: Serve, engine: AsyncioEngine) -> None:
    from langchain_qwen_fast._upstream.transport import parse_retry_after

    srv = serve(lambda r: Reply(ok(b"{}", status=b"429 Too Many Requests", extra=b"RETRY-AFTER: 7\r\n")))
    raw = await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    assert raw.headers.get("retry-after") == raw.headers["Retry-After"] == "7"
    assert raw.headers.get("content-length") == "2" and parse_retry_after(raw.headers) == 7.0


# -- the pool --------------------------------------------------------------------------------------------
async def test_never_more_than_max_connections_are_open() -> None:
    with ScriptedServer(lambda r: Reply(ok(), delay=0.05)) as srv:
        eng = AsyncioEngine(Limits(max_connections=3))
        try:
            out = await asyncio.gather(*(eng.post(srv.url("/x"), b"{}", JSON, 10.0) for _ in range(15)))
        finally:
            await eng.aclose()
    assert [r.status for r in out] == [200] * 15
    assert srv.counts.max_open == 3 and srv.counts.accepted == 3  # the waiting ones reused them


async def test_at_the_cap_another_servers_idle_connection_gives_up_its_slot() -> None:
    with ScriptedServer(lambda r: Reply(ok())) as a, ScriptedServer(lambda r: Reply(ok())) as b:
        eng = AsyncioEngine(Limits(max_connections=1))
        try:
            for srv in (a, b, a):
                assert (await eng.post(srv.url("/x"), b"{}", JSON, 5.0)).status == 200
                assert eng.connections == 1
        finally:
            await eng.aclose()
    assert (a.counts.accepted, b.counts.accepted) == (2, 1)


async def test_idle_connections_close_after_keepalive_expiry() -> None:
    with ScriptedServer(lambda r: Reply(ok())) as srv:
        eng = AsyncioEngine(Limits(keepalive_expiry=0.2))
        try:
            await eng.post(srv.url("/x"), b"{}", JSON, 5.0)
            assert eng.connections == 1
            await asyncio.sleep(0.35)
            assert eng.connections == 0
            assert await _settle(lambda: srv.counts.closed_by_client == 1)
        finally:
            await eng.aclose()


async def test_a_connection_the_server_closed_while_idle_leaves_the_pool(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(ok(), then="close"))
    await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    assert await _settle(lambda: engine.connections == 0)
    assert (await engine.post(srv.url("/x"), b"{}", JSON, 5.0)).status == 200
    assert srv.counts.accepted == 2


def _closes_its_second_request_unanswered(r: Request) -> Reply:
    """uvicorn's idle timeout racing a reused connection: the request arrives as the server closes."""
    return Reply(then="close") if r.index == 2 else Reply(ok(_chat_answer()))


async def test_a_kept_alive_connection_closed_before_answering_is_retried_once_on_a_fresh_one(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(_closes_its_second_request_unanswered)
    for _ in range(2):
        assert (await engine.post(srv.url("/x"), b"{}", JSON, 5.0)).status == 200
    assert srv.counts.accepted == 2 and len(srv.requests) == 3


def test_the_stale_connection_retry_is_invisible_to_the_transport(serve: Serve) -> None:
    srv = serve(_closes_its_second_request_unanswered)
    with BatchedChatQwen(base_url=srv.url("/v1"), model="m", http_engine="asyncio", wire_mode="chat") as model:
        assert [model.invoke("a").content, model.invoke("b").content] == ["hi", "hi"]
        (ep,) = model.stats()["endpoints"].values()
    assert (ep["retries"], ep["errors"], srv.counts.accepted, len(srv.requests)) == (0, {}, 2, 3)


async def test_a_reused_connection_cut_after_part_of_an_answer_is_not_resent(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(ok()[:20], then="close") if r.index == 2 else Reply(ok()))
    await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    with pytest.raises(APIConnectionError, match="cut short") as ei:
        await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    assert ei.value.maybe_sent and len(srv.requests) == 2


async def test_a_reused_connection_reset_before_an_answer_is_the_transports_to_retry(
    serve: Serve, engine: AsyncioEngine
) -> None:
    """A reset is a server that read the request and died (the simulator's reset_before): resending it
    is a retry the caller's max_retries must bound and the stats must count, not the engine's."""
    srv = serve(lambda r: Reply(then="reset") if r.index == 2 else Reply(ok()))
    await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    with pytest.raises(APIConnectionError, match="ConnectionResetError") as ei:
        await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    assert ei.value.maybe_sent and is_retryable(ei.value) and len(srv.requests) == 2


async def test_a_fresh_connection_closed_unanswered_is_an_error_not_a_retry(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(then="close"))
    with pytest.raises(APIConnectionError, match="without sending a response") as ei:
        await engine.post(srv.url("/x"), b"{}", JSON, 5.0)
    assert ei.value.maybe_sent and is_retryable(ei.value) and len(srv.requests) == 1


# -- deadlines and cancellation --------------------------------------------------------------------------
async def test_the_deadline_bounds_a_stalled_exchange_and_closes_its_connection(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(then="stall"))
    t0 = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await engine.post(srv.url("/x"), b"{}", JSON, 0.3)
    assert 0.25 <= time.monotonic() - t0 < 1.0
    assert engine.connections == 0
    assert await _settle(lambda: srv.counts.open_now == 0)


async def test_a_cancelled_request_closes_its_connection_and_frees_its_slot(serve: Serve) -> None:
    srv = serve(lambda r: Reply(ok(b'{"late":true}'), delay=0.5) if r.index == 1 and r.connection == 1
                else Reply(ok()))
    eng = AsyncioEngine(Limits(max_connections=1))
    try:
        task = asyncio.create_task(eng.post(srv.url("/x"), b"{}", JSON, 5.0))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert eng.connections == 0  # closed at once, its slot free for the next request
        raw = await eng.post(srv.url("/x"), b"{}", JSON, 5.0)
        assert raw.body == b'{"ok":true}' and srv.counts.accepted == 2  # never the half-read connection
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no task per request left behind
    finally:
        await eng.aclose()


async def test_a_request_waiting_for_a_slot_is_bounded_by_its_deadline() -> None:
    with ScriptedServer(lambda r: Reply(ok(), delay=0.6)) as srv:
        eng = AsyncioEngine(Limits(max_connections=1))
        try:
            first = asyncio.create_task(eng.post(srv.url("/x"), b"{}", JSON, 5.0))
            await asyncio.sleep(0.05)
            with pytest.raises(asyncio.TimeoutError):
                await eng.post(srv.url("/x"), b"{}", JSON, 0.2)
            assert (await first).status == 200
        finally:
            await eng.aclose()


async def test_connection_refused_never_reached_the_server(engine: AsyncioEngine) -> None:
    with pytest.raises(APIConnectionError, match="ConnectionRefusedError") as ei:
        await engine.post(f"http://127.0.0.1:{free_port()}/v1/x", b"{}", JSON, 5.0)
    assert not ei.value.maybe_sent and is_retryable(ei.value)
    assert engine.connections == 0


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(ok()))
    with pytest.raises(APIConnectionError, match="line break") as ei:
        await engine.post(srv.url("/x"), b"{}", {"Authorization": "Bearer SECRET\r\nX-Evil: 1"}, 5.0)
    assert not ei.value.maybe_sent and not is_retryable(ei.value) and "SECRET" not in str(ei.value)
    assert srv.counts.accepted == 0


async def test_a_url_the_engine_cannot_use_fails_at_once_and_is_not_retried(engine: AsyncioEngine) -> None:
    for url, what in (("ftp://127.0.0.1/v1/x", "unsupported URL scheme 'ftp'"), ("http:///v1/x", "no host"),
                      ("http://127.0.0.1:99999/v1/x", "bad port")):
        with pytest.raises(APIConnectionError, match=what) as ei:
            await engine.post(url, b"{}", JSON, 5.0)
        assert not ei.value.maybe_sent and not is_retryable(ei.value)


# -- IPv6 and TLS ------------------------------------------------------------------------------------------
def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_literal_host_is_reached_with_a_bracketed_host_header(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(ok()), family=socket.AF_INET6)
    assert srv.url("/v1").startswith("http://[::1]:")
    assert (await engine.post(srv.url("/v1/x"), b"{}", JSON, 5.0)).status == 200
    assert srv.requests[0].header("host") == f"[::1]:{srv.port}"


def _tls_server(serve: Serve, self_signed: tuple[Path, Path]) -> ScriptedServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*self_signed)
    return serve(lambda r: Reply(ok()), tls=ctx)


async def test_tls_verifies_certificates_by_default(
    serve: Serve, engine: AsyncioEngine, self_signed: tuple[Path, Path]
) -> None:
    srv = _tls_server(serve, self_signed)
    with pytest.raises(APIConnectionError) as ei:
        await engine.post(srv.url("/v1/x"), b"{}", JSON, 5.0)
    msg = str(ei.value)
    assert "CERTIFICATE_VERIFY_FAILED" in msg and "certificate failed verification" in msg, msg
    assert not ei.value.maybe_sent and not is_retryable(ei.value) and engine.connections == 0


async def test_tls_with_a_context_that_trusts_the_certificate_works_and_keeps_alive(
    serve: Serve, self_signed: tuple[Path, Path]
) -> None:
    srv = _tls_server(serve, self_signed)
    eng = AsyncioEngine(Limits(), ssl.create_default_context(cafile=str(self_signed[0])))
    try:
        for _ in range(3):
            assert (await eng.post(srv.url("/v1/x"), b"{}", JSON, 5.0)).status == 200
    finally:
        await eng.aclose()
    assert srv.counts.accepted == 1


# -- streams -----------------------------------------------------------------------------------------------
_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_stream_lines_come_as_they_arrive_and_a_finished_stream_keeps_its_connection(
    serve: Serve, engine: AsyncioEngine
) -> None:
    body = _SSE_HEAD + _chunk(b"data: 1\n\nda") + _chunk(b"ta: 2\n\n") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    srv = serve(lambda r: Reply(body))
    for _ in range(2):
        handle = await engine.open_stream(srv.url("/x"), b"{}", JSON, 5.0)
        assert handle.status == 200 and handle.headers.get("content-type") == "text/event-stream"
        lines = [line async for line in handle.lines()]
        await handle.close()
        assert [x for x in lines if x.strip()] == [b"data: 1\n", b"data: 2\n", b"data: [DONE]\n"]
    assert srv.counts.accepted == 1


async def test_a_stream_closed_before_its_end_does_not_return_its_connection(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(_SSE_HEAD + _chunk(b"data: 1\n\n"), then="stall"))
    handle = await engine.open_stream(srv.url("/x"), b"{}", JSON, 5.0)
    async for line in handle.lines():
        assert line == b"data: 1\n"
        break
    await handle.close()
    assert engine.connections == 0


async def test_stream_lines_received_before_a_reset_come_out_before_the_error(
    serve: Serve, engine: AsyncioEngine
) -> None:
    srv = serve(lambda r: Reply(_SSE_HEAD + _chunk(b"data: 1\n\ndata: 2\n\ndata: {\"cu"), then="reset"))
    handle = await engine.open_stream(srv.url("/x"), b"{}", JSON, 5.0)
    await asyncio.sleep(0.2)  # the cut has arrived too before the first line is asked for
    got: list[bytes] = []
    with pytest.raises(APIConnectionError, match=r"Connection reset|cut short"):
        async for line in handle.lines():
            got.append(line)
    await handle.close()
    assert [x for x in got if x.strip()] == [b"data: 1\n", b"data: 2\n"]


async def test_a_stream_that_stalls_passes_its_deadline(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(_SSE_HEAD + _chunk(b"data: 1\n\n"), then="stall"))
    handle = await engine.open_stream(srv.url("/x"), b"{}", JSON, 0.4)
    got: list[bytes] = []
    with pytest.raises(asyncio.TimeoutError):
        async for line in handle.lines():
            got.append(line)
    await handle.close()
    assert got[:1] == [b"data: 1\n"] and engine.connections == 0


async def test_an_error_status_body_is_read_from_a_stream(serve: Serve, engine: AsyncioEngine) -> None:
    srv = serve(lambda r: Reply(ok(b'{"error":"busy"}', status=b"503 Service Unavailable")))
    handle = await engine.open_stream(srv.url("/x"), b"{}", JSON, 5.0)
    assert handle.status == 503 and await handle.read() == b'{"error":"busy"}'
    await handle.close()
    assert (await engine.post(srv.url("/x"), b"{}", JSON, 5.0)).status == 503
    assert srv.counts.accepted == 1  # the error body was read to its end: the connection was kept


# -- loops --------------------------------------------------------------------------------------------------
def test_one_engine_works_across_event_loops(serve: Serve) -> None:
    srv = serve(lambda r: Reply(ok()))
    eng = AsyncioEngine(Limits())
    for _ in range(2):
        assert asyncio.run(eng.post(srv.url("/x"), b"{}", JSON, 5.0)).status == 200
    asyncio.run(eng.aclose())
    assert eng.connections == 0
