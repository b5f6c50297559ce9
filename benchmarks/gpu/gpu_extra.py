"""GPU phases after the engines table: failover, server flags, prefix affinity, open loop (one JSON line each).

    PYTHONPATH=/tmp/csite python3 benchmarks/gpu/gpu_extra.py --a "URL ..." --b "URL ..." --out DIR [--deadline T]

Set A runs the launcher's default flags, set B ``--no-default-flags`` (so it also keeps vLLM's /metrics counters,
which the prefix-affinity phase reads). Phases run in order of value and each checks the deadline first:

1. failover: one of three A engines SIGKILLed (its process group) at 30% of a 5,000-item ``.batch`` at 32 tokens;
   every input's callback run must end exactly once (answered, or failed with a package error);
2. flags: raw lists and ``.batch`` over 1 and 3 engines of A against the same of B, interleaved, 32 tokens;
3. prefix affinity: 8 system prompts of ~1,500 tokens, short questions, 3 engines of B, least-outstanding against
   ``routing="prefix_affinity"`` (fresh prompts each run, so every run starts cold), with each engine's
   prefix-cache hits from /metrics;
4. open loop: Poisson ``.ainvoke`` at 50% and 90% of the raw ceiling over 3 engines of A, against ChatOpenAI
   ``.ainvoke`` on the first of them.

``benchmarks/gpu/ceiling.sh faults`` runs two more against the MPS set (``--a``, three engines):
``failover_restart`` (the failover above, then the killed server started again from the command its log begins
with, under the same MPS daemon, until the model sends it work again) and ``mps_death`` (the launcher's MPS
daemon SIGKILLed: what the servers, the model and the launcher do after it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast.bench import replicas as R
from langchain_qwen_fast.bench import scenarios as S

#: Shrinks every N (a quick check against the simulator: QF_SCALE=0.05).
SCALE = float(os.environ.get("QF_SCALE", "1"))


def emit(out: Path, row: dict[str, Any]) -> None:
    row["t"] = time.time()
    with (out / "gpu_extra.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row)[:400], flush=True)


def _launcher_line(port: int) -> str | None:
    """The launcher prints ``http://127.0.0.1:PORT/v1  [gpu G  ]pid N  log PATH`` for each server it started;
    its output is in /tmp/launch_*.log (engines.sh, ceiling.sh)."""
    for log in sorted(Path("/tmp").glob("launch_*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if f":{port}/v1 " in line and " pid " in line:
                return line
    return None


def pid_of(port: int) -> int | None:
    line = _launcher_line(port)
    return int(line.split(" pid ")[1].split()[0]) if line else None


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Runs(BaseCallbackHandler):
    """Counts how often each input's run ended: exactly once each, or something was lost or duplicated."""

    def __init__(self) -> None:
        self.started: set[uuid.UUID] = set()
        self.ends: dict[uuid.UUID, int] = {}
        self.done = 0
        self.lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        with self.lock:
            self.started.add(run_id)

    def _end(self, run_id: uuid.UUID) -> None:
        with self.lock:
            self.ends[run_id] = self.ends.get(run_id, 0) + 1
            self.done += 1

    def on_llm_end(self, response: Any, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kw: Any) -> None:
        self._end(run_id)


def _describe(o: Any) -> str:
    meta = getattr(o, "response_metadata", None)
    if meta is not None:
        return (f"{type(o).__name__} content={str(o.content)[:80]!r} finish_reason={meta.get('finish_reason')} "
                f"usage={getattr(o, 'usage_metadata', None)}")
    return f"{type(o).__name__}: {str(o)[:200]}"


