"""What ``qwen-fast engines`` runs: its checked config, each server's command line, and the plan (which GPU
each server uses, its memory flags, MPS) that ``--dry-run`` prints and the launcher (``cli/engines.py``) starts.

Everything here is decided before anything starts, so bad input and a GPU that is not there fail with exit 2
and nothing to clean up. It reads the machine (nvidia-smi, the MPS pid files, PATH) and starts nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_qwen_fast.cli.gpus import (
    Gpu,
    GpuError,
    Slot,
    default_gpu,
    parse_gpus_option,
    place,
    query_gpus,
    split_memory,
)
from langchain_qwen_fast.cli.gpus import select as select_gpus
from langchain_qwen_fast.cli.mps import CONTROL, MpsPlan, plan_mps

# Flags that trim the API server's per-request CPU work (a 0.6B engine is CPU-bound): no uvicorn access log
# line per HTTP request. --disable-log-stats was measured too (one H200, 3 rounds, docs/scaling.md): with the
# access-log flag it gave 1.09-1.11x on one engine but 1.00-1.03x on three, and it empties vLLM's /metrics
# (no Prometheus counters at all), so it is not a default; pass it after -- for a single engine.
# --performance-mode=throughput (vLLM 0.24's larger batches): without MPS it gave 1.14x at 32 tokens with 64 lists
# in flight per server; with MPS, the two together gave 1.34x (2,177-2,181 req/s) on one H100, and in one server
# session on an H100 (benchmarks/gpu/ceiling.sh, docs/scaling.md) three servers so started served 1941 raw req/s at
# 32 tokens against 1445-1703 for three started the old way, and 1.16x at 128 tokens. One token each (flag=value),
# so a user's own --performance-mode replaces it. --no-default-flags leaves them out.
DEFAULT_SERVE_FLAGS: tuple[str, ...] = ("--disable-uvicorn-access-log", "--performance-mode=throughput")
_OWNED = ("host", "port", "model")  # set by the launcher, refused after --


class LaunchError(ValueError):
    """Bad arguments or a port already taken: reported before any server starts (exit 2)."""


@dataclass(frozen=True)
class LaunchConfig:
    """What ``qwen-fast engines`` was asked for; checked when built, so bad input fails before any start.
    ``servers`` is per GPU; ``gpus`` is ``--gpus`` as given (None: the GPU the environment shows)."""

    servers: int
    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    vllm: str = "vllm"
    extra: tuple[str, ...] = ()
    default_flags: bool = True
    log_dir: Path | None = None
    startup_timeout: float = 600.0
    stop_timeout: float = 20.0
    ready_file: Path | None = None
    keep_going: bool = False
    gpus: str | None = None
    mps: bool = True

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise LaunchError(f"--engines must be >= 1, got {self.servers}")
        if not self.model:
            raise LaunchError("--model must name a model path or id")
        try:
            wanted = None if self.gpus is None else parse_gpus_option(self.gpus)
        except GpuError as e:
            raise LaunchError(str(e)) from e
        check_port_range(self.port, self.servers * (len(wanted) if wanted else 1))
        if not self.startup_timeout > 0:
            raise LaunchError(f"--startup-timeout must be > 0 seconds, got {self.startup_timeout}")
        if self.stop_timeout < 0:
            raise LaunchError(f"--stop-timeout must be >= 0 seconds, got {self.stop_timeout}")
        given = flag_names(self.extra)
        for name in _OWNED:
            if name in given:
                raise LaunchError(f"--{name} after -- is set by the launcher; use qwen-fast engines --{name}")
        if "gpu-memory-utilization" not in given and split_memory(self.servers) < 0.01:
            raise LaunchError(f"{self.servers} servers leave under 1% of the GPU each; "
                              "pass --gpu-memory-utilization after -- if you mean it")

    @property
    def served_model_name(self) -> str:
        """The user's ``--served-model-name`` (its first value), else vLLM's own default: the model as given."""
        return flag_value(self.extra, "served-model-name") or self.model


def check_port_range(first: int, count: int) -> None:
    if first < 1 or first + count - 1 > 65535:
        raise LaunchError(f"ports {first}-{first + count - 1} are outside 1-65535")


def _flag_name(token: str) -> str | None:
    if not token.startswith("--") or len(token) == 2:
        return None
    return token[2:].split("=", 1)[0].replace("_", "-")  # vLLM accepts underscores too


def flag_names(args: Sequence[str]) -> set[str]:
    """Long flags in ``args``, dashes normalised; a boolean's ``--no-x`` also counts as ``x``."""
    names: set[str] = set()
    for token in args:
        name = _flag_name(token)
        if name:
            names.add(name)
            if name.startswith("no-"):
                names.add(name[3:])
    return names


