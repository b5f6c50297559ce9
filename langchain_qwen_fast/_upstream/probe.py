"""The health probe's HTTP: whether an ejected replica answers again.

``ReplicaSet`` decides when to probe (backoff while the replica stays ejected) and what an answer
means for routing; this module only asks the server, over the same engine the calls use (so a
caller's own httpx client, its proxies and certificates, apply to probes too).
"""

from __future__ import annotations

import asyncio

from langchain_qwen_fast._engines import HttpEngine
from langchain_qwen_fast._errors import APIConnectionError
from langchain_qwen_fast._urls import server_root


class HealthProbe:
    """``await probe(base_url, timeout)``: None when the server answers HTTP again, else why not.

    ``/health`` answering 200 counts (vLLM and SGLang serve it outside ``/v1``); where a router has no
    ``/health`` (404 or 405), any answer of ``/v1/models`` below 500 counts.
    """

    __slots__ = ("engine",)

    def __init__(self, engine: HttpEngine) -> None:
        self.engine = engine

    async def __call__(self, base: str, timeout: float) -> str | None:
        try:
            raw = await asyncio.wait_for(self.engine.get(server_root(base) + "/health", {}, timeout), timeout)
            if raw.status == 200:
                return None
            if raw.status in (404, 405):
                raw = await asyncio.wait_for(self.engine.get(base + "/models", {}, timeout), timeout)
                if raw.status < 500:
                    return None
            return f"health probe answered HTTP {raw.status}"
        except asyncio.TimeoutError:
            return f"health probe timed out after {timeout} s"
        except APIConnectionError as e:  # what the HTTP library said; the replica's name says where
            return e.detail or str(e)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
