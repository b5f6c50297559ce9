"""Ray Data integration (langchain_qwen_fast/integrations/ray_data.py) against real components.

A local Ray cluster started the way users start one (``ray.init(address="local", num_cpus=2)``), two
simulator replicas as separate processes, real actors. The predictor is also called directly (no
cluster) for the per-row contract. Ray's own processes are found by PID (every descendant of this
process that is not a simulator) and the module checks that none is left after ``ray.shutdown()``.

Covers: integrations/ray_data.py.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import Runnable, RunnableLambda  # noqa: E402

from langchain_qwen_fast import BatchedChatQwen  # noqa: E402
from langchain_qwen_fast.integrations.ray_data import (  # noqa: E402
    OUTPUT_FIELDS,
    QwenBatchPredictor,
    QwenRowError,
    QwenSyncBatchPredictor,
    qwen_map_batches,
)
from langchain_qwen_fast.testing import SimConfig, SimServer  # noqa: E402
from langchain_qwen_fast.testing.responses import count_tokens  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.sim,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]  # Ray's own DataContext fields
MODEL = "Qwen/Qwen3-0.6B"


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def replicas() -> Iterator[list[SimServer]]:
    with SimServer(SimConfig(latency="zero")) as a, SimServer(SimConfig(latency="zero")) as b:
        yield [a, b]


@pytest.fixture(scope="module")
def urls(replicas: list[SimServer]) -> list[str]:
    return [s.base_url for s in replicas]


def _live_descendants(root: int) -> set[int]:
    """Every live (non-zombie) process below ``root``, from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children[int(fields[1])].append(int(d))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(replicas: list[SimServer]) -> Iterator[None]:
    """A fresh local cluster of 2 CPUs ("local": never join a cluster someone else started here)."""
    others = _live_descendants(os.getpid())  # e.g. other tiers' session-wide simulators: not Ray's to stop
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # The workers cannot import this test module by name: send its factories by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        sims = {s.pid for s in replicas if s.running}
        ray_pids = _live_descendants(os.getpid()) - sims - others
        ray.shutdown()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in ray_pids):
            time.sleep(0.1)
        left = sorted(p for p in ray_pids if _alive(p))
        for pid in left:  # stopped by PID so a failure here leaves nothing behind
            os.kill(pid, signal.SIGKILL)
        assert ray_pids, "found no Ray processes to check"
        assert not left, f"Ray processes left after ray.shutdown(): {left}"


def _table(n: int, **extra: list[Any]) -> Any:
    return pa.table({"id": list(range(n)), "prompt": [f"row {i}" for i in range(n)], **extra})


def _echoes(content: str | None, row_id: int) -> bool:
    return content is not None and content.split()[:3] == ["[sim]", "row", str(row_id)]


# ------------------------------------------------------------------ factories sent to the actors
def tagline_chain(urls: list[str]) -> Runnable[Any, Any]:
    prompt = ChatPromptTemplate.from_messages([("system", "One line."), ("human", "{adjective} {item}")])
    return prompt | BatchedChatQwen(base_url=urls, model=MODEL, max_tokens=16)


def parsed_chain(urls: list[str]) -> Runnable[Any, Any]:
    return BatchedChatQwen(base_url=urls, model=MODEL, max_tokens=16) | StrOutputParser()


def chain_that_dies_once(urls: list[str], marks: str, after_rows: int) -> Runnable[Any, Any]:
    """The model, then a step that SIGKILLs this actor's process once, after it has been answered
    ``after_rows`` rows (so a block's answers are lost with it). Only one actor can claim the flag
    file (rename is atomic), and a restarted actor finds it gone, so the job is killed exactly once."""
    with open(os.path.join(marks, "inits"), "a") as f:
        f.write(f"{os.getpid()}\n")
    seen = itertools.count(1)

    def die_once(message: Any) -> Any:
        if next(seen) == after_rows:
            try:
                os.rename(os.path.join(marks, "kill"), os.path.join(marks, f"killed.{os.getpid()}"))
            except FileNotFoundError:
                return message
            os.kill(os.getpid(), signal.SIGKILL)
        return message

    return BatchedChatQwen(base_url=urls, model=MODEL, max_tokens=16) | RunnableLambda(die_once)


