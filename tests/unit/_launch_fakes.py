"""Fakes for ``qwen-fast engines`` tests (test_launch.py, test_launch_gpus.py): ``vllm``, ``nvidia-smi`` and
``nvidia-cuda-mps-control`` as small Python scripts written into a folder that is the launcher's whole PATH, so
no real NVIDIA tool on the machine is ever run, and the launcher started as a subprocess, as users run it.

Everything the fakes do is recorded as files in ``rec/``:

- fake vllm: ``serve MODEL --host H --port P ...``; records its argv, its CUDA variables and whether it reached an
  MPS daemon (it connects to ``$CUDA_MPS_PIPE_DIRECTORY/control`` as a CUDA client would, and runs without MPS
  when nothing answers there; connected, it exits with a CUDA error when the daemon dies, as a PyTorch client
  under MPS did on an H100 when its daemon was killed), forks a worker (like vLLM's engine core) and serves
  GET /health. Per port (comma-separated lists in env vars) it can fail at start (FAKE_VLLM_FAIL), never become healthy
  (FAKE_VLLM_HANG), die after a while (FAKE_VLLM_DIE_AFTER=PORT:SECONDS), or ignore SIGTERM (FAKE_VLLM_IGNORE_TERM).
- fake nvidia-smi: answers only the launcher's query, with FAKE_GPUS (``index, MiB, mode`` lines joined by ``;``),
  or fails (FAKE_SMI_FAIL).
- fake nvidia-cuda-mps-control: ``-f`` is the daemon (a pid file and a ``control`` Unix socket in its pipe
  directory, its log on stdout as the real one's in the foreground; it records its start with its variables, each
  client, ``quit`` and SIGTERM in ``rec/mps.log``);
  without arguments it is the control client, sending stdin to the daemon. FAKE_MPS_FAIL makes ``-f`` exit 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _procs import gone

from langchain_qwen_fast._process import ChildProcess

MODEL = "/models/Qwen3-0.6B/"
CUDA_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")

FAKE_VLLM = """\
import http.server, json, os, signal, socket, sys, threading, time
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
def mps():  # what a CUDA client does at its first call: reach the daemon, or run without MPS
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(f"{pipe}/control")
        s.sendall(f"client {port} {os.getpid()}\\n".encode())
    except OSError:
        return None
    def context():  # as on an H100: the daemon's death takes its MPS server and this context with it
        while s.recv(64):
            pass
        print(f"fake vllm on port {port}: CUDA error: the MPS server went away", flush=True)
        os.kill(worker, signal.SIGKILL)  # the engine core's context is gone too
        os._exit(3)
    threading.Thread(target=context, daemon=True).start()
    return pipe
