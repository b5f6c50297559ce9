"""``qwen-fast engines`` (langchain_qwen_fast/cli/engines.py): argument handling, and process handling with a
fake ``vllm`` on PATH. The launcher runs as a subprocess, as users run it.

The fake (written into tmp_path) parses ``serve MODEL --host H --port P ...``, records its argv, forks a
worker (like vLLM's engine core, in the same process group), writes both PIDs, and serves GET /health
with http.server; on SIGTERM it stops its worker and exits, as vllm serve does. Per port (comma-separated
lists in env vars) it can fail at start (FAKE_VLLM_FAIL), never become healthy (FAKE_VLLM_HANG), die after
a while (FAKE_VLLM_DIE_AFTER=PORT:SECONDS), or ignore SIGTERM, server and worker both
(FAKE_VLLM_IGNORE_TERM; it records each SIGTERM it got).

Covers: cli/engines.py, _process.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _procs import gone, wait_until
from support import free_ports

from langchain_qwen_fast._process import ChildProcess
from langchain_qwen_fast.cli.engines import (
    DEFAULT_KV_CACHE_BYTES,
    DEFAULT_SERVE_FLAGS,
    LaunchConfig,
    LaunchError,
    flag_names,
    main,
    serve_argv,
    split_memory,
)

MODEL = "/models/Qwen3-0.6B/"
FAKE_VLLM = """\
import http.server, json, os, signal, sys, threading, time
args = sys.argv[1:]
assert args[0] == "serve", args
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
rec = os.environ["FAKE_VLLM_DIR"]
def on(var):
    return str(port) in os.environ.get(var, "").split(",")
def put(name, text):
    with open(f"{rec}/{name}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{rec}/{name}.tmp", f"{rec}/{name}")