def failover(urls: list[str], out: Path, restart: bool = False, deadline: float = 0) -> None:
    n = int(5000 * SCALE)
    victim = urls[-1]
    model = BatchedChatQwen(base_url=urls, model="Qwen/Qwen3-0.6B", max_tokens=32, temperature=0.5,
                            model_kwargs={"ignore_eos": True}, timeout=120)
    model.batch(S.prompts(256))  # warm pools
    runs = Runs()
    events: dict[str, Any] = {}

    def chaos() -> None:
        while runs.done < 0.3 * n:
            time.sleep(0.002)
        pid = pid_of(port_of(victim))
        events["in_flight_on_victim"] = model.stats()["endpoints"][victim]["in_flight"]
        events["done_at_kill"] = runs.done
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
        events["killed_pid"] = pid
        events["killed_at"] = time.time()

    th = threading.Thread(target=chaos, daemon=True)
    th.start()
    t0 = time.time()
    outs = model.batch(S.prompts(n), config={"callbacks": [runs]}, return_exceptions=True)
    wall = time.time() - t0
    th.join(10)
    from langchain_core.exceptions import ModelError
    from langchain_core.messages import AIMessage

    kinds = ["answered" if isinstance(o, AIMessage) and o.content else
             "failed_clear" if isinstance(o, ModelError) and str(o) else "other" for o in outs]
    answered, failed_clear = kinds.count("answered"), kinds.count("failed_clear")
    other = n - answered - failed_clear
    # What an outcome that is neither was (one at the first GPU run, not kept then): type, text, finish reason.
    other_examples = [_describe(o) for o, k in zip(outs, kinds, strict=True) if k == "other"][:5]
    ended = [runs.ends.get(r, 0) for r in runs.started]
    st = model.stats()
    emit(out, {"phase": "failover", "n": n, "engines": len(urls), "victim": victim, **events,
               "wall_s": round(wall, 2), "outputs": len(outs), "answered": answered, "failed_clear_error": failed_clear,
               "other_outcomes": other, "other_examples": other_examples,
               "runs_started": len(runs.started), "lost": sum(1 for e in ended if e == 0),
               "duplicated": sum(1 for e in ended if e > 1),
               "error_types": dict(st["endpoints"][victim]["errors"]),
               "victim_ejected": st["endpoints"][victim]["ejected"],
               "requests": {u: st["endpoints"][u]["requests"] for u in urls},
               "retries": {u: st["endpoints"][u]["retries"] for u in urls}})
    if restart:
        serves_again(model, victim, out, deadline)
    model.close()


