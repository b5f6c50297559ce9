"""``BatchedChatQwen``: fields and LangChain hooks. The work happens in the private modules."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from langchain_qwen_fast._answers import to_result
from langchain_qwen_fast._calls import structured as _structured
from langchain_qwen_fast._calls.batch import (
    Lane,
    abatch_as_completed_fast,
    abatch_fast,
    batch_as_completed_fast,
    batch_fast,
)
from langchain_qwen_fast._calls.fields import (
    DEFAULT_BASE_URL,
    check_base_urls,
    check_credentials,
    coerce_timeout,
    drop_unsupported_and_collect_extra,
    is_placeholder_key,
    key_source,
    split_base_url,
    warn_key_over_http,
)
from langchain_qwen_fast._calls.request import CallSpec, build_spec, make_item, request_headers, with_model_extra_body
from langchain_qwen_fast._calls.streams import amark_last, mark_last
from langchain_qwen_fast._convert import StreamAssembler
from langchain_qwen_fast._dispatch.dispatcher import DispatchConfig, Dispatcher
from langchain_qwen_fast._dispatch.scheduler import Flow
from langchain_qwen_fast._engines import Limits
from langchain_qwen_fast._loop import bridge as _bridge
from langchain_qwen_fast._loop.handle import DispatcherHandle, DispatcherSettings
from langchain_qwen_fast._loop.runtime import Runtime
from langchain_qwen_fast._served import DefaultName, is_named, model_from_env
from langchain_qwen_fast._upstream.replicas import HealthPolicy, RoutingPolicy
from langchain_qwen_fast._upstream.transport import RetryPolicy
from langchain_qwen_fast._urls import has_userinfo, redact_headers, redact_url


class BatchedChatQwen(BaseChatModel):
    """Drop-in ``ChatOpenAI`` for Qwen3 on vLLM/SGLang that keeps the server busy from any caller.

    Sync ``.batch`` is one submission to a background loop (no thread pool); ``.abatch`` is
    bounded by an admission limit per server; every instance with the same endpoint settings shares
    one connection pool and one dispatcher, which serves its callers in turn. README.md and
    docs/configuration.md list every field and its default.
    """

    # hide_input_in_errors: a validation error would otherwise echo the arguments, api key and URL credentials too.
    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=(),
                              hide_input_in_errors=True)

    # -- ChatOpenAI-compatible fields -----------------------------------------------------------
    #: The served name. Unset (no ``model=``, no ``QWEN_MODEL``): the one model every replica serves, else
    #: ``Qwen/Qwen3-0.6B`` (what ``vllm serve Qwen/Qwen3-0.6B`` serves); a name given is never swapped.
    model_name: str = Field(default_factory=model_from_env, alias="model")
    base_url: str | list[str] = Field(
        default_factory=from_env(("QWEN_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE"), default=DEFAULT_BASE_URL),
        alias="openai_api_base",
        validate_default=True,  # a base_url from the environment is checked like one passed in
    )
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env(("QWEN_API_KEY", "OPENAI_API_KEY"), default=None), alias="openai_api_key"
    )
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(default=None, alias="max_completion_tokens", gt=0)
    stop: list[str] | str | None = Field(default=None, alias="stop_sequences")
    seed: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, int] | None = None
    timeout: float | None = Field(default=None, alias="request_timeout")
    max_retries: int = 2
    streaming: bool = False
    stream_usage: bool = True
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] | None = None
    default_headers: dict[str, str] | None = None
    http_client: Any = Field(default=None, exclude=True)
    http_async_client: Any = Field(default=None, exclude=True)

    # -- Qwen3 and throughput fields ------------------------------------------------------------
    enable_thinking: bool = False
    top_k: int | None = None
    min_p: float | None = None
    wire_mode: Literal["chat", "completions"] = "completions"
    #: Sequences in flight at once on each server of ``base_url`` (a completions list of 32 is 32).
    max_concurrency: int = Field(default=2048, ge=1)
    #: An optional cap on the sum over all servers (None: N servers hold N x max_concurrency).
    max_total_concurrency: int | None = Field(default=None, ge=1)
    #: Sequences per server kept free of bulk work (batch/abatch) while single calls or streams come.
    interactive_headroom: int = Field(default=32, ge=0)
    #: How a replica is chosen: least sequences in flight, or prefix affinity for shared system prompts.
    routing: Literal["least_outstanding", "prefix_affinity"] = "least_outstanding"
    #: Higher is served first by the client's queue (per call: ``priority=`` kwarg or ``.bind``).
    priority: int = 0
    #: Also send the priority to the server (vLLM started with ``--scheduling-policy priority``).
    server_priority: bool = False
    max_batch_size: int = Field(default=32, ge=1)
    max_wait_ms: float = Field(default=2.0, ge=0)
    max_batch_tokens: int = Field(default=32768, ge=1)
    max_connections: int = Field(default=2048, ge=1)
    http_engine: Literal["asyncio", "aiohttp", "httpx"] = "asyncio"

    _handle: DispatcherHandle = PrivateAttr(default_factory=DispatcherHandle)

    # -- validation -------------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _unsupported_and_extra(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        known = {f.alias or n for n, f in cls.model_fields.items()} | set(cls.model_fields)
        return drop_unsupported_and_collect_extra(values, known)

    @field_validator("timeout", mode="before")
    @classmethod
    def _coerce_timeout(cls, v: Any) -> float | None:
        return coerce_timeout(v)

    @field_validator("base_url", mode="before")
    @classmethod
    def _split_base_url(cls, v: Any) -> Any:
        return split_base_url(v)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str | list[str]) -> str | list[str]:
        check_base_urls([v] if isinstance(v, str) else list(v))
        return v

    @model_validator(mode="after")
    def _check_key_over_http(self) -> BatchedChatQwen:
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        check_credentials(self.base_urls, key, key_source(self.model_fields_set, os.environ), self.default_headers)
        if key is not None:
            warn_key_over_http(key, self.base_urls)
        return self

    def __repr_args__(self) -> Any:
        # A base_url may carry user:pass@ credentials and default_headers a token; repr shows neither,
        # as error messages and logs do not.
        for k, v in super().__repr_args__():
            if k == "base_url":
                v = redact_url(v) if isinstance(v, str) else [redact_url(u) for u in v]
            elif k == "default_headers":
                v = redact_headers(v)
            yield k, v

    # -- LangChain identity ----------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "qwen-fast"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "QWEN_API_KEY"}

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_qwen_fast", "chat_models"]

    @property
    def base_urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    @property
    def _default_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "n": self.n,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": self.logit_bias,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
            **self.model_kwargs,
        }
        return {k: v for k, v in params.items() if v is not None}

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "base_url": self.base_url, **self._default_params}

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        return {
            "model": self.model_name,
            **super()._get_invocation_params(stop=stop, **kwargs),
            **self._default_params,
            **kwargs,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = self._get_invocation_params(stop=stop, **kwargs)
        ls = LangSmithParams(
            ls_provider="qwen",
            ls_model_name=params.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=params.get("temperature", self.temperature),
        )
        if (mt := params.get("max_tokens", self.max_tokens)) is not None:
            ls["ls_max_tokens"] = mt
        if ls_stop := stop or params.get("stop", None) or self.stop:
            ls["ls_stop"] = [ls_stop] if isinstance(ls_stop, str) else list(ls_stop)
        return ls

    # -- the shared pool ---------------------------------------------------------------------------
    def _dispatcher_settings(self) -> DispatcherSettings:
        return DispatcherSettings(
            urls=tuple(self.base_urls),
            engine=self.http_engine,
            per_replica=self.max_concurrency,
            total=self.max_total_concurrency,
            headroom=self.interactive_headroom,
            dispatch=DispatchConfig(
                max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms, max_batch_tokens=self.max_batch_tokens
            ),
            limits=Limits(max_connections=self.max_connections),
            retry=RetryPolicy(max_retries=max(0, self.max_retries)),
            health=HealthPolicy(),
            routing=RoutingPolicy(mode=self.routing),
            async_client=self.http_async_client,
            sync_client=self.http_client,
        )

    def _dispatcher(self) -> tuple[Runtime, Dispatcher]:
        return self._handle.get(self._dispatcher_settings)

    # A model nobody named holds a DefaultName; its first call asks the replicas (``_loop/handle.py``) and, once
    # that is settled, the field holds the name chosen. A named or decided model pays one type check per call
    # (a private attribute costs 4 us to read here, the per-call budget this avoids).
    def _use_model(self) -> str | None:
        """The name this call carries when it is not the field's (a lookup not settled yet), else None."""
        if type(self.model_name) is not DefaultName:
            return None
        return self._keep_model(*self._handle.decide_model(self._dispatcher_settings, self.model_name, self._headers))

    async def _ause_model(self) -> str | None:
        if type(self.model_name) is not DefaultName:
            return None
        decided = await self._handle.adecide_model(self._dispatcher_settings, self.model_name, self._headers)
        return self._keep_model(*decided)

    def _keep_model(self, name: str, settled: bool) -> str | None:
        if not settled:
            return name
        self.__dict__["model_name"] = str(name)  # the field now says what is used; never counted as set by the user
        return None

    def _headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        if is_placeholder_key(key) and any(has_userinfo(u) for u in self.base_urls):
            key = None  # "EMPTY" beside a URL's user:password would take the Authorization header it needs
        return request_headers(key, self.default_headers)

    def _spec(self, stop: Sequence[str] | str | None, kwargs: Mapping[str, Any], stream: bool = False,
              model: str | None = None) -> CallSpec:
        base = self._default_params
        if model is not None:  # a model nobody named, whose lookup is not settled yet
            base["model"] = model
        return build_spec(
            base,
            self._headers(),
            self.timeout,
            model or self.model_name,
            self.enable_thinking,
            "chat" if stream else self.wire_mode,
            stop,
            with_model_extra_body(self.extra_body, kwargs),
            priority=self.priority,
            server_priority=self.server_priority,
        )

    def stats(self) -> dict[str, Any]:
        """A snapshot: items, batches, batch sizes, queue wait (overall, per flow kind, per priority),
        latency, and per server (credentials redacted): requests, retries, errors, sequences in flight,
        health and the last error."""
        _, disp = self._dispatcher()
        snap = disp.snapshot()
        snap["model"] = self._model_info()
        snap["served_models"] = disp.transport.models.snapshot()
        return snap

    def _model_info(self) -> dict[str, Any]:
        """The name calls carry and how it was chosen (``stats()["model"]``)."""
        choice = self._handle.choice
        if "model_name" in self.model_fields_set:
            return {"name": self.model_name, "chosen": "the model argument"}
        if choice is not None:
            return {"name": choice.name, "chosen": f"{choice.how}: {choice.detail}"}
        if is_named(self.model_name):
            return {"name": self.model_name, "chosen": "QWEN_MODEL"}
        return {"name": self.model_name, "chosen": "not yet: no model named, so the first call asks the "
                "replicas what they serve (GET /v1/models)"}

    # -- generation hooks --------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        spec = self._spec(stop, kwargs, model=self._use_model())
        item = make_item(spec, messages)
        rt, disp = self._dispatcher()
        return to_result(_bridge.call_one(rt, disp, item, spec.priority))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        spec = self._spec(stop, kwargs, model=await self._ause_model())
        item = make_item(spec, messages)
        rt, disp = self._dispatcher()
        return to_result(await _bridge.acall_one(rt, disp, item, spec.priority))

    def _stream_opener(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], model: str | None
    ) -> tuple[Runtime, Callable[[], AsyncIterator[Any]]]:
        kwargs.pop("stream", None)
        usage = kwargs.pop("stream_usage", None)
        spec = self._spec(stop, kwargs, stream=True, model=model)
        payload = make_item(spec, messages).payload or {}
        payload["stream"] = True
        if self.stream_usage if usage is None else usage:
            payload["stream_options"] = {"include_usage": True}
        rt, disp = self._dispatcher()

        def open_events() -> AsyncIterator[Any]:
            return disp.stream("/chat/completions", payload, spec.headers, spec.timeout, Flow("stream", spec.priority))

        return rt, open_events

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        model = self._use_model()
        rt, opener = self._stream_opener(messages, stop, kwargs, model)
        asm = StreamAssembler(model or self.model_name)
        yield from mark_last(asm.convert(ev) for ev in _bridge.stream_events(rt, opener))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        model = await self._ause_model()
        rt, opener = self._stream_opener(messages, stop, kwargs, model)
        asm = StreamAssembler(model or self.model_name)

        async def converted() -> AsyncIterator[ChatGenerationChunk | None]:
            async for ev in _bridge.astream_events(rt, opener):
                yield asm.convert(ev)

        async for chunk in amark_last(converted()):
            yield chunk

    # -- batch: one submission, bounded, no thread pool ---------------------------------------------
    def _lane(self, model: str | None = None) -> Lane:
        spec = self._spec if model is None else functools.partial(self._spec, model=model)
        return Lane(self._dispatcher, spec, self.max_concurrency,
                    "streaming" in self.model_fields_set and self.streaming)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return batch_fast(self, self._lane(self._use_model()), inputs, config, return_exceptions, kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return await abatch_fast(self, self._lane(await self._ause_model()), inputs, config, return_exceptions, kwargs)

    def batch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> Iterator[tuple[int, Any]]:
        """``(index, output)`` as each input finishes: one submission, as ``batch``, not a thread pool."""
        return batch_as_completed_fast(self, self._lane(self._use_model()), inputs, config, return_exceptions, kwargs)

    async def abatch_as_completed(  # type: ignore[override]
        self,
        inputs: Sequence[LanguageModelInput],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> AsyncIterator[tuple[int, Any]]:
        lane = self._lane(await self._ause_model())
        async for pair in abatch_as_completed_fast(self, lane, inputs, config, return_exceptions, kwargs):
            yield pair

    # -- tools and structure -------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessageChunk]:
        return _structured.bind_tools(
            self, tools, tool_choice=tool_choice, strict=strict, parallel_tool_calls=parallel_tool_calls, **kwargs
        )

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        return _structured.with_structured_output(
            self, schema, method=method, include_raw=include_raw, strict=strict, **kwargs
        )

    # -- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """End this instance's use of the shared pool; the pool closes with its last user."""
        self._handle.close()

    async def aclose(self) -> None:
        await self._handle.aclose()

    def __enter__(self) -> BatchedChatQwen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BatchedChatQwen:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
