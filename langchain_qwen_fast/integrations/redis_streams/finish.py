"""How one answer is written: the result (once), the producer's reply, the acknowledgement, a dead-letter copy.

All of it in one server-side script, so a job is never acknowledged without its result and a result is never
announced twice; the script is idempotent, so a batch that failed on the connection can be sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_qwen_fast.integrations.redis_streams.config import WorkerConfig
from langchain_qwen_fast.integrations.redis_streams.jobs import JOB_FIELD, Keys

# KEYS: job stream, result key, reply stream, dead-letter stream.
# ARGV: group, entry id, result JSON, result TTL (s), reply ("1"/"0"), reply MAXLEN, job id, dead ("1"/"0"),
#       dead MAXLEN, then the dead-letter entry's field/value pairs. Returns 1 when this call wrote the result.
FINISH_SCRIPT = """
local fresh = redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4])
if fresh and ARGV[5] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[7], 'result', ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
if ARGV[8] == '1' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', unpack(ARGV, 10))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if fresh then return 1 end
return 0
"""
_DEAD_COPY_BYTES = 4096  # an oversized job is copied to the dead-letter stream only this far


@dataclass
class Finish:
    """One pending write: a result (with its reply and dead-letter copy), or a bare acknowledgement."""

    entry: bytes
    job_id: str | None = None
    reply_to: str | None = None
    result: bytes | None = None
    dead: list[bytes] | None = None
    submitted_at: float | None = None
    failures: int = 0

    async def send(self, pipe: Any, script: Any, cfg: WorkerConfig, keys: Keys) -> None:
        """Queue this write on a pipeline (nothing is sent until the pipeline runs)."""
        if self.result is None:
            pipe.xack(cfg.stream, cfg.group, self.entry)
            return
        reply = keys.replies(self.reply_to) if self.reply_to else keys.dead  # unused unless ARGV[5] is "1"
        args: list[Any] = [cfg.group, self.entry, self.result, cfg.result_ttl_s, "1" if self.reply_to else "0",
                           cfg.reply_maxlen, self.job_id, "1" if self.dead else "0", cfg.dead_maxlen]
        await script(keys=[cfg.stream, keys.result(self.job_id or ""), reply, keys.dead], args=args + (self.dead or []),
                     client=pipe)


def stream_id(eid: bytes) -> tuple[int, int]:
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)



def dead_copy(eid: bytes, fields: dict[bytes, bytes], reason: str, consumer: str) -> list[bytes]:
    """The dead-letter entry's fields: where it came from, why, and the entry's own fields (a large job bounded)."""
    copy: list[bytes] = [b"entry", eid, b"reason", reason.encode(), b"consumer", consumer.encode()]
    for k, v in fields.items():
        if k == JOB_FIELD and len(v) > _DEAD_COPY_BYTES:
            copy += [b"job_bytes", str(len(v)).encode(), b"job_head", v[:_DEAD_COPY_BYTES]]
        else:
            copy += [k if k not in (b"entry", b"reason", b"consumer") else b"field_" + k, v]
    return copy
