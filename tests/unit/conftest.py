"""Fixtures for the unit tests; the fakes behind them are in ``_qwen_fakes.py``. The canned vLLM server and the run
log that the modules pinning LangChain's behaviours on the batch paths share (``test_batch_*``) are here too."""

from __future__ import annotations

import functools
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _qwen_fakes import MOCK_URL, MODEL, LocalServer, Recorder, echo, last_user_text
from aiohttp import web
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from langchain_qwen_fast import BatchedChatQwen


@pytest.fixture
def mock_model() -> Iterator[Callable[..., tuple[BatchedChatQwen, Recorder]]]:
    """``mock_model(respond=echo, **fields) -> (model, recorder)``; models are closed afterwards."""
    made: list[BatchedChatQwen] = []

    def make(respond: Callable[..., Any] = echo, **fields: Any) -> tuple[BatchedChatQwen, Recorder]:
        rec = Recorder(respond)
        fields.setdefault("base_url", MOCK_URL)
        fields.setdefault("model", MODEL)
        model = BatchedChatQwen(
            http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(rec)), **fields
        )
        made.append(model)
        return model, rec

    yield make
    for m in made:
        m.close()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink exponential backoff so retry tests take milliseconds (Retry-After is unaffected)."""
    from langchain_qwen_fast import chat_models
    from langchain_qwen_fast._upstream import transport as _transport

    monkeypatch.setattr(
        chat_models,
        "RetryPolicy",
        functools.partial(_transport.RetryPolicy, backoff_base=0.005, backoff_max=0.02),
    )


@pytest.fixture
def local_server() -> Iterator[Callable[..., LocalServer]]:
    """``local_server(delay=0.05) -> LocalServer`` on a free loopback port; stopped afterwards."""
    servers: list[LocalServer] = []

    def start(delay: float = 0.0) -> LocalServer:
        s = LocalServer(delay).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


# -- LangChain's behaviours on the batch paths (test_batch_*.py): a canned vLLM server, a run log ------------------

#: The simulator's per-request fault marker (langchain_qwen_fast/testing/faults.py), status faults only.
FAULT_MARKER = re.compile(r"\[\[fault:status=(\d+)\]\]")
#: In a user text: the answer is cut short (finish_reason "length").
LENGTH_MARKER = "[[length]]"
_CHATML_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)


def user_texts(payload: dict[str, Any]) -> list[str]:
    """The last user text of each sequence of a request: one for a chat request, one per prompt of a list."""
    if "messages" in payload:
        return [last_user_text(payload)]
    prompts = payload["prompt"] if isinstance(payload["prompt"], list) else [payload["prompt"]]
    return [_CHATML_USER.findall(p)[-1] for p in prompts]


def _thinking(payload: dict[str, Any]) -> bool:
    if "messages" in payload:
        return bool((payload.get("chat_template_kwargs") or {}).get("enable_thinking"))
    prompt = payload["prompt"][0] if isinstance(payload["prompt"], list) else payload["prompt"]
    return not prompt.endswith("</think>\n\n")  # thinking off closes an empty think block in the prompt


def canned_answer(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """vLLM's answer, as vLLM 0.24 shapes it, to a chat request or a completions list: ``echo:<user text>``.

    Thinking on adds the reasoning ``thought about <user text>`` (chat: the reasoning parser's ``reasoning``
    field; lists: an inline think block). ``[[length]]`` in the text cuts the answer short; a status marker
    ``[[fault:status=N]]`` fails the request with vLLM's error body (a list fails whole, as on vLLM)."""
    texts = user_texts(payload)
    for text in texts:
        if m := FAULT_MARKER.search(text):
            status = int(m.group(1))
            return status, {"error": {"message": f"rejected {text}", "type": "BadRequestError", "param": None,
                                      "code": status}}
    think = _thinking(payload)

    def answer(text: str) -> tuple[str, str]:
        return ("echo:cut", "length") if LENGTH_MARKER in text else (f"echo:{text}", "stop")

    if "messages" in payload:
        (text,) = texts
        content, reason = answer(text)
        message = {"role": "assistant", "content": content, "refusal": None, "tool_calls": [],
                   "reasoning": f"thought about {text}" if think else None}
        return 200, {
            "id": f"chatcmpl-{len(text)}", "object": "chat.completion", "created": 1_700_000_000, "model": MODEL,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason,
                         "stop_reason": None}],
            "service_tier": None, "system_fingerprint": None,
            "usage": {"prompt_tokens": 10 + len(text), "total_tokens": 13 + len(text), "completion_tokens": 3,
                      "prompt_tokens_details": None},
        }
    choices = []
    for i, text in enumerate(texts):
        content, reason = answer(text)
        choices.append({
            "index": i, "text": f"<think>\nthought about {text}\n</think>\n\n{content}" if think else content,
            "logprobs": None, "finish_reason": reason, "stop_reason": None, "prompt_logprobs": None,
            "prompt_token_ids": [1] * (10 + len(text)), "token_ids": [2] * 3,
        })
    tokens = sum(10 + len(t) for t in texts)
    return 200, {
        "id": "cmpl-list", "object": "text_completion", "created": 1_700_000_000, "model": MODEL, "choices": choices,
        "service_tier": None, "system_fingerprint": None,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens + 3 * len(texts), "completion_tokens": 3 * len(texts),
                  "prompt_tokens_details": None},
    }


