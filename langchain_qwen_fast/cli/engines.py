"""``qwen-fast engines``: start N ``vllm serve`` processes on each GPU, wait for all, stop all.

Why: a 0.6B model's vLLM engine is limited by its CPU-side loop, not by the GPU. Three servers on one
H200 (vLLM 0.24), routed by the client (``BatchedChatQwen(base_url=[...])``), gave 1.7-2x one server
at 32 tokens and 1.2-1.5x at 128; vLLM refuses ``--data-parallel-size`` above the GPU count, and
``--api-server-count`` gave no reliable gain. A thin wrapper around vLLM's own CLI, not a server::

    qwen-fast engines --engines 3 --model /models/Qwen3-0.6B -- --max-model-len 4096
    qwen-fast engines --gpus all --engines 3 --model /models/Qwen3-0.6B     # 3 on every GPU

Each server runs ``vllm serve MODEL --host H --port P --gpu-memory-utilization U --kv-cache-memory-bytes B
[DEFAULT_SERVE_FLAGS: --disable-uvicorn-access-log] <args after -->`` on one of consecutive ports, in its own
process group, with its output in ``--log-dir``/server-PORT.log (the command and its variables first).

Decisions:

- GPUs: ``--engines N`` is per GPU. Without ``--gpus`` all N share the GPU the environment shows; with it,
  each is pinned (``CUDA_VISIBLE_DEVICES``), GPU by GPU on consecutive ports. U and B come from the servers on
  the same GPU and its memory (cli/gpus.py: U = floor(100 x 0.9 / N) / 100, B = 10 GiB or what fits).
- MPS: one CUDA MPS control daemon of its own for all servers, unless ``--no-mps`` or one cannot run (one line
  says why); a daemon of the user's already running is used and left running (cli/mps.py).
- Flags after ``--`` win: the launcher adds none of its own that the user gave (``--flag v``,
  ``--flag=v``, underscores, or a boolean's ``--no-flag``), so none is passed twice. ``--host``,
  ``--port`` and ``--model`` after ``--`` are refused. Flags inside a vLLM ``--config`` file are not seen.
- The served name is vLLM's own rule: the model argument as given (what BatchedChatQwen, the doctor and
  the worker default to for Qwen/Qwen3-0.6B), unless ``--served-model-name`` comes after ``--``.
- Start-up: all at once (after the MPS daemon); each must answer GET /health with 200 within
  ``--startup-timeout``. If one exits or times out, all are stopped and its log tail is printed.
- Stopping: SIGINT/SIGTERM stop every server (SIGTERM to each process group, SIGKILL after
  ``--stop-timeout``), then the MPS daemon, exit 0; a second signal kills at once. Leftovers are killed at
  interpreter exit, and with PR_SET_PDEATHSIG (Linux) a SIGKILLed launcher still leaves each server and
  the daemon a SIGTERM (on which vllm serve stops its own engine core).
- Exit codes: 0 stopped by a signal; 1 a server failed (at start, or later without ``--keep-going``);
  2 bad arguments, a port already taken, no vllm executable or a GPU that is not there, all found before
  anything starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from langchain_qwen_fast._process import ChildProcess, ChildStartError, http_ok, stop_all
from langchain_qwen_fast.cli.engines_plan import (
    DEFAULT_SERVE_FLAGS,
    LaunchConfig,
    LaunchError,
    Plan,
    make_plan,
    serve_argv,
)
from langchain_qwen_fast.cli.gpus import Slot
from langchain_qwen_fast.cli.mps import MpsDaemon, MpsWatch

_SHOWN = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")

def _url_host(host: str) -> str:
    """Where to reach a server bound to ``host`` from this machine (wildcards become loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def check_ports_free(host: str, ports: Sequence[int]) -> None:
    """Bind each port as the server will (SO_REUSEADDR, like uvicorn); LaunchError naming the first taken."""
    for port in ports:
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise LaunchError(f"--host {host!r} does not resolve: {e}") from e
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
            except OSError as e:
                raise LaunchError(f"port {port} on {host} is already in use ({e.strerror}); the {len(ports)} "
                                  f"servers need ports {ports[0]}-{ports[-1]}: stop what holds it or pick "
                                  "another --port") from e


def _say(msg: str) -> None:
    print(f"qwen-fast engines: {msg}", file=sys.stderr, flush=True)


def _command(env: Mapping[str, str], argv: Sequence[str]) -> str:
    """``VAR=value ... argv`` for the variables that matter, as the log and ``--dry-run`` show it."""
    return shlex.join([f"{k}={env[k]}" for k in _SHOWN if k in env] + list(argv))


class _Server:
    """One planned ``vllm serve``: its URL, command, variables, log and process."""

    def __init__(self, cfg: LaunchConfig, slot: Slot, vllm: str, log_dir: Path, shown: Mapping[str, str]) -> None:
        self.port, self.gpu = slot.port, slot.gpu if slot.pinned else None
        self.root_url = f"http://{_url_host(cfg.host)}:{slot.port}"
        self.base_url = self.root_url + "/v1"
        self.argv = serve_argv(cfg, slot, vllm)
        self.command = _command(shown, self.argv)
        self.log_path = log_dir / f"server-{slot.port}.log"
        env = {**os.environ, **shown}
        env.setdefault("PYTHONUNBUFFERED", "1")  # vLLM logs to stdout: unbuffered, the tail is current
        self.child = ChildProcess(self.argv, ready=lambda: http_ok(self.root_url + "/health"), env=env,
                                  log_path=self.log_path, name=f"server on port {slot.port}", die_with_parent=True)

    def line(self) -> str:
        gpu = "" if self.gpu is None else f"gpu {self.gpu.index}  "
        return f"{self.base_url}  {gpu}pid {self.child.pid}  log {self.log_path}"

    def tail(self) -> str:
        return "\n".join("    " + x for x in self.child.output_tail(30).splitlines()) or "    (no output)"


def _short_tmp() -> str:
    """Where the MPS pipe directory goes: its control socket's path must fit a Unix socket (107 bytes)."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 48 else "/tmp"


class Launcher:
    """Runs the servers of one ``LaunchConfig`` from start to stop; ``run()`` returns the exit code."""

    def __init__(self, cfg: LaunchConfig) -> None:
        self.cfg = cfg
        self.servers: list[_Server] = []
        self.signals = 0
        self._wrote_ready = False
        self._own_pipe: Path | None = None
        self._daemon: MpsDaemon | None = None
        self._watch: MpsWatch | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag (the loops below look at it every 0.25 s); a second signal kills at once. No
        # printing or reaping here: this may run in the middle of either in the main thread.
        self.signals += 1
        if self.signals > 1:
            for s in self.servers:
                s.child.send_signal(signal.SIGKILL)

    def run(self) -> int:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            children = [s.child for s in self.servers]
            if live := sum(c.alive() for c in children):  # each alive() may scan /proc: once per child
                _say(f"stopping {live} server(s)")
            stop_all(children, self.cfg.stop_timeout)
            if self._daemon is not None:  # after the servers: it waits for its clients to go
                self._daemon.stop(self.cfg.stop_timeout)
            if self._own_pipe is not None:
                shutil.rmtree(self._own_pipe, ignore_errors=True)
            if self._wrote_ready and self.cfg.ready_file is not None:
                self.cfg.ready_file.unlink(missing_ok=True)  # the file means "these are up now"
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        cfg = self.cfg
        if cfg.ready_file is not None:
            try:
                cfg.ready_file.unlink(missing_ok=True)  # a waiting script must not read an old list
            except OSError as e:
                raise LaunchError(f"--ready-file {cfg.ready_file}: {e.strerror}") from e
        vllm = shutil.which(cfg.vllm)
        if vllm is None:
            raise LaunchError(f"no executable {cfg.vllm!r} (on PATH or as a path); install vLLM or pass --vllm")
        log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="qwen-fast-engines-"))
        self._own_pipe = Path(tempfile.mkdtemp(prefix="qwen-fast-mps-", dir=_short_tmp()))
        plan = make_plan(cfg, os.environ, self._own_pipe, log_dir / "mps")
        if plan.mps.pipe_dir != self._own_pipe:  # not needed: nothing of it is left behind, even by a SIGKILL
            shutil.rmtree(self._own_pipe, ignore_errors=True)
            self._own_pipe = None
        check_ports_free(cfg.host, [s.port for s in plan.slots])
        log_dir.mkdir(parents=True, exist_ok=True)
        where = f" on GPU {','.join(str(g.index) for g in plan.gpus)}" if cfg.gpus is not None else ""
        _say(f"starting {len(plan.slots)} vLLM server(s){where} for {cfg.model}, logs in {log_dir}")
        self._start_mps(plan)
        self.servers = [_Server(cfg, s, vllm, log_dir, plan.server_env(s, os.environ)) for s in plan.slots]
        t0 = time.monotonic()
        for s in self.servers:
            with open(s.log_path, "ab") as f:
                f.write(f"$ {s.command}\n".encode())
            try:
                s.child.spawn()
            except ChildStartError as e:
                _say(str(e))
                return 1
        failed = self._wait_ready(t0)
        if failed is not None:
            return failed
        _say(f"{len(self.servers)} server(s) ready in {time.monotonic() - t0:.1f} s; Ctrl-C or SIGTERM stops them")
        self._report()
        return self._supervise()

    def _start_mps(self, plan: Plan) -> None:
        """Start the launcher's own MPS daemon where the plan says so; one line either way."""
        if plan.mps.mode != "own":
            if plan.mps.note:
                _say(plan.mps.note)
        else:
            self._daemon = MpsDaemon(plan.mps, os.environ, pci_order=self.cfg.gpus is not None)
            failed = self._daemon.start()
            if failed:
                _say(failed)
                self._daemon = None
            else:
                _say(f"MPS: control daemon pid {self._daemon.child.pid} serves the servers ({self._daemon.command()}, "
                     f"its log {self._daemon.child.log_path}); it stops with them, --no-mps leaves it out")
        self._watch = MpsWatch(plan.mps, self._daemon)

    def _check_mps(self) -> None:
        gone = self._watch.check() if self._watch is not None else None
        if gone:
            _say(gone)

    def _wait_ready(self, t0: float) -> int | None:
        """None once every server answers /health; else the exit code (0: a signal came first)."""
        pending, deadline, next_note = list(self.servers), t0 + self.cfg.startup_timeout, t0 + 30.0
        while pending and not self.signals:
            self._check_mps()
            dead = []
            for s in self.servers:  # the ready ones too: one may die while the others still start
                try:
                    if s.child.returncode is not None:
                        dead.append(s)
                    elif s in pending and s.child.check_ready():
                        pending.remove(s)
                except ChildStartError:
                    dead.append(s)
            for s in dead:
                _say(f"server on port {s.port} (pid {s.child.pid}) exited with code {s.child.returncode} during "
                     f"start-up; last lines of {s.log_path}:\n{s.tail()}")
            if dead:
                return 1
            now = time.monotonic()
            if pending and now >= deadline:
                for s in pending:
                    _say(f"server on port {s.port} (pid {s.child.pid}) did not answer {s.root_url}/health within "
                         f"{self.cfg.startup_timeout:g} s; last lines of {s.log_path}:\n{s.tail()}")
                return 1
            if pending and now >= next_note:
                _say(f"{len(self.servers) - len(pending)} of {len(self.servers)} ready after {now - t0:.0f} s")
                next_note += 30.0
            if pending:
                time.sleep(0.25)
        return 0 if pending else None

    def _report(self) -> None:
        urls = [s.base_url for s in self.servers]
        for s in self.servers:
            print(s.line())
        print("QWEN_BASE_URL=" + ",".join(urls))
        print(f"from langchain_qwen_fast import BatchedChatQwen; "
              f"llm = BatchedChatQwen(model={json.dumps(self.cfg.served_model_name)}, base_url={json.dumps(urls)})")
        sys.stdout.flush()
        if self.cfg.ready_file is not None:
            path = self.cfg.ready_file
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(urls) + "\n")
            os.replace(tmp, path)  # readers never see half a file
            self._wrote_ready = True

    def _supervise(self) -> int:
        """Wait for a signal (exit 0) or a server's death (exit 1, unless --keep-going and some remain); report
        the MPS daemon's death, which stops nothing."""
        live = list(self.servers)
        while not self.signals:
            self._check_mps()  # first: a daemon that died is why its servers die next
            for s in [s for s in live if s.child.returncode is not None]:
                live.remove(s)
                _say(f"server {s.base_url} (pid {s.child.pid}) exited with code {s.child.returncode}; "
                     f"last lines of {s.log_path}:\n{s.tail()}")
                if not self.cfg.keep_going:
                    return 1
                if not live:
                    _say("no server left")
                    return 1
                _say(f"--keep-going: {len(live)} server(s) still serving")
            time.sleep(0.25)
        return 0