# ------------------------------------------------- the per-row contract, called without a cluster
def test_each_row_gets_its_own_answer_and_the_other_columns_pass_through(urls: list[str]) -> None:
    pred = QwenBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16})
    out = asyncio.run(pred(_table(64, shop=[f"s{i % 3}" for i in range(64)])))
    pred.close()
    assert out.column_names == ["id", "prompt", "shop", *("qwen_" + f for f in OUTPUT_FIELDS)]
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == list(range(64))
    assert [r["shop"] for r in rows] == [f"s{i % 3}" for i in range(64)]
    for r in rows:
        assert _echoes(r["qwen_content"], r["id"]), r
        assert r["qwen_error"] is None and r["qwen_reasoning"] is None
        # The simulator's tokenizer contract: an answer's tokens are countable, so usage is the row's own.
        assert r["qwen_output_tokens"] == count_tokens(r["qwen_content"]) <= 16 and r["qwen_input_tokens"] > 0
        assert r["qwen_finish_reason"] == "stop" or r["qwen_output_tokens"] == 16
    assert out.schema.field("qwen_input_tokens").type == pa.int64()


def test_message_lists_are_prompts_and_the_last_user_turn_is_answered(urls: list[str]) -> None:
    # Arrow gives every message every key of the column's struct (None where a row had none).
    messages = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"row {i}", "name": "u"}]
                if i % 2 else [{"role": "user", "content": f"row {i}"}] for i in range(10)]
    table = pa.table({"id": list(range(10)), "conversation": messages})
    pred = QwenBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16},
                              input_column="conversation", output_prefix="llm_")
    rows = asyncio.run(pred(table)).to_pylist()
    pred.close()
    assert [r["llm_error"] for r in rows] == [None] * 10
    assert all(_echoes(r["llm_content"], r["id"]) for r in rows), rows


def test_reasoning_has_its_own_column_when_thinking_is_on(urls: list[str]) -> None:
    pred = QwenBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 400,
                                          "enable_thinking": True})
    rows = asyncio.run(pred(_table(3))).to_pylist()
    pred.close()
    for r in rows:
        assert r["qwen_error"] is None and r["qwen_reasoning"], r
        assert _echoes(r["qwen_content"], r["id"]) and "<think>" not in r["qwen_content"]
        assert r["qwen_reasoning"] not in r["qwen_content"]


def test_a_bad_row_is_an_error_in_its_row_and_its_neighbours_are_answered(urls: list[str]) -> None:
    prompts: list[Any] = [f"row {i}" for i in range(8)]
    prompts[2] = None
    prompts[5] = "row 5 " + "word " * 3000  # longer than the simulator's 2048-token context: a 400
    table = pa.table({"id": list(range(8)), "prompt": prompts})
    pred = QwenSyncBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16})
    rows = pred(table).to_pylist()
    pred.close()
    assert rows[2]["qwen_error"] == "ValueError: the row has no prompt (null)"
    assert rows[5]["qwen_error"].startswith("ContextLengthError: ")
    for i in (2, 5):
        assert rows[i]["qwen_content"] is None and rows[i]["qwen_output_tokens"] is None
    for r in rows:
        if r["id"] not in (2, 5):
            assert r["qwen_error"] is None and _echoes(r["qwen_content"], r["id"]), r


