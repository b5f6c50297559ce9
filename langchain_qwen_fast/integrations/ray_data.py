"""Ray Data bulk jobs: ``Dataset.map_batches`` actors that each hold one ``BatchedChatQwen``.

Why actors around this package rather than Ray Data's own HTTP stage: ``ray.data.llm``'s
``HttpRequestProcessorConfig`` awaits a batch's requests one after another (Ray 2.60, 2 workers, batch
size 16, a 100 ms loopback server: at most 2 requests in flight, 9.4 s for 128 requests), while an actor
that hands its whole block to ``BatchedChatQwen.abatch`` keeps the block in flight and lets the package
coalesce it into ``/v1/completions`` lists on every node.

``__call__`` is a coroutine. Ray Data then runs every actor's calls on one event loop per actor, and
``max_concurrent_batches`` calls may be in flight at once in an actor, so the next block is already on
the wire while the previous one drains its slowest answers (docs/architecture.md has the measurement).

A failing row is a value in its row (the ``error`` column), never a failed job, unless
``fail_fast=True``. Other columns pass through untouched, so row ids survive. Actors need only a
fraction of a CPU (they wait on sockets): ``qwen_map_batches`` asks for ``num_cpus=0.25``, because with
one CPU per actor, two actors take both CPUs of a 2-core node and the read and write tasks never run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from pydantic import BaseModel

from langchain_qwen_fast import BatchedChatQwen

try:
    import pyarrow as pa
    import ray
    from ray.data.block import BlockAccessor
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "langchain_qwen_fast.integrations.ray_data needs the ray extra: pip install 'langchain-qwen-fast[ray]'"
    ) from e

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = ["OUTPUT_FIELDS", "QwenBatchPredictor", "QwenRowError", "QwenSyncBatchPredictor", "qwen_map_batches"]

# Output column names are ``output_prefix + field``; token counts are int64, the rest strings, all nullable.
OUTPUT_FIELDS = ("content", "reasoning", "input_tokens", "output_tokens", "finish_reason", "error")
_TYPES = {"input_tokens": pa.int64(), "output_tokens": pa.int64()}
Factory = Callable[[], Runnable[Any, Any]]


class QwenRowError(RuntimeError):
    """A row failed and the job was started with ``fail_fast=True``.

    The message names the row's position in its block and the error, never the prompt: Ray logs task
    errors, and prompt text stays out of logs.
    """


@dataclass(frozen=True)
class _Plan:
    """Where rows are read and written; checked when built, so the driver fails before any actor starts."""

    input_column: str | tuple[str, ...] = "prompt"
    output_prefix: str = "qwen_"
    fail_fast: bool = False

    @classmethod
    def of(cls, factory: Factory | None, llm_kwargs: Mapping[str, Any] | None, input_column: str | Sequence[str],
           output_prefix: str, fail_fast: bool) -> _Plan:
        """The checked plan of a predictor or a pipeline (the factory and its kwargs checked too)."""
        _check_factory(factory, llm_kwargs)
        columns = input_column if isinstance(input_column, str) else tuple(input_column)
        return cls(columns, output_prefix, fail_fast)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.input_column,) if isinstance(self.input_column, str) else self.input_column

    def __post_init__(self) -> None:
        names = self.names
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"input_column must be a column name or a non-empty list of names, "
                             f"got {self.input_column!r}")
        if not isinstance(self.output_prefix, str):
            raise TypeError(f"output_prefix must be a string, got {type(self.output_prefix).__name__}")
        clash = set(names) & set(self.outputs.values())
        if clash:
            raise ValueError(f"output column {sorted(clash)[0]!r} would overwrite an input column; "
                             f"choose another output_prefix")

    @property
    def outputs(self) -> dict[str, str]:
        return {f: self.output_prefix + f for f in OUTPUT_FIELDS}


def _check_factory(factory: Factory | None, llm_kwargs: Mapping[str, Any] | None) -> None:
    if factory is not None and llm_kwargs is not None:
        raise ValueError("pass either factory or llm_kwargs, not both")
    if isinstance(factory, Runnable):
        raise TypeError(
            "factory must build the runnable on each actor (a top-level function, a class or a "
            f"functools.partial), not be a built runnable: got a {type(factory).__name__} instance")
    if factory is not None and not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if llm_kwargs is not None and not isinstance(llm_kwargs, Mapping):
        raise TypeError(f"llm_kwargs must be a mapping of BatchedChatQwen fields, got {type(llm_kwargs).__name__}")


def _prompt(value: Any) -> str | list[dict[str, Any]]:
    """One row's input: a string, or OpenAI-style messages (Arrow gives every message every key, None
    where a row had none, so None keys are dropped)."""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist") and not isinstance(value, (bytes, bytearray)):
        value = value.tolist()  # a numpy object array from the numpy batch format
    if isinstance(value, (list, tuple)) and value:
        messages = []
        for m in value:
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
                    or not isinstance(m.get("content"), str):
                raise ValueError("each message must be a mapping with string 'role' and 'content'")
            messages.append({k: v for k, v in m.items() if v is not None})
        return messages
    if value is None or (isinstance(value, float) and value != value):
        raise ValueError("the row has no prompt (null)")
    raise ValueError(f"a prompt must be a string or a non-empty list of messages, got {type(value).__name__}")


def _answer(out: Any) -> tuple[str | None, str | None, int | None, int | None, str | None]:
    """content, reasoning, input tokens, output tokens, finish reason of one result."""
    if isinstance(out, BaseMessage):
        usage = getattr(out, "usage_metadata", None) or {}
        reasoning = out.additional_kwargs.get("reasoning_content")
        return (out.text, reasoning if isinstance(reasoning, str) else None, usage.get("input_tokens"),
                usage.get("output_tokens"), out.response_metadata.get("finish_reason"))
    if isinstance(out, str):
        return out, None, None, None, None
    if isinstance(out, BaseModel):  # with_structured_output(PydanticModel)
        return out.model_dump_json(), None, None, None, None
    return json.dumps(out, ensure_ascii=False, default=str), None, None, None, None


def _as_table(batch: Any) -> pa.Table:
    """Any Ray batch format as an Arrow table (``qwen_map_batches`` asks for Arrow, so this is a no-op)."""
    if isinstance(batch, pa.Table):
        return batch
    return BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).to_arrow()


class _Predictor:
    """Shared by the async and the sync predictor: build the runnable once, read, write."""

    def __init__(
        self,
        factory: Factory | None = None,
        *,
        llm_kwargs: Mapping[str, Any] | None = None,
        input_column: str | Sequence[str] = "prompt",
        output_prefix: str = "qwen_",
        fail_fast: bool = False,
    ) -> None:
        self._plan = _Plan.of(factory, llm_kwargs, input_column, output_prefix, fail_fast)
        self._owned: BatchedChatQwen | None = None
        if factory is None:
            self._owned = BatchedChatQwen(**dict(llm_kwargs or {}))
            self._runnable: Runnable[Any, Any] = self._owned
        else:
            built = factory()
            if not isinstance(built, Runnable):
                raise TypeError(f"factory returned {type(built).__name__}, not a LangChain Runnable")
            self._runnable = built

    def _inputs(self, table: pa.Table) -> tuple[list[Any], list[int], dict[int, Exception]]:
        """The inputs to send, the row each came from, and the rows that were refused before sending."""
        plan = self._plan
        names = plan.names
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise KeyError(f"input column {missing[0]!r} is not in the dataset (columns: {table.column_names})")
        clash = [n for n in plan.outputs.values() if n in table.column_names]
        if clash:
            raise ValueError(f"the dataset already has a column {clash[0]!r}; choose another output_prefix")
        send: list[Any] = []
        rows: list[int] = []
        refused: dict[int, Exception] = {}
        if isinstance(plan.input_column, str):
            values = table.column(plan.input_column).to_pylist()
            for i, v in enumerate(values):
                try:
                    send.append(_prompt(v))
                    rows.append(i)
                except ValueError as e:
                    refused[i] = e
        else:  # several columns: one dict per row, for a prompt template with those variables
            columns = {n: table.column(n).to_pylist() for n in names}
            send = [{n: columns[n][i] for n in names} for i in range(table.num_rows)]
            rows = list(range(table.num_rows))
        return send, rows, refused

    def _finish(self, table: pa.Table, rows: list[int], results: list[Any],
                refused: dict[int, Exception]) -> pa.Table:
        if len(results) != len(rows):  # the batch contract; a mismatch would misplace answers
            raise RuntimeError(f"the runnable returned {len(results)} results for {len(rows)} inputs")
        by_row: dict[int, Any] = dict(refused)
        by_row.update(zip(rows, results, strict=True))
        if self._plan.fail_fast:
            for i in range(table.num_rows):
                if isinstance(by_row[i], BaseException):
                    e = by_row[i]
                    raise QwenRowError(f"row {i} of a block of {table.num_rows} failed and fail_fast=True: "
                                       f"{type(e).__name__}: {e}") from e
        cols: dict[str, list[Any]] = {f: [] for f in OUTPUT_FIELDS}
        for i in range(table.num_rows):
            out = by_row[i]
            if isinstance(out, BaseException):
                values: tuple[Any, ...] = (None, None, None, None, None, f"{type(out).__name__}: {out}")
            else:
                values = (*_answer(out), None)
            for f, v in zip(OUTPUT_FIELDS, values, strict=True):
                cols[f].append(v)
        for f, name in self._plan.outputs.items():
            table = table.append_column(name, pa.array(cols[f], type=_TYPES.get(f, pa.string())))
        return table

    def close(self) -> None:
        """Release the pool of the model built from ``llm_kwargs`` (a factory's runnable is the factory's)."""
        owned, self._owned = getattr(self, "_owned", None), None
        if owned is not None:
            owned.close()

    def __del__(self) -> None:
        # Ray Data drops its reference when the actor exits gracefully (never when it is killed).
        with contextlib.suppress(Exception):  # never raise from a finalizer
            self.close()


class QwenBatchPredictor(_Predictor):
    """A callable class for ``Dataset.map_batches`` (with ``compute=ray.data.ActorPoolStrategy(...)``).

    Each actor builds the runnable once: ``BatchedChatQwen(**llm_kwargs)``, or ``factory()`` (a top-level
    function, a class or a ``functools.partial``, since Ray pickles it to every actor; for example one
    that returns ``prompt | llm`` or ``prompt | llm | parser``). Each block goes through ``.abatch`` with
    ``return_exceptions=True``. Output columns are ``output_prefix`` + each of ``OUTPUT_FIELDS``.
    ``input_column`` may name several columns; each row is then a dict of them (for a prompt template).
    """

    async def __call__(self, batch: Any) -> pa.Table:
        table = _as_table(batch)
        send, rows, refused = self._inputs(table)
        results = await self._runnable.abatch(send, return_exceptions=True) if send else []
        return self._finish(table, rows, results, refused)


class QwenSyncBatchPredictor(_Predictor):
    """The same with a blocking ``__call__`` (``.batch``): one block at a time per actor unless the actor
    pool runs several threads; kept for runnables whose async path is worse than their sync one."""

    def __call__(self, batch: Any) -> pa.Table:
        table = _as_table(batch)
        send, rows, refused = self._inputs(table)
        results = self._runnable.batch(send, return_exceptions=True) if send else []
        return self._finish(table, rows, results, refused)


def qwen_map_batches(
    ds: Dataset,
    factory: Factory | None = None,
    *,
    llm_kwargs: Mapping[str, Any] | None = None,
    input_column: str | Sequence[str] = "prompt",
    output_prefix: str = "qwen_",
    fail_fast: bool = False,
    actors: int | tuple[int, int] = 2,
    num_cpus: float = 0.25,
    batch_size: int = 512,
    max_concurrent_batches: int = 2,
    sync: bool = False,
    **map_batches_kwargs: Any,
) -> Dataset:
    """``ds`` with the answer columns added, through a pool of ``QwenBatchPredictor`` actors.

    ``actors``: a fixed pool size, or ``(min_size, max_size)`` for an autoscaling pool. ``num_cpus``: per
    actor, fractional because actors only wait on I/O. ``max_concurrent_batches``: blocks in flight per
    actor. Each actor has its own ``max_concurrency`` (512 by default), so the servers see up to
    ``actors * max_concurrency`` sequences. ``map_batches_kwargs`` go to ``Dataset.map_batches``
    (``memory=``, ``runtime_env=``...). The factory, the columns and the kwargs are checked here, in the
    driver, before any actor starts.
    """
    plan = _Plan.of(factory, llm_kwargs, input_column, output_prefix, fail_fast)
    if isinstance(actors, bool) or not isinstance(actors, (int, tuple)):
        raise TypeError(f"actors must be an int or a (min_size, max_size) tuple, got {actors!r}")
    if isinstance(max_concurrent_batches, bool) or not isinstance(max_concurrent_batches, int) \
            or max_concurrent_batches < 1:
        raise ValueError(f"max_concurrent_batches must be a positive int, got {max_concurrent_batches!r}")
    # A sync __call__ needs real threads to have several blocks in flight; an async one shares the loop.
    pool: dict[str, Any] = {"max_concurrent_calls_per_actor": max_concurrent_batches,
                            "enable_true_multi_threading": sync and max_concurrent_batches > 1}
    if isinstance(actors, tuple):
        if len(actors) != 2:
            raise ValueError(f"actors as a tuple is (min_size, max_size), got {actors!r}")
        compute = ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1], **pool)
    else:
        compute = ray.data.ActorPoolStrategy(size=actors, **pool)
    if not num_cpus > 0:  # also refuses NaN
        raise ValueError(f"num_cpus must be > 0, got {num_cpus}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if factory is not None:
        try:
            ray.cloudpickle.dumps(factory)
        except Exception as e:
            raise TypeError(f"factory cannot be sent to the actors ({type(e).__name__}: {e}); use a "
                            "top-level function or class") from e
    else:
        BatchedChatQwen(**dict(llm_kwargs or {})).close()  # bad fields fail here, not in every actor
    for reserved in ("fn_constructor_kwargs", "compute", "batch_format", "concurrency"):
        if reserved in map_batches_kwargs:
            raise TypeError(f"qwen_map_batches sets {reserved} itself")
    return ds.map_batches(
        QwenSyncBatchPredictor if sync else QwenBatchPredictor,
        fn_constructor_kwargs={"factory": factory, "llm_kwargs": llm_kwargs, "input_column": plan.input_column,
                               "output_prefix": output_prefix, "fail_fast": fail_fast},
        compute=compute,
        num_cpus=num_cpus,
        batch_size=batch_size,
        batch_format="pyarrow",
        udf_modifying_row_count=False,
        **map_batches_kwargs,
    )
