"""CUDA MPS for ``qwen-fast engines``: one control daemon that every server shares, decided, started, watched and
stopped by the launcher.

Why: vLLM servers of a 0.6B model on one GPU each leave it idle between their small kernels; under MPS their
kernels run side by side instead of taking turns. Three servers on one H100 (vLLM 0.24, raw lists of 32 prompts,
16 lists in flight per server) served 1.17x at 32 tokens and 1.19x at 128 with MPS than without.

How MPS works (NVIDIA's MPS guide, nvidia-cuda-mps-control(1)): a CUDA process connects, at its first CUDA call, to
the control daemon whose pipe directory is its ``CUDA_MPS_PIPE_DIRECTORY`` (default ``/tmp/nvidia-mps``); with no
daemon there it runs without MPS. The daemon starts one MPS server per user; that server holds the GPU context
its clients share. The launcher's decisions, in order:

- ``--no-mps``: no daemon. Where the servers' pipe directory (inherited, or the default) has a live daemon, they get
  an empty one of the launcher's instead, so that they really run without it.
- A live daemon of this user in ``$CUDA_MPS_PIPE_DIRECTORY`` or ``/tmp/nvidia-mps``: used and left running.
- A live daemon of another user there: not used (one daemon serves one user at a time, so the servers' contexts
  would wait until that user's clients are done); the servers run without MPS, in an empty pipe directory.
- No ``nvidia-cuda-mps-control`` on PATH: without MPS.
- A GPU in compute mode ``Prohibited`` (no CUDA context at all, MPS or not) or ``Exclusive_Thread`` (not
  supported by MPS): without MPS. ``Exclusive_Process`` is MPS's own recommended mode: the restriction applies to
  the MPS server, which is then the one process on the GPU, not to its clients; without MPS only one server per
  such GPU could start, which the launcher says. ``Default``: MPS.
- Otherwise a daemon of the launcher's own, ``nvidia-cuda-mps-control -f`` (foreground, so it is the launcher's
  child: tracked by PID, PR_SET_PDEATHSIG when the launcher is killed), in a new short pipe directory under /tmp
  (a Unix socket's path must fit 107 bytes) and ``LOG_DIR/mps``. It starts without ``CUDA_VISIBLE_DEVICES``, so it
  serves every GPU and does not renumber them: a daemon started with ``CUDA_VISIBLE_DEVICES=0,2`` shows those to
  its clients as 0 and 1, and a server pinned to 2 would find no such device. If it fails to start, the servers
  run without MPS (their pipe directory then has no daemon).

Every case that leaves MPS out is one line. The launcher's own daemon is stopped after the servers: ``quit``
through the control binary with the same pipe directory, then SIGTERM and SIGKILL to its process group (its MPS
server is its child, in that group). In the foreground it logs to stdout, which goes to ``LOG_DIR/mps/control.log``.

What the daemon's death does, seen on one H100 (driver 580, MPS control 13000): its MPS server goes with it, after
SIGTERM and after SIGKILL alike, and a PyTorch client connected to it failed with a CUDA error at its next kernel;
a CUDA process started afterwards ran, without MPS. So a daemon that dies under running servers takes their engine
cores down: the launcher says so in one line, then reports each server that exits as it always does (exit 1, or
with ``--keep-going`` until none is left). A stale pid file stays behind after SIGTERM; ``running_daemon`` checks
that its PID is still a daemon.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from langchain_qwen_fast._process import ChildProcess, ChildStartError
from langchain_qwen_fast.cli.gpus import Gpu

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIR = Path("/tmp/nvidia-mps")
PID_FILE = "nvidia-cuda-mps-control.pid"  # the daemon's, in its pipe directory
PIPE, LOG = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
_COMM = "nvidia-cuda-mps"  # /proc/PID/comm of the daemon and its servers: the first 15 characters of the name
_NO_MPS = {"Prohibited": "no CUDA context may be created on it, with MPS or without",
           "Exclusive_Thread": "MPS does not support it"}


@dataclass(frozen=True)
class MpsPlan:
    """What the servers get. ``mode``: ``own`` (a daemon of the launcher's, in ``pipe_dir``), ``existing`` (a live
    daemon of this user, ``pid``), ``off``. ``pipe_dir`` None leaves the servers' own setting alone."""

    mode: str
    pipe_dir: Path | None = None
    log_dir: Path | None = None
    pid: int | None = None
    control: str | None = None
    note: str = ""  # the one line the user reads about MPS; "" when there is nothing to say
    server_env: Mapping[str, str] = field(default_factory=dict)

    def daemon_env(self, base: Mapping[str, str], pci_order: bool) -> dict[str, str]:
        """The own daemon's environment: ``base`` without ``CUDA_VISIBLE_DEVICES``, with the pipe and log
        directories (and the PCI bus order where the servers are pinned by nvidia-smi index)."""
        env = {k: v for k, v in base.items() if k != "CUDA_VISIBLE_DEVICES"}
        env.update(self.server_env)
        if pci_order:
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        return env