def test_other_bad_inputs_are_refused_per_row_before_sending(urls: list[str]) -> None:
    table = pa.table({"prompt": pa.array([[], [{"role": "user"}], [{"role": "user", "content": "row 2"}]],
                                         type=pa.list_(pa.struct([("role", pa.string()),
                                                                  ("content", pa.string())])))})
    pred = QwenBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16})
    rows = asyncio.run(pred(table)).to_pylist()
    pred.close()
    assert rows[0]["qwen_error"].startswith("ValueError: a prompt must be a string or a non-empty list")
    assert rows[1]["qwen_error"] == "ValueError: each message must be a mapping with string 'role' and 'content'"
    assert rows[2]["qwen_error"] is None and _echoes(rows[2]["qwen_content"], 2)


def test_fail_fast_raises_naming_the_row_but_not_the_prompt(urls: list[str]) -> None:
    table = pa.table({"prompt": ["row 0", "secret " + "word " * 3000, "row 2"]})
    pred = QwenBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16}, fail_fast=True)
    with pytest.raises(QwenRowError, match=r"row 1 of a block of 3 failed and fail_fast=True: ContextLengthError") \
            as info:
        asyncio.run(pred(table))
    pred.close()
    assert "secret" not in str(info.value)


def test_a_factory_chain_takes_several_columns_as_its_template_variables(urls: list[str]) -> None:
    table = pa.table({"id": [0, 1], "adjective": ["solar", "quiet"], "item": ["kite", "tent"]})
    pred = QwenBatchPredictor(functools.partial(tagline_chain, urls), input_column=["adjective", "item"])
    rows = asyncio.run(pred(table)).to_pylist()
    assert [r["qwen_content"].split()[:3] for r in rows] == [["[sim]", "solar", "kite"], ["[sim]", "quiet", "tent"]]
    assert all(r["qwen_output_tokens"] == count_tokens(r["qwen_content"]) for r in rows)


def test_a_chain_ending_in_a_parser_gives_content_without_usage(urls: list[str]) -> None:
    pred = QwenBatchPredictor(functools.partial(parsed_chain, urls))
    rows = asyncio.run(pred(_table(4))).to_pylist()
    assert all(_echoes(r["qwen_content"], r["id"]) for r in rows)
    assert {(r["qwen_input_tokens"], r["qwen_finish_reason"]) for r in rows} == {(None, None)}


def test_a_numpy_batch_is_answered_like_an_arrow_one(urls: list[str]) -> None:
    np = pytest.importorskip("numpy")
    batch = {"id": np.arange(3), "prompt": np.array(["row 0", "row 1", "row 2"], dtype=object)}
    pred = QwenSyncBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16})
    rows = pred(batch).to_pylist()
    pred.close()
    assert [_echoes(r["qwen_content"], r["id"]) for r in rows] == [True, True, True]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"factory": parsed_chain, "llm_kwargs": {}}, ValueError, "either factory or llm_kwargs"),
    ({"factory": BatchedChatQwen(model=MODEL)}, TypeError, "not be a built runnable"),
    ({"input_column": "qwen_error"}, ValueError, "would overwrite an input column"),
    ({"input_column": []}, ValueError, "input_column must be"),
    ({"llm_kwargs": {"max_tokens": -1}}, ValueError, "max_tokens"),
    ({"actors": (1, 2, 3)}, ValueError, r"\(min_size, max_size\)"),
    ({"num_cpus": 0}, ValueError, "num_cpus must be > 0"),
    ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
    ({"compute": None}, TypeError, "sets compute itself"),
    ({"factory": functools.partial(parsed_chain, threading.Lock())}, TypeError, "cannot be sent to the actors"),
    ({"factory": functools.partial(parsed_chain, ["http://127.0.0.1:9/v1"])}, None, None),
])
def test_bad_settings_fail_in_the_driver_before_any_actor_starts(cluster: None, kwargs: dict[str, Any],
                                                                 error: type[Exception] | None,
                                                                 match: str | None) -> None:
    ds = ray.data.from_items([{"prompt": "row 0"}])
    if error is None:
        qwen_map_batches(ds, **kwargs)
        return
    with pytest.raises(error, match=match):
        qwen_map_batches(ds, **kwargs)


