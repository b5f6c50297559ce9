"""``qwen-fast engines``: start N ``vllm serve`` processes on one GPU, wait for all, stop all.

Why: a 0.6B model's vLLM engine is limited by its CPU-side loop, not by the GPU. Three servers on one
H200 (vLLM 0.24), routed by the client (``BatchedChatQwen(base_url=[...])``), gave 1.7-2x one server
at 32 tokens and 1.2-1.5x at 128; vLLM refuses ``--data-parallel-size`` above the GPU count, and
``--api-server-count`` gave no reliable gain. A thin wrapper around vLLM's own CLI, not a server::

    qwen-fast engines --engines 3 --model /models/Qwen3-0.6B -- --max-model-len 4096

Each server runs ``vllm serve MODEL --host H --port P --gpu-memory-utilization U
--kv-cache-memory-bytes B --served-model-name NAME [DEFAULT_SERVE_FLAGS: --disable-uvicorn-access-log]
<args after -->`` on one of N consecutive ports, in its own process
group, with its output in ``--log-dir``/server-PORT.log.

Decisions:

- B = 10 GiB per server: with it vLLM sizes the KV cache from the flag instead of profiling free GPU
  memory, which servers started together would each do while the others are still allocating.
- U = floor(100 * 0.9 / N) / 100 (0.9, 0.45, 0.3, 0.22 for 1-4 servers). With B given, vLLM uses U
  only in a start-up check: free memory must be at least U x total (vllm/v1/worker/utils.py, 0.24 and
  0.32). The N shares add up to at most 90% of the card, so the last server to check still passes
  while the others already hold their memory, as long as each holds no more than its share and 10%
  stays for the rest. A Qwen3-0.6B server with B = 10 GiB holds 14546 MiB (H200, vLLM 0.24: weights
  1.1 GiB, CUDA graphs 0.5 GiB, the rest activations and context), 0.10 of an H200. N such servers must
  fit the card; the launcher cannot see it, vLLM's error (in the printed log tail) says so.
- Flags after ``--`` win: the launcher adds none of its own that the user gave (``--flag v``,
  ``--flag=v``, underscores, or a boolean's ``--no-flag``), so none is passed twice. ``--host``,
  ``--port`` and ``--model`` after ``--`` are refused. Flags inside a vLLM ``--config`` file are not seen.
- NAME defaults to the model path's last component, the same for every server: replicas serve one model.
- Start-up: all at once; each must answer GET /health with 200 within ``--startup-timeout``. If one
  exits or times out, all are stopped and its log tail is printed.
- Stopping: SIGINT/SIGTERM stop every server (SIGTERM to each process group, SIGKILL after
  ``--stop-timeout``), exit 0; a second signal kills at once. Leftovers are killed at interpreter
  exit, and with PR_SET_PDEATHSIG (Linux) a SIGKILLed launcher still leaves each server a SIGTERM
  (on which vllm serve stops its own engine core).
- Exit codes: 0 stopped by a signal; 1 a server failed (at start, or later without ``--keep-going``);
  2 bad arguments, a port already taken or no vllm executable, all found before anything starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from langchain_qwen_fast._process import ChildProcess, ChildStartError, http_ok, stop_all

# Flags that trim the API server's per-request CPU work (a 0.6B engine is CPU-bound): no uvicorn access log
# line per HTTP request. --disable-log-stats was measured too (one H200, 3 rounds, docs/scaling.md): with the
# access-log flag it gave 1.09-1.11x on one engine but 1.00-1.03x on three, and it empties vLLM's /metrics
# (no Prometheus counters at all), so it is not a default; pass it after -- for a single engine.
# --no-default-flags leaves the defaults out.
DEFAULT_SERVE_FLAGS: tuple[str, ...] = ("--disable-uvicorn-access-log",)
DEFAULT_KV_CACHE_BYTES = 10 * 2**30  # 10737418240, per server
GPU_SHARE = 0.9  # the part of the card the N servers' start-up checks may ask for together
_OWNED = ("host", "port", "model")  # set by the launcher, refused after --
class LaunchError(ValueError):
    """Bad arguments or a port already taken: reported before any server starts (exit 2)."""


@dataclass(frozen=True)
class LaunchConfig:
    """What ``qwen-fast engines`` was asked for; checked when built, so bad input fails before any start."""

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

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise LaunchError(f"--engines must be >= 1, got {self.servers}")
        if not self.model:
            raise LaunchError("--model must name a model path or id")
        if self.port < 1 or self.port + self.servers - 1 > 65535:
            raise LaunchError(f"ports {self.port}-{self.port + self.servers - 1} are outside 1-65535")
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
    def ports(self) -> list[int]:
        return list(range(self.port, self.port + self.servers))

    @property
    def served_model_name(self) -> str:
        """The user's ``--served-model-name`` (its first value), else the model path's last component."""
        return flag_value(self.extra, "served-model-name") or Path(self.model.rstrip("/")).name or self.model


def split_memory(servers: int) -> float:
    """Each server's ``--gpu-memory-utilization``: GPU_SHARE / N, rounded down to 2 decimals."""
    return math.floor(round(100 * GPU_SHARE / servers, 6)) / 100


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


