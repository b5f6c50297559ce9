"""Keep-alive connections for the asyncio engine: one ``asyncio.Protocol`` per connection, a pool per
(scheme, host, port), and one cap on connections open across all of them.

Why a protocol and not streams: the response arrives in ``data_received`` and is parsed right there
(``http1.ResponseReader``); the request's coroutine is woken once, when the response is complete (a
stream's: when its head is, then as lines arrive). No reader task, no buffer objects per request.

Slots: ``Slots.open`` counts connections open or being opened; at ``max_connections`` a new
connection first closes an idle one of another pool, else waits (bounded by the request's deadline)
until a connection is released or closed. Idle connections are reused last-in first-out, so the ones
that stay idle are the ones that expire: one timer per engine closes them after ``keepalive_expiry``,
and a connection the peer closed leaves the pool as soon as ``connection_lost`` says so.

Deadlines: one alarm per engine, set for the earliest deadline of the exchanges in flight, instead of a
timer per request (a uvloop ``call_at`` + ``cancel`` is a libuv timer started, stopped and closed: it
was the largest single cost after parsing). Requests finish long before their deadlines, so the alarm
rarely rings; when it does, it expires what is due and is set again for the next deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import ssl
from typing import Any

from langchain_qwen_fast._engines.http1 import ConnectFailed, ResponseReader, ServerDisconnected

#: A stream that buffers more than this unread stops reading from the socket until the lines are taken.
_HIGH_WATER = 1 << 20
#: A timer may ring this much before its time (clock resolution); deadlines that close are due.
_EARLY = 0.002


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; ``reader`` is the response in progress (None while idle)."""

    __slots__ = (
        "closed",
        "counted",
        "deadline",
        "error",
        "idle_since",
        "loop",
        "paused",
        "pool",
        "reader",
        "reused",
        "streaming",
        "transport",
        "waiter",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool, self.loop = pool, pool.slots.loop
        self.transport: Any = None
        self.reader: ResponseReader | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.error: BaseException | None = None
        self.closed = self.reused = self.streaming = self.paused = False
        self.idle_since = 0.0
        self.counted = False  # holds one of the engine's connection slots (from a successful connect until dropped)

    # -- the protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        r = self.reader
        if r is None or r.done:  # bytes nobody asked for: this connection's framing is lost
            self.abort()
            return
        try:
            r.feed(data)
        except Exception as e:  # a Fault: not HTTP, bad framing
            self.fail(e)
            return
        if r.done:
            if not self.streaming:
                self.pool.slots.inflight.discard(self)
            self.wake()
        elif self.streaming and r.head_done:
            if r.size > _HIGH_WATER and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            self.wake()

    def eof_received(self) -> None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        r = self.reader
        if r is None:
            self.pool.lost_idle(self)
            return
        if not r.done and self.error is None:
            try:
                r.eof()  # a body framed by the close is complete now
            except Exception as e:
                e.__cause__ = exc
                self.error = e
            if r.done and not self.streaming:
                self.pool.slots.inflight.discard(self)
        self.wake()

    # -- one exchange ----------------------------------------------------------------------------
    async def exchange(self, data: bytes, deadline: float, streaming: bool) -> ResponseReader:
        """Send ``data``; return when the response is complete (a stream: when its head is)."""
        if self.closed or self.transport.is_closing():  # the peer's close is on its way: nothing was sent
            raise ServerDisconnected(False, "the server closed the connection before the request was sent")
        r = self.reader = ResponseReader()
        self.streaming, self.error = streaming, None
        self.pool.slots.watch(self, deadline)
        self.transport.write(data)
        while True:
            if self.error is not None:
                raise self.error
            if r.done or (streaming and r.head_done):
                return r
            await self.wait()

    def wait(self) -> asyncio.Future[None]:
        fut = self.waiter = self.loop.create_future()
        return fut

    def wake(self) -> None:
        fut = self.waiter
        if fut is not None:
            self.waiter = None
            if not fut.done():
                fut.set_result(None)

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def expire(self) -> None:
        """The request's deadline: the exchange fails, and the half-read connection is closed."""
        if self.error is None:
            self.error = asyncio.TimeoutError()
        self.abort()
        self.wake()

    def fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
        self.abort()
        self.wake()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Slots:
    """The engine-wide cap on open connections, and who waits for one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, expiry: float) -> None:
        self.loop, self.limit, self.expiry = loop, limit, expiry
        self.open = 0
        self.pools: dict[tuple[str, str, int], Pool] = {}
        self.waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.sweep: asyncio.TimerHandle | None = None
        self.closed = False
        #: Connections whose exchange is bounded by a deadline now, and the alarm for the earliest one.
        self.inflight: set[Connection] = set()
        self.alarm: asyncio.TimerHandle | None = None
        self.alarm_at = math.inf

    def watch(self, conn: Connection, deadline: float) -> None:
        conn.deadline = deadline
        self.inflight.add(conn)
        if deadline < self.alarm_at:
            self._set_alarm(deadline)

    def _set_alarm(self, when: float) -> None:
        if self.alarm is not None:
            self.alarm.cancel()
        self.alarm_at = when
        self.alarm = self.loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self.alarm, self.alarm_at = None, math.inf
        due = self.loop.time() + _EARLY
        later = math.inf
        for conn in list(self.inflight):
            if conn.deadline <= due:
                self.inflight.discard(conn)
                conn.expire()
            elif conn.deadline < later:
                later = conn.deadline
        if later < math.inf:
            self._set_alarm(later)

    def close(self) -> None:
        self.closed = True
        for timer in (self.sweep, self.alarm):
            if timer is not None:
                timer.cancel()
        self.sweep = self.alarm = None
        for pool in list(self.pools.values()):
            pool.close()
        while self.waiters:  # each finds the engine closed
            self.wake()

    def take(self) -> bool:
        """A slot for a new connection, now: under the cap, or by closing another pool's idle one."""
        if self.open < self.limit:
            self.open += 1
            return True
        oldest: Connection | None = None
        for pool in self.pools.values():
            if pool.idle and (oldest is None or pool.idle[0].idle_since < oldest.idle_since):
                oldest = pool.idle[0]
        if oldest is None:
            return False
        oldest.pool.drop(oldest, keep_slot=True)  # its slot passes to the caller
        return True

    def give(self) -> None:
        self.open -= 1
        self.wake()

    def wake(self) -> None:
        """Tell the first live waiter that a slot or an idle connection may be there now."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                return

    async def wait(self, deadline: float) -> None:
        fut: asyncio.Future[bool] = self.loop.create_future()
        self.waiters.append(fut)
        timer = self.loop.call_at(deadline, _time_up, fut)
        try:
            woken = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.wake()  # woken, but leaving: the next waiter gets the turn
            raise
        finally:
            timer.cancel()
        if not woken:
            with contextlib.suppress(ValueError):
                self.waiters.remove(fut)
            raise asyncio.TimeoutError()

    def schedule_sweep(self) -> None:
        if self.sweep is None:
            self.sweep = self.loop.call_at(self.loop.time() + self.expiry, self.close_expired)

    def close_expired(self) -> None:
        self.sweep = None
        limit = self.loop.time() - self.expiry
        for pool in list(self.pools.values()):
            while pool.idle and pool.idle[0].idle_since <= limit:
                pool.drop(pool.idle[0])
        oldest = min((p.idle[0].idle_since for p in self.pools.values() if p.idle), default=None)
        if oldest is not None:
            self.sweep = self.loop.call_at(oldest + self.expiry, self.close_expired)


def _time_up(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class Pool:
    """Idle keep-alive connections to one (scheme, host, port)."""

    def __init__(self, slots: Slots, host: str, port: int, tls: ssl.SSLContext | None, connect_timeout: float) -> None:
        self.slots, self.host, self.port, self.tls = slots, host, port, tls
        self.connect_timeout = connect_timeout
        self.idle: collections.deque[Connection] = collections.deque()
        #: Every open connection, idle or busy: what ``close`` closes.
        self.conns: set[Connection] = set()

    async def acquire(self, deadline: float) -> Connection:
        """An idle connection (``reused``), else a new one once a slot is free."""
        slots = self.slots
        while True:
            idle = self.idle
            while idle:
                conn = idle.pop()
                if not conn.closed and slots.loop.time() - conn.idle_since < slots.expiry \
                        and not conn.transport.is_closing():
                    conn.reused = True
                    return conn
                self.drop(conn)
            if slots.closed:
                raise ServerDisconnected(False, "the engine was closed")
            if slots.take():
                return await self.connect(deadline)
            await slots.wait(deadline)

    async def connect(self, deadline: float) -> Connection:
        """A new connection in a slot already taken; the slot is given back if it cannot be opened."""
        loop = self.slots.loop
        try:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError()
            limit = min(left, self.connect_timeout)
            opening = loop.create_connection(lambda: Connection(self), self.host, self.port, ssl=self.tls,
                                             server_hostname=self.host if self.tls is not None else None)
            try:
                _, conn = await asyncio.wait_for(opening, limit)
            except asyncio.TimeoutError:
                if limit < left:
                    raise ConnectFailed(f"connecting took longer than connect_timeout={limit:g} s") from None
                raise  # the request's own deadline
            except Exception as e:  # refused, DNS, TLS, unreachable: the request never left
                raise ConnectFailed(f"{type(e).__name__}: {e}") from e
        except BaseException:
            self.slots.give()
            raise
        conn.counted = True
        self.conns.add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        """The exchange is over: keep the connection for the next request if its response was read to the
        end and both sides keep it alive; else close it."""
        r = conn.reader
        conn.reader = None
        self.slots.inflight.discard(conn)
        if conn.closed or r is None or not r.done or not r.keep_alive:
            self.drop(conn)
            return
        conn.idle_since = self.slots.loop.time()
        self.idle.append(conn)
        slots = self.slots
        if slots.sweep is None:
            slots.schedule_sweep()
        if slots.waiters:
            slots.wake()

    def drop(self, conn: Connection, keep_slot: bool = False) -> None:
        """Close ``conn`` for good (never half-read back into the pool) and free its slot, unless the
        caller takes the slot over for a fresh connection."""
        self.slots.inflight.discard(conn)
        conn.reader = None  # connection_lost must not look for it in the idle queue
        if not conn.closed:
            conn.abort()
        self.conns.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        if conn.counted:
            conn.counted = False
            if not keep_slot:
                self.slots.give()

    def lost_idle(self, conn: Connection) -> None:
        """The peer closed an idle connection: it leaves the pool now (and is never reused)."""
        if conn.counted:
            self.drop(conn)

    def close(self) -> None:
        """Close every connection; an exchange in progress fails as disconnected (and is not retried
        here: ``Slots.closed``)."""
        for conn in list(self.conns):
            conn.fail(ServerDisconnected(False, "the engine was closed"))
            self.drop(conn)
