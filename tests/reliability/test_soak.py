"""Soak: minutes of mixed load under random server-wide faults; nothing lost, nothing duplicated.

Skipped unless ``--run-soak`` is given (``make soak``). ``SOAK_SECONDS`` (default 600) sets the
length, ``SOAK_FAULT_PERIOD`` (default 5) how often the fault mix changes, ``SOAK_SEED`` the RNG.

Load, all at once on one simulator (``--latency h100 --speed 4``): sync ``.batch`` in both wire
modes, ``.abatch`` under ``asyncio.run`` in a thread, 16 threads calling ``.invoke``, sync and async
streaming, and async callers of whom a quarter are cancelled at random. Faults: a random 2-5 of
the kinds below (each kind in turn, plus random others), each at its own rate, replaced every
period (``set_faults``).

Covers: _dispatch/dispatcher.py, _upstream/transport.py, _upstream/replicas.py.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import CLEAR_ERRORS, Ledger, markdown_table, note

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast.testing import SimServer

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
PERIOD = float(os.environ.get("SOAK_FAULT_PERIOD", "5"))
SEED = int(os.environ.get("SOAK_SEED", "7"))
FAULTS = [
    "status=503@0.03",
    "status=500@0.02",
    "status=429:retry_after=0.2@0.02",
    "status=400@0.002",
    "reset_before@0.02",
    "reset_after@0.02",
    "truncated_json@0.02",
    "truncated_sse@0.05",
    "html=502@0.01",
    "html=200@0.005",
    "stall=15@0.003",
    "slow_body=1@0.02",
]


def _join(msg: Any, c: Any) -> Any:
    return c if msg is None else msg + c


@pytest.mark.soak
@pytest.mark.timeout(int(SECONDS) + 300)
def test_soak_mixed_load_with_random_faults(
    scratch_sim: Callable[..., SimServer], make_model: Callable[..., BatchedChatQwen]
) -> None:
    srv = scratch_sim(latency="h100", speed=4.0, seed=SEED)
    common = {"timeout": 8.0, "max_retries": 2, "max_concurrency": 256, "max_tokens": 24}
    chat = make_model(srv, wire_mode="chat", **common)
    lists = make_model(srv, wire_mode="completions", **common)
    ledgers = {
        k: Ledger(
            f"soak {SECONDS:.0f}s: {k}",
            allow_cancelled=(k == "ainvoke+cancel"),
            errors=CLEAR_ERRORS,
        )
        for k in (
            "batch (completions)",
            "batch (chat)",
            "abatch",
            "invoke x16",
            "stream",
            "astream",
            "ainvoke+cancel",
        )
    }
    stop = threading.Event()
    end = time.monotonic() + SECONDS
    crashed: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # a worker dying is itself a failure of the test
                crashed.append(e)

        return run

    def batch_worker(model: BatchedChatQwen, led: Ledger, size: int) -> None:
        while not stop.is_set():
            ids, prompts = led.prompts(size)
            led.record_all(ids, model.batch(prompts, return_exceptions=True))

    def abatch_worker() -> None:
        led = ledgers["abatch"]

        async def main() -> None:
            while not stop.is_set():
                ids, prompts = led.prompts(150)
                led.record_all(ids, await lists.abatch(prompts, return_exceptions=True))

        asyncio.run(main())

    def invoke_worker(rng: random.Random) -> None:
        led = ledgers["invoke x16"]
        while not stop.is_set():
            (one,), (p,) = led.prompts(1)
            model = chat if rng.random() < 0.5 else lists
            try:
                led.record(one, model.invoke(p))
            except Exception as e:
                led.record(one, e)

    def stream_worker() -> None:
        led = ledgers["stream"]
        while not stop.is_set():
            (one,), (p,) = led.prompts(1)
            msg = None
            try:
                for c in chat.stream(p):
                    msg = _join(msg, c)
                assert msg is not None and msg.response_metadata.get("finish_reason") in (
                    "stop",
                    "length",
                )
                led.record(one, msg)
            except AssertionError:
                raise
            except Exception as e:
                led.record(one, e)

    def astream_worker() -> None:
        led = ledgers["astream"]

        async def one_stream() -> None:
            (one,), (p,) = led.prompts(1)
            msg = None
            try:
                async for c in chat.astream(p):
                    msg = _join(msg, c)
                led.record(one, msg)
            except Exception as e:
                led.record(one, e)

        async def main() -> None:
            while not stop.is_set():
                await asyncio.gather(*(one_stream() for _ in range(8)))

        asyncio.run(main())

    def cancel_worker(rng: random.Random) -> None:
        led = ledgers["ainvoke+cancel"]

        async def main() -> None:
            while not stop.is_set():
                ids, prompts = led.prompts(40)
                model = chat if rng.random() < 0.5 else lists
                tasks = [asyncio.create_task(model.ainvoke(p)) for p in prompts]
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                for t in rng.sample(tasks, 10):
                    t.cancel()
                led.record_all(ids, await asyncio.gather(*tasks, return_exceptions=True))

        asyncio.run(main())

    rng = random.Random(SEED)
    workers = [
        lambda: batch_worker(lists, ledgers["batch (completions)"], 400),
        lambda: batch_worker(chat, ledgers["batch (chat)"], 200),
        abatch_worker,
        stream_worker,
        stream_worker,
        astream_worker,
        functools.partial(cancel_worker, random.Random(rng.random())),
        *[functools.partial(invoke_worker, random.Random(rng.random())) for _ in range(16)],
    ]
    threads = [threading.Thread(target=guarded(w), daemon=True, name=f"soak-{i}") for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    mixes = 0
    while time.monotonic() < end and not crashed:
        # every kind in turn, plus 1-4 others at random
        mix = list(dict.fromkeys([FAULTS[mixes % len(FAULTS)], *rng.sample(FAULTS, rng.randint(1, 4))]))
        srv.set_faults(mix)
        mixes += 1
        time.sleep(min(PERIOD, max(0.0, end - time.monotonic())))
    srv.set_faults([])
    stop.set()
    for t in threads:
        t.join(60)
    hung = [t.name for t in threads if t.is_alive()]
    assert not crashed, f"a worker crashed: {crashed[0]!r}"
    assert not hung, f"workers still running 60 s after the stop: {hung}"

    # after the storm: both dispatchers drain and still answer
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(m.stats()["in_flight"] or m.stats()["queued"] for m in (chat, lists)):
        time.sleep(0.1)
    for m in (chat, lists):
        assert m.stats()["in_flight"] == 0 and m.stats()["queued"] == 0, m.stats()
    after = Ledger("soak: calls after the storm")
    ids, prompts = after.prompts(100)
    after.record_all(ids, lists.batch(prompts, return_exceptions=True))
    after.check(min_answered=100, record=False)

    tallies = [led.tally() for led in ledgers.values()]
    for led in ledgers.values():
        led.check()
    total = {
        k: sum(getattr(t, k) for t in tallies)
        for k in (
            "inputs",
            "answered",
            "failed",
            "cancelled",
            "lost",
            "duplicated",
            "swapped",
            "unclear",
        )
    }
    errors: dict[str, int] = {}
    for t in tallies:
        for k, v in t.errors.items():
            errors[k] = errors.get(k, 0) + v
    injected = srv.stats()["faults"]
    lines = [
        f"soak: {SECONDS:.0f} s, {mixes} fault mixes, totals {total}",
        f"soak: errors by type {dict(sorted(errors.items()))}",
        f"soak: faults injected by the server {dict(sorted(injected.items()))}",
    ]
    print("\n" + "\n".join(markdown_table([t.row() for t in tallies]) + lines))
    for line in lines:
        note(line)
    assert total["lost"] == 0 and total["duplicated"] == 0 and total["swapped"] == 0
    assert total["answered"] > 0 and sum(injected.values()) > 0
