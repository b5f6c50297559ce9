"""``qwen-fast engines`` (langchain_qwen_fast/cli/engines.py): argument handling, and process handling with a
fake ``vllm`` (and fake NVIDIA tools: one 80 GB GPU, an MPS control binary) as the launcher's whole PATH; the
launcher runs as a subprocess, as users run it. The fakes are described in ``_launch_fakes.py``; GPUs and MPS
have their own tests in test_launch_gpus.py.

Covers: cli/engines.py, cli/engines_plan.py, _process.py.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _launch_fakes import MODEL, Launches, Run
from _procs import gone, wait_until
from support import free_ports

from langchain_qwen_fast.cli.engines import main
from langchain_qwen_fast.cli.engines_plan import DEFAULT_SERVE_FLAGS, LaunchConfig, LaunchError, flag_names, serve_argv
from langchain_qwen_fast.cli.gpus import DEFAULT_KV_CACHE_BYTES, Slot, split_memory


# -------------------------------------------------------------------------------- argument handling
def cfg(*extra: str, servers: int = 3, **kw: object) -> LaunchConfig:
    return LaunchConfig(servers=servers, model=MODEL, extra=extra, **kw)  # type: ignore[arg-type]


def slot(port: int = 8000, servers: int = 3) -> Slot:
    return Slot(port, None, split_memory(servers), DEFAULT_KV_CACHE_BYTES)


@pytest.mark.parametrize(("servers", "share"), [(1, 0.9), (2, 0.45), (3, 0.3), (4, 0.22), (7, 0.12), (16, 0.05)])
def test_memory_is_split_to_at_most_ninety_percent_rounded_down(servers: int, share: float) -> None:
    assert split_memory(servers) == share
    assert servers * share <= 0.9 + 1e-9
    argv = serve_argv(cfg(servers=servers), slot(servers=servers))
    assert argv[argv.index("--gpu-memory-utilization") + 1] == f"{share:.2f}"


def test_the_command_has_the_model_host_port_and_memory_flags_and_no_served_name_of_its_own() -> None:
    argv = serve_argv(cfg("--max-model-len", "4096"), slot(8001))
    assert argv[:7] == ["vllm", "serve", MODEL, "--host", "127.0.0.1", "--port", "8001"]
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(DEFAULT_KV_CACHE_BYTES) == "10737418240"
    assert "--served-model-name" not in argv  # vLLM then serves the model argument as given
    assert all(f in argv for f in DEFAULT_SERVE_FLAGS)
    assert argv[-2:] == ["--max-model-len", "4096"]  # the user's args last, untouched


@pytest.mark.parametrize(
    ("extra", "replaced"),
    [
        (("--gpu-memory-utilization", "0.2"), "--gpu-memory-utilization"),
        (("--gpu_memory_utilization=0.2",), "--gpu-memory-utilization"),
        (("--kv-cache-memory-bytes=4294967296",), "--kv-cache-memory-bytes"),
        (("--served-model-name", "qwen", "qwen-alias"), "--served-model-name"),
        (("--no-disable-log-stats",), "--disable-log-stats"),
        (("--disable_uvicorn_access_log",), "--disable-uvicorn-access-log"),
    ],
)
def test_a_flag_given_after_the_separator_wins_and_is_never_passed_twice(
    extra: tuple[str, ...], replaced: str
) -> None:
    argv = serve_argv(cfg(*extra), slot())
    assert argv[-len(extra):] == list(extra)  # the user's form is there...
    names = [t[2:].split("=")[0].replace("_", "-").removeprefix("no-") for t in argv if t.startswith("--")]
    assert names.count(replaced[2:]) == 1  # ...and the launcher's is not
    assert len(names) == len(set(names)), argv


def test_the_served_name_is_vllms_own_the_model_as_given_unless_the_user_names_one() -> None:
    assert cfg("--served-model-name=qwen-small").served_model_name == "qwen-small"
    assert cfg("--served-model-name", "a", "b").served_model_name == "a"
    assert cfg().served_model_name == MODEL  # trailing slash and all, as `vllm serve MODEL` serves it
    assert LaunchConfig(servers=1, model="Qwen/Qwen3-0.6B").served_model_name == "Qwen/Qwen3-0.6B"


def test_no_default_flags_leaves_them_out() -> None:
    argv = serve_argv(cfg(default_flags=False), slot())
    assert not set(DEFAULT_SERVE_FLAGS) & set(argv)
    assert "--kv-cache-memory-bytes" in argv  # the memory flags are not "default flags"


@pytest.mark.parametrize("flag", ["--port", "--host=0.0.0.0", "--model"])
def test_flags_the_launcher_owns_are_refused_after_the_separator(flag: str) -> None:
    with pytest.raises(LaunchError, match=f"{flag.split('=')[0]} after -- is set by the launcher"):
        cfg(flag, "x")


def test_bad_values_are_refused_with_the_reason() -> None:
    with pytest.raises(LaunchError, match="--engines must be >= 1"):
        cfg(servers=0)
    with pytest.raises(LaunchError, match="outside 1-65535"):
        cfg(port=65534)
    with pytest.raises(LaunchError, match="under 1% of the GPU"):
        cfg(servers=100)
    assert "gpu-memory-utilization" in flag_names(["--gpu_memory_utilization=0.01"])
    cfg("--gpu-memory-utilization", "0.009", servers=100)  # the user's own split is theirs to choose


def test_main_reports_bad_arguments_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--engines", "2", "--model", MODEL, "--", "--port", "9000"]) == 2
    assert "--port after -- is set by the launcher" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--engines", "2", "--model", MODEL, "--max-model-len", "4096"])
    assert exit_info.value.code == 2
    assert "flags for vllm serve go after --" in capsys.readouterr().err


def test_dry_run_prints_one_command_per_consecutive_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no NVIDIA tools: no GPU list, no MPS daemon
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert main(["--engines", "2", "--model", MODEL, "--port", "9100", "--dry-run", "--", "--enforce-eager"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "--port 9100 " in lines[0] and "--port 9101 " in lines[1]
    assert all(line.endswith("--enforce-eager") for line in lines)


def test_a_missing_vllm_executable_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--engines", "1", "--model", MODEL, "--vllm", str(tmp_path / "no-vllm")]) == 2
    assert "no executable" in capsys.readouterr().err


# --------------------------------------------------------------------------------- process handling
def healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """``launch(n, *args, base=None, wait_ready=True, **fake_env)``: the launcher on n consecutive ports
    from ``base`` (default: free ones) with the fakes; ``wait_ready`` waits for its ready file."""
    launches = Launches(tmp_path)

    def start(n: int, *args: str, base: int | None = None, **kw: object) -> Run:
        return launches.start(n, *args, base=base or free_ports(n), **kw)  # type: ignore[arg-type]

    yield start
    launches.cleanup()


def test_all_servers_start_and_are_reported_ready(launch: Callable[..., Run]) -> None:
    run = launch(3, "--", "--max-model-len", "4096")
    urls = [f"http://127.0.0.1:{p}/v1" for p in run.ports]
    assert json.loads(run.ready_file.read_text()) == urls
    assert all(healthy(p) for p in run.ports)
    for port in run.ports:
        argv = run.argv(port)
        assert argv[:6] == ["serve", MODEL, "--host", "127.0.0.1", "--port", str(port)]
        assert "--served-model-name" not in argv
        assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.30"
        assert argv[-2:] == ["--max-model-len", "4096"]
    out = run.child.output().splitlines()
    pids = run.pids()
    for port, pid in zip(run.ports, pids[::2], strict=True):
        assert f"http://127.0.0.1:{port}/v1  pid {pid}  log {run.tmp / 'logs' / f'server-{port}.log'}" in out
    assert "QWEN_BASE_URL=" + ",".join(urls) in out
    assert f'llm = BatchedChatQwen(model="{MODEL}", base_url={json.dumps(urls)})' in "\n".join(out)
    assert "loading " + MODEL in (run.tmp / "logs" / f"server-{run.base}.log").read_text()

    run.child.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    assert all(gone(p) for p in pids)  # servers and their workers, by PID
    assert not run.ready_file.exists()  # it means "these are up now"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_server_and_kills_one_ignoring_sigterm(launch: Callable[..., Run], sig: int) -> None:
    base = free_ports(2)
    run = launch(2, base=base, FAKE_VLLM_IGNORE_TERM=str(base + 1))
    pids = run.pids()
    assert len(pids) == 4 and not any(gone(p) for p in pids)
    t0 = time.monotonic()
    run.child.send_signal(sig)
    assert run.finish() == 0
    assert time.monotonic() - t0 >= 2.0  # --stop-timeout 2 passed before the SIGKILL
    assert all(gone(p) for p in pids)
    assert (run.tmp / "rec" / f"term-{base + 1}").exists()  # it was asked first, and ignored it


def test_a_second_signal_kills_at_once(launch: Callable[..., Run]) -> None:
    base = free_ports(1)
    run = launch(1, "--stop-timeout", "60", base=base, FAKE_VLLM_IGNORE_TERM=str(base))
    pids = run.pids()
    run.child.send_signal(signal.SIGINT)
    assert wait_until(lambda: (run.tmp / "rec" / f"term-{base}").exists(), 20.0)  # asked, ignored
    run.child.send_signal(signal.SIGINT)  # Ctrl-C again: no 60 s wait
    assert run.finish(timeout=20) == 0
    assert all(gone(p) for p in pids)


def test_a_server_failing_at_start_stops_the_others(launch: Callable[..., Run]) -> None:
    base = free_ports(3)
    run = launch(3, base=base, wait_ready=False, FAKE_VLLM_FAIL=str(base + 1))
    assert run.finish() == 1
    out = run.child.output()
    assert f"server on port {base + 1}" in out and "exited with code 1 during start-up" in out
    assert "RuntimeError: Engine core initialization failed" in out  # its log tail
    assert len(run.pids()) == 6 and all(gone(p) for p in run.pids())
    assert not run.ready_file.exists()


def test_a_server_not_healthy_in_time_stops_all(launch: Callable[..., Run]) -> None:
    base = free_ports(2)
    run = launch(2, "--startup-timeout", "3", base=base, wait_ready=False, FAKE_VLLM_HANG=str(base))
    assert run.finish() == 1
    out = run.child.output()
    assert f"server on port {base} " in out and "/health within 3 s" in out and "loading" in out
    assert len(run.pids()) == 4 and all(gone(p) for p in run.pids())


def test_a_server_dying_later_stops_all(launch: Callable[..., Run]) -> None:
    base = free_ports(3)
    run = launch(3, base=base, FAKE_VLLM_DIE_AFTER=f"{base + 2}:1.0")
    pids = run.pids()
    assert run.finish() == 1
    out = run.child.output()
    assert f"server http://127.0.0.1:{base + 2}/v1" in out and "exited with code 3" in out
    assert "CUDA error: an illegal memory access" in out
    assert all(gone(p) for p in pids)  # the dead server's orphaned worker too
    assert not run.ready_file.exists()


def test_keep_going_serves_on_with_the_others_when_one_dies(launch: Callable[..., Run]) -> None:
    base = free_ports(2)
    run = launch(2, "--keep-going", base=base, FAKE_VLLM_DIE_AFTER=f"{base}:0.5")
    pids = run.pids()
    assert wait_until(lambda: "--keep-going: 1 server(s) still serving" in run.child.output(), 20.0)
    assert run.child.returncode is None and healthy(base + 1) and not healthy(base)
    run.child.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    assert all(gone(p) for p in pids)


def test_a_port_already_taken_is_refused_before_anything_starts(launch: Callable[..., Run]) -> None:
    base = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        run = launch(3, base=base, wait_ready=False)
        assert run.finish() == 2
    assert f"port {base + 1} on 127.0.0.1 is already in use" in run.child.output()
    assert run.pids() == []  # no server was started


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_servers_do_not_outlive_a_sigkilled_launcher(launch: Callable[..., Run]) -> None:
    run = launch(2)
    pids = run.pids()
    run.child.kill()  # no handler, no finally, no atexit: only the parent-death signal (SIGTERM) is left
    assert wait_until(lambda: all(gone(p) for p in pids), 10.0)


def test_an_error_in_the_launcher_itself_still_stops_every_server(tmp_path: Path) -> None:
    # stdout is a pipe whose reader is gone (as in `qwen-fast engines ... | head -0`): printing the
    # ready lines raises BrokenPipeError inside the launcher.
    launches = Launches(tmp_path)
    env, rec = launches.env(), launches.rec
    proc = subprocess.Popen(
        [sys.executable, "-m", "langchain_qwen_fast.cli.engines", "--engines", "2", "--model", MODEL,
         "--port", str(free_ports(2)), "--stop-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=60)
        pids = [p for f in rec.glob("pids-*.json") for p in json.loads(f.read_text())]
        daemons = [int(line.split()[1]) for line in (rec / "mps.log").read_text().splitlines() if "start" in line]
        assert proc.returncode != 0 and "BrokenPipeError" in err
        assert len(pids) == 4 and all(gone(p) for p in pids)
        assert len(daemons) == 1 and gone(daemons[0])  # the MPS daemon too
    finally:
        proc.kill()
        launches.cleanup()