def restart_server(port: int) -> int:
    """Start the server on ``port`` again as the launcher did: the first line of its log is ``$ VARS... vllm
    serve ...`` (its CUDA and MPS variables first, so it joins the same MPS daemon). Returns its PID (its own
    session: ``ceiling.sh stop`` stops it by that PID)."""
    line = _launcher_line(port)
    assert line is not None, f"no launcher line for port {port}"
    log = Path(line.split(" log ", 1)[1].strip())
    command = log.read_text(errors="replace").splitlines()[0].removeprefix("$ ")
    with log.open("ab") as f:
        f.write(f"$ {command}  # restarted by gpu_extra.py\n".encode())
        proc = subprocess.Popen(["bash", "-c", f"exec env {command}"], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    with open("/tmp/ceiling_restarted.pids", "a") as f:
        f.write(f"{proc.pid}\n")
    return proc.pid


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def serves_again(model: BatchedChatQwen, victim: str, out: Path, deadline: float) -> None:
    """Restart the killed server, wait for its /health, then run batches until the model has sent it work."""
    t0 = time.time()
    pid = restart_server(port_of(victim))
    while not _healthy(victim) and time.time() < (deadline or t0 + 300):
        time.sleep(2)
    up_s = round(time.time() - t0, 1)
    before = model.stats()["endpoints"][victim]["requests"]
    answered = 0
    for _ in range(5):
        outs = model.batch(S.prompts(int(2000 * SCALE)), return_exceptions=True)
        answered += sum(1 for o in outs if not isinstance(o, Exception))
        if model.stats()["endpoints"][victim]["requests"] > before:
            break
    emit(out, {"phase": "failover_restart", "victim": victim, "restarted_pid": pid, "healthy_after_s": up_s,
               "healthy": _healthy(victim), "answered_after": answered,
               "victim_requests_after": model.stats()["endpoints"][victim]["requests"] - before,
               "requests": {u: v["requests"] for u, v in model.stats()["endpoints"].items()}})


def mps_death(urls: list[str], out: Path) -> None:
    """SIGKILL the launcher's MPS control daemon (its PID is in the launcher's 'MPS: control daemon pid N'
    line); record what the servers, a model using them and the launcher do after it."""
    log = Path("/tmp/launch_new.log")
    text = log.read_text(errors="replace") if log.exists() else ""
    pid = next((int(x.split("control daemon pid ")[1].split()[0]) for x in text.splitlines()
                if "control daemon pid " in x), None)
    model = BatchedChatQwen(base_url=urls, model="Qwen/Qwen3-0.6B", max_tokens=32, temperature=0.5,
                            model_kwargs={"ignore_eos": True}, timeout=120)
    model.batch(S.prompts(256))
    row: dict[str, Any] = {"phase": "mps_death", "daemon_pid": pid}
    if pid is None:
        emit(out, {**row, "error": "no 'control daemon pid' line in /tmp/launch_new.log: MPS was not running"})
        return
    os.kill(pid, signal.SIGKILL)
    time.sleep(5)
    n = int(3000 * SCALE)
    t0 = time.time()
    outs = model.batch(S.prompts(n), return_exceptions=True)
    wall = time.time() - t0
    after = log.read_text(errors="replace")[len(text):]
    row.update(healthy={u: _healthy(u) for u in urls}, n=n, wall_s=round(wall, 2), req_s=round(n / wall, 1),
               answered=sum(1 for o in outs if not isinstance(o, Exception)),
               errors=sorted({type(o).__name__ for o in outs if isinstance(o, Exception)}),
               launcher_said=[x for x in after.splitlines() if x.strip()][-5:],
               mps_processes=subprocess.run(["bash", "-c", "ps -eo pid,stat,comm | grep nvidia-cuda-mps"],
                                            capture_output=True, text=True).stdout.split("\n"))
    emit(out, row)
    model.close()


def flags(a: list[str], b: list[str], out: Path, rounds: int, deadline: float) -> None:
    w = S.Workload(base_url=a[0], model="Qwen/Qwen3-0.6B", max_tokens=32, n=int(3000 * SCALE))
    sets = [("flags_x1", a[:1]), ("noflags_x1", b[:1]), ("flags_x3", a[:3]), ("noflags_x3", b[:3])]
    for rnd in range(rounds):
        for name, urls in (sets if rnd % 2 == 0 else list(reversed(sets))):
            for kind in ("raw", "batch"):
                if deadline and time.time() > deadline:
                    return
                row = R.raw_scenario(urls, w) if kind == "raw" else R.qwen_scenario(urls, w, "batch")
                emit(out, {"phase": "flags", "set": name, "kind": kind, "round": rnd, **row})


def _metrics(url: str) -> dict[str, float]:
    root = url.rsplit("/v1", 1)[0]
    got = {"queries": 0.0, "hits": 0.0}
    try:
        text = urllib.request.urlopen(root + "/metrics", timeout=10).read().decode()
    except OSError:  # a server without /metrics (the simulator): no hit rate, the rest still runs
        return got
    for line in text.splitlines():
        for key in got:
            if line.startswith(f"vllm:prefix_cache_{key}") and not line.startswith("#"):
                got[key] += float(line.rsplit(" ", 1)[1])
    return got


def affinity(b: list[str], out: Path, rounds: int, deadline: float, prompts: int = 8, n: int = 1500) -> None:
    """``prompts`` distinct system prompts of ~1,500 tokens over ``n`` requests. With 8, every engine's prefix
    cache holds all of them either way; with many more than one engine's cache holds (10 GiB of KV is about
    90,000 tokens, some 60 such prompts), where each prompt lands decides whether it is still cached."""
    from langchain_core.messages import HumanMessage, SystemMessage

    words = [
        "policy", "order", "refund", "shipping", "warranty", "account", "invoice", "delivery", "return", "exchange",
        "size", "colour", "store", "customer", "service", "hours", "payment", "card", "voucher", "discount",
        "member", "tracking", "parcel", "courier", "address",
    ]
    n = int(n * SCALE)
    for rnd in range(rounds):
        for mode in (("least_outstanding", "prefix_affinity") if rnd % 2 == 0 else
                     ("prefix_affinity", "least_outstanding")):
            if deadline and time.time() > deadline:
                return
            rng = random.Random(f"{rnd}-{mode}")
            systems = [f"You are assistant number {rng.random()} of shop {k}. " +
                       " ".join(rng.choice(words) for _ in range(1150)) for k in range(prompts)]
            inputs = [[SystemMessage(systems[rng.randrange(prompts)]), HumanMessage(S.QUESTIONS[i % len(S.QUESTIONS)])]
                      for i in range(n)]
            model = BatchedChatQwen(base_url=b, model="Qwen/Qwen3-0.6B", max_tokens=32, temperature=0.5,
                                    model_kwargs={"ignore_eos": True}, timeout=300, routing=mode)
            before = [_metrics(u) for u in b]
            rec = S.LatencyRecorder()
            t0 = time.time()
            outs = model.batch(inputs, config={"callbacks": [rec]}, return_exceptions=True)
            wall = time.time() - t0
            after = [_metrics(u) for u in b]
            per = []
            for x, y in zip(before, after, strict=True):
                q, h = y["queries"] - x["queries"], y["hits"] - x["hits"]
                per.append({"queries": q, "hits": h, "hit_rate": round(h / q, 4) if q else None})
            lat = S.percentiles(rec.latencies)
            emit(out, {"phase": "affinity", "prompts": prompts, "routing": mode, "round": rnd, "n": n,
                       "wall_s": round(wall, 2),
                       "req_s": round(n / wall, 1), **lat, "errors": sum(isinstance(o, Exception) for o in outs),
                       "per_engine": per,
                       "requests": {u: v["requests"] for u, v in model.stats()["endpoints"].items()}})
            model.close()


def openloop(a: list[str], out: Path, deadline: float, seconds: float) -> None:
    w = S.Workload(base_url=a[0], model="Qwen/Qwen3-0.6B", max_tokens=32, n=int(3000 * SCALE))
    ceiling = statistics.median(R.raw_scenario(a, w)["req_s"] for _ in range(2))
    for frac in (0.5, 0.9):
        for client in ("qwen", "openai"):
            if deadline and time.time() > deadline:
                return
            wk = S.Workload(base_url=a if client == "qwen" else a[0], model="Qwen/Qwen3-0.6B", max_tokens=32)  # type: ignore[arg-type]
            row = S.poisson_scenario(wk, client, ceiling * frac, seconds)
            emit(out, {"phase": "openloop", "engines": len(a) if client == "qwen" else 1, "load_fraction": frac,
                       "raw_ceiling_req_s": ceiling, **row})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="failover,flags,affinity,openloop")
    x = ap.parse_args()
    a, b, out = x.a.split(), x.b.split(), Path(x.out)
    only = x.only.split(",")
    if "failover" in only:
        failover([a[0], a[1], a[3]], out)  # a[2] stays alive for the 3-engine rows after it
    if "failover_restart" in only:
        failover(a[:3], out, restart=True, deadline=x.deadline)
    if "mps_death" in only:
        mps_death(a[:3], out)
    if "flags" in only:
        flags(a, b, out, x.rounds, x.deadline)
    if "affinity" in only:
        affinity(b, out, 2, x.deadline)
    if "affinity_many" in only:
        affinity(b, out, 3, x.deadline, prompts=150, n=2000)
    if "openloop" in only:
        openloop(a[:3], out, x.deadline, 5.0 * max(SCALE, 0.25))


if __name__ == "__main__":
    main()
