"""Server and network faults, injected by the simulator's knobs, in both wire modes.

Server-wide faults (``set_faults``) with ``#COUNT`` model a burst that ends (so retries can win);
``[[fault:SPEC]]`` markers in the user text hit one input every time (on /v1/completions a marker
in any prompt hits the whole list, as a real server rejecting one bad prompt rejects the list).

Covers: _upstream/transport.py, _upstream/sse.py, _engines/, _dispatch/dispatcher.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import Ledger, batch_through_a_kill, note, served_requests
from support import free_port

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._errors import (
    AllReplicasDownError,
    APIConnectionError,
    BadRequestError,
    ContextLengthError,
    DeadlineExceededError,
    RateLimitError,
    ServerError,
)
from langchain_qwen_fast.testing import SimServer

WIRES = ["chat", "completions"]
MakeModel = Callable[..., BatchedChatQwen]


def _retries(model: BatchedChatQwen) -> int:
    return sum(ep["retries"] for ep in model.stats()["endpoints"].values())


# -- connection resets -----------------------------------------------------------------------------
@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("kind", ["reset_before", "reset_after"])
def test_connection_reset_is_retried(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, kind: str, wire: str
) -> None:
    zero.set_faults([f"{kind}#3"])
    model = make_model(zero, wire_mode=wire)
    led = Ledger(f"{kind}#3, retried ({wire})")
    ids, prompts = led.prompts(100)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    led.check(min_answered=100)
    st = zero.stats()
    assert st["faults"].get(kind) == 3
    assert _retries(model) >= 1
    if kind == "reset_after":  # the server did the work, the client retried: one answer each all the same
        assert st["prompts_served"] > 100


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("kind", ["reset_before", "reset_after"])
def test_connection_reset_without_retries_is_a_clear_connection_error(
    zero: SimServer, make_model: MakeModel, kind: str, wire: str
) -> None:
    zero.set_faults([kind])
    model = make_model(zero, wire_mode=wire, max_retries=0)
    led = Ledger(f"{kind}, max_retries=0 ({wire})", errors=(APIConnectionError,))
    ids, prompts = led.prompts(20)
    outs = model.batch(prompts, return_exceptions=True)
    led.record_all(ids, outs)
    (one,), (p,) = led.prompts(1)
    with pytest.raises(APIConnectionError) as ei:
        model.invoke(p)
    led.record(one, ei.value)
    led.check(max_answered=0, min_failed=21)
    for e in [*outs, ei.value]:
        assert zero.base_url in str(e), str(e)  # names the URL it could not reach
    assert served_requests(zero) == model.stats()["batches"]  # one attempt per request, no retry


# -- 429 and Retry-After ---------------------------------------------------------------------------
@pytest.mark.parametrize("wire", WIRES)
def test_429_retry_after_is_honoured(zero: SimServer, make_model: MakeModel, wire: str) -> None:
    zero.set_faults(["status=429:retry_after=1#1"])
    model = make_model(zero, wire_mode=wire)  # default backoff (0.25-0.5 s): only Retry-After waits 1 s
    led = Ledger(f"429 Retry-After 1 s, once ({wire})")
    ids, prompts = led.prompts(40)
    t0 = time.monotonic()
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    elapsed = time.monotonic() - t0
    led.check(min_answered=40)
    assert zero.stats()["faults"]["status_429"] == 1
    assert elapsed >= 1.0, f"the retry came after {elapsed:.2f}s, before Retry-After"
    assert elapsed < 5.0


@pytest.mark.parametrize("wire", WIRES)
def test_429_retry_after_beyond_the_deadline_fails_fast(zero: SimServer, make_model: MakeModel, wire: str) -> None:
    zero.set_faults(["status=429:retry_after=30"])
    model = make_model(zero, wire_mode=wire, timeout=5.0)
    led = Ledger(f"429 Retry-After 30 s > timeout 5 s ({wire})", errors=(RateLimitError,))
    ids, prompts = led.prompts(10)
    t0 = time.monotonic()
    outs = model.batch(prompts, return_exceptions=True)
    elapsed = time.monotonic() - t0
    led.record_all(ids, outs)
    led.check(max_answered=0, min_failed=10)
    assert elapsed < 1.5, f"waited {elapsed:.2f}s for a Retry-After that could never fit the deadline"
    assert all("injected fault: status=429" in str(e) for e in outs)  # the server's own message
    assert served_requests(zero) == model.stats()["batches"]  # no attempt after the 429


# -- 5xx -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("code", [500, 503])
def test_5xx_burst_is_retried_and_recovers(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, code: int, wire: str
) -> None:
    zero.set_faults([f"status={code}#3"])
    model = make_model(zero, wire_mode=wire)
    led = Ledger(f"{code} burst of 3 ({wire})")
    ids, prompts = led.prompts(60)
    led.record_all(ids, model.batch(prompts, return_exceptions=True))
    led.check(min_answered=60)
    assert zero.stats()["faults"][f"status_{code}"] == 3
    assert _retries(model) >= 1


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("code", [500, 503])
def test_5xx_beyond_max_retries_is_server_error_with_the_servers_message(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, code: int, wire: str
) -> None:
    zero.set_faults([f"status={code}#3"])
    model = make_model(zero, wire_mode=wire, max_retries=2)
    led = Ledger(f"{code} x3 > max_retries=2 ({wire})", errors=(ServerError,))
    (one,), (p,) = led.prompts(1)
    with pytest.raises(ServerError) as ei:
        model.invoke(p)
    led.record(one, ei.value)
    assert f"[sim] injected fault: status={code}#3" in str(ei.value)
    assert ei.value.status_code == code
    assert served_requests(zero) == 3  # the first attempt and max_retries more
    (two,), (p2,) = led.prompts(1)  # the burst is over: the same model answers again
    led.record(two, model.invoke(p2))
    led.check(min_answered=1, min_failed=1)


# -- stall past the deadline -----------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("wire", WIRES)
def test_stall_longer_than_the_timeout_is_deadline_exceeded(
    scratch_sim: Callable[..., SimServer], make_model: MakeModel, wire: str
) -> None:
    srv = scratch_sim()  # stalled handlers stay on the server: keep them off the shared one
    model = make_model(srv, wire_mode=wire, timeout=1.0)
    led = Ledger(f"stall 3600 s > timeout 1 s ({wire})", errors=(DeadlineExceededError,))
    (one,), (p,) = led.prompts(1, "[[fault:stall=3600]]")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError) as ei:
        model.invoke(p)
    elapsed = time.monotonic() - t0
    led.record(one, ei.value)
    assert 0.9 <= elapsed < 2.0, elapsed
    assert "deadline" in str(ei.value) and srv.base_url in str(ei.value)

    # in a batch: only the stalled request's items fail (its whole list in completions mode)
    ids, prompts = led.prompts(100, {37: "[[fault:stall=3600]]"})
    t0 = time.monotonic()
    outs = model.batch(prompts, return_exceptions=True)
    elapsed = time.monotonic() - t0
    led.record_all(ids, outs)
    failed = [i for i, o in enumerate(outs) if isinstance(o, BaseException)]
    assert 37 in failed
    assert len(failed) == 1 if wire == "chat" else len(failed) <= 32
    assert elapsed < 2.5, elapsed
    led.check(min_answered=68)


# -- truncated bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize("wire", WIRES)
def test_truncated_json_is_a_connection_error_then_recovers(
    zero: SimServer, make_model: MakeModel, quick_backoff: None, wire: str
) -> None:
    led = Ledger(f"truncated_json marker, max_retries=0 ({wire})", errors=(APIConnectionError,))
    model0 = make_model(zero, wire_mode=wire, max_retries=0)
    ids, prompts = led.prompts(10, "[[fault:truncated_json]]")
    outs = model0.batch(prompts, return_exceptions=True)
    led.record_all(ids, outs)
    led.check(max_answered=0, min_failed=10)  # never a half body parsed as an answer
    assert all(zero.base_url in str(e) for e in outs)

    before = zero.stats()["faults"]["truncated_json"]
    zero.set_faults(["truncated_json#2"])
    model = make_model(zero, wire_mode=wire)
    led2 = Ledger(f"truncated_json#2, retried ({wire})")
    ids, prompts = led2.prompts(50)
    led2.record_all(ids, model.batch(prompts, return_exceptions=True))
    led2.check(min_answered=50)
    assert zero.stats()["faults"]["truncated_json"] == before + 2


def _collect_stream(model: BatchedChatQwen, prompt: str) -> tuple[Any, int]:
    chunks = []
    try:
        for c in model.stream(prompt):
            chunks.append(c)
    except Exception as e:
        return e, len(chunks)
    msg = chunks[0]
    for c in chunks[1:]:
        msg = msg + c
    assert msg.response_metadata.get("finish_reason") in ("stop", "length")
    return msg, len(chunks)


def test_truncated_sse_is_an_error_never_a_partial_success(zero: SimServer, make_model: MakeModel) -> None:
    model = make_model(zero, wire_mode="chat")
    led = Ledger("truncated_sse (stream, astream, streaming invoke)", errors=(APIConnectionError,))
    ids, prompts = led.prompts(12, {k: "[[fault:truncated_sse]]" for k in range(0, 12, 2)})
    partial = 0
    for i, p in zip(ids[:8], prompts[:8], strict=True):
        out, n = _collect_stream(model, p)
        partial += isinstance(out, BaseException) and n > 0
        led.record(i, out)

    import asyncio

    async def astream(p: str) -> Any:
        chunks = []
        try:
            async for c in model.astream(p):
                chunks.append(c)
        except Exception as e:
            return e
        msg = chunks[0]
        for c in chunks[1:]:
            msg = msg + c
        return msg

    for i, p in zip(ids[8:10], prompts[8:10], strict=True):
        led.record(i, asyncio.run(astream(p)))
    streaming = make_model(zero, wire_mode="chat", streaming=True)
    for i, p in zip(ids[10:], prompts[10:], strict=True):
        try:
            led.record(i, streaming.invoke(p))
        except Exception as e:
            led.record(i, e)
    t = led.check(min_answered=6, min_failed=6)
    assert t.answered == 6 and t.failed == 6
    # Each of the 4 cut sync streams (inputs 0, 2, 4, 6) hands over the chunks that arrived before the
    # cut, then raises: never a partial success, and never those chunks lost, however loaded the loop
    # (aiohttp holds them back behind its stored error unless the engine takes them out first).
    assert partial == 4
    assert zero.stats()["faults"]["truncated_sse"] == 6


# -- the server dies in the middle of a batch ------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("wire", WIRES)
def test_server_killed_and_restarted_mid_batch(
    scratch_sim: Callable[..., SimServer], make_model: MakeModel, wire: str
) -> None:
    srv = scratch_sim(latency="h100", speed=1.0)
    model = make_model(srv, wire_mode=wire, timeout=60.0)
    n = 2000
    led = Ledger(f"server SIGKILLed at ~30% of a {n}-item batch, restarted 1 s later ({wire})")
    ids, prompts = led.prompts(n)
    outs, events = batch_through_a_kill(
        model, prompts, srv, progress=lambda: srv.stats()["prompts_served"], at=0.3 * n, pause_s=1.0,
        at_kill=lambda: model.stats()["in_flight"])
    led.record_all(ids, outs)
    # What was in flight at the kill may fail (its retries, 0.25-1.5 s of backoff, can end before
    # the restart); so may the next admission wave if the restart is slow. The rest completes.
    t = led.check(min_answered=n // 2)
    assert t.failed <= events["at_kill"] + model.max_concurrency, (t.failed, events)
    note(
        f"kill/restart ({wire}): {events['at_kill']:.0f} items in flight at the kill, "
        f"{t.failed} failed, restart took {events['restarted'] - events['killed'] - 1.0:.2f} s"
    )
    assert events["killed"] < events["done"], "the kill came after the batch: nothing was tested"
    # AllReplicasDownError (an APIConnectionError) names the server and its last error.
    assert set(t.errors) <= {"APIConnectionError", "AllReplicasDownError", "ServerError", "DeadlineExceededError"}, (
        t.errors
    )
    assert model.stats()["in_flight"] == 0 and model.stats()["queued"] == 0
    (one,), (p,) = led.prompts(1)
    led.record(one, model.invoke(p))  # and the model keeps working against the restarted server
    led.check(record=False)


# -- nobody there ----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["dns", "closed_port"])
def test_unreachable_server_is_a_quick_connection_error_naming_the_url(make_model: MakeModel, where: str) -> None:
    url = "http://nonexistent.invalid/v1" if where == "dns" else f"http://127.0.0.1:{free_port()}/v1"
    model = make_model(url)  # default retries and backoff
    led = Ledger(
        f"{'DNS failure' if where == 'dns' else 'connection refused'} (default retries)",
        errors=(APIConnectionError,),
    )
    ids, prompts = led.prompts(5)
    t0 = time.monotonic()
    outs = model.batch(prompts, return_exceptions=True)
    led.record_all(ids, outs)
    (one,), (p,) = led.prompts(1)
    with pytest.raises(APIConnectionError) as ei:
        model.invoke(p)
    elapsed = time.monotonic() - t0
    led.record(one, ei.value)
    led.check(max_answered=0, min_failed=6)
    assert elapsed < 5.0, elapsed
    for e in [*outs, ei.value]:
        assert url in str(e), str(e)
        assert e.maybe_sent is False  # type: ignore[attr-defined]


def test_a_server_that_never_answered_fails_in_the_time_of_its_retries_with_a_message_about_that_server(
    make_model: MakeModel,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = make_model(url)  # default retries (2) and backoff (0.25-0.5 s, then 0.5-1 s)
    led = Ledger("one server that never answered (default retries)", errors=(APIConnectionError,))
    (one,), (p,) = led.prompts(1)
    t0 = time.monotonic()
    with pytest.raises(APIConnectionError) as ei:
        model.invoke(p)
    elapsed = time.monotonic() - t0
    led.record(one, ei.value)
    led.check(max_answered=0, min_failed=1)
    note(f"one server that never answered: the call failed in {elapsed:.2f} s")
    assert model.stats()["endpoints"][url]["retries"] == 2  # retried, after the backoff
    assert 0.7 <= elapsed < 2.5, elapsed  # the two backoffs; not the 3 s hold of every replica down
    msg = str(ei.value)
    assert not isinstance(ei.value, AllReplicasDownError)
    # what the HTTP client said comes next (its wording is the engine's: ConnectionRefusedError with the default one)
    assert msg.startswith(f"cannot connect to {url} (ConnectionRefusedError: "), msg
    assert msg.endswith(f"is the server running? (check with `qwen-fast doctor --base-url {url}`)"), msg
    assert "replica" not in msg and "/health" not in msg


@pytest.mark.timeout(60)
def test_the_only_server_killed_after_answering_and_restarted_fails_no_call_made_meanwhile(
    scratch_sim: Callable[..., SimServer], make_model: MakeModel
) -> None:
    srv = scratch_sim(latency="zero")
    model = make_model(srv)
    led = Ledger("the only server SIGKILLed after answering, restarted 0.5 s later")
    ids, prompts = led.prompts(2)
    led.record(ids[0], model.invoke(prompts[0]))
    srv.kill()
    restart = threading.Timer(0.5, srv.restart)
    restart.start()
    t0 = time.monotonic()
    led.record(ids[1], model.invoke(prompts[1]))  # made while it is down: waits for it, as for a restart
    elapsed = time.monotonic() - t0
    restart.join()
    led.check(min_answered=2)
    note(f"the only server restarted: the call made while it was down was answered after {elapsed:.2f} s")
    assert elapsed >= 0.5, elapsed


# -- one bad input among many ----------------------------------------------------------------------
@pytest.mark.parametrize("wire", WIRES)
def test_one_rejected_prompt_fails_alone(zero: SimServer, make_model: MakeModel, wire: str) -> None:
    model = make_model(zero, wire_mode=wire)
    led = Ledger(f"one prompt of 64 rejected with 400 ({wire})", errors=(BadRequestError,))
    ids, prompts = led.prompts(64, {17: "[[fault:status=400]]"})
    outs = model.batch(prompts, return_exceptions=True)
    led.record_all(ids, outs)
    t = led.check(min_answered=63)
    assert t.failed == 1 and isinstance(outs[17], BadRequestError)
    assert "injected fault: status=400" in str(outs[17])
    st = model.stats()
    if wire == "completions":
        assert max(st["batch_size_histogram"]) > 1  # it really went out in lists
        assert st["list_splits"] > 0
    else:
        assert st["list_splits"] == 0
        assert served_requests(zero) == 64  # a 400 is never retried


@pytest.mark.parametrize("wire", WIRES)
def test_one_overlong_prompt_fails_alone_with_context_overflow(
    zero: SimServer, make_model: MakeModel, wire: str
) -> None:
    model = make_model(zero, wire_mode=wire)
    led = Ledger(f"one prompt of 64 over the context length ({wire})", errors=(ContextLengthError,))
    ids, prompts = led.prompts(64, {5: "word " * 3000})
    outs = model.batch(prompts, return_exceptions=True)
    led.record_all(ids, outs)
    t = led.check(min_answered=63)
    assert t.failed == 1 and isinstance(outs[5], ContextLengthError)
    assert "maximum context length" in str(outs[5])
