"""``ChildProcess``: start a child in its own process group, wait until it is ready, stop it by PID.

The one place the project starts long-lived children: the simulator (``testing/process.py``), the vLLM
servers of ``qwen-fast engines`` (``launch.py``), and test fixtures (``redis-server``, the vLLM CPU tier)::

    with ChildProcess(argv, ready=sock.exists) as child:  # own process group
        ...
    assert not child.alive()  # signalled by PID, also when the body raised

Why each piece:

- Its own process group (``start_new_session=True``, so the group id is the child's PID). ``vllm serve``
  forks an engine core and workers; signalling the group reaches all of them. And a Ctrl-C in a terminal
  (delivered to the foreground group) does not reach the child behind the parent's back: the parent
  decides when and how it stops.
- Tracked by PID in a registry that an ``atexit`` hook empties with SIGKILL, so a failed test or a crashed
  launcher does not leave a server holding a port or GPU memory. ``die_with_parent=True`` (Linux
  ``PR_SET_PDEATHSIG``) covers the case where the parent is SIGKILLed and ``atexit`` never runs.
- ``stop()``: SIGTERM to the group, wait, then SIGKILL: a clean shutdown when the child cooperates,
  bounded when it does not. ``stop_all()`` does the same for many children in one grace period.
- "Gone" means no live process left in the group, not just that the first one exited: vLLM's workers can
  outlive its API server for a moment. Zombies do not count (a container's PID 1 may never reap orphans).
- Output goes to ``log_path`` (appended to) or to a temporary file, kept open after the child exits so
  ``output_tail()`` can go into failure messages. It is read with ``os.pread``: the child shares the
  file's offset, and a ``seek`` by the parent would make the child's next write land at the wrong place.

Stdlib only and free of package imports: ``tests/servers/vllm_server.py`` loads this file by path from
venvs that do not have the package.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["ChildProcess", "ChildStartError", "ChildStartTimeout", "stop_all"]

_TAIL_BYTES = 256 * 1024  # enough for 40 lines of any log; a vLLM log can reach megabytes
_POLL_FIRST, _POLL_MAX = 0.01, 0.25  # readiness polling backs off: fast for the simulator, light for vLLM
_KILL_WAIT = 5.0  # after SIGKILL, a process leaving uninterruptible sleep may take a moment

# Runs in the child (``python -I -S -c``) before it becomes the real program: ask Linux for SIGTERM when
# the parent thread dies, give up if the parent is already gone, then exec (PATH lookup in the child's env).
_EXEC_WITH_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('parent already gone')\n"
    "try:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as e:\n"
    "    print(f'cannot start {sys.argv[2]!r}: {e}', flush=True)\n"
    "    sys.exit(127)\n"
)

_LIVE: dict[int, ChildProcess] = {}  # pid -> child, until its group is gone
_LIVE_LOCK = threading.Lock()


class ChildStartError(RuntimeError):
    """The child could not be started, or exited before it was ready. The message ends with its output."""

    def __init__(
        self, message: str, *, name: str = "", pid: int | None = None, returncode: int | None = None, tail: str = ""
    ) -> None:
        super().__init__(message)
        self.name, self.pid, self.returncode, self.tail = name, pid, returncode, tail


class ChildStartTimeout(ChildStartError, TimeoutError):
    """The child was still running but not ready when ``startup_timeout`` ran out."""


class ChildProcess:
    """One child process in its own process group, stopped by PID on every exit path.

    ``ready`` is polled (backing off from 10 ms to 250 ms) until it returns True; ``start()`` raises
    ``ChildStartError`` if the child exits first, ``ChildStartTimeout`` after ``startup_timeout`` seconds,
    and kills the child in both cases. ``start()`` on a child that has exited starts it again (a fresh
    temporary file, or more output appended to ``log_path``). ``die_with_parent`` adds Linux's
    PR_SET_PDEATHSIG through a small Python exec wrapper; it fires when the *thread* that started the
    child ends, so leave it off when starting from a short-lived thread.
    """

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        ready: Callable[[], bool] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 60.0,
        name: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.argv = [os.fspath(a) for a in argv]
        if not self.argv or not self.argv[0]:
            raise ValueError("ChildProcess needs a program to run: argv is empty")
        if not startup_timeout > 0:
            raise ValueError(f"startup_timeout must be > 0 seconds, got {startup_timeout}")
        self.ready = ready
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.log_path = None if log_path is None else Path(log_path)
        self.startup_timeout = float(startup_timeout)
        self.name = name or Path(self.argv[0]).name
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this run's output starts in log_path
        self._owner = 0  # the PID that started it: a forked copy of this process must not kill it at exit
        self._gone = True  # no live process left in the group (or never started)

    # ------------------------------------------------------------------------------------- state
    @property
    def pid(self) -> int:
        """The child's PID, which is also its process group id."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status (negative: killed by that signal); None while it runs or before start."""
        return None if self._proc is None else self._proc.poll()

    def alive(self) -> bool:
        """True while the child, or anything left in its process group, still runs."""
        proc = self._proc
        if proc is None or self._gone:
            return False
        if proc.poll() is None or _group_has_live_members(proc.pid):
            return True
        self._gone = True
        with _LIVE_LOCK:
            _LIVE.pop(proc.pid, None)
        return False

    # --------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> ChildProcess:
        """Spawn the child and return once ``ready()`` holds; on failure kill it and raise with its output."""
        if self.alive():
            return self
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def spawn(self) -> ChildProcess:
        """Start the child without waiting (for callers that watch several at once); see ``check_ready``."""
        if self.alive():
            return self
        if self._log is not None:
            self._log.close()
        if self.log_path is None:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open: output_tail after exit)
        else:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a+b")  # noqa: SIM115 (read back with pread)
        self._log_start = os.fstat(self._log.fileno()).st_size
        argv = self.argv
        if self.die_with_parent and sys.platform.startswith("linux"):
            argv = [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *argv]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                    env=self.env, cwd=self.cwd, start_new_session=True)
        except OSError as e:
            raise ChildStartError(f"{self.name}: cannot start {self.argv[0]!r}: {e}", name=self.name) from e
        with _LIVE_LOCK:
            _LIVE[proc.pid] = self
        self._proc, self._owner, self._gone = proc, os.getpid(), False
        return self

    def check_ready(self) -> bool:
        """One look: True once ``ready()`` holds (at once without one); raises if the child has exited."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        code = self._proc.poll()
        if code is not None:
            tail = self.output_tail()
            raise ChildStartError(f"{self.name} exited with code {code} during start-up ({self._where()}):\n{tail}",
                                  name=self.name, pid=self._proc.pid, returncode=code, tail=tail)
        return self.ready is None or bool(self.ready())

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll ``check_ready`` until it holds; ``ChildStartTimeout`` after ``timeout`` (default startup_timeout)."""
        limit = self.startup_timeout if timeout is None else timeout
        deadline, pause = time.monotonic() + limit, _POLL_FIRST
        while not self.check_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self.output_tail()
                raise ChildStartTimeout(f"{self.name} not ready after {limit:g} s ({self._where()}):\n{tail}",
                                        name=self.name, pid=self.pid, tail=tail)
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, _POLL_MAX)

    def terminate(self) -> None:
        """SIGTERM to the whole group, without waiting (``stop`` waits)."""
        self.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout`` s if anything is left; safe to call twice."""
        stop_all([self], timeout)

    def kill(self) -> None:
        """SIGKILL to the group, then wait (up to 5 s) until it is gone."""
        self.send_signal(signal.SIGKILL)
        self.wait(_KILL_WAIT)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the group is gone (the child reaped); False if ``timeout`` ran out first."""
        proc = self._proc
        if proc is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        while self.alive():  # the leader is reaped; workers it forked may need a moment
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def send_signal(self, sig: int) -> None:
        """``sig`` to the whole group, no waiting and no reaping (so safe inside a signal handler)."""
        proc = self._proc
        if proc is None or self._gone:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _where(self) -> str:
        pid = "not started" if self._proc is None else f"pid {self._proc.pid}"
        return pid if self.log_path is None else f"{pid}, log {self.log_path}"

    # ------------------------------------------------------------------------------------ output
    def output(self) -> str:
        """Everything this run of the child has written to stdout and stderr so far."""
        if self._log is None:
            return ""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        return os.pread(fd, max(0, size - self._log_start), self._log_start).decode("utf-8", "replace")

    def output_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of this run's output (for failure messages)."""
        if self._log is None:
            return ""
        fd = self._log.fileno()
        size = os.fstat(fd).st_size
        start = max(self._log_start, size - _TAIL_BYTES)
        text = os.pread(fd, size - start, start).decode("utf-8", "replace").splitlines()
        if start > self._log_start and text:
            text = text[1:]  # began mid-line
        return "\n".join(text[-lines:]) if lines > 0 else ""

    def __repr__(self) -> str:
        state = "not started" if self._proc is None else f"pid {self._proc.pid}, " + (
            "running" if self.alive() else f"exited {self.returncode}")
        return f"ChildProcess({self.name}, {state})"


