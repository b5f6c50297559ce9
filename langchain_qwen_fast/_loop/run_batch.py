"""``run_batch``: any runnable's batch at full concurrency from sync code, on the package's own loop.

LangChain runs the sync ``.batch`` of a composition (``RunnableParallel``, ``RunnableLambda``
around the model, ``RunnableBranch``) as threads calling ``invoke``: min(32, cpu+4) of them, so a
``RunnableParallel(a=llm, b=llm).batch(300)`` kept 12 sequences in flight where ``abatch`` keeps
them all. ``run_batch`` drives the composition's ``abatch`` on the background loop that already
owns the model's pools and waits for it from the calling thread: no ``asyncio.run`` in user code,
and it works from any thread, in Jupyter and under a running loop in another thread.

Sync functions inside the composition (a ``RunnableLambda`` without an async twin) still run in
threads: LangChain hands them to the running loop's default executor, and the runtime loop's is
sized for this (``QWEN_FAST_SYNC_THREADS``, default 256) rather than asyncio's min(32, cpu+4).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig

from langchain_qwen_fast._loop.bridge import stream_events
from langchain_qwen_fast._loop.runtime import get_runtime


def run_batch(
    runnable: Runnable[Any, Any],
    inputs: Sequence[Any],
    config: RunnableConfig | Sequence[RunnableConfig] | None = None,
    *,
    return_exceptions: bool = False,
    **kwargs: Any,
) -> list[Any]:
    """``runnable.abatch(inputs, config, ...)``, run on the package's loop; blocks the calling thread.

    Same arguments and results as ``runnable.batch``: N outputs in input order, or per-input
    exceptions with ``return_exceptions=True``; ``config["max_concurrency"]`` bounds it.
    """
    rt = get_runtime()
    return rt.run(
        runnable.abatch(list(inputs), config, return_exceptions=return_exceptions, **kwargs)  # type: ignore[arg-type]
    )


def run_batch_as_completed(
    runnable: Runnable[Any, Any],
    inputs: Sequence[Any],
    config: RunnableConfig | Sequence[RunnableConfig] | None = None,
    *,
    return_exceptions: bool = False,
    **kwargs: Any,
) -> Iterator[tuple[int, Any]]:
    """``(index, output)`` as each input finishes, from ``runnable.abatch_as_completed`` on the package's
    loop. Leaving the loop early cancels what has not finished."""
    rt = get_runtime()

    def pairs() -> AsyncIterator[tuple[int, Any]]:
        return runnable.abatch_as_completed(  # type: ignore[call-overload,no-any-return]
            list(inputs), config, return_exceptions=return_exceptions, **kwargs
        )

    # The same carrier a sync stream uses: runs the async iterator on the loop, hands its items over in
    # order, raises its error after them, and cancels it when the caller stops reading.
    yield from stream_events(
        rt, pairs, on_loop_thread="run_batch_as_completed blocks; on the qwen-fast loop use abatch_as_completed")