def flag_value(args: Sequence[str], name: str) -> str | None:
    """The value given to ``--name`` (``--name v`` or ``--name=v``), or None."""
    for i, token in enumerate(args):
        if _flag_name(token) != name:
            continue
        if "=" in token:
            return token.split("=", 1)[1]
        if i + 1 < len(args) and not args[i + 1].startswith("-"):
            return args[i + 1]
    return None


def serve_argv(cfg: LaunchConfig, slot: Slot, vllm: str | None = None) -> list[str]:
    """The command for the server in ``slot``: the launcher's flags, minus those the user gave, then theirs."""
    given = flag_names(cfg.extra)
    ours: list[str] = []
    if "gpu-memory-utilization" not in given:
        ours += ["--gpu-memory-utilization", f"{slot.share:.2f}"]
    if "kv-cache-memory-bytes" not in given:
        ours += ["--kv-cache-memory-bytes", str(slot.kv_bytes)]
    if cfg.default_flags:
        ours += [f for f in DEFAULT_SERVE_FLAGS if _flag_name(f) not in given]
    return [vllm or cfg.vllm, "serve", cfg.model, "--host", cfg.host, "--port", str(slot.port), *ours, *cfg.extra]


@dataclass(frozen=True)
class Plan:
    """Where every server goes and what MPS they get, decided before anything starts."""

    slots: list[Slot]
    mps: MpsPlan
    gpus: list[Gpu]  # the GPUs the servers use, where nvidia-smi told

    def server_env(self, slot: Slot, base: Mapping[str, str]) -> dict[str, str]:
        """The variables that matter for the server in ``slot``, beyond what it inherits."""
        return {**slot.env(base), **self.mps.server_env}


def make_plan(cfg: LaunchConfig, env: Mapping[str, str], own_pipe: Path, own_log: Path) -> Plan:
    """Read the GPUs (nvidia-smi: required with ``--gpus``, else used when there), place the servers, decide MPS."""
    if cfg.gpus is not None:
        try:
            used = select_gpus(query_gpus(), parse_gpus_option(cfg.gpus), env)
        except GpuError as e:
            raise LaunchError(str(e)) from e
        slots = place(cfg.servers, cfg.port, used)
    else:
        try:
            found = query_gpus()
        except GpuError:  # none on PATH, or it failed
            found = []  # the servers will say what is wrong with the GPU; MPS and memory go by defaults
        shown = default_gpu(found, env)
        used = [shown] if shown else []
        slots = place(cfg.servers, cfg.port, None, shown)
    check_port_range(cfg.port, len(slots))
    if "kv-cache-memory-bytes" not in flag_names(cfg.extra):
        for s in slots:
            if s.kv_bytes < 2**30 and s.gpu is not None:
                raise LaunchError(f"{cfg.servers} servers leave under 1 GiB of KV cache each on GPU {s.gpu.index} "
                                  f"({s.gpu.memory_mib} MiB): fewer --engines, or --kv-cache-memory-bytes after --")
    mps = plan_mps(enabled=cfg.mps, env=env, gpus=used, per_gpu=cfg.servers, own_pipe=own_pipe, own_log=own_log,
                   control=shutil.which(CONTROL))
    return Plan(slots, mps, used)
