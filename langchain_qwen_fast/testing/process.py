"""``SimServer``: run the simulator as a child process and always clean it up.

A separate process, not a thread: a client benchmark must not share its event loop or GIL with the
server, and reliability tests need to ``kill()`` a server mid-batch and ``restart()`` it on the same
port. The process handling (own session, stopped by PID on every exit path, ``atexit``) is
``langchain_qwen_fast._process.ChildProcess``; the child also exits by itself if this process dies
(``--exit-with-parent``).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from .._process import LOOPBACK_OPENER, ChildProcess, http_ok
from .sim_engine import SimConfig

_PKG = Path(__file__).resolve().parents[1]  # .../langchain_qwen_fast
# Equivalent to `python -m langchain_qwen_fast.testing.server ARGS`, minus the package's own
# __init__ (it imports langchain_core: ~0.9 s and ~38 MB per start, none of it used by the server,
# and reliability tests start and restart servers often). A bare module stands in for the package.
_BOOTSTRAP = (
    "import sys, types; pkg = types.ModuleType('langchain_qwen_fast'); "
    "pkg.__path__ = [sys.argv[1]]; sys.modules['langchain_qwen_fast'] = pkg; "
    "from langchain_qwen_fast.testing.server import main; main(sys.argv[2:])"
)
# Loopback only: never route /health or /sim/* through an HTTP(S)_PROXY from the environment.
class SimServer:
    """``with SimServer(SimConfig(latency="zero")) as srv: ... srv.base_url ...``

    ``port=None`` lets the child bind a free port (no probe-then-bind race); ``restart()`` reuses
    the port it got. ``extra_args`` are appended to the server's command line. A failed start raises
    ``RuntimeError`` (``TimeoutError`` when it never became healthy) ending with the child's output.
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
        self._child: ChildProcess | None = None  # the running child; None once stopped or killed
        self._last: ChildProcess | None = None  # the latest child, kept for output_tail() after it ended
        self._bound = False  # the latest child printed its SIM_LISTENING line

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
        if self._child is None:
            raise RuntimeError("SimServer is not started")
        return self._child.pid

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.returncode is None

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
        self._last, self._bound = ChildProcess(argv, ready=self._ready, env=self.env, name="simulator",
                                               startup_timeout=self.startup_timeout), False
        self._child = self._last.start()  # kills the child and raises ChildStartError on failure
        return self

    def _ready(self) -> bool:
        """Wait for the child's own "SIM_LISTENING" line before probing /health, so a port that is
        already taken (another server answering /health there) fails instead of passing."""
        if not self._bound and self._last is not None:
            out = self._last.output()
            for line in out[: out.rfind("\n") + 1].splitlines():  # complete lines only
                if line.startswith("SIM_LISTENING "):
                    self.port, self._bound = int(line.rsplit(":", 1)[1]), True
        if not self._bound:
            return False
        return http_ok(self.url + "/health")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe to call twice or after ``kill()``."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(timeout)

    def kill(self) -> None:
        """SIGKILL with no graceful close: in-flight requests see their connections die."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()

    def restart(self) -> SimServer:
        """Stop (if still running) and start again on the same port."""
        self.stop()
        return self.start()

    # ---------------------------------------------------------------------------------- output
    def output_tail(self, lines: int = 40) -> str:
        """The last lines of the child's stdout+stderr (for failure messages)."""
        return "" if self._last is None else self._last.output_tail(lines)

    # ------------------------------------------------------------------------------- /sim API
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with LOOPBACK_OPENER.open(req, timeout=10.0) as r:
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
