"""What every HTTP engine offers the transport: bytes in, bytes out, and the pool limits.

An engine is one of :class:`HttpEngine`'s implementations (the asyncio engine by default, aiohttp,
httpx for a caller's client); everything above this layer is engine-agnostic. Engine methods run only
on the runtime's loop; nothing here is thread-safe by itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Limits:
    """Connection pool limits. The default connection cap sits above any admission limit."""

    max_connections: int = 2048
    keepalive_expiry: float = 30.0
    connect_timeout: float = 10.0


@dataclass
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class StreamHandle(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def lines(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class HttpEngine(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> RawResponse: ...

    async def get(self, url: str, headers: Mapping[str, str], timeout: float) -> RawResponse: ...

    async def open_stream(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> StreamHandle: ...

    async def aclose(self) -> None: ...