if on("FAKE_VLLM_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, lambda *a: open(f"{rec}/term-{port}", "a").write(f"{os.getpid()}\\n"))
worker = os.fork()
if worker == 0:
    while True:
        time.sleep(60)
if not on("FAKE_VLLM_IGNORE_TERM"):  # like vllm serve: on SIGTERM, stop the engine core, then exit
    signal.signal(signal.SIGTERM, lambda *a: (os.kill(worker, signal.SIGTERM), os._exit(0)))
put(f"argv-{port}.json", json.dumps(args))
put(f"pids-{port}.json", json.dumps([os.getpid(), worker]))
print(f"fake vllm on port {port}: loading {args[1]}", flush=True)
if on("FAKE_VLLM_FAIL"):
    time.sleep(1.0)
    print(f"fake vllm on port {port}: RuntimeError: Engine core initialization failed", flush=True)
    sys.exit(1)
if on("FAKE_VLLM_HANG"):
    while True:
        time.sleep(60)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer((host, port), Health)
die = os.environ.get("FAKE_VLLM_DIE_AFTER", "")
if die.split(":")[0] == str(port):
    def _die():
        print(f"fake vllm on port {port}: CUDA error: an illegal memory access", flush=True)
        os._exit(3)
    threading.Timer(float(die.split(":")[1]), _die).start()
server.serve_forever()
"""


# -------------------------------------------------------------------------------- argument handling
def cfg(*extra: str, servers: int = 3, **kw: object) -> LaunchConfig:
    return LaunchConfig(servers=servers, model=MODEL, extra=extra, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("servers", "share"), [(1, 0.9), (2, 0.45), (3, 0.3), (4, 0.22), (7, 0.12), (16, 0.05)])
def test_memory_is_split_to_at_most_ninety_percent_rounded_down(servers: int, share: float) -> None:
    assert split_memory(servers) == share
    assert servers * share <= 0.9 + 1e-9
    argv = serve_argv(cfg(servers=servers), 8000)
    assert argv[argv.index("--gpu-memory-utilization") + 1] == f"{share:.2f}"


def test_the_command_has_the_model_host_port_memory_flags_and_served_name() -> None:
    argv = serve_argv(cfg("--max-model-len", "4096"), 8001)
    assert argv[:7] == ["vllm", "serve", MODEL, "--host", "127.0.0.1", "--port", "8001"]
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(DEFAULT_KV_CACHE_BYTES) == "10737418240"
    assert argv[argv.index("--served-model-name") + 1] == "Qwen3-0.6B"  # last component, trailing / ignored
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
    argv = serve_argv(cfg(*extra), 8000)
    assert argv[-len(extra):] == list(extra)  # the user's form is there...
    names = [t[2:].split("=")[0].replace("_", "-").removeprefix("no-") for t in argv if t.startswith("--")]
    assert names.count(replaced[2:]) == 1  # ...and the launcher's is not
    assert len(names) == len(set(names)), argv


def test_the_users_served_model_name_is_the_one_reported() -> None:
    assert cfg("--served-model-name=qwen-small").served_model_name == "qwen-small"
    assert cfg("--served-model-name", "a", "b").served_model_name == "a"
    assert cfg().served_model_name == "Qwen3-0.6B"


def test_no_default_flags_leaves_them_out() -> None:
    argv = serve_argv(cfg(default_flags=False), 8000)
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


def test_dry_run_prints_one_command_per_consecutive_port(capsys: pytest.CaptureFixture[str]) -> None:
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


@dataclass
class Run:
    """One launcher started by ``launch``; ``pids()`` are every fake server's and worker's PIDs."""

    tmp: Path
    base: int
    n: int
    child: ChildProcess
    ready_file: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def ports(self) -> list[int]:
        return list(range(self.base, self.base + self.n))

    def pids(self) -> list[int]:
        return [p for f in sorted((self.tmp / "rec").glob("pids-*.json")) for p in json.loads(f.read_text())]

    def argv(self, port: int) -> list[str]:
        return list(json.loads((self.tmp / "rec" / f"argv-{port}.json").read_text()))

    def finish(self, timeout: float = 30.0) -> int:
        assert self.child.wait(timeout), f"launcher still running:\n{self.child.output_tail()}"
        assert self.child.returncode is not None
        return self.child.returncode


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """``launch(n, *args, base=None, wait_ready=True, **fake_env)``: the launcher on n consecutive ports
    from ``base`` (default: free ones) with the fake vllm; ``wait_ready`` waits for its ready file."""
    bin_dir, rec = tmp_path / "bin", tmp_path / "rec"
    bin_dir.mkdir()
    rec.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(f"#!{sys.executable} -IS\n{FAKE_VLLM}")
    fake.chmod(0o755)
    runs: list[Run] = []

    def start(n: int, *args: str, base: int | None = None, wait_ready: bool = True, **fake_env: str) -> Run:
        base, ready_file = base or free_ports(n), tmp_path / "ready.json"
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               "FAKE_VLLM_DIR": str(rec), **fake_env}
        argv = [sys.executable, "-m", "langchain_qwen_fast.cli.engines", "--engines", str(n), "--model", MODEL,
                "--port", str(base), "--log-dir", str(tmp_path / "logs"), "--ready-file", str(ready_file),
                "--stop-timeout", "2", *args]
        child = ChildProcess(argv, env=env, ready=ready_file.exists if wait_ready else None, startup_timeout=60,
                             name="qwen-fast engines")
        run = Run(tmp_path, base, n, child, ready_file)
        runs.append(run)
        child.start()
        return run

    yield start
    for run in runs:  # also when the test failed: nothing may outlive it
        run.child.kill()
        for pid in run.pids():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_all_servers_start_and_are_reported_ready(launch: Callable[..., Run]) -> None:
    run = launch(3, "--", "--max-model-len", "4096")
    urls = [f"http://127.0.0.1:{p}/v1" for p in run.ports]
    assert json.loads(run.ready_file.read_text()) == urls
    assert all(healthy(p) for p in run.ports)
    for port in run.ports:
        argv = run.argv(port)
        assert argv[:6] == ["serve", MODEL, "--host", "127.0.0.1", "--port", str(port)]
        assert argv[argv.index("--served-model-name") + 1] == "Qwen3-0.6B"
        assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.30"
        assert argv[-2:] == ["--max-model-len", "4096"]
    out = run.child.output().splitlines()
    pids = run.pids()
    for port, pid in zip(run.ports, pids[::2], strict=True):
        assert f"http://127.0.0.1:{port}/v1  pid {pid}  log {run.tmp / 'logs' / f'server-{port}.log'}" in out
    assert "QWEN_BASE_URL=" + ",".join(urls) in out
    assert f'llm = BatchedChatQwen(model="Qwen3-0.6B", base_url={json.dumps(urls)})' in "\n".join(out)
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
    bin_dir, rec = tmp_path / "bin", tmp_path / "rec"
    bin_dir.mkdir()
    rec.mkdir()
    (bin_dir / "vllm").write_text(f"#!{sys.executable} -IS\n{FAKE_VLLM}")
    (bin_dir / "vllm").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_VLLM_DIR": str(rec)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "langchain_qwen_fast.cli.engines", "--engines", "2", "--model", MODEL,
         "--port", str(free_ports(2)), "--stop-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=60)
        pids = [p for f in rec.glob("pids-*.json") for p in json.loads(f.read_text())]
        assert proc.returncode != 0 and "BrokenPipeError" in err
        assert len(pids) == 4 and all(gone(p) for p in pids)
    finally:
        proc.kill()
        for f in rec.glob("pids-*.json"):
            for p in json.loads(f.read_text()):
                if not gone(p):
                    os.kill(p, signal.SIGKILL)
