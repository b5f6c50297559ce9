"""The client-cpu plan: the client's CPU per request, scenario by scenario, before and after a change, in one run.

    qwen-fast bench client-cpu [--tree LABEL=PATH ...] [--scenarios a,b] [--rounds 3] [--n 20000]
        [--openai-n 2000] [--max-tokens 16] [--servers 1] [--profile] [--out DIR]

Why: a change that cuts the client's CPU cost has to prove the cut on the same machine in the same run,
because these numbers move with the machine's load by more than a small change moves them. Against a
zero-latency simulator (its own process, answering at once) the client's CPU is all that a request costs
the client, so µs of CPU per request is the figure, with raw aiohttp ``/v1/completions`` lists (32 prompts,
16 lists in flight per server) as the floor.

How: ``--tree LABEL=PATH`` names checkouts of this repository (``git worktree add /tmp/base HEAD~5``; the
default is this package's own source root, labelled ``now``). Every measurement is a fresh child process,
``python bench/client_cpu_child.py ...`` (scenarios in ``client_cpu_scenarios.py``) with ``PYTHONPATH=PATH``
in front, that imports that tree's package (it checks, and refuses otherwise), warms the scenario up, then
measures ``--n`` requests: process CPU, and per-thread CPU for the calling thread and the package's
``qwen-fast-loop`` thread. Rounds run the (tree, scenario) pairs in alternating order; ratios are per round,
to the round's raw lists and to the first tree (the "before"). ``--profile`` adds one child per pair with
py-spy attached for its measured run, summarised per thread into ``profile-<tree>-<scenario>.md``.

Writes a new ``client-cpu-YYYYmmdd-HHMMSS`` folder under ``--out``: ``client_cpu.jsonl`` (one row per
child), ``tables.md`` (also printed) and the profiles.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import langchain_qwen_fast
from langchain_qwen_fast.bench import client_cpu_scenarios as scenarios
from langchain_qwen_fast.bench.client_cpu_tables import problems, tables
from langchain_qwen_fast.bench.profile_summary import summarize

DEFAULT_OUT = "qwen-fast-bench"
#: run by path in every child (the parent tree's copy, whatever tree the child imports)
CHILD_SCRIPT = Path(__file__).resolve().with_name("client_cpu_child.py")
#: this package's source root: the folder that holds ``langchain_qwen_fast/``
OWN_TREE = Path(langchain_qwen_fast.__file__).resolve().parents[1]
_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Tree:
    """A checkout to measure: its label (in rows, tables and file names) and the folder put on PYTHONPATH."""

    label: str
    path: Path


@dataclass(frozen=True)
class PlanConfig:
    """Everything one run needs, from the command line."""

    trees: tuple[Tree, ...]
    scenarios: tuple[str, ...]
    rounds: int = 3
    n: int = 20000
    openai_n: int = 2000
    max_tokens: int = 16
    warmup: int = 500
    servers: int = 1
    profile: bool = False
    child_timeout: float = 1200.0
    #: the served model name: the simulator's (``SimConfig.model_name``), filled in by ``main``
    model: str = "Qwen/Qwen3-0.6B"

    def n_for(self, scenario: str) -> int:
        return self.openai_n if scenario == "openai_batch" else self.n


def parse_tree(spec: str) -> Tree:
    """``LABEL=PATH``, PATH a folder holding ``langchain_qwen_fast/__init__.py``; ValueError says what is wrong."""
    label, sep, path = spec.partition("=")
    if not sep or not _LABEL.match(label):
        raise ValueError(f"--tree {spec!r}: expected LABEL=PATH with a label of letters, digits, '_', '.', '-'")
    root = Path(path).expanduser().resolve()
    if not (root / "langchain_qwen_fast" / "__init__.py").is_file():
        raise ValueError(f"--tree {spec!r}: {root} holds no langchain_qwen_fast/__init__.py (a checkout's root?)")
    return Tree(label, root)


def plan(cfg: PlanConfig, rnd: int) -> list[tuple[str, Tree]]:
    """One round's (scenario, tree) pairs: every scenario under every tree, the trees side by side, except raw
    lists, which does not use the package and runs once (under the first tree). Odd rounds run in reverse, so
    no pair always follows the same one."""
    steps = [(s, t) for s in cfg.scenarios for t in (cfg.trees[:1] if s == "raw_lists" else cfg.trees)]
    return steps[::-1] if rnd % 2 else steps


def find_py_spy() -> str | None:
    """py-spy on PATH or beside this interpreter (a venv's bin/ that is not on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def run_child(cfg: PlanConfig, urls: list[str], scenario: str, tree: Tree, rnd: int, *, kind: str = "measure",
              py_spy: str | None = None, profile_out: Path | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh process; its row, or a row that says how the child failed."""
    n = cfg.n_for(scenario)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(tree.path), os.environ.get("PYTHONPATH"))
                                                      if p)}
    with tempfile.TemporaryDirectory(prefix="client-cpu-") as tmp:
        result = Path(tmp) / "row.json"
        argv = [sys.executable, str(CHILD_SCRIPT), "--scenario", scenario, "--model", cfg.model, "--n", str(n),
                "--warmup", str(cfg.warmup), "--max-tokens", str(cfg.max_tokens), "--tree", tree.label,
                "--tree-path", str(tree.path), "--round", str(rnd), "--result", str(result), "--kind", kind]
        for u in urls:
            argv += ["--base-url", u]
        if py_spy and profile_out:
            argv += ["--py-spy", py_spy, "--profile-out", str(profile_out)]
        try:
            p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=cfg.child_timeout, check=False)
            rc, output = p.returncode, p.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, output = -9, (e.stdout or b"").decode(errors="replace") + f"\n(killed after {cfg.child_timeout} s)"
        if rc == scenarios.WRONG_TREE:
            raise SystemExit(f"client-cpu: the child for tree {tree.label!r} did not import the package from "
                             f"{tree.path}:\n{output[-2000:]}")
        if rc == 0 and result.is_file():
            row: dict[str, Any] = json.loads(result.read_text())
            return row
    return {"kind": kind, "scenario": scenario, "tree": tree.label, "round": rnd, "n": n,
            "max_tokens": cfg.max_tokens, "servers": len(urls), "cpu_us_per_req": None, "errors": 1,
            "error_types": {f"child exited with {rc}": 1}, "child_output_tail": output[-4000:],
            "tree_path": str(tree.path)}


def progress_line(row: dict[str, Any]) -> str:
    def f(key: str, fmt: str = "{:8.1f}") -> str:
        v = row.get(key)
        return fmt.format(v) if isinstance(v, (int, float)) else f"{'-':>8}"

    return (f"round {row['round']} {row['tree']:>8} {row['scenario']:18s} {f('cpu_us_per_req')} µs/req "
            f"(caller {f('caller_us_per_req')}, loop {f('loop_us_per_req')}, other {f('other_us_per_req')})  "
            f"{f('req_s', '{:9.0f}')} req/s  problems {problems(row)}")


def profile_pass(cfg: PlanConfig, urls: list[str], folder: Path) -> list[dict[str, Any]]:
    """One py-spy child per (scenario, tree); each summary goes to ``profile-<tree>-<scenario>.md``, the collapsed
    stacks it was made from to ``profile-<tree>-<scenario>.txt.gz``."""
    py_spy = find_py_spy()
    rows = []
    for scenario, tree in plan(cfg, 0):
        raw = folder / f"profile-{tree.label}-{scenario}.txt"
        md = folder / f"profile-{tree.label}-{scenario}.md"
        title = f"py-spy profile: {scenario}, tree {tree.label}, n={cfg.n_for(scenario)}"
        if py_spy is None:
            md.write_text(f"# {title}\n\npy-spy was not found (pip install 'py-spy>=0.4'); no profile.\n")
            continue
        row = run_child(cfg, urls, scenario, tree, 0, kind="profile", py_spy=py_spy, profile_out=raw)
        rows.append(row)
        note = (f"_py-spy 250 Hz on the measured run only (warm-up and imports excluded), idle samples left out; "
                f"the run took {row.get('wall_s')} s at {row.get('cpu_us_per_req')} µs/req under the profiler._\n\n")
        if row.get("profile_error") or not raw.is_file():
            why = row.get("profile_error") or row.get("child_output_tail") or "no profile file"
            md.write_text(f"# {title}\n\nNo profile: {why}\n")
        else:
            text = summarize(raw.read_text(errors="replace"), title=title)
            md.write_text(text.replace("\n\n", "\n\n" + note, 1))
            _gzip(raw)  # collapsed stacks run to megabytes (ChatOpenAI's: 3 MB) and shrink about tenfold
        print(f"profile {tree.label} {scenario}: {md}", flush=True)
    return rows


def _gzip(path: Path) -> None:
    """``path`` becomes ``path.gz`` (what ``gzip -9`` makes)."""
    with path.open("rb") as src, gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qwen-fast bench client-cpu", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--tree", action="append", default=argparse.SUPPRESS, metavar="LABEL=PATH",
                    help=f"a checkout to measure (repeat; the first is the 'before'); default: now={OWN_TREE}")
    ap.add_argument("--scenarios", default=",".join(scenarios.SCENARIOS), help="comma-separated subset, in this order")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (odd rounds in reverse order)")
    ap.add_argument("--n", type=int, default=20000, help="measured requests per child")
    ap.add_argument("--openai-n", type=int, default=2000, help="measured requests for openai_batch (~3 ms each)")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (ignore_eos)")
    ap.add_argument("--warmup", type=int, default=500, help="requests of the same scenario before measuring")
    ap.add_argument("--servers", type=int, default=1, help="zero-latency simulators, one process each")
    ap.add_argument("--profile", action="store_true",
                    help="also one py-spy child per (tree, scenario), summarised per thread")
    ap.add_argument("--child-timeout", type=float, default=1200.0, help="seconds before a child is killed")
    ap.add_argument("--out", default=DEFAULT_OUT,
                    help="results folder; each run writes a new client-cpu-YYYYmmdd-HHMMSS folder in it")
    return ap


def config_from_args(ap: argparse.ArgumentParser, a: argparse.Namespace) -> PlanConfig:
    try:
        trees = tuple(parse_tree(s) for s in getattr(a, "tree", [])) or (Tree("now", OWN_TREE),)
    except ValueError as e:
        ap.error(str(e))
    if len({t.label for t in trees}) != len(trees):
        ap.error("--tree labels must differ")
    picked = tuple(s.strip() for s in a.scenarios.split(",") if s.strip())
    unknown = [s for s in picked if s not in scenarios.SCENARIOS]
    if unknown or not picked:
        ap.error(f"unknown scenarios {unknown}; choose from {', '.join(scenarios.SCENARIOS)}")
    if min(a.rounds, a.n, a.openai_n, a.servers, a.max_tokens) < 1 or a.warmup < 0:
        ap.error("--rounds, --n, --openai-n, --servers and --max-tokens must be at least 1, --warmup at least 0")
    return PlanConfig(trees, picked, a.rounds, a.n, a.openai_n, a.max_tokens, a.warmup, a.servers, a.profile,
                      a.child_timeout)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    cfg = config_from_args(ap, a)
    from langchain_qwen_fast.testing import SimConfig, SimServer

    cfg = dataclasses.replace(cfg, model=SimConfig(latency="zero").model_name)
    folder = Path(a.out) / f"client-cpu-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "client_cpu.jsonl"
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(SimServer(SimConfig(latency="zero", seed=i))) for i in range(cfg.servers)]
        urls = [s.base_url for s in servers]
        print(f"client-cpu: {len(urls)} simulator(s) at {', '.join(urls)}; trees "
              + ", ".join(f"{t.label}={t.path}" for t in cfg.trees), flush=True)
        for rnd in range(cfg.rounds):
            for scenario, tree in plan(cfg, rnd):
                row = run_child(cfg, urls, scenario, tree, rnd)
                rows.append(row)
                with path.open("a") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                print(progress_line(row), flush=True)
        if cfg.profile:
            for row in profile_pass(cfg, urls, folder):
                rows.append(row)
                with path.open("a") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    md = tables(rows, [t.label for t in cfg.trees])
    (folder / "tables.md").write_text(md)
    print()
    print(md)
    print(f"results in {folder}")
    return 1 if any(r.get("child_output_tail") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
