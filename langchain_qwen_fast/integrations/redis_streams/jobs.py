"""The job and result formats of the queue workers, as pure functions (no Redis, no I/O).

A producer and a worker must agree on one format, and bad input must be told apart from a failed
model call before anything is sent: both sides call ``parse_job`` (the producer before it enqueues,
the worker on every entry it reads), so a job the producer API accepts is never a bad job for the
worker. docs/scaling.md documents the formats for producers written in other languages.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

#: The stream entry field that carries the job's JSON. Other fields are ignored (and copied to the dead-letter entry).
JOB_FIELD = b"job"
FORMAT_VERSION = 1
ROLES = frozenset({"system", "user", "assistant"})
MAX_MESSAGES = 256
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_PRODUCER_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_stop(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and len(v) <= 16 and all(isinstance(s, str) for s in v))


#: Parameters a job may carry, each with its check. Anything else is refused rather than passed on: a queue is
#: an untrusted boundary, and an unknown key would otherwise reach the request body of every server.
PARAMS: dict[str, tuple[str, Any]] = {
    "max_tokens": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "temperature": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "top_p": ("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
    "top_k": ("an integer", _is_int),
    "min_p": ("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
    "presence_penalty": ("a number", _is_number),
    "frequency_penalty": ("a number", _is_number),
    "repetition_penalty": ("a number > 0", lambda v: _is_number(v) and v > 0),
    "seed": ("an integer", _is_int),
    "stop": ("a string or a list of at most 16 strings", _is_stop),
    "enable_thinking": ("true or false", lambda v: isinstance(v, bool)),
}


class BadJob(ValueError):
    """A job that can never succeed as written: it is answered with an error and dead-lettered, never retried."""


@dataclass(frozen=True)
class Job:
    """One parsed job: what the worker hands to the model, and where its result goes."""

    id: str
    messages: tuple[Mapping[str, str], ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    submitted_at: float | None = None


def check_job_id(job_id: Any) -> str:
    if not isinstance(job_id, str) or not _ID_RE.fullmatch(job_id):
        raise BadJob(f"'id' must be 1-128 characters of [A-Za-z0-9_.:-], a letter or digit first; got {job_id!r}")
    return job_id


def check_producer(producer: Any) -> str:
    if not isinstance(producer, str) or not _PRODUCER_RE.fullmatch(producer):
        raise BadJob(f"'reply_to' must be 1-64 characters of [A-Za-z0-9_.-], got {producer!r}")
    return producer


def _messages(doc: Mapping[str, Any]) -> tuple[Mapping[str, str], ...]:
    has_messages, has_prompt = "messages" in doc, "prompt" in doc
    if has_messages == has_prompt:
        raise BadJob("a job needs exactly one of 'messages' (a list of {role, content}) or 'prompt' (a string)")
    if has_prompt:
        prompt = doc["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise BadJob("'prompt' must be a non-empty string")
        return ({"role": "user", "content": prompt},)
    raw = doc["messages"]
    if not isinstance(raw, list) or not raw:
        raise BadJob("'messages' must be a non-empty list of {role, content} objects")
    if len(raw) > MAX_MESSAGES:
        raise BadJob(f"'messages' has {len(raw)} entries; at most {MAX_MESSAGES} are accepted")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise BadJob(f"messages[{i}] must be an object with exactly 'role' and 'content'")
        if m["role"] not in ROLES:
            raise BadJob(f"messages[{i}].role must be one of {sorted(ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise BadJob(f"messages[{i}].content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise BadJob("the last message must have role 'user'")
    return tuple(out)


def _params(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadJob("'params' must be an object")
    for key, value in raw.items():
        if key not in PARAMS:
            raise BadJob(f"unknown param {key!r}; a job may set {', '.join(sorted(PARAMS))}")
        what, ok = PARAMS[key]
        if value is not None and not ok(value):
            raise BadJob(f"param {key!r} must be {what}, got {value!r}")
    return {k: v for k, v in raw.items() if v is not None}


def parse_job(payload: bytes | str | Mapping[str, Any], *, max_bytes: int) -> Job:
    """The job in one stream entry's ``job`` field, checked; raises ``BadJob`` naming the problem."""
    if isinstance(payload, Mapping):
        doc: Any = payload
    else:
        size = len(payload.encode() if isinstance(payload, str) else payload)
        if size > max_bytes:
            raise BadJob(f"job is {size} bytes; this worker accepts at most {max_bytes}")
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise BadJob(f"job is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadJob(f"a job must be a JSON object, got {type(doc).__name__}")
    version = doc.get("v", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise BadJob(f"job format v={version!r} is not understood (this worker reads v={FORMAT_VERSION})")
    if "id" not in doc:
        raise BadJob("a job needs an 'id'")
    job_id = check_job_id(doc["id"])
    reply_to = doc.get("reply_to")
    if reply_to is not None:
        check_producer(reply_to)
    ts = doc.get("ts")
    return Job(
        id=job_id,
        messages=_messages(doc),
        params=_params(doc.get("params")),
        reply_to=reply_to,
        submitted_at=float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None,
    )


def job_document(
    job_id: str, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any], reply_to: str | None
) -> bytes:
    """The JSON a producer puts in the ``job`` field."""
    doc: dict[str, Any] = {"v": FORMAT_VERSION, "id": job_id, "messages": list(messages), "ts": time.time()}
    if params:
        doc["params"] = dict(params)
    if reply_to is not None:
        doc["reply_to"] = reply_to
    return orjson.dumps(doc)


def ok_result(job_id: str, message: Any, worker: str, queued_s: float | None, model_s: float) -> dict[str, Any]:
    """An ``AIMessage`` -> the result document (plain JSON types only)."""
    usage = getattr(message, "usage_metadata", None)
    meta = getattr(message, "response_metadata", None) or {}
    reasoning = (getattr(message, "additional_kwargs", None) or {}).get("reasoning_content")
    content = message.content if isinstance(message.content, str) else orjson.dumps(message.content).decode()
    return {
        "v": FORMAT_VERSION,
        "id": job_id,
        "content": content,
        "reasoning": reasoning,
        "usage": {k: usage[k] for k in ("input_tokens", "output_tokens", "total_tokens") if k in usage}
        if usage
        else None,
        "finish_reason": meta.get("finish_reason"),
        "error": None,
        "worker": worker,
        "queued_s": queued_s,
        "model_s": round(model_s, 6),
    }


def error_result(job_id: str, kind: str, message: str, worker: str) -> dict[str, Any]:
    """A result that carries an error instead of content: ``kind`` is ``BadJob`` or the model error's type."""
    return {
        "v": FORMAT_VERSION,
        "id": job_id,
        "content": None,
        "reasoning": None,
        "usage": None,
        "finish_reason": None,
        "error": {"type": kind, "message": message[:2000]},
        "worker": worker,
    }


@dataclass(frozen=True)
class Keys:
    """Every Redis key the queue uses, derived from the stream name so one stream's keys sit together."""

    stream: str

    def __post_init__(self) -> None:
        if not self.stream or any(c.isspace() for c in self.stream):
            raise ValueError(f"stream name must be non-empty and without whitespace, got {self.stream!r}")

    def result(self, job_id: str) -> str:
        return f"{self.stream}:result:{job_id}"

    def replies(self, producer: str) -> str:
        return f"{self.stream}:replies:{producer}"

    @property
    def dead(self) -> str:
        return f"{self.stream}:dead"


def route(fields: dict[bytes, bytes], eid: bytes) -> tuple[str, str | None]:
    """Where a bad job's error goes: its own id and reply_to when they can be read (from the JSON, else from
    the entry's ``id``/``reply_to`` fields), else the stream entry id (what XADD returned to its producer)."""
    doc: Any = {}
    raw = fields.get(JOB_FIELD)
    if raw is not None and len(raw) <= 1 << 20:
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        doc = {}
    def field(name: bytes) -> str | None:
        return fields[name].decode(errors="replace") if name in fields else None

    job_id = _first_valid(check_job_id, doc.get("id"), field(b"id"))
    reply_to = _first_valid(check_producer, doc.get("reply_to"), field(b"reply_to"))
    return job_id or eid.decode(), reply_to


def _first_valid(check: Any, *candidates: Any) -> str | None:
    for candidate in candidates:
        with contextlib.suppress(BadJob):
            return str(check(candidate))
    return None