if on("FAKE_VLLM_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, lambda *a: open(f"{rec}/term-{port}", "a").write(f"{os.getpid()}\\n"))
worker = os.fork()
if worker == 0:
    while True:
        time.sleep(60)
if not on("FAKE_VLLM_IGNORE_TERM"):  # like vllm serve: on SIGTERM, stop the engine core, then exit
    signal.signal(signal.SIGTERM, lambda *a: (os.kill(worker, signal.SIGTERM), os._exit(0)))
put(f"argv-{port}.json", json.dumps(args))
env = {k: os.environ.get(k) for k in @CUDA_VARS@}
put(f"env-{port}.json", json.dumps({**env, "mps": mps()}))
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
""".replace("@CUDA_VARS@", repr(CUDA_VARS))

FAKE_SMI = """\
import os, sys
if sys.argv[1:] != ["--query-gpu=index,memory.total,compute_mode", "--format=csv,noheader,nounits"]:
    sys.exit(f"fake nvidia-smi: unexpected arguments {sys.argv[1:]}")
if os.environ.get("FAKE_SMI_FAIL"):
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    sys.exit(9)
print(os.environ.get("FAKE_GPUS", "0, 81559, Default").replace(";", "\\n"))
"""

FAKE_MPS = """\
import json, os, signal, socket, sys, threading
pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
rec = os.environ.get("FAKE_MPS_DIR") or os.environ["FAKE_VLLM_DIR"]
def note(line):
    with open(f"{rec}/mps.log", "a") as f:
        f.write(line + "\\n")
if sys.argv[1:] == ["-f"]:
    if os.environ.get("FAKE_MPS_FAIL"):
        print("An instance of this daemon is already running")
        sys.exit(1)
    log = os.environ.get("CUDA_MPS_LOG_DIRECTORY", "/var/log/nvidia-mps")
    os.makedirs(log, exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{pipe}/control")
    s.listen(64)
    def bye(what):
        note(f"{what} {os.getpid()}")
        os.unlink(f"{pipe}/nvidia-cuda-mps-control.pid")  # the real daemon removes its pid file, not its socket
        os._exit(0)
    signal.signal(signal.SIGTERM, lambda *a: bye("term"))
    print(f"Starting control daemon using socket {pipe}/control", flush=True)  # -f logs to stdout
    env = {k: os.environ.get(k) for k in @CUDA_VARS@}
    note(f"start {os.getpid()} {json.dumps(env)}")
    with open(f"{pipe}/nvidia-cuda-mps-control.pid", "w") as f:
        f.write(f"{os.getpid()}\\n")
    def serve(c):  # a client holds its connection while it runs; a command comes and goes
        for line in c.makefile():
            if line.startswith("client "):
                note(line.strip())
            elif line.strip() == "quit":
                bye("quit")
        c.close()
    while True:
        threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
elif not sys.argv[1:]:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(f"{pipe}/control")
            s.sendall(sys.stdin.read().encode())
    except OSError:
        sys.exit("Cannot find MPS control daemon process")
else:
    sys.exit(f"fake nvidia-cuda-mps-control: unexpected arguments {sys.argv[1:]}")
""".replace("@CUDA_VARS@", repr(CUDA_VARS))


def write_fake(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable} -IS\n{body}")
    path.chmod(0o755)
    return path


def install_fakes(bin_dir: Path, mps: bool = True) -> None:
    """The three fakes in ``bin_dir`` (without the MPS control binary when ``mps`` is False)."""
    bin_dir.mkdir(exist_ok=True)
    write_fake(bin_dir / "vllm", FAKE_VLLM)
    write_fake(bin_dir / "nvidia-smi", FAKE_SMI)
    if mps:
        write_fake(bin_dir / "nvidia-cuda-mps-control", FAKE_MPS)


@dataclass
class Run:
    """One launcher started by ``Launches.start``: its fakes' records and what it printed."""

    tmp: Path
    base: int
    n: int
    child: ChildProcess
    ready_file: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def rec(self) -> Path:
        return self.tmp / "rec"

    @property
    def ports(self) -> list[int]:
        return list(range(self.base, self.base + self.n))

    def pids(self) -> list[int]:
        return [p for f in sorted(self.rec.glob("pids-*.json")) for p in json.loads(f.read_text())]

    def argv(self, port: int) -> list[str]:
        return list(json.loads((self.rec / f"argv-{port}.json").read_text()))

    def env(self, port: int) -> dict[str, str | None]:
        """A fake server's CUDA variables, and ``mps``: the pipe directory whose daemon it reached, or None."""
        return dict(json.loads((self.rec / f"env-{port}.json").read_text()))

    def mps_log(self) -> list[str]:
        path = self.rec / "mps.log"
        return path.read_text().splitlines() if path.exists() else []

    def daemon_pids(self) -> list[int]:
        return [int(line.split()[1]) for line in self.mps_log() if line.startswith("start ")]

    def finish(self, timeout: float = 30.0) -> int:
        assert self.child.wait(timeout), f"launcher still running:\n{self.child.output_tail()}"
        assert self.child.returncode is not None
        return self.child.returncode


class Launches:
    """Starts launchers on the fakes in ``tmp/bin`` (their whole PATH) and kills whatever they leave behind."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.bin, self.rec = tmp, tmp / "bin", tmp / "rec"
        install_fakes(self.bin)
        self.rec.mkdir()
        self.runs: list[Run] = []

    def env(self, **fake_env: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "FAKE_"))}
        return {**base, "PATH": str(self.bin), "FAKE_VLLM_DIR": str(self.rec), **fake_env}

    def start(self, n: int, *args: str, base: int, per_gpu: int | None = None, wait_ready: bool = True,
              **fake_env: str) -> Run:
        """``qwen-fast engines`` with ``args``, ``n`` servers in all (``--engines``: ``per_gpu``, default ``n``)
        from port ``base``; ``wait_ready`` waits for its ready file."""
        ready_file = self.tmp / "ready.json"
        argv = [sys.executable, "-m", "langchain_qwen_fast.cli.engines", "--engines", str(per_gpu or n),
                "--model", MODEL,
                "--port", str(base), "--log-dir", str(self.tmp / "logs"), "--ready-file", str(ready_file),
                "--stop-timeout", "2", *args]
        child = ChildProcess(argv, env=self.env(**fake_env), ready=ready_file.exists if wait_ready else None,
                             startup_timeout=60, name="qwen-fast engines")
        run = Run(self.tmp, base, n, child, ready_file)
        self.runs.append(run)
        child.start()
        return run

    def recorded_pids(self) -> list[int]:
        """Every fake server's, worker's and MPS daemon's PID that the fakes recorded."""
        pids = [p for f in sorted(self.rec.glob("pids-*.json")) for p in json.loads(f.read_text())]
        log = self.rec / "mps.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return pids + [int(line.split()[1]) for line in lines if line.startswith("start ")]

    def cleanup(self) -> None:
        """Also when the test failed: nothing may outlive it. A launcher still running is stopped as a user
        would (SIGTERM, so it removes its MPS pipe directory); what a killed one left is removed here."""
        for run in self.runs:
            run.child.stop(timeout=10)
        for pid in self.recorded_pids():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        log = self.rec / "mps.log"
        for line in log.read_text().splitlines() if log.exists() else []:
            if line.startswith("start "):
                pipe = json.loads(line.split(" ", 2)[2])["CUDA_MPS_PIPE_DIRECTORY"]
                if pipe and Path(pipe).name.startswith("qwen-fast-mps-"):
                    shutil.rmtree(pipe, ignore_errors=True)