def stop_all(children: Iterable[ChildProcess], timeout: float = 5.0) -> None:
    """Stop many children in one grace period: SIGTERM to every group, wait up to ``timeout`` s for all of
    them together, then SIGKILL whatever is left (N servers take one ``timeout``, not N)."""
    live = [c for c in children if c.alive()]
    for c in live:
        c.terminate()
    deadline = time.monotonic() + max(0.0, timeout)
    left = [c for c in live if not c.wait(max(0.0, deadline - time.monotonic()))]
    for c in left:
        c.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT
    for c in left:
        c.wait(max(0.0, deadline - time.monotonic()))


def _group_has_live_members(pgid: int) -> bool:
    """Whether any process other than a zombie is in the group (Linux /proc; elsewhere any member)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":  # fields: state, ppid, pgrp
            return True
    return False


def _kill_leftovers() -> None:
    """atexit: SIGKILL every group this process started and did not stop (no waiting: we are exiting)."""
    with _LIVE_LOCK:
        children = list(_LIVE.values())
        _LIVE.clear()
    for child in children:
        if child._owner == os.getpid() and child.alive():
            child.send_signal(signal.SIGKILL)


atexit.register(_kill_leftovers)


#: Loopback readiness probes never go through a proxy from the environment.
LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether GET ``url`` answers 200 (a child's ``/health``): refused, timed out, not HTTP or any other
    status is False, for a ``ready`` check to try again."""
    try:
        with LOOPBACK_OPENER.open(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (OSError, ValueError, http.client.HTTPException):
        return False
