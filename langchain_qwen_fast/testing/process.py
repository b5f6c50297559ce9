"""``SimServer``: run the simulator as a child process and always clean it up.

A separate process, not a thread: a client benchmark must not share its event loop or GIL with the
server, and reliability tests need to ``kill()`` a server mid-batch and ``restart()`` it on the same
port. The child runs in its own session and is stopped by PID on every exit path (context exit,
``stop()``, ``atexit``), and it exits by itself if this process dies (``--exit-with-parent``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from .engine import SimConfig

_LIVE: set[int] = set()
_PKG = Path(__file__).resolve().parents[1]  # .../langchain_qwen_fast
# Equivalent to `python -m langchain_qwen_fast.testing.server ARGS`, minus the package's own
# __init__ (it imports langchain_core: ~0.9 s and ~38 MB per start, none of it used by the server,
# and reliability tests start and restart servers often). A bare module stands in for the package.
_BOOTSTRAP = (
    "import sys, types; pkg = types.ModuleType('langchain_qwen_fast'); "
    "pkg.__path__ = [sys.argv[1]]; sys.modules['langchain_qwen_fast'] = pkg; "
    "from langchain_qwen_fast.testing.server import main; main(sys.argv[2:])"
)


def _kill_leftovers() -> None:
    for pid in list(_LIVE):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        _LIVE.discard(pid)


atexit.register(_kill_leftovers)
# Loopback only: never route /health or /sim/* through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SimServer:
    """``with SimServer(SimConfig(latency="zero")) as srv: ... srv.base_url ...``

    ``port=None`` lets the child bind a free port (no probe-then-bind race); ``restart()`` reuses
    the port it got. ``extra_args`` are appended to the server's command line.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # ------------------------------------------------------------------------------- properties
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (for /health, /sim/*)."""
        if self.port is None:
            raise RuntimeError("SimServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what an OpenAI client takes as ``base_url``."""
        return self.url + "/v1"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("SimServer is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> SimServer:
        """Spawn the child and return once /health answers; raise with its output if it dies."""
        if self.running:
            return self
        argv = [sys.executable, "-c", _BOOTSTRAP, str(_PKG), *self.config.to_argv(),
                "--host", self.host, "--port", str(self.port or 0), "--exit-with-parent",
                *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        if self._log is not None:
            self._log.close()
        # Kept open after the child exits, so output_tail() still works in failure messages.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _LIVE.add(self._proc.pid)
        deadline = time.monotonic() + self.startup_timeout
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        """Wait for the child's own "SIM_LISTENING" line before probing /health, so a port that is
        already taken (another server answering /health there) fails instead of passing."""
        bound = False
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"simulator exited during start-up:\n{self.output_tail()}")
            if not bound:
                for line in self._output().splitlines():
                    if line.startswith("SIM_LISTENING "):
                        self.port, bound = int(line.rsplit(":", 1)[1]), True
            if bound:
                try:
                    with _OPENER.open(self.url + "/health", timeout=1.0) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.02)
        raise TimeoutError(
            f"simulator not healthy in {self.startup_timeout}s:\n{self.output_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe to call twice or after ``kill()``."""
        if not self._signal(signal.SIGTERM, timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL with no graceful close: in-flight requests see their connections die."""
        self._signal(signal.SIGKILL, None)

    def _signal(self, sig: int, timeout: float | None) -> bool:
        """Signal the child by PID and wait; True once it is gone and reaped."""
        proc = self._proc
        if proc is None:
            return True
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        _LIVE.discard(proc.pid)
        self._proc = None
        return True

    def restart(self) -> SimServer:
        """Stop (if still running) and start again on the same port."""
        self.stop()
        return self.start()

    # ---------------------------------------------------------------------------------- output
    def _output(self) -> str:
        if self._log is None:
            return ""
        # pread, not seek+read: the child shares this file's offset, and moving it back to 0 would
        # make the child's next write overwrite the start of its own output.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def output_tail(self, lines: int = 40) -> str:
        """The last lines of the child's stdout+stderr (for failure messages)."""
        return "\n".join(self._output().splitlines()[-lines:])

    # ------------------------------------------------------------------------------- /sim API
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with _OPENER.open(req, timeout=10.0) as r:
            return json.loads(r.read() or b"null")

    def stats(self) -> dict[str, Any]:
        """The server's counters (GET /sim/stats)."""
        return self._call("GET", "/sim/stats")  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Zero the counters (POST /sim/reset); the fault list is kept."""
        self._call("POST", "/sim/reset", {})

    def set_faults(self, specs: list[str]) -> dict[str, Any]:
        """Replace the server-wide fault list (POST /sim/faults); ``[]`` clears it."""
        return self._call("POST", "/sim/faults", {"faults": list(specs)})  # type: ignore[no-any-return]
