"""What ``qwen-fast engines`` decides before it starts anything: nvidia-smi's GPU list read, ``--gpus`` checked,
servers placed on ports GPU by GPU, each server's memory flags from the servers on its GPU and the GPU's memory,
and the MPS decision from the pid files a live daemon leaves (the default pipe directory here a temporary one).

Covers: cli/gpus.py, cli/mps.py, cli/engines_plan.py.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_qwen_fast._process import ChildProcess
from langchain_qwen_fast.cli.engines_plan import LaunchConfig, LaunchError, make_plan
from langchain_qwen_fast.cli.gpus import (
    FIT_SHARE,
    SERVER_BASE_MIB,
    Gpu,
    GpuError,
    default_gpu,
    kv_cache_bytes,
    parse_gpu_list,
    parse_gpus_option,
    place,
    select,
    split_memory,
)
from langchain_qwen_fast.cli.mps import PID_FILE, plan_mps, running_daemon

GIB = 2**30
H100, H200 = 81559, 143771  # MiB, as nvidia-smi lists them


def test_nvidia_smis_list_becomes_gpus_and_anything_else_is_an_error_naming_the_line() -> None:
    text = "0, 81559, Default\n1, 143771, Exclusive_Process\n\n2, 81559, Prohibited\n"
    assert parse_gpu_list(text) == [Gpu(0, H100, "Default"), Gpu(1, H200, "Exclusive_Process"),
                                    Gpu(2, H100, "Prohibited")]
    with pytest.raises(GpuError, match="nvidia-smi printed '0, \\[N/A\\], Default'"):
        parse_gpu_list("0, [N/A], Default")


@pytest.mark.parametrize(("value", "want"), [("all", None), ("0", (0,)), ("2, 0", (2, 0)), (" all ", None)])
def test_the_gpus_option_is_all_or_distinct_indices(value: str, want: tuple[int, ...] | None) -> None:
    assert parse_gpus_option(value) == want


@pytest.mark.parametrize(("value", "match"), [("0,0", "names a GPU twice"), ("gpu0", "give 'all'"), ("", "give"),
                                              ("-1", "give 'all'"), ("0,,1", "give 'all'")])
def test_a_bad_gpus_option_says_what_to_give(value: str, match: str) -> None:
    with pytest.raises(GpuError, match=match):
        parse_gpus_option(value)


def test_selected_gpus_must_exist_and_not_fight_cuda_visible_devices() -> None:
    found = [Gpu(0, H100), Gpu(1, H100), Gpu(2, H100)]
    assert select(found, (2, 0), {}) == [found[2], found[0]]
    assert select(list(reversed(found)), None, {}) == found
    with pytest.raises(GpuError, match="--gpus names GPU 3, 7, but nvidia-smi lists 0, 1, 2"):
        select(found, (3, 0, 7), {})
    with pytest.raises(GpuError, match="unset CUDA_VISIBLE_DEVICES"):
        select(found, None, {"CUDA_VISIBLE_DEVICES": "0"})
    with pytest.raises(GpuError, match="lists no GPU"):
        select([], None, {})


def test_without_gpus_the_servers_gpu_is_the_first_the_environment_shows_where_it_can_be_told() -> None:
    found = [Gpu(0, H100), Gpu(1, H200)]
    assert default_gpu(found, {}) == found[0]
    assert default_gpu(found, {"CUDA_VISIBLE_DEVICES": "1,0"}) == found[1]
    assert default_gpu(found, {"CUDA_VISIBLE_DEVICES": "GPU-5e0c1d2a"}) is None
    assert default_gpu([], {}) is None


@pytest.mark.parametrize(("servers", "memory", "gib"), [(1, H100, 10), (5, H100, 10), (6, H100, 8), (7, H100, 6),
                                                         (8, H100, 5), (6, H200, 10), (12, H200, 6), (3, None, 10),
                                                         (16, H100, 0)])
def test_the_kv_default_is_ten_gib_or_what_lets_the_servers_fit_the_card(
    servers: int, memory: int | None, gib: int
) -> None:
    assert kv_cache_bytes(servers, memory) == gib * GIB


@pytest.mark.parametrize("memory", [H100, H200, 24000])
def test_servers_sized_to_fit_also_pass_every_start_up_check(memory: int) -> None:
    for n in range(1, 13):
        kv = kv_cache_bytes(n, memory)
        if not kv:
            continue
        hold = kv / 2**20 + SERVER_BASE_MIB
        assert n * hold <= FIT_SHARE * memory
        assert memory - (n - 1) * hold >= split_memory(n) * memory  # the last one's free-memory check


def test_servers_are_placed_gpu_by_gpu_on_consecutive_ports_with_their_gpus_memory() -> None:
    gpus = [Gpu(3, H100), Gpu(1, 24000)]
    slots = place(2, 9000, gpus)
    assert [(s.port, s.gpu.index if s.gpu else None) for s in slots] == [(9000, 3), (9001, 3), (9002, 1), (9003, 1)]
    assert [s.kv_bytes // GIB for s in slots] == [10, 10, 6, 6] and {s.share for s in slots} == {0.45}
    assert slots[2].env({}) == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert slots[2].env({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    unpinned = place(6, 8000, None, Gpu(0, H100))
    assert [s.port for s in unpinned] == list(range(8000, 8006)) and unpinned[0].env({}) == {}
    assert unpinned[0].kv_bytes == 8 * GIB  # the memory of the GPU the environment shows still counts


def test_too_many_servers_for_the_card_are_refused_unless_the_kv_size_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, 81559, Default'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = LaunchConfig(servers=16, model="m", gpus="0")
    with pytest.raises(LaunchError, match="16 servers leave under 1 GiB of KV cache each on GPU 0 \\(81559 MiB\\)"):
        make_plan(cfg, {}, tmp_path / "p", tmp_path / "l")
    given = LaunchConfig(servers=16, model="m", gpus="0", extra=("--kv-cache-memory-bytes", str(GIB // 2)))
    assert len(make_plan(given, {}, tmp_path / "p", tmp_path / "l").slots) == 16


# ------------------------------------------------------------------------------------------- MPS decision
@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A live process of this user named like the control daemon (a copy of ``sleep``), with its pid file in
    ``tmp_path/default``: the pipe directory a CUDA process uses when ``CUDA_MPS_PIPE_DIRECTORY`` is unset."""
    exe = tmp_path / "nvidia-cuda-mps-control"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    pipe = tmp_path / "default"
    pipe.mkdir()
    # ready once it has become the copy: its name is set a moment after the fork returns
    child = ChildProcess([exe, "60"], ready=lambda: Path(f"/proc/{child.pid}/comm").read_text().startswith("nvidia"))
    with child:
        (pipe / PID_FILE).write_text(f"{child.pid}\n")
        yield pipe, child.pid


