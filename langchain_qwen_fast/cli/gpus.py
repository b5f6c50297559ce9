"""GPUs and memory for ``qwen-fast engines``: which GPUs, which server goes where, how much memory each asks for.

The GPU list comes from ``nvidia-smi --query-gpu=index,memory.total,compute_mode --format=csv,noheader,nounits``
(one ``0, 81559, Default`` line per GPU): the tool every NVIDIA driver ships, so the launcher needs no Python
binding to the driver, and its indices are the ones people read and type. ``--gpus`` names nvidia-smi indices;
a pinned server gets ``CUDA_VISIBLE_DEVICES=<index>`` and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, because CUDA's own
order (fastest first) need not be nvidia-smi's (PCI bus) order. Indices, not UUIDs: vLLM reads
``CUDA_VISIBLE_DEVICES`` entries as integers (a UUID fails its start-up, vllm#13815, #20939).

Memory, per server, from the servers that share its GPU (N of them):

- ``--gpu-memory-utilization`` U = floor(100 * 0.9 / N) / 100. With ``--kv-cache-memory-bytes`` given, vLLM uses U
  only in a start-up check (free memory >= U x total; vllm/v1/worker/utils.py, 0.24 and 0.32). The N shares add up
  to at most 90% of the card, so the last server to start still passes while the others hold their memory.
- ``--kv-cache-memory-bytes`` B = 10 GiB, or less where N servers of 10 GiB do not fit the card: a server holds
  B + 4306 MiB (weights 1.1 GiB, CUDA graphs 0.5 GiB, activations and context; 14546 MiB with B = 10 GiB, one
  H200, vLLM 0.24), and N of them must fit 95% of the card, so B = min(10 GiB, whole GiB of
  0.95 x total / N - 4306 MiB). On an 80 GB H100 (81559 MiB) that keeps 10 GiB up to five servers and gives
  8 GiB to six (6 x 12498 = 74988 MiB; the last start-up check then sees about 19 GB free against its 0.15 x
  total = 12 GB). Fitting the card passes every start-up check: N - 1 servers hold at most (N - 1) / N of 95%,
  leaving 0.05 + 0.95 / N of the card free, more than U = 0.9 / N.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

GPU_SHARE = 0.9  # the part of a card its N servers' start-up checks may ask for together
DEFAULT_KV_CACHE_BYTES = 10 * 2**30  # 10737418240 per server, the measured default
SERVER_BASE_MIB = 14546 - 10240  # what a Qwen3-0.6B server holds besides its KV cache (one H200, vLLM 0.24)
FIT_SHARE = 0.95  # the part of a card its servers may hold together when the KV default is sized to fit
QUERY = ("--query-gpu=index,memory.total,compute_mode", "--format=csv,noheader,nounits")


class GpuError(ValueError):
    """The GPU list could not be read or does not have what was asked for (reported before anything starts)."""


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi lists it."""

    index: int
    memory_mib: int
    compute_mode: str = "Default"


@dataclass(frozen=True)
class Slot:
    """Where one server runs and what memory it asks for. ``pinned``: ``--gpus`` chose ``gpu``; otherwise the server
    runs on the GPU the environment shows, ``gpu`` when nvidia-smi told which one that is (else None)."""

    port: int
    gpu: Gpu | None
    share: float  # --gpu-memory-utilization
    kv_bytes: int  # --kv-cache-memory-bytes
    pinned: bool = False

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The variables that pin it: ``CUDA_VISIBLE_DEVICES`` (and the PCI order, unless ``base`` sets one)."""
        if not self.pinned or self.gpu is None:
            return {}
        return {"CUDA_VISIBLE_DEVICES": str(self.gpu.index),
                "CUDA_DEVICE_ORDER": base.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}


def parse_gpus_option(value: str) -> tuple[int, ...] | None:
    """``--gpus``: ``all`` (None: every GPU nvidia-smi lists) or distinct indices such as ``0,2``."""
    if value.strip() == "all":
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(p.isdigit() for p in parts):
        raise GpuError(f"--gpus {value!r}: give 'all' or GPU indices as nvidia-smi lists them, such as 0,2")
    indices = tuple(int(p) for p in parts)
    if len(set(indices)) != len(indices):
        raise GpuError(f"--gpus {value!r} names a GPU twice; --engines N already puts N servers on each")
    return indices


def parse_gpu_list(text: str) -> list[Gpu]:
    """nvidia-smi's CSV (``index, memory.total, compute_mode`` per line, no header, no units) -> GPUs."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            raise GpuError(f"nvidia-smi printed {line.strip()!r}, not 'index, memory.total, compute_mode'")
        gpus.append(Gpu(int(fields[0]), int(fields[1]), fields[2]))
    return gpus