def test_a_row_column_that_would_be_overwritten_is_refused(urls: list[str]) -> None:
    pred = QwenBatchPredictor(llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16})
    with pytest.raises(ValueError, match="already has a column 'qwen_content'"):
        asyncio.run(pred(_table(2, qwen_content=["a", "b"])))
    with pytest.raises(KeyError, match="input column 'text' is not in the dataset"):
        asyncio.run(QwenBatchPredictor(llm_kwargs={"base_url": urls}, input_column="text")(_table(1)))
    pred.close()


# ------------------------------------------------------------------------ through a real cluster
def test_twenty_thousand_rows_answered_once_each_while_an_actor_is_killed(
        cluster: None, urls: list[str], replicas: list[SimServer], tmp_path: Path) -> None:
    n = 20_000
    (tmp_path / "kill").touch()
    for s in replicas:
        s.reset()
    ds = ray.data.from_items([{"id": i, "prompt": f"row {i}"} for i in range(n)])
    out = qwen_map_batches(ds, functools.partial(chain_that_dies_once, urls, str(tmp_path), 3000),
                           actors=2, batch_size=512)
    rows = out.take_all()

    killed = [p.name for p in tmp_path.glob("killed.*")]
    assert len(killed) == 1, "no actor was killed: the test would prove nothing"
    killed_pid = int(killed[0].split(".")[1])
    inits = [int(x) for x in (tmp_path / "inits").read_text().split()]
    assert killed_pid in inits and len(inits) >= 3, f"the killed actor was not restarted: {inits}"
    assert not _alive(killed_pid)
    ids = collections.Counter(r["id"] for r in rows)
    assert len(rows) == n and set(ids) == set(range(n)) and max(ids.values()) == 1
    wrong = [r for r in rows if r["qwen_error"] is not None or not _echoes(r["qwen_content"], r["id"])]
    assert not wrong, wrong[:3]
    served = sum(s.stats()["prompts_served"] for s in replicas)
    assert served > n, f"servers answered {served} prompts: the lost block was never sent again"


def test_the_helper_writes_parquet_with_typed_columns_and_failures_as_values(
        cluster: None, urls: list[str], tmp_path: Path) -> None:
    items = [{"id": i, "prompt": None if i % 50 == 7 else f"row {i}"} for i in range(300)]
    out = qwen_map_batches(ray.data.from_items(items), llm_kwargs={"base_url": urls, "model": MODEL,
                                                                   "max_tokens": 16},
                           actors=(1, 2), batch_size=64, sync=True)
    out.write_parquet(str(tmp_path / "out"))
    table = pq.read_table(str(tmp_path / "out"))
    assert table.schema.field("qwen_output_tokens").type == pa.int64()
    assert table.schema.field("qwen_error").type == pa.string()
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(300))
    failed = [r["id"] for r in rows if r["qwen_error"] is not None]
    assert failed == [i for i in range(300) if i % 50 == 7]
    assert all(_echoes(r["qwen_content"], r["id"]) for r in rows if r["id"] not in failed)


def test_fail_fast_fails_the_job(cluster: None, urls: list[str]) -> None:
    items = [{"prompt": f"row {i}"} for i in range(20)] + [{"prompt": None}]
    out = qwen_map_batches(ray.data.from_items(items), fail_fast=True, actors=1,
                           llm_kwargs={"base_url": urls, "model": MODEL, "max_tokens": 16})
    with pytest.raises(Exception, match="fail_fast=True") as info:
        out.take_all()
    assert "QwenRowError" in str(info.value) or isinstance(info.value, QwenRowError)


def test_importing_the_package_and_integrations_does_not_import_ray() -> None:
    code = ("import sys, langchain_qwen_fast, langchain_qwen_fast.integrations; "
            "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