def running_daemon(pipe_dir: Path) -> tuple[int, int] | None:
    """``(pid, uid)`` of the live control daemon whose pid file is in ``pipe_dir``; None when there is none (no
    file, or its PID gone or now another program's)."""
    try:
        pid = int((pipe_dir / PID_FILE).read_text().split()[0])
        if pid <= 0 or not Path(f"/proc/{pid}/comm").read_text().startswith(_COMM):
            return None
        return pid, os.stat(f"/proc/{pid}").st_uid
    except (OSError, ValueError, IndexError):
        return None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def plan_mps(*, enabled: bool, env: Mapping[str, str], gpus: Sequence[Gpu], per_gpu: int, own_pipe: Path,
             own_log: Path, control: str | None, default_pipe: Path = DEFAULT_PIPE_DIR) -> MpsPlan:
    """The decision (module docstring) for servers that inherit ``env``, ``per_gpu`` on each of ``gpus`` (the
    ones known; none when nvidia-smi could not tell). ``control`` is the control binary found on PATH, or None.
    Reads the pid files and /proc; starts nothing."""
    inherited = Path(env.get(PIPE) or default_pipe)
    live = running_daemon(inherited)
    shield = {PIPE: str(own_pipe)}  # a pipe directory with no daemon: the servers run without MPS
    exclusive = [str(g.index) for g in gpus if g.compute_mode == "Exclusive_Process"]
    one_each = (f"; GPU {', '.join(exclusive)} {'is' if len(exclusive) == 1 else 'are'} in compute mode "
                f"Exclusive_Process (one CUDA process per GPU): without MPS only one of the {per_gpu} servers on "
                "each can start") if exclusive and per_gpu > 1 else ""
    if not enabled:
        if live:
            return MpsPlan("off", pipe_dir=own_pipe, server_env=shield,
                           note=f"--no-mps: the servers get an empty CUDA_MPS_PIPE_DIRECTORY, away from the MPS "
                                f"daemon in {inherited} (pid {live[0]}){one_each}")
        return MpsPlan("off", note=f"--no-mps{one_each}" if one_each else "")
    if live and live[1] == os.getuid():
        keep = {PIPE: str(inherited), **({LOG: env[LOG]} if env.get(LOG) else {})}
        return MpsPlan("existing", pipe_dir=inherited, pid=live[0], server_env=keep,
                       note=f"MPS: using the control daemon already running in {inherited} (pid {live[0]}); "
                            "it is left running")
    if live:
        return MpsPlan("off", pipe_dir=own_pipe, server_env=shield,
                       note=f"MPS not started: the control daemon in {inherited} (pid {live[0]}) is "
                            f"{_user(live[1])}'s, and one daemon serves one user at a time; the servers start "
                            f"without MPS{one_each}")
    if control is None:
        return MpsPlan("off", note=f"MPS not started: no {CONTROL} on PATH (it comes with the NVIDIA driver's "
                                   f"utilities); the servers start without it{one_each}")
    for g in gpus:
        if g.compute_mode in _NO_MPS:
            return MpsPlan("off", note=f"MPS not started: GPU {g.index} is in compute mode {g.compute_mode} "
                                       f"({_NO_MPS[g.compute_mode]}); the servers start without it")
    return MpsPlan("own", pipe_dir=own_pipe, log_dir=own_log, control=control,
                   server_env={PIPE: str(own_pipe), LOG: str(own_log)},
                   note=f"MPS: a control daemon of its own ({CONTROL} -f) serves the servers and stops with them")


class MpsDaemon:
    """The launcher's own control daemon, ``nvidia-cuda-mps-control -f``: a child tracked by PID, stopped by its
    pipe (``quit``) and then by PID."""

    def __init__(self, plan: MpsPlan, env: Mapping[str, str], pci_order: bool) -> None:
        assert plan.mode == "own" and plan.control and plan.pipe_dir and plan.log_dir, plan
        self.pipe_dir, self.log_dir = plan.pipe_dir, plan.log_dir
        self.env = plan.daemon_env(env, pci_order)
        self.argv = [plan.control, "-f"]
        self.child = ChildProcess(self.argv, env=self.env, log_path=self.log_dir / "control.log",
                                  ready=self._ready, startup_timeout=20.0, name="MPS control daemon",
                                  die_with_parent=True)

    def _ready(self) -> bool:
        return running_daemon(self.pipe_dir) is not None or (self.pipe_dir / "control").exists()

    def command(self) -> str:
        """The command line with its MPS variables, as ``--dry-run`` and the log show it."""
        return shlex.join([f"{k}={self.env[k]}" for k in (PIPE, LOG)] + self.argv)

    def start(self) -> str | None:
        """Start it and wait until it listens; on failure the one line that says why (it is then gone)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.child.start()
        except ChildStartError as e:
            last = (e.tail.strip().splitlines() or ["no output"])[-1]
            return (f"MPS not started: {self.command()} did not come up ({str(e).splitlines()[0]}: {last}); "
                    "the servers start without it")
        return None

    def stop(self, timeout: float) -> None:
        """``quit`` through its pipe, then SIGTERM and SIGKILL to what is left after ``timeout`` seconds."""
        if self.child.alive():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([self.argv[0]], input="quit\n", env=self.env, capture_output=True, text=True,
                               timeout=max(1.0, min(timeout, 10.0)), check=False)
            self.child.wait(timeout)
        self.child.stop(timeout)


class MpsWatch:
    """Notices, once, that the daemon the servers use has gone (the launcher's own, or one that was running)."""

    def __init__(self, plan: MpsPlan, daemon: MpsDaemon | None) -> None:
        self.plan, self.daemon, self.reported = plan, daemon, False

    def check(self) -> str | None:
        """The one line to print the first time the daemon is found gone, else None."""
        if self.reported:
            return None
        if self.daemon is not None:
            code = self.daemon.child.returncode
            if code is None:
                return None
            pid, how = self.daemon.child.pid, f"exited with code {code}"
        elif self.plan.mode == "existing" and self.plan.pid is not None and self.plan.pipe_dir is not None:
            if running_daemon(self.plan.pipe_dir) is not None:
                return None
            pid, how = self.plan.pid, "is gone"
        else:
            return None
        self.reported = True
        return (f"the MPS control daemon (pid {pid}) {how}: its MPS server went with it, so the servers' CUDA calls "
                "fail from now on and their engine cores exit; a server started after this runs without MPS")