def query_gpus(nvidia_smi: str = "nvidia-smi", timeout: float = 30.0) -> list[Gpu]:
    """Every GPU of this machine, from nvidia-smi; ``GpuError`` naming what went wrong."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        raise GpuError(f"no {nvidia_smi} on PATH to list the GPUs (it comes with the NVIDIA driver)")
    try:
        out = subprocess.run([exe, *QUERY], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise GpuError(f"{exe} {' '.join(QUERY)} failed: {e}") from e
    if out.returncode != 0:
        last = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or [""]
        raise GpuError(f"{exe} {' '.join(QUERY)} exited with code {out.returncode}: {last[0]}")
    return parse_gpu_list(out.stdout)


def select(found: Sequence[Gpu], wanted: tuple[int, ...] | None, env: Mapping[str, str]) -> list[Gpu]:
    """The GPUs ``--gpus`` names (None: all of them), in the order given; ``GpuError`` for one that is not there."""
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        raise GpuError(f"--gpus and CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} both choose GPUs: "
                       "unset CUDA_VISIBLE_DEVICES (--gpus takes nvidia-smi's indices) or leave out --gpus")
    if not found:
        raise GpuError("nvidia-smi lists no GPU")
    by_index = {g.index: g for g in found}
    if wanted is None:
        return sorted(found, key=lambda g: g.index)
    missing = [i for i in wanted if i not in by_index]
    if missing:
        raise GpuError(f"--gpus names GPU {', '.join(map(str, missing))}, but nvidia-smi lists "
                       f"{', '.join(str(g.index) for g in sorted(found, key=lambda g: g.index))}")
    return [by_index[i] for i in wanted]


def default_gpu(found: Sequence[Gpu], env: Mapping[str, str]) -> Gpu | None:
    """Without ``--gpus`` the servers share the first GPU the environment shows: that one, where it can be told
    (``CUDA_VISIBLE_DEVICES`` unset, or starting with an index); None otherwise."""
    first = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    if not first.isdigit():
        return None
    return next((g for g in found if g.index == int(first)), None)


def split_memory(servers: int) -> float:
    """Each server's ``--gpu-memory-utilization``: GPU_SHARE / N, rounded down to 2 decimals."""
    return math.floor(round(100 * GPU_SHARE / servers, 6)) / 100


def kv_cache_bytes(servers: int, memory_mib: int | None) -> int:
    """Each server's ``--kv-cache-memory-bytes`` when N share a card of ``memory_mib`` (None: not known): the
    default, or the whole GiB that lets N servers fit FIT_SHARE of the card (0 when not even 1 GiB does)."""
    if memory_mib is None:
        return DEFAULT_KV_CACHE_BYTES
    fit_mib = FIT_SHARE * memory_mib / servers - SERVER_BASE_MIB
    return min(DEFAULT_KV_CACHE_BYTES, max(0, math.floor(fit_mib / 1024)) * 2**30)


def place(per_gpu: int, first_port: int, gpus: Sequence[Gpu] | None, default: Gpu | None = None) -> list[Slot]:
    """``per_gpu`` servers pinned to each of ``gpus`` (None: one group on the GPU the environment shows, which is
    ``default`` where known), on consecutive ports from ``first_port``, GPU by GPU."""
    groups: Sequence[Gpu | None] = gpus if gpus is not None else [default]
    slots = []
    for k, gpu in enumerate(groups):
        kv = kv_cache_bytes(per_gpu, gpu.memory_mib if gpu is not None else None)
        slots += [Slot(first_port + k * per_gpu + i, gpu, split_memory(per_gpu), kv, pinned=gpus is not None)
                  for i in range(per_gpu)]
    return slots
