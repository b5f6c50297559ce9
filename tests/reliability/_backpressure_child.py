"""Child process of test_backpressure.py: ``abatch`` (or ``batch``) N short prompts, report one JSON line.

A process of its own, so its peak resident set is this workload's and not the test session's: ``VmHWM`` from
/proc/self/status, which belongs to the address space that exec made (``ru_maxrss`` does not: Linux carries it
over from the parent across fork and exec, so a child of a 477 MiB pytest process reports at least 477 MiB). It
is read when the batch returns, before the test's own bookkeeping (the Ledger) records the outcomes.
Usage: ``python _backpressure_child.py BASE_URL N MAX_CONCURRENCY WIRE [abatch|batch]``
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import threading
import time

from harness import SIM_MODEL, Ledger

from langchain_qwen_fast import BatchedChatQwen


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    """The peak resident set of this process image (VmHWM, in kB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    base_url, n, maxc, wire = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    how = sys.argv[5] if len(sys.argv) > 5 else "abatch"
    model = BatchedChatQwen(
        base_url=base_url,
        model=SIM_MODEL,
        max_tokens=8,
        max_concurrency=maxc,
        wire_mode=wire,
        timeout=300.0,
    )
    led = Ledger(f"{n} pending items, {how}, max_concurrency={maxc} ({wire})")
    ids, prompts = led.prompts(n)
    peak_before = _peak_mib()
    samples: list[float] = []
    seen: list[dict[str, int]] = []

    stop = threading.Event()

    def watch() -> None:  # the dispatcher's own view while the batch drains, from another thread
        while not stop.wait(0.25):
            st = model.stats()
            seen.append({"in_flight": st["in_flight"], "queued": st["queued"]})
            samples.append(_rss_mib())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    if how == "abatch":
        outs = asyncio.run(model.abatch(prompts, return_exceptions=True))
    else:
        outs = model.batch(prompts, return_exceptions=True)
    elapsed = time.monotonic() - t0
    peak = _peak_mib()
    stop.set()
    watcher.join()
    led.record_all(ids, outs)
    t = led.tally()
    st = model.stats()
    print(
        json.dumps(
            {
                "row": t.row(),
                "problems": t.problems[:10],
                "elapsed_s": round(elapsed, 2),
                "peak_rss_mib": round(peak, 1),
                "peak_rss_before_mib": round(peak_before, 1),
                "rss_samples_max_mib": round(max(samples or [0]), 1),
                "client_max_in_flight": st["max_in_flight"],
                "in_flight_end": st["in_flight"],
                "queued_end": st["queued"],
                "max_queued_seen": max((s["queued"] for s in seen), default=0),
                "max_in_flight_seen": max((s["in_flight"] for s in seen), default=0),
                "batches": st["batches"],
            }
        ),
        flush=True,
    )
    model.close()


if __name__ == "__main__":
    main()