def decide(tmp_path: Path, default: Path, enabled: bool = True, env: dict[str, str] | None = None,
           gpus: list[Gpu] | None = None, control: str | None = "/usr/bin/nvidia-cuda-mps-control") -> object:
    return plan_mps(enabled=enabled, env=env or {}, gpus=gpus or [Gpu(0, H100)], per_gpu=3,
                    own_pipe=tmp_path / "own", own_log=tmp_path / "log", control=control, default_pipe=default)


def test_a_live_daemon_of_this_user_in_the_default_pipe_directory_is_used(
    tmp_path: Path, daemon: tuple[Path, int]
) -> None:
    pipe, pid = daemon
    assert running_daemon(pipe) == (pid, os.getuid())
    plan = decide(tmp_path, pipe)
    assert plan.mode == "existing" and plan.pid == pid  # type: ignore[attr-defined]
    assert plan.server_env == {"CUDA_MPS_PIPE_DIRECTORY": str(pipe)}  # type: ignore[attr-defined]


def test_no_mps_keeps_the_servers_away_from_a_live_default_daemon(tmp_path: Path, daemon: tuple[Path, int]) -> None:
    pipe, pid = daemon
    plan = decide(tmp_path, pipe, enabled=False)
    assert plan.mode == "off"  # type: ignore[attr-defined]
    assert plan.server_env == {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "own")}  # type: ignore[attr-defined]
    assert f"away from the MPS daemon in {pipe} (pid {pid})" in plan.note  # type: ignore[attr-defined]
    quiet = decide(tmp_path, tmp_path / "none", enabled=False)
    assert quiet.server_env == {} and quiet.note == ""  # type: ignore[attr-defined]


def test_a_stale_pid_file_is_no_daemon(tmp_path: Path) -> None:
    pipe = tmp_path / "stale"
    pipe.mkdir()
    (pipe / PID_FILE).write_text(f"{os.getpid()}\n")  # alive, but not the daemon: the PID was reused
    assert running_daemon(pipe) is None
    (pipe / PID_FILE).write_text("not a pid\n")
    assert running_daemon(pipe) is None
    assert running_daemon(tmp_path / "missing") is None
    assert decide(tmp_path, pipe).mode == "own"  # type: ignore[attr-defined]


def test_a_daemon_that_died_leaves_no_daemon_behind_its_pid_file(tmp_path: Path, daemon: tuple[Path, int]) -> None:
    pipe, pid = daemon
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert running_daemon(pipe) is None


@pytest.mark.parametrize(("mode", "own"), [("Default", True), ("Exclusive_Process", True), ("Prohibited", False),
                                           ("Exclusive_Thread", False)])
def test_mps_runs_in_default_and_exclusive_process_mode_only(tmp_path: Path, mode: str, own: bool) -> None:
    plan = decide(tmp_path, tmp_path / "none", gpus=[Gpu(0, H100), Gpu(1, H100, mode)])
    assert (plan.mode == "own") is own  # type: ignore[attr-defined]
    if own:
        assert plan.server_env == {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path / "own"),  # type: ignore[attr-defined]
                                   "CUDA_MPS_LOG_DIRECTORY": str(tmp_path / "log")}
    else:
        assert f"GPU 1 is in compute mode {mode}" in plan.note and plan.server_env == {}  # type: ignore[attr-defined]


def test_the_own_daemon_sees_every_gpu_so_it_renumbers_none(tmp_path: Path) -> None:
    plan = decide(tmp_path, tmp_path / "none")
    env = plan.daemon_env({"CUDA_VISIBLE_DEVICES": "2", "HOME": "/root"}, pci_order=True)  # type: ignore[attr-defined]
    assert "CUDA_VISIBLE_DEVICES" not in env and env["HOME"] == "/root" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "own")