def serve_argv(cfg: LaunchConfig, port: int, vllm: str | None = None) -> list[str]:
    """The command for the server on ``port``: the launcher's flags, minus those the user gave, then theirs."""
    given = flag_names(cfg.extra)
    ours: list[str] = []
    if "gpu-memory-utilization" not in given:
        ours += ["--gpu-memory-utilization", f"{split_memory(cfg.servers):.2f}"]
    if "kv-cache-memory-bytes" not in given:
        ours += ["--kv-cache-memory-bytes", str(DEFAULT_KV_CACHE_BYTES)]
    if "served-model-name" not in given:
        ours += ["--served-model-name", cfg.served_model_name]
    if cfg.default_flags:
        ours += [f for f in DEFAULT_SERVE_FLAGS if _flag_name(f) not in given]
    return [vllm or cfg.vllm, "serve", cfg.model, "--host", cfg.host, "--port", str(port), *ours, *cfg.extra]


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


class _Server:
    """One planned ``vllm serve``: its URL, command, log and process."""

    def __init__(self, cfg: LaunchConfig, port: int, vllm: str, log_dir: Path) -> None:
        self.port = port
        self.root_url = f"http://{_url_host(cfg.host)}:{port}"
        self.base_url = self.root_url + "/v1"
        self.argv = serve_argv(cfg, port, vllm)
        self.log_path = log_dir / f"server-{port}.log"
        env = {**os.environ}
        env.setdefault("PYTHONUNBUFFERED", "1")  # vLLM logs to stdout: unbuffered, the tail is current
        self.child = ChildProcess(self.argv, ready=lambda: http_ok(self.root_url + "/health"), env=env,
                                  log_path=self.log_path, name=f"server on port {port}", die_with_parent=True)

    def line(self) -> str:
        return f"{self.base_url}  pid {self.child.pid}  log {self.log_path}"

    def tail(self) -> str:
        return "\n".join("    " + x for x in self.child.output_tail(30).splitlines()) or "    (no output)"


class Launcher:
    """Runs the servers of one ``LaunchConfig`` from start to stop; ``run()`` returns the exit code."""

    def __init__(self, cfg: LaunchConfig) -> None:
        self.cfg = cfg
        self.servers: list[_Server] = []
        self.signals = 0
        self._wrote_ready = False

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
        check_ports_free(cfg.host, cfg.ports)
        log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="qwen-fast-engines-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        _say(f"starting {cfg.servers} vLLM server(s) for {cfg.model}, logs in {log_dir}")
        self.servers = [_Server(cfg, port, vllm, log_dir) for port in cfg.ports]
        t0 = time.monotonic()
        for s in self.servers:
            with open(s.log_path, "ab") as f:
                f.write(f"$ {shlex.join(s.argv)}\n".encode())
            try:
                s.child.spawn()
            except ChildStartError as e:
                _say(str(e))
                return 1
        failed = self._wait_ready(t0)
        if failed is not None:
            return failed
        _say(f"{cfg.servers} server(s) ready in {time.monotonic() - t0:.1f} s; Ctrl-C or SIGTERM stops them")
        self._report()
        return self._supervise()

    def _wait_ready(self, t0: float) -> int | None:
        """None once every server answers /health; else the exit code (0: a signal came first)."""
        pending, deadline, next_note = list(self.servers), t0 + self.cfg.startup_timeout, t0 + 30.0
        while pending and not self.signals:
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
        """Wait for a signal (exit 0) or a server's death (exit 1, unless --keep-going and some remain)."""
        live = list(self.servers)
        while not self.signals:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qwen-fast engines",
        usage="qwen-fast engines --engines N --model PATH [options] [-- <vllm serve args>]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start N `vllm serve` processes on one GPU (a 0.6B model's engine is CPU-bound; several per\n"
        "GPU, routed by BatchedChatQwen(base_url=[...]), serve more), wait until each answers /health, print\n"
        "their base_url list and QWEN_BASE_URL=..., and stop them all on Ctrl-C or SIGTERM.",
        epilog=(__doc__ or "\n\n" * 3).split("\n\n", 3)[3].replace("``", ""),  # the module docstring's rules
    )
    p.add_argument("--engines", dest="servers", type=int, required=True, metavar="N",
                   help="how many vllm serve processes to start on the GPU")
    p.add_argument("--model", required=True, metavar="PATH", help="model path or id given to vllm serve")
    p.add_argument("--port", type=int, default=8000, help="first of N consecutive ports (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address the servers bind (default 127.0.0.1)")
    p.add_argument("--vllm", default="vllm", metavar="PATH", help="the vllm executable (default: vllm on PATH)")
    p.add_argument("--log-dir", type=Path, metavar="DIR",
                   help="one server-PORT.log per server (default: a new temporary folder, printed at start)")
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
    p.add_argument("--dry-run", action="store_true", help="print each server's command and exit")
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
                       ready_file=a.ready_file, keep_going=a.keep_going)
    return cfg, a.dry_run


def main(argv: list[str]) -> int:
    try:
        cfg, dry_run = parse_args(argv)
        if dry_run:
            for port in cfg.ports:
                print(shlex.join(serve_argv(cfg, port)))
            return 0
        return Launcher(cfg).run()
    except LaunchError as e:
        _say(str(e))
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
