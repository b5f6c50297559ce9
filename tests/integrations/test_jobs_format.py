"""The job format, checked the same way by producer and worker (no Redis needed).

Covers: integrations/redis_streams/jobs.py, integrations/redis_streams/producer.py,
integrations/redis_streams/config.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_qwen_fast.integrations.redis_streams import JobQueue, WorkerConfig
from langchain_qwen_fast.integrations.redis_streams.jobs import BadJob, Keys, job_document, ok_result, parse_job, route

MAX = 1 << 20


def _doc(**fields: Any) -> bytes:
    return orjson.dumps({"v": 1, "id": "j1", **fields})


def test_a_prompt_becomes_one_user_message_and_null_params_are_dropped() -> None:
    job = parse_job(_doc(prompt="hi", params={"max_tokens": 8, "temperature": None}, ts=12.5), max_bytes=MAX)
    assert job.messages == ({"role": "user", "content": "hi"},)
    assert job.params == {"max_tokens": 8} and job.submitted_at == 12.5 and job.reply_to is None


def test_messages_and_every_allowed_param_pass_through() -> None:
    params = {"max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.0, "seed": 3,
              "presence_penalty": 0.5, "frequency_penalty": 0.1, "repetition_penalty": 1.1, "stop": ["\n"],
              "enable_thinking": True}
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    job = parse_job(_doc(messages=msgs, params=params, reply_to="p-1"), max_bytes=MAX)
    assert list(job.messages) == msgs and dict(job.params) == params and job.reply_to == "p-1"


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"{oops", "not valid JSON"),
        (b'"a string"', "must be a JSON object"),
        (orjson.dumps({"prompt": "hi"}), "needs an 'id'"),
        (_doc(), "exactly one of 'messages'"),
        (_doc(prompt="hi", messages=[{"role": "user", "content": "hi"}]), "exactly one of 'messages'"),
        (_doc(prompt=""), "non-empty string"),
        (_doc(messages=[]), "non-empty list"),
        (_doc(messages=[{"role": "user"}]), "exactly 'role' and 'content'"),
        (_doc(messages=[{"role": "tool", "content": "x"}]), "role must be one of"),
        (_doc(messages=[{"role": "user", "content": ["parts"]}]), "content must be a string"),
        (_doc(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]), "last message"),
        (_doc(messages=[{"role": "user", "content": "x"}] * 257), "at most 256"),
        (_doc(prompt="hi", params=[1]), "'params' must be an object"),
        (_doc(prompt="hi", params={"tools": []}), "unknown param 'tools'"),
        (_doc(prompt="hi", params={"max_tokens": 0}), "'max_tokens' must be a positive integer"),
        (_doc(prompt="hi", params={"max_tokens": True}), "'max_tokens' must be a positive integer"),
        (_doc(prompt="hi", params={"top_p": 2}), "'top_p' must be a number in (0, 1]"),
        (_doc(prompt="hi", params={"stop": [1]}), "'stop' must be a string or a list"),
        (_doc(prompt="hi", params={"enable_thinking": "yes"}), "'enable_thinking' must be true or false"),
        (_doc(prompt="hi", reply_to="no spaces allowed"), "'reply_to' must be"),
        (orjson.dumps({"v": 1, "id": "-starts-with-dash", "prompt": "hi"}), "'id' must be"),
        (orjson.dumps({"v": 3, "id": "j", "prompt": "hi"}), "v=3 is not understood"),
        (_doc(prompt="x" * 200), "accepts at most 100"),
    ],
)
def test_a_bad_job_is_refused_with_a_message_naming_the_problem(payload: bytes, why: str) -> None:
    with pytest.raises(BadJob, match=None) as info:
        parse_job(payload, max_bytes=100 if why.startswith("accepts") else MAX)
    assert why in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_bad_job_is_answered_under_its_own_id_when_one_can_be_read() -> None:
    assert route({b"job": _doc(prompt=1, reply_to="p1")}, b"1-0") == ("j1", "p1")  # from the JSON
    assert route({b"job": b"{oops", b"id": b"env-id", b"reply_to": b"p2"}, b"1-0") == ("env-id", "p2")
    assert route({b"job": b"{oops", b"id": b"bad id"}, b"7-3") == ("7-3", None)  # else the entry id
    assert route({}, b"8-0") == ("8-0", None)


def test_the_producer_refuses_a_bad_job_before_anything_is_sent() -> None:
    class Untouched:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"Redis was called ({name}) for a job that should have been refused")

    q = JobQueue(Untouched(), "jobs")

    async def submit() -> None:
        await q.submit_many(["fine", "also fine"], logit_bias={"1": 5})

    import asyncio

    with pytest.raises(BadJob, match="unknown param 'logit_bias'"):
        asyncio.run(submit())
    with pytest.raises(ValueError, match="plain text"):
        asyncio.run(q.submit_many([[AIMessage(content=[{"type": "image"}])]]))
    # job_ids that do not match the inputs one to one: named, whichever side is longer
    with pytest.raises(ValueError, match="1 job_ids for 2 inputs"):
        asyncio.run(q.submit_many(["a", "b"], job_ids=["only-one"]))
    with pytest.raises(ValueError, match="3 job_ids for 2 inputs"):
        asyncio.run(q.submit_many(["a", "b"], job_ids=["x1", "x2", "x3"]))


def test_langchain_messages_become_role_and_content() -> None:
    doc = orjson.loads(job_document("j", [{"role": "user", "content": "x"}], {}, None))
    assert doc["messages"] == [{"role": "user", "content": "x"}] and "params" not in doc
    from langchain_qwen_fast.integrations.redis_streams.producer import _as_messages

    assert _as_messages([SystemMessage("s"), HumanMessage("u")]) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_a_result_carries_content_reasoning_usage_and_finish_reason() -> None:
    msg = AIMessage(content="hello", additional_kwargs={"reasoning_content": "hmm"},
                    usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
                    response_metadata={"finish_reason": "stop"})
    res = ok_result("j1", msg, "w1", 0.25, 0.1)
    assert res["content"] == "hello" and res["reasoning"] == "hmm" and res["finish_reason"] == "stop"
    assert res["usage"] == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5} and res["error"] is None


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"claim_idle_s": 0}, "claim_idle_s must be > 0"),
        ({"max_in_flight": 0}, "max_in_flight must be >= 1"),
        ({"max_deliveries": 0}, "max_deliveries must be >= 1"),
        ({"trim_interval_s": -1}, "trim_interval_s must be >= 0"),
        ({"stream": "has space"}, "without whitespace"),
        ({"group": ""}, "group and consumer must be non-empty"),
    ],
)
def test_a_worker_config_is_checked_when_built(fields: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        WorkerConfig(**{"stream": "jobs", "group": "g", **fields})
    assert why in str(info.value)


def test_every_key_derives_from_the_stream_name() -> None:
    k = Keys("jobs")
    assert (k.result("a"), k.replies("p"), k.dead) == ("jobs:result:a", "jobs:replies:p", "jobs:dead")


def test_a_workers_capacity_is_what_the_model_admits_total_limit_included() -> None:
    from langchain_qwen_fast import BatchedChatQwen
    from langchain_qwen_fast.integrations.redis_streams.config import admission_capacity

    urls = [f"http://127.0.0.{i}:9/v1" for i in (1, 2, 3, 4)]
    with BatchedChatQwen(base_url=urls, model="m", max_concurrency=512) as four:
        assert admission_capacity(four) == 4 * 512
    with BatchedChatQwen(base_url=urls, model="m", max_concurrency=512, max_total_concurrency=100) as capped:
        assert admission_capacity(capped) == 100  # the sum of per-replica limits was 2048: jobs held, not admitted

    class Plain:  # any model without the dispatcher's figure: its own limit
        max_concurrency = 7

        def stats(self) -> dict[str, Any]:
            return {}

    assert admission_capacity(Plain()) == 7


def test_a_workers_redis_connections_are_named_after_its_consumer_in_characters_redis_accepts() -> None:
    from langchain_qwen_fast.integrations.redis_streams.config import client_name

    assert client_name("host-12-ab") == "qwen-worker:host-12-ab"
    assert client_name("gpu box 1\nü") == "qwen-worker:gpu_box_1__"  # CLIENT SETNAME refuses spaces and non-ASCII