def canned_sse(body: dict[str, Any]) -> str:
    """A chat answer of :func:`canned_answer` as vLLM streams it: the role, the content, the usage, ``[DONE]``."""
    choice = body["choices"][0]
    head = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    events = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": choice["message"]["content"]},
                              "finish_reason": choice["finish_reason"]}]},
        {**head, "choices": [], "usage": body["usage"]},
    ]
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


class CannedServer(LocalServer):
    """``LocalServer`` answering with :func:`canned_answer`; it also records each sequence's user text (a list
    of 32 prompts is 32) and counts sequences in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.respond = canned_answer
        self.texts: list[str] = []
        self.sequences_in_flight = self.max_sequences_in_flight = 0

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.json()  # aiohttp keeps the body: the base handler reads it again
        texts = user_texts(payload)
        if payload.get("stream") and "messages" in payload:  # a streamed chat request: SSE, as vLLM sends it
            status, body = canned_answer(payload)
            self.texts += texts
            self.count += 1
            if status != 200:
                return web.json_response(body, status=status)
            return web.Response(text=canned_sse(body), content_type="text/event-stream")
        self.texts += texts
        self.sequences_in_flight += len(texts)
        self.max_sequences_in_flight = max(self.max_sequences_in_flight, self.sequences_in_flight)
        try:
            return await super()._handle(request)
        finally:
            self.sequences_in_flight -= len(texts)


@pytest.fixture
def canned_model() -> Iterator[Callable[..., tuple[BatchedChatQwen, CannedServer]]]:
    """``canned_model(wire="completions", delay=0.0, **fields) -> (model, server)``: a model (max_tokens=16, so
    plain calls are eligible for lists) in front of its own :class:`CannedServer`; both closed afterwards."""
    made: list[tuple[BatchedChatQwen, CannedServer]] = []

    def make(wire: str = "completions", delay: float = 0.0, **fields: Any) -> tuple[BatchedChatQwen, CannedServer]:
        server = CannedServer(delay).start()
        fields.setdefault("max_tokens", 16)
        model = BatchedChatQwen(base_url=server.base_url, model=MODEL, wire_mode=wire, **fields)
        made.append((model, server))
        return model, server

    yield make
    for model, server in made:
        model.close()
        server.stop()


class _RunRecords:
    """What a handler saw, by run id: each chat model start's arguments, each end's response, each error."""

    def __init__(self) -> None:
        self.starts: dict[uuid.UUID, dict[str, Any]] = {}
        self.ends: dict[uuid.UUID, Any] = {}  # LLMResult, copied when it came
        self.errors: dict[uuid.UUID, tuple[BaseException, Any]] = {}
        self.endings: list[uuid.UUID] = []  # run ids of every end and error event, in order
        self.lock = threading.Lock()

    def _start(self, messages: list[list[Any]], run_id: uuid.UUID, kwargs: dict[str, Any]) -> None:
        with self.lock:
            assert run_id not in self.starts, f"run {run_id} started twice"
            self.starts[run_id] = {"messages": messages, **kwargs}

    def _end(self, response: Any, run_id: uuid.UUID) -> None:
        with self.lock:  # a copy: the response as the handler saw it, whatever happens to its messages later
            self.ends[run_id] = response.model_copy(deep=True)
            self.endings.append(run_id)

    def _error(self, error: BaseException, run_id: uuid.UUID, response: Any) -> None:
        with self.lock:
            self.errors[run_id] = (error, None if response is None else response.model_copy(deep=True))
            self.endings.append(run_id)

    def run_of(self, text: str) -> uuid.UUID:
        """The one run whose last input message says ``text``."""
        runs = [r for r, s in self.starts.items() if s["messages"][0][-1].content == text]
        assert len(runs) == 1, f"{len(runs)} runs for {text!r}"
        return runs[0]

    def assert_every_run_ended_once(self) -> None:
        assert Counter(self.endings) == Counter(self.starts.keys()), "a run without exactly one end or error event"


class RunLog(_RunRecords, BaseCallbackHandler):
    """A sync handler recording every chat model run (its failures surface: ``raise_error``)."""

    raise_error = True

    def __init__(self) -> None:
        _RunRecords.__init__(self)

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._start(messages, run_id, kw)

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(response, run_id)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._error(error, run_id, kw.get("response"))


class AsyncRunLog(_RunRecords, AsyncCallbackHandler):
    """The same records through LangChain's async handler path."""

    raise_error = True

    def __init__(self) -> None:
        _RunRecords.__init__(self)

    async def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._start(messages, run_id, kw)

    async def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(response, run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._error(error, run_id, kw.get("response"))


@pytest.fixture
def run_log() -> Callable[..., _RunRecords]:
    """``run_log(async_handler=False)``: a fresh :class:`RunLog` (or :class:`AsyncRunLog`) handler."""

    def make(async_handler: bool = False) -> _RunRecords:
        return AsyncRunLog() if async_handler else RunLog()

    return make


@pytest.fixture
def canned_chatopenai() -> Callable[..., tuple[Any, list[dict[str, Any]]]]:
    """``canned_chatopenai(**fields) -> (ChatOpenAI, bodies it sent)``: ChatOpenAI answered by :func:`canned_answer`
    through httpx's MockTransport (it goes through httpx only), in SSE when it streams."""

    def make(**fields: Any) -> tuple[Any, list[dict[str, Any]]]:
        from langchain_openai import ChatOpenAI  # the lowest-versions run has no langchain-openai: a skip there

        sent: list[dict[str, Any]] = []

        def handle(request: httpx.Request) -> httpx.Response:
            payload = json.loads(request.content)
            sent.append(payload)
            status, body = canned_answer(payload)
            if not payload.get("stream") or status != 200:
                return httpx.Response(status, json=body)
            return httpx.Response(200, content=canned_sse(body).encode(), headers={"content-type": "text/event-stream"})

        transport = httpx.MockTransport(handle)
        fields = {"model": MODEL, "base_url": MOCK_URL, "api_key": "sk-test", "max_retries": 0, **fields}
        llm = ChatOpenAI(http_client=httpx.Client(transport=transport),
                         http_async_client=httpx.AsyncClient(transport=transport), **fields)
        return llm, sent

    return make