def dry_run(cfg: LaunchConfig) -> None:
    """Print what would run: the MPS daemon (if one of its own), then each server, with the variables that matter."""
    log_dir = cfg.log_dir or Path(tempfile.gettempdir()) / "qwen-fast-engines-XXXXXXXX"
    plan = make_plan(cfg, os.environ, Path(_short_tmp()) / "qwen-fast-mps-XXXXXXXX", log_dir / "mps")
    if plan.mps.note:
        _say(plan.mps.note)
    if plan.mps.mode == "own":
        print(MpsDaemon(plan.mps, os.environ, pci_order=cfg.gpus is not None).command())
    for s in plan.slots:
        print(_command(plan.server_env(s, os.environ), serve_argv(cfg, s)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qwen-fast engines",
        usage="qwen-fast engines --engines N --model PATH [--gpus all|0,1,...] [options] [-- <vllm serve args>]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start N `vllm serve` processes on each GPU (a 0.6B model's engine is CPU-bound; several per\n"
        "GPU, routed by BatchedChatQwen(base_url=[...]), serve more) under one CUDA MPS daemon, wait until each\n"
        "answers /health, print their base_url list and QWEN_BASE_URL=..., and stop them all on Ctrl-C or SIGTERM.",
        epilog=(__doc__ or "\n\n" * 3).split("\n\n", 3)[3].replace("``", ""),  # the module docstring's rules
    )
    p.add_argument("--engines", dest="servers", type=int, required=True, metavar="N",
                   help="vllm serve processes per GPU: on each GPU of --gpus, or on the one GPU the environment "
                   "shows")
    p.add_argument("--model", required=True, metavar="PATH", help="model path or id given to vllm serve")
    p.add_argument("--gpus", metavar="all|0,1,...",
                   help="GPUs by nvidia-smi index, N servers pinned to each (default: the environment's GPU)")
    p.add_argument("--no-mps", dest="mps", action="store_false",
                   help="start no CUDA MPS control daemon (default: one for all servers, where it can run)")
    p.add_argument("--port", type=int, default=8000, help="first of the consecutive ports (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address the servers bind (default 127.0.0.1)")
    p.add_argument("--vllm", default="vllm", metavar="PATH", help="the vllm executable (default: vllm on PATH)")
    p.add_argument("--log-dir", type=Path, metavar="DIR",
                   help="one server-PORT.log per server, mps/ for MPS (default: a new temporary folder, printed)")
    p.add_argument("--startup-timeout", type=float, default=600.0, metavar="S",
                   help="seconds for every server to answer GET /health with 200 (default 600; vLLM on a GPU "
                   "takes about 3 minutes)")
    p.add_argument("--stop-timeout", type=float, default=20.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL when stopping (default 20)")
    p.add_argument("--ready-file", type=Path, metavar="PATH",
                   help="when all are up, write the base_url list there as JSON (removed at exit)")
    p.add_argument("--keep-going", action="store_true",
                   help="when a server dies after start-up, report it and keep serving with the rest")
    p.add_argument("--no-default-flags", dest="default_flags", action="store_false",
                   help=f"leave out the default serve flags ({' '.join(DEFAULT_SERVE_FLAGS)})")
    p.add_argument("--dry-run", action="store_true",
                   help="print the MPS daemon's and each server's command with their variables, and exit")
    return p


def parse_args(argv: Sequence[str]) -> tuple[LaunchConfig, bool]:
    """``(config, dry_run)``; everything after the first ``--`` goes to vllm serve untouched."""
    argv = list(argv)
    ours, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = build_parser()
    a, unknown = parser.parse_known_args(ours)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (flags for vllm serve go after --)")
    cfg = LaunchConfig(servers=a.servers, model=a.model, host=a.host, port=a.port, vllm=a.vllm,
                       extra=tuple(extra), default_flags=a.default_flags, log_dir=a.log_dir,
                       startup_timeout=a.startup_timeout, stop_timeout=a.stop_timeout,
                       ready_file=a.ready_file, keep_going=a.keep_going, gpus=a.gpus, mps=a.mps)
    return cfg, a.dry_run


def main(argv: list[str]) -> int:
    try:
        cfg, dry = parse_args(argv)
        if dry:
            dry_run(cfg)
            return 0
        return Launcher(cfg).run()
    except LaunchError as e:
        _say(str(e))
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
