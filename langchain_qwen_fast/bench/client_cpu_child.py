"""One measured run of one ``qwen-fast bench client-cpu`` scenario, in a process of its own, run by file path.

Why a script: the plan compares source trees (a checkout before a change and one after it) in one run. The
parent starts this file with ``PYTHONPATH=<tree>`` in front, which wins over the editable install's finder,
and the script refuses to measure (exit code 3) if the package it imported is not under ``--tree-path``. An
older tree may lack the ``bench`` modules, so this file and ``client_cpu_scenarios.py`` (loaded by path from
this file's folder) are self-contained: they import only the package's public names, ``langchain_core``,
``langchain_openai``, ``aiohttp``, ``orjson``, pydantic and the standard library.

One run: build the scenario's client; warm it up with ``--warmup`` requests of the same scenario (imports,
connections, caches and the loop thread then exist); collect garbage; time ``--n`` requests: wall clock,
``time.process_time()`` for the process, and CPU per thread from ``/proc/self/task/<tid>/stat`` (the
calling thread, the package's ``qwen-fast-loop`` thread, the rest). After the clock stops the answers are
checked (count, kind, and output tokens where the server honours ``max_tokens`` with ``ignore_eos``); the
row goes to ``--result`` as JSON, with every request error counted by type. ``--py-spy PATH --profile-out
FILE`` attaches py-spy for the measured run only (not the imports or the warm-up).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

LOOP_THREAD = "qwen-fast-loop"


def _load_sibling(name: str) -> Any:
    """A module from this file's folder, by path: run as a script this file has no package, and the package on
    PYTHONPATH may be another tree's, whose ``bench`` folder (if any) is not this one."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_client_cpu_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from langchain_qwen_fast.bench import client_cpu_scenarios as S
else:
    S = _load_sibling("client_cpu_scenarios")


# -- CPU accounting ------------------------------------------------------------------------------------------
def _ticks(stat_path: str) -> int | None:
    """utime + stime (fields 14 and 15 of a /proc stat file) in clock ticks; None off Linux."""
    try:
        with open(stat_path) as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces; rest[0] is field 3
    return int(rest[11]) + int(rest[12])


def thread_ticks() -> dict[int, int]:
    """Clock ticks of CPU used so far by each live thread of this process, by native thread id."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        t = _ticks(f"/proc/self/task/{tid}/stat")
        if t is not None:
            out[int(tid)] = t
    return out


@dataclass(frozen=True)
class Snapshot:
    wall: float
    cpu: float
    process_ticks: int | None
    threads: dict[int, int]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(time.perf_counter(), time.process_time(), _ticks("/proc/self/stat"), thread_ticks())


def per_thread_us(before: Snapshot, after: Snapshot, n: int) -> dict[str, float | None]:
    """µs per request of the main (calling) thread, the package's loop thread, and all others: the
    process's own tick count minus those two, so threads that ended during the run are counted too."""
    us = 1e6 / os.sysconf("SC_CLK_TCK") / n
    loop = next((t.native_id for t in threading.enumerate() if t.name == LOOP_THREAD), None)
    main = threading.main_thread().native_id

    def delta(tid: int | None) -> int | None:
        if tid is None or tid not in after.threads:
            return None
        return after.threads[tid] - before.threads.get(tid, 0)

    d_main, d_loop = delta(main), delta(loop)
    d_proc = None if after.process_ticks is None or before.process_ticks is None else (
        after.process_ticks - before.process_ticks)
    other = None if d_proc is None else d_proc - (d_main or 0) - (d_loop or 0)
    return {
        "caller_us_per_req": None if d_main is None else round(d_main * us, 2),
        "loop_us_per_req": None if d_loop is None else round(d_loop * us, 2),
        "other_us_per_req": None if other is None else round(other * us, 2),
        "proc_ticks_us_per_req": None if d_proc is None else round(d_proc * us, 2),
    }


