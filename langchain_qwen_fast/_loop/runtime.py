"""The background event loop that owns every pool and dispatcher.

Why one loop for everything: a pool bound to the caller's loop breaks as soon as that loop closes
("Event loop is closed", langchain#35783), and per-loop pools cannot share one admission limit.
Here the sockets live on a single long-lived loop in a daemon thread. Sync callers block on a
``concurrent.futures.Future``; async callers, on any loop (repeated ``asyncio.run()``, Jupyter,
uvloop, threads), await a wrapped future, and cancelling that await cancels the work.

The loop uses uvloop when it is installed, unless ``QWEN_FAST_LOOP=asyncio`` or gevent has patched
``threading``. After ``fork()`` the child gets a fresh runtime; the parent's thread does not exist there.

Under gevent's monkey-patching (Locust patches at import) ``threading.Thread`` is a greenlet in the
caller's OS thread. A uvloop loop there waits in its own epoll call and stops every greenlet with it:
the first ``invoke`` under Locust hung. asyncio's own loop waits through ``selectors``, which gevent
patches too, so in a greenlet it yields to the others; the blocking waits of sync callers
(``queue.SimpleQueue``, ``concurrent.futures.Future``) are patched alike and stay on that one OS
thread, where gevent's primitives are safe. So under gevent the runtime picks asyncio's loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger("langchain_qwen_fast")


class Closeable(Protocol):
    async def aclose(self) -> None: ...


def gevent_threads() -> bool:
    """Whether gevent has replaced ``threading`` with greenlets in this process (module docstring)."""
    monkey = sys.modules.get("gevent.monkey")
    try:
        return bool(monkey is not None and monkey.is_module_patched("threading"))
    except Exception:  # an unexpected gevent: assume unpatched, as before
        return False


def _new_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("QWEN_FAST_LOOP", "").lower() != "asyncio" and not gevent_threads():
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


class Runtime:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = _new_loop()
        self._ready = threading.Event()
        self._shared: dict[Any, tuple[Closeable, int]] = {}
        self._lock = threading.Lock()
        self.closed = False
        self._failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="qwen-fast-loop", daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._failed is not None:
            self.closed = True
            self.loop.close()
            why = (" (under gevent the loop is a greenlet on the caller's OS thread, which already runs an event "
                   "loop: call the sync methods, invoke and batch, from greenlets)") if gevent_threads() else ""
            raise RuntimeError(f"the qwen-fast loop could not start: {self._failed}{why}") from self._failed

    def _run(self) -> None:
        try:
            asyncio.set_event_loop(self.loop)
            # Sync functions that LangChain runs from async code (a RunnableLambda inside run_batch) go to
            # the loop's default executor; asyncio's default of min(32, cpu+4) threads would cap them at 6.
            threads = int(os.environ.get("QWEN_FAST_SYNC_THREADS", "256"))
            self.loop.set_default_executor(ThreadPoolExecutor(max_workers=threads,
                                                              thread_name_prefix="qwen-fast-sync"))
            self.loop.call_soon(self._ready.set)
            self.loop.set_exception_handler(self._on_loop_error)
            self.loop.run_forever()
        except BaseException as e:
            if self._ready.is_set():
                raise
            self._failed = e  # it never ran: the caller waiting for it gets the reason, not a hang
            self._ready.set()

    @staticmethod
    def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Never let a stray callback error take the loop down; say it at DEBUG, without payloads.
        exc = context.get("exception")
        log.debug("background loop: %s (%s)", context.get("message"), type(exc).__name__ if exc else "-")

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self.closed:
            coro.close()
            from langchain_qwen_fast._errors import ClientClosedError

            raise ClientClosedError("the qwen-fast runtime is shut down (interpreter exiting)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the background loop and block this thread for its result."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a sync BatchedChatQwen method was called from the qwen-fast loop thread itself "
                "(e.g. inside a callback handler); use the async method there"
            )
        fut = self.submit(coro)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # KeyboardInterrupt or the like: drop the work, never leave it running
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` (run on the background loop) from any other event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    # -- shared, reference-counted objects (pools and dispatchers) --------------------------
    def acquire(self, key: Any, factory: Callable[[], Closeable]) -> Closeable:
        with self._lock:
            obj, refs = self._shared.get(key, (None, 0))
            if obj is None:
                obj = factory()
            self._shared[key] = (obj, refs + 1)
            return obj

    def release(self, key: Any) -> Awaitable[None] | None:
        """Drop one reference; returns the closing coroutine's future when it was the last."""
        with self._lock:
            obj, refs = self._shared.get(key, (None, 0))
            if obj is None:
                return None
            if refs > 1:
                self._shared[key] = (obj, refs - 1)
                return None
            del self._shared[key]
        return asyncio.wrap_future(self.submit(obj.aclose())) if not self.in_loop_thread() else obj.aclose()

    def release_sync(self, key: Any, timeout: float = 5.0) -> None:
        with self._lock:
            obj, refs = self._shared.get(key, (None, 0))
            if obj is None:
                return
            if refs > 1:
                self._shared[key] = (obj, refs - 1)
                return
            del self._shared[key]
        if self.in_loop_thread():
            self.loop.create_task(obj.aclose())
            return
        try:
            self.submit(obj.aclose()).result(timeout)
        except Exception as e:  # closing must not raise on the way out
            log.debug("closing a pool failed: %s", type(e).__name__)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Close every pool, cancel what is left, stop the loop. Bounded in time; never raises."""
        if self.closed or not self.thread.is_alive():
            return
        with self._lock:
            objs = [o for o, _ in self._shared.values()]
            self._shared.clear()

        async def _close_all() -> None:
            await asyncio.gather(*(o.aclose() for o in objs), return_exceptions=True)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # bounded and quiet on the way out
            asyncio.run_coroutine_threadsafe(_close_all(), self.loop).result(timeout)
        self.closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
#: PID of the process whose interpreter is exiting (set by the atexit hook). A fork()ed child that
#: inherits it from a parent that was exiting is not itself exiting, hence the PID, not a bool.
_exiting_pid: int | None = None


def _raise_exiting() -> None:
    from langchain_qwen_fast._errors import ClientClosedError

    raise ClientClosedError("the qwen-fast runtime is shut down (interpreter exiting)")


def get_runtime() -> Runtime:
    global _runtime
    rt = _runtime
    pid = os.getpid()
    if rt is not None and rt.pid == pid and not rt.closed:
        return rt
    with _runtime_lock:
        if _exiting_pid == pid:
            # After the atexit shutdown a new runtime would start a loop thread while the
            # interpreter finalizes (and leak it): a late caller gets a clear error instead.
            _raise_exiting()
        if _runtime is None or _runtime.pid != pid or _runtime.closed:
            _runtime = Runtime()
        return _runtime


def _shutdown_at_exit() -> None:
    global _exiting_pid
    with _runtime_lock:
        _exiting_pid = os.getpid()
        rt = _runtime
    if rt is not None and rt.pid == os.getpid():
        rt.shutdown()


atexit.register(_shutdown_at_exit)
