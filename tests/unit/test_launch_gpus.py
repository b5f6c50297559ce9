"""``qwen-fast engines`` with GPUs and CUDA MPS, as users run it: the launcher as a subprocess whose whole PATH is
the fakes of ``_launch_fakes.py`` (vllm, nvidia-smi, nvidia-cuda-mps-control; each records what it was asked and
its environment). The MPS daemon of its own, the daemon already running, every case where MPS cannot start,
``--no-mps``, ``--dry-run``, and placement with ``--gpus``.

Covers: cli/engines.py, cli/engines_plan.py, cli/mps.py, cli/gpus.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _launch_fakes import Launches, Run
from _procs import gone, wait_until
from support import free_ports

from langchain_qwen_fast._process import ChildProcess

TWO_GPUS = "0, 81559, Default;1, 24000, Default"  # 24000 MiB: two servers of 10 GiB do not fit, of 6 GiB do
THREE_GPUS = "0, 81559, Default;1, 81559, Default;2, 81559, Default"


@pytest.fixture
def launches(tmp_path: Path) -> Iterator[Launches]:
    runs = Launches(tmp_path)
    yield runs
    runs.cleanup()


@pytest.fixture
def launch(launches: Launches) -> Callable[..., Run]:
    def start(n: int, *args: str, **kw: object) -> Run:
        return launches.start(n, *args, base=free_ports(n), **kw)  # type: ignore[arg-type]

    return start


def mps_lines(run: Run) -> list[str]:
    return [line for line in run.child.output().splitlines() if "MPS" in line]


def test_an_mps_daemon_of_its_own_serves_every_server_and_stops_after_them(launch: Callable[..., Run]) -> None:
    run = launch(2)
    daemon, pipe = run.daemon_pids(), None
    assert len(daemon) == 1 and not gone(daemon[0])
    for port in run.ports:
        env = run.env(port)
        pipe = env["CUDA_MPS_PIPE_DIRECTORY"]
        assert pipe and pipe != "/tmp/nvidia-mps" and len(pipe) < 60  # its own, short: a Unix socket's path
        assert env["mps"] == pipe and env["CUDA_MPS_LOG_DIRECTORY"] == str(run.tmp / "logs" / "mps")
    start = json.loads(run.mps_log()[0].split(" ", 2)[2])
    assert start["CUDA_VISIBLE_DEVICES"] is None  # the daemon sees every GPU and renumbers none
    assert start["CUDA_MPS_PIPE_DIRECTORY"] == pipe
    assert sorted(line.split()[1] for line in run.mps_log() if line.startswith("client")) == list(map(str, run.ports))
    assert [f"MPS: control daemon pid {daemon[0]} serves the servers" in line for line in mps_lines(run)] == [True]
    assert "Starting control daemon" in (run.tmp / "logs" / "mps" / "control.log").read_text()

    run.child.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    assert run.mps_log()[-1] == f"quit {daemon[0]}"  # stopped through its pipe, after every server was gone
    assert gone(daemon[0]) and all(gone(p) for p in run.pids())
    assert pipe is not None and not Path(pipe).exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_mps_daemon_does_not_outlive_a_sigkilled_launcher(launch: Callable[..., Run]) -> None:
    run = launch(2)
    pids, daemon = run.pids(), run.daemon_pids()
    run.child.kill()  # no handler, no finally: only the parent-death signal is left, for the daemon too
    assert wait_until(lambda: all(gone(p) for p in pids + daemon), 10.0)
    assert f"term {daemon[0]}" in run.mps_log()


def test_no_mps_starts_no_daemon_and_leaves_the_servers_environment_alone(launch: Callable[..., Run]) -> None:
    run = launch(2, "--no-mps")
    assert run.daemon_pids() == [] and mps_lines(run) == []
    for port in run.ports:
        assert run.env(port) == dict.fromkeys(("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_MPS_PIPE_DIRECTORY",
                                               "CUDA_MPS_LOG_DIRECTORY", "mps"))


def another_users_daemon(pipe: Path, folder: Path) -> subprocess.Popen[bytes]:
    """A live process of another user (nobody) whose /proc comm is the control daemon's (a copy of ``sleep``
    called nvidia-cuda-mps-control, in ``folder``, which nobody may enter), named by the pid file in ``pipe``."""
    folder.chmod(0o755)
    exe = folder / "nvidia-cuda-mps-control"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc = subprocess.Popen([exe, "60"], user=65534, start_new_session=True)
    pipe.mkdir()
    (pipe / "nvidia-cuda-mps-control.pid").write_text(f"{proc.pid}\n")
    return proc


@pytest.mark.parametrize("case", ["no control binary", "prohibited", "exclusive thread", "daemon fails",
                                  "another user's daemon"])
def test_where_mps_cannot_start_one_line_says_why_and_the_servers_start_without_it(
    launches: Launches, case: str, tmp_path: Path
) -> None:
    env: dict[str, str] = {}
    other = None
    if case == "no control binary":
        (launches.bin / "nvidia-cuda-mps-control").unlink()
        want = "MPS not started: no nvidia-cuda-mps-control on PATH"
    elif case == "prohibited":
        env["FAKE_GPUS"] = "0, 81559, Prohibited"
        want = "MPS not started: GPU 0 is in compute mode Prohibited (no CUDA context may be created"
    elif case == "exclusive thread":
        env["FAKE_GPUS"] = "0, 81559, Exclusive_Thread"
        want = "MPS not started: GPU 0 is in compute mode Exclusive_Thread (MPS does not support it)"
    elif case == "daemon fails":
        env["FAKE_MPS_FAIL"] = "1"
        want = "MPS not started: CUDA_MPS_PIPE_DIRECTORY="
    else:
        if os.getuid() != 0:
            pytest.skip("starting a process as another user needs root")
        pipe = tmp_path / "their-pipe"
        folder = Path(tempfile.mkdtemp())
        other = another_users_daemon(pipe, folder)
        env["CUDA_MPS_PIPE_DIRECTORY"] = str(pipe)
        want = f"MPS not started: the control daemon in {pipe} (pid {other.pid}) is nobody's"
    try:
        base = free_ports(2)
        run = launches.start(2, base=base, **env)
        lines = mps_lines(run)
        assert len(lines) == 1 and want in lines[0], lines
        assert "the servers start without" in lines[0] or "servers start without MPS" in lines[0]
        assert run.daemon_pids() == []
        for port in run.ports:
            seen = run.env(port)
            assert seen["mps"] is None  # each server runs, without MPS
            if case == "another user's daemon":  # kept away from that daemon by an empty pipe directory
                assert seen["CUDA_MPS_PIPE_DIRECTORY"] not in (None, env["CUDA_MPS_PIPE_DIRECTORY"])
        run.child.send_signal(signal.SIGTERM)
        assert run.finish() == 0
    finally:
        if other is not None:
            other.kill()
            other.wait()
            shutil.rmtree(folder)


def test_a_daemon_the_user_already_runs_is_used_and_left_running(launches: Launches, tmp_path: Path) -> None:
    pipe = tmp_path / "mine"
    pipe.mkdir()
    daemon_env = {**launches.env(), "CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(tmp_path)}
    theirs = ChildProcess([launches.bin / "nvidia-cuda-mps-control", "-f"], env=daemon_env,
                          ready=(pipe / "nvidia-cuda-mps-control.pid").exists, name="the user's daemon")
    with theirs:
        run = launches.start(2, base=free_ports(2), CUDA_MPS_PIPE_DIRECTORY=str(pipe))
        lines = mps_lines(run)
        assert lines == [f"qwen-fast engines: MPS: using the control daemon already running in {pipe} "
                         f"(pid {theirs.pid}); it is left running"]
        assert all(run.env(p)["CUDA_MPS_PIPE_DIRECTORY"] == run.env(p)["mps"] == str(pipe) for p in run.ports)
        run.child.send_signal(signal.SIGTERM)
        assert run.finish() == 0
        assert theirs.alive() and not any(line.startswith("quit") for line in run.mps_log())
    assert not theirs.alive()


@pytest.mark.parametrize("keep_going", [False, True], ids=["default", "keep-going"])
def test_the_mps_daemon_dying_is_reported_once_and_takes_the_servers_down_with_it(
    launch: Callable[..., Run], keep_going: bool
) -> None:
    run = launch(2, *(["--keep-going"] if keep_going else []))
    daemon, pids = run.daemon_pids()[0], run.pids()
    os.kill(daemon, signal.SIGKILL)
    assert run.finish() == 1  # every server's CUDA context went with the daemon: none is left to serve
    out = run.child.output()
    assert out.count(f"the MPS control daemon (pid {daemon}) exited with code -9: its MPS server went with it") == 1
    assert out.count("CUDA error: the MPS server went away") >= 1  # a server's log tail says why it exited
    assert ("no server left" in out) is keep_going
    assert all(gone(p) for p in pids)


def test_dry_run_shows_the_mps_daemon_then_each_pinned_server_and_starts_nothing(launches: Launches) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "langchain_qwen_fast.cli.engines", "--engines", "2", "--gpus", "2,0", "--model",
         "Qwen/Qwen3-0.6B", "--port", "9100", "--log-dir", str(launches.tmp / "logs"), "--dry-run",
         "--", "--performance-mode", "throughput", "--max-num-seqs", "2048"],
        env=launches.env(FAKE_GPUS=THREE_GPUS), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    daemon = f"{launches.tmp / 'logs' / 'mps'} {launches.bin / 'nvidia-cuda-mps-control'} -f"
    assert lines[0].startswith("CUDA_MPS_PIPE_DIRECTORY=") and lines[0].endswith(f"CUDA_MPS_LOG_DIRECTORY={daemon}")
    pipe = lines[0].split()[0]
    assert len(lines) == 5
    for line, port, gpu in zip(lines[1:], range(9100, 9104), ["2", "2", "0", "0"], strict=True):
        assert line.startswith(f"CUDA_VISIBLE_DEVICES={gpu} CUDA_DEVICE_ORDER=PCI_BUS_ID {pipe} ")
        assert f" vllm serve Qwen/Qwen3-0.6B --host 127.0.0.1 --port {port} --gpu-memory-utilization 0.45 " in line
        assert line.endswith("--disable-uvicorn-access-log --performance-mode throughput --max-num-seqs 2048")
        assert "--served-model-name" not in line
    assert "MPS: a control daemon of its own" in out.stderr
    assert not (launches.tmp / "logs").exists() and list(launches.rec.iterdir()) == []


def test_gpus_all_pins_n_servers_to_each_gpu_with_memory_from_that_gpu(launch: Callable[..., Run]) -> None:
    run = launch(4, "--gpus", "all", per_gpu=2, FAKE_GPUS=TWO_GPUS)
    gpus = {run.base: "0", run.base + 1: "0", run.base + 2: "1", run.base + 3: "1"}
    kv = {"0": str(10 * 2**30), "1": str(6 * 2**30)}  # 0.95 x 24000 / 2 - 4306 MiB = 7094 MiB: 6 GiB
    for port, gpu in gpus.items():
        env, argv = run.env(port), run.argv(port)
        assert env["CUDA_VISIBLE_DEVICES"] == gpu and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env["mps"] is not None  # one daemon for both GPUs
        assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.45"  # two servers share each GPU
        assert argv[argv.index("--kv-cache-memory-bytes") + 1] == kv[gpu]
    urls = [f"http://127.0.0.1:{p}/v1" for p in gpus]
    out = run.child.output().splitlines()
    pids = run.pids()[::2]
    for (port, gpu), pid in zip(gpus.items(), pids, strict=True):
        assert f"http://127.0.0.1:{port}/v1  gpu {gpu}  pid {pid}  log {run.tmp / 'logs' / f'server-{port}.log'}" in out
    assert "QWEN_BASE_URL=" + ",".join(urls) in out and json.loads(run.ready_file.read_text()) == urls
    assert "starting 4 vLLM server(s) on GPU 0,1" in run.child.output()
    assert len(run.daemon_pids()) == 1


def test_gpus_given_by_index_are_used_in_that_order(launch: Callable[..., Run]) -> None:
    run = launch(2, "--gpus", "2,0", per_gpu=1, FAKE_GPUS=THREE_GPUS)
    assert [run.env(p)["CUDA_VISIBLE_DEVICES"] for p in run.ports] == ["2", "0"]
    head = (run.tmp / "logs" / f"server-{run.base}.log").read_text().splitlines()[0]
    assert head.startswith("$ CUDA_VISIBLE_DEVICES=2 CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_MPS_PIPE_DIRECTORY=")


@pytest.mark.parametrize(
    ("gpus", "env", "want"),
    [
        ("5", {}, "--gpus names GPU 5, but nvidia-smi lists 0, 1, 2"),
        ("0,0", {}, "names a GPU twice"),
        ("first", {}, "give 'all' or GPU indices"),
        ("all", {"CUDA_VISIBLE_DEVICES": "1"}, "--gpus and CUDA_VISIBLE_DEVICES=1 both choose GPUs"),
        ("all", {"FAKE_SMI_FAIL": "1"}, "exited with code 9: NVIDIA-SMI has failed"),
    ],
)
def test_a_bad_gpus_value_is_refused_before_anything_starts(
    launches: Launches, gpus: str, env: dict[str, str], want: str
) -> None:
    run = launches.start(2, "--gpus", gpus, base=free_ports(2), wait_ready=False, FAKE_GPUS=THREE_GPUS, **env)
    assert run.finish() == 2
    assert want in run.child.output()
    assert list(launches.rec.iterdir()) == []  # no server and no daemon was started


def test_without_mps_an_exclusive_process_gpu_is_named_with_its_one_server_limit(launch: Callable[..., Run]) -> None:
    run = launch(2, "--no-mps", FAKE_GPUS="0, 81559, Exclusive_Process")
    assert ("qwen-fast engines: --no-mps; GPU 0 is in compute mode Exclusive_Process (one CUDA process per GPU): "
            "without MPS only one of the 2 servers on each can start") in run.child.output().splitlines()
    assert run.daemon_pids() == []