# -- profiling: py-spy on this process, for the measured run only ---------------------------------------------
def start_py_spy(a: S.ChildArgs, log: Path) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """Attach py-spy to this process and wait until it samples; (None, why) if it could not attach."""
    assert a.py_spy and a.profile_out
    argv = [a.py_spy, "record", "--pid", str(os.getpid()), "--rate", "250", "--threads", "--function",
            "--format", "raw", "--output", a.profile_out]
    with log.open("wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "Sampling process" in log.read_text(errors="replace"):
            return proc, None
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    return None, f"py-spy did not attach (rc {proc.returncode}): {log.read_text(errors='replace')[-600:]}"


def stop_py_spy(proc: subprocess.Popen[bytes], log: Path) -> str | None:
    """SIGINT makes py-spy write its file and exit; returns an error text, or None."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "py-spy did not exit within 120 s of SIGINT"
    text = log.read_text(errors="replace")
    return None if "Wrote raw" in text else f"py-spy wrote no profile: {text[-600:]}"


# -- the run -------------------------------------------------------------------------------------------------
def check_tree(a: S.ChildArgs) -> tuple[str, str]:
    """The package's file and version; exits with S.WRONG_TREE if it was not imported from ``--tree-path``."""
    import langchain_qwen_fast as pkg

    where = Path(pkg.__file__ or "").resolve()
    root = Path(a.tree_path).resolve()
    if root not in where.parents:
        print(f"client-cpu child: langchain_qwen_fast was imported from {where}, not from the tree {a.tree} "
              f"at {root} (PYTHONPATH={os.environ.get('PYTHONPATH', '')!r})", file=sys.stderr, flush=True)
        raise SystemExit(S.WRONG_TREE)
    return str(where), str(getattr(pkg, "__version__", "?"))


def measure(a: S.ChildArgs) -> dict[str, Any]:
    pkg_file, pkg_version = check_tree(a)
    sc = S.BUILDERS[a.scenario](a)
    warm = sc.run([sc.prompt(q) for q in S.questions(a.warmup, "w")]) if a.warmup else []
    warm_errors = Counter(S.error_name(r) for r in warm if isinstance(r, BaseException))
    del warm
    qs = [sc.prompt(q) for q in S.questions(a.n)]
    gc.collect()  # the warm-up's garbage is not the measured run's
    profiler, profile_error, log = None, None, Path(f"{a.profile_out}.log") if a.profile_out else None
    if a.py_spy and log is not None:
        profiler, profile_error = start_py_spy(a, log)
    before = Snapshot.take()
    results = sc.run(qs)
    after = Snapshot.take()
    if profiler is not None and log is not None:
        profile_error = stop_py_spy(profiler, log)
    errors = Counter(S.error_name(r) for r in results if isinstance(r, BaseException))
    failed, ok, tokens = sum(errors.values()), 0, 0
    for good, t in (sc.check(r) for r in results if not isinstance(r, BaseException)):
        ok, tokens = ok + good, tokens + t
    if len(results) != a.n:
        errors[f"{len(results)} answers for {a.n} requests"] += 1
    wall, cpu = after.wall - before.wall, after.cpu - before.cpu
    expected = a.n * a.max_tokens if a.scenario in S.TOKEN_EXACT else None
    import langchain_core

    return {
        "kind": a.kind, "scenario": a.scenario, "tree": a.tree, "round": a.round, "n": a.n, "warmup": a.warmup,
        "max_tokens": a.max_tokens, "servers": len(a.base_urls),
        "wall_s": round(wall, 4), "req_s": round(a.n / wall, 1) if wall > 0 else None,
        "cpu_us_per_req": round(cpu / a.n * 1e6, 2), **per_thread_us(before, after, a.n),
        "answers": len(results), "answers_ok": ok, "wrong_answers": len(results) - ok - failed,
        "errors": sum(errors.values()), "error_types": dict(errors),
        "warmup_errors": sum(warm_errors.values()), "warmup_error_types": dict(warm_errors),
        "output_tokens": tokens, "tokens_expected": expected,
        "tokens_ok": None if expected is None else tokens == expected,
        "threads_at_end": threading.active_count(),
        "package_file": pkg_file, "package_version": pkg_version, "tree_path": a.tree_path,
        "langchain_core": getattr(langchain_core, "__version__", "?"), "python": platform.python_version(),
        "pid": os.getpid(), "profile": a.profile_out, "profile_error": profile_error,
    }


def parse(argv: list[str]) -> S.ChildArgs:
    ap = argparse.ArgumentParser(description="one client-cpu measurement (started by qwen-fast bench client-cpu)")
    ap.add_argument("--scenario", required=True, choices=S.SCENARIOS)
    ap.add_argument("--base-url", action="append", required=True, help="a server (repeat for several)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--tree", required=True, help="the tree's label")
    ap.add_argument("--tree-path", required=True, help="the package must be imported from under this folder")
    ap.add_argument("--round", type=int, default=0)
    ap.add_argument("--result", required=True, help="file for the JSON row")
    ap.add_argument("--kind", default="measure", choices=("measure", "profile"))
    ap.add_argument("--py-spy", default=None, help="py-spy executable: profile the measured run")
    ap.add_argument("--profile-out", default=None, help="py-spy's raw output file")
    x = ap.parse_args(argv)
    return S.ChildArgs(x.scenario, tuple(x.base_url), x.model, x.n, min(x.warmup, x.n), x.max_tokens, x.tree,
                     x.tree_path, x.round, x.result, x.kind, x.py_spy, x.profile_out)


def main(argv: list[str] | None = None) -> int:
    # Run by path, Python put this file's folder first on sys.path: its sibling modules (cli, run, report) must
    # not shadow anything, and the package must come from PYTHONPATH, so the folder goes.
    here = Path(__file__).resolve().parent
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == here:
        del sys.path[0]
    a = parse(sys.argv[1:] if argv is None else argv)
    row = measure(a)
    Path(a.result).write_text(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
