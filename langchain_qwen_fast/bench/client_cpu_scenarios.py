"""What ``qwen-fast bench client-cpu`` measures: each scenario's client, its prompts, and how its answers are checked.

Self-contained for the same reason as ``client_cpu_child.py``, which loads this file by path from its own
folder: the child runs with another tree's ``langchain_qwen_fast`` on ``PYTHONPATH``, and that tree may not
have the ``bench`` modules. So it imports only the package's public names (``BatchedChatQwen``,
``run_batch``), ``langchain_core``, ``langchain_openai``, ``aiohttp``, ``orjson``, pydantic and the standard
library, and those only inside the builders, once the child has checked which package it imported.

Every scenario sends distinct short questions with ``max_tokens`` and ``ignore_eos`` (the simulator then
answers exactly that many tokens, tool calls and JSON excepted), thinking off, and gets one result or
exception per prompt (``return_exceptions=True``): an error is counted, never raised past the measurement.
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: scenarios where the simulator makes exactly max_tokens tokens per answer (tools and JSON are never cut short)
TOKEN_EXACT = {"raw_lists", "batch", "batch_messages", "abatch", "batch_chat", "openai_batch"}
#: the child's exit code when the package it imported is not the tree's (here, so the parent need not import it)
WRONG_TREE = 3
TOOL_NAME = "get_weather"
_TOPICS = (
    "the water cycle", "hash maps", "black holes", "supply and demand", "photosynthesis", "TCP and UDP",
    "recursion", "vaccines", "inflation", "GPS", "光合作用", "量子纠缠", "哈希表", "通货膨胀", "递归",
)


@dataclass(frozen=True)
class ChildArgs:
    """The command line: one scenario against the given servers, with the tree it must run from."""

    scenario: str
    base_urls: tuple[str, ...]
    model: str
    n: int
    warmup: int
    max_tokens: int
    tree: str
    tree_path: str
    round: int
    result: str
    kind: str
    py_spy: str | None
    profile_out: str | None


class StatusError(Exception):
    """A non-200 answer to a raw list; counted as ``HTTP <status>``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def questions(n: int, salt: str = "") -> list[str]:
    """Distinct short questions (a third on Chinese topics): no two prompts of a run are the same string."""
    return [f"Explain {_TOPICS[i % len(_TOPICS)]} briefly ({salt}{i})." for i in range(n)]


def chatml(q: str) -> str:
    """Qwen3's ChatML for one user turn with thinking switched off, as the server's template renders it."""
    return f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def error_name(e: BaseException) -> str:
    return str(e) if isinstance(e, StatusError) else type(e).__name__


# -- the scenarios: each is (run(prompts) -> one result or exception per prompt, check(result) -> (ok, tokens))
Run = Callable[[list[str]], list[Any]]
Check = Callable[[Any], tuple[bool, int]]


class RawLists:
    """The floor: raw aiohttp ``/v1/completions`` lists of ``size`` ChatML prompts, ``per_server`` lists in flight
    per server, each list to the server with the fewest lists in flight. One event loop and one ClientSession
    serve the warm-up and the measured run, so the measured run starts with warm connections, as the package's
    shared pool does."""

    def __init__(self, a: ChildArgs, per_server: int = 16, size: int = 32) -> None:
        self.a, self.per_server, self.size = a, per_server, size
        self.loop = asyncio.new_event_loop()
        self.session: Any = None
        atexit.register(self.close)

    def run(self, qs: list[str]) -> list[Any]:
        return self.loop.run_until_complete(self._run(qs))

    def close(self) -> None:
        if self.session is not None and not self.loop.is_closed():
            self.loop.run_until_complete(self.session.close())
        self.loop.close()

    async def _run(self, qs: list[str]) -> list[Any]:
        import aiohttp
        import orjson

        a, size = self.a, self.size
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                 timeout=aiohttp.ClientTimeout(total=600))
        s = self.session
        out: list[Any] = [None] * len(qs)
        chunks = iter(range(0, len(qs), size))
        load = dict.fromkeys((u.rstrip("/") for u in a.base_urls), 0)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"}

        async def worker() -> None:
            for k in chunks:  # the workers share one iterator: each takes the next list when its last one is back
                part = qs[k : k + size]
                url = min(load, key=load.__getitem__)
                load[url] += 1
                body = {"model": a.model, "prompt": [chatml(q) for q in part], "max_tokens": a.max_tokens,
                        "temperature": 0.5, "ignore_eos": True}
                try:
                    async with s.post(url + "/completions", data=orjson.dumps(body), headers=headers) as r:
                        raw = await r.read()
                        if r.status != 200:
                            raise StatusError(r.status)
                    data = orjson.loads(raw)
                    if len(data["choices"]) != len(part):
                        raise ValueError(f"{len(data['choices'])} choices for {len(part)} prompts")
                    toks = int(data["usage"]["completion_tokens"])
                    shares = [toks // len(part)] * len(part)
                    shares[0] += toks - sum(shares)
                    out[k : k + len(part)] = shares
                except Exception as e:
                    out[k : k + len(part)] = [e] * len(part)
                finally:
                    load[url] -= 1

        await asyncio.gather(*(worker() for _ in range(self.per_server * len(load))))
        return out


def _qwen(a: ChildArgs, **kw: Any) -> Any:
    from langchain_qwen_fast import BatchedChatQwen

    url: Any = list(a.base_urls) if len(a.base_urls) > 1 else a.base_urls[0]
    return BatchedChatQwen(base_url=url, model=a.model, api_key="EMPTY", max_tokens=a.max_tokens,
                           model_kwargs={"ignore_eos": True}, **kw)


def _tokens(msg: Any) -> int:
    usage = getattr(msg, "usage_metadata", None)
    return int(usage["output_tokens"]) if usage else 0


def _text_message(result: Any) -> tuple[bool, int]:
    from langchain_core.messages import AIMessage

    ok = isinstance(result, AIMessage) and isinstance(result.content, str) and bool(result.content)
    return ok, _tokens(result) if ok else 0


@dataclass(frozen=True)
class Scenario:
    """How a scenario runs a list of prompts (one result or exception each), checks one result (is it the right
    kind of answer, and its output tokens), and turns a question into its prompt."""

    run: Run
    check: Check = _text_message
    prompt: Callable[[str], str] = str


def _raw(a: ChildArgs) -> Scenario:
    return Scenario(RawLists(a).run, lambda r: (isinstance(r, int), r or 0))


def _plain(a: ChildArgs) -> Scenario:
    """``batch``, ``abatch``, ``batch_chat`` (the chat wire) and ``batch_messages`` (message lists as inputs)."""
    model = _qwen(a, wire_mode="chat") if a.scenario == "batch_chat" else _qwen(a)
    if a.scenario == "abatch":
        return Scenario(lambda qs: asyncio.run(model.abatch(qs, return_exceptions=True)))
    if a.scenario == "batch_messages":
        from langchain_core.messages import HumanMessage

        return Scenario(lambda qs: model.batch([[HumanMessage(q)] for q in qs], return_exceptions=True))
    return Scenario(lambda qs: model.batch(qs, return_exceptions=True))


def _chain(a: ChildArgs) -> Scenario:
    """An LCEL pipeline (prompt template, model, string parser) through ``run_batch``."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_qwen_fast import run_batch

    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | _qwen(a) | StrOutputParser()
    return Scenario(lambda qs: run_batch(chain, [{"q": q} for q in qs], return_exceptions=True),
                    lambda r: (isinstance(r, str) and bool(r), 0))


def _tools(a: ChildArgs) -> Scenario:
    """``bind_tools`` with one small tool, ``tool_choice`` left to the model; each prompt names the tool, so
    the simulator (like a model that follows the instruction) answers one tool call."""
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    @tool(TOOL_NAME)
    def get_weather(city: str, unit: str = "celsius") -> str:
        """The current weather in a city."""
        return f"sunny in {city}"

    bound = _qwen(a).bind_tools([get_weather])

    def check(r: Any) -> tuple[bool, int]:
        return isinstance(r, AIMessage) and [c["name"] for c in r.tool_calls] == [TOOL_NAME], _tokens(r)

    return Scenario(lambda qs: bound.batch(qs, return_exceptions=True), check, lambda q: f"{q} Use {TOOL_NAME}.")


def _structured(a: ChildArgs) -> Scenario:
    """``with_structured_output`` of a small pydantic model (json_schema, the default method)."""
    from pydantic import BaseModel

    class Answer(BaseModel):
        """A short answer with the model's confidence."""

        answer: str
        confidence: float

    structured = _qwen(a).with_structured_output(Answer)
    return Scenario(lambda qs: structured.batch(qs, return_exceptions=True), lambda r: (isinstance(r, Answer), 0))


def _openai(a: ChildArgs) -> Scenario:
    """ChatOpenAI at its default settings (its ``.batch`` is a thread pool of ``invoke``), thinking off."""
    from langchain_openai import ChatOpenAI

    oa = ChatOpenAI(base_url=a.base_urls[0], model=a.model, api_key="EMPTY",  # type: ignore[arg-type]
                    max_tokens=a.max_tokens,  # type: ignore[call-arg]
                    extra_body={"chat_template_kwargs": {"enable_thinking": False}, "ignore_eos": True})

    def run(qs: list[Any]) -> list[Any]:
        return oa.batch(qs, return_exceptions=True)

    return Scenario(run)


BUILDERS: dict[str, Callable[[ChildArgs], Scenario]] = {
    "raw_lists": _raw, "batch": _plain, "batch_messages": _plain, "abatch": _plain, "batch_chat": _plain,
    "run_batch_chain": _chain, "batch_tools": _tools, "batch_structured": _structured, "openai_batch": _openai,
}
#: every scenario this script can run, in the plan's default order
SCENARIOS = tuple(BUILDERS)
