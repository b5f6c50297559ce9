"""``langchain_qwen_fast._process``: ChildProcess and stop_all, with real (tiny Python) child processes.

Covers: _process.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import gone, wait_until

from langchain_qwen_fast._process import ChildProcess, ChildStartError, ChildStartTimeout, stop_all

PY = [sys.executable, "-I", "-S", "-c"]
PROCESS_PY = Path(__file__).resolve().parents[2] / "langchain_qwen_fast" / "_process.py"


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a test's children wrote as their PIDs is SIGKILLed afterwards, also when it failed."""
    yield
    for f in tmp_path.iterdir():
        if f.name.startswith(("pid", "worker")) and not f.name.endswith(".tmp"):
            text = f.read_text()
            for pid in json.loads(text) if text.startswith("[") else [int(text)]:
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)


def with_worker(pids: Path, *, ignore_term: bool = False, ready: Path | None = None) -> list[str]:
    """A leader that forks a worker (like vLLM's engine core), writes both PIDs, then waits."""
    ready_s = "" if ready is None else str(ready)
    code = f"""
        import json, os, signal, time
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        worker = os.fork()
        if worker == 0:
            while True:
                time.sleep(60)
        open({str(pids)!r} + ".tmp", "w").write(json.dumps([os.getpid(), worker]))
        os.replace({str(pids)!r} + ".tmp", {str(pids)!r})  # whole, or not there yet
        if {ready_s!r}:
            time.sleep(0.2)
            open({ready_s!r}, "w").close()
        while True:
            time.sleep(60)
    """
    return [*PY, textwrap.dedent(code)]


def test_start_waits_for_ready_and_stop_leaves_nothing_in_the_group(tmp_path: Path) -> None:
    pids, ready = tmp_path / "pids.json", tmp_path / "ready"
    with ChildProcess(with_worker(pids, ready=ready), ready=ready.exists, name="leader") as child:
        assert ready.exists() and child.alive() and child.returncode is None
        leader, worker = json.loads(pids.read_text())
        assert child.pid == leader == os.getpgid(worker)  # the worker is in the child's own group
        assert os.getpgid(leader) != os.getpgid(0)
    assert not child.alive()
    assert gone(leader) and gone(worker)
    assert child.returncode == -signal.SIGTERM


def test_the_body_raising_still_stops_the_child(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    with pytest.raises(KeyError), ChildProcess(with_worker(pids), ready=pids.exists) as child:
        raise KeyError("the test failed")
    assert not child.alive()
    assert all(gone(p) for p in json.loads(pids.read_text()))


def test_a_child_exiting_during_start_up_raises_with_its_output() -> None:
    child = ChildProcess([*PY, "print('config error: no such model', flush=True); raise SystemExit(3)"],
                         ready=lambda: False, name="redis-server")
    with pytest.raises(ChildStartError, match=r"redis-server exited with code 3") as info:
        child.start()
    assert "config error: no such model" in str(info.value) and info.value.returncode == 3
    assert not isinstance(info.value, TimeoutError)
    assert not child.alive()


def test_a_child_not_ready_in_time_is_killed_and_the_error_is_a_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    child = ChildProcess(with_worker(pids, ignore_term=True), ready=lambda: False, startup_timeout=0.5)
    with pytest.raises(ChildStartTimeout, match=r"not ready after 0.5 s") as info:
        child.start()
    assert isinstance(info.value, TimeoutError)
    assert not child.alive() and child.returncode == -signal.SIGKILL
    assert all(gone(p) for p in json.loads(pids.read_text()))


def test_a_program_that_does_not_exist_is_a_start_error() -> None:
    with pytest.raises(ChildStartError, match="no-such-program-here"):
        ChildProcess(["no-such-program-here", "--port", "0"]).start()


def test_stop_kills_a_child_that_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    child = ChildProcess(with_worker(pids, ignore_term=True), ready=pids.exists).start()
    t0 = time.monotonic()
    child.stop(timeout=0.5)
    assert time.monotonic() - t0 >= 0.5
    assert not child.alive() and child.returncode == -signal.SIGKILL
    assert all(gone(p) for p in json.loads(pids.read_text()))
    child.stop()  # a second stop is a no-op


def test_a_worker_outliving_its_leader_keeps_the_child_alive_until_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker"
    code = f"""
        import os, signal, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open({str(pid_file)!r} + ".tmp", "w").write(str(os.getpid()))
            os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
            while True:
                time.sleep(60)
        while not os.path.exists({str(pid_file)!r}):
            time.sleep(0.01)
    """
    child = ChildProcess([*PY, textwrap.dedent(code)]).start()
    assert wait_until(lambda: child.returncode is not None, 10.0)
    assert child.returncode == 0 and child.alive()  # the leader is done, its worker is not
    child.stop(timeout=0.3)
    assert not child.alive() and gone(int(pid_file.read_text()))


def test_stop_all_stops_many_children_in_one_grace_period(tmp_path: Path) -> None:
    files = [tmp_path / f"pids{i}.json" for i in range(4)]
    children = [ChildProcess(with_worker(f, ignore_term=True), ready=f.exists).start() for f in files]
    t0 = time.monotonic()
    stop_all(children, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert not any(c.alive() for c in children)
    assert 1.0 <= elapsed < 3.0, elapsed  # one at a time would take at least 4 s


def test_output_is_read_without_moving_the_childs_file_offset() -> None:
    # The child writes numbered lines one write at a time while the parent reads its output in a loop.
    # A parent that seeked the shared offset (seek + read) would make some writes land over earlier
    # ones: that corrupted 4 of 5 such runs here; three runs make a miss unlikely.
    code = "import os\nfor i in range(20000):\n    os.write(1, b'line %d\\n' % i)\n"
    for _ in range(3):
        child = ChildProcess([*PY, code]).start()
        while child.returncode is None:
            child.output()
            child.output_tail(5)
        assert child.output().splitlines() == [f"line {i}" for i in range(20000)]
        assert child.output_tail(3) == "line 19997\nline 19998\nline 19999"


def test_log_path_is_appended_to_and_output_covers_only_this_run(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "server.log"
    child = ChildProcess([*PY, "print('first run')"], log_path=log)
    child.start().wait(5)
    child.start().wait(5)  # an exited child starts again
    assert log.read_text() == "first run\nfirst run\n"
    assert child.output() == "first run\n"
    failing = ChildProcess([*PY, "raise SystemExit(1)"], log_path=log, ready=lambda: False)
    with pytest.raises(ChildStartError, match=str(log)):
        failing.start()


def _run_script(code: str) -> subprocess.Popen[str]:
    """A parent process that loads _process.py by path (as tests/servers/vllm_server.py may)."""
    prologue = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('_p', {str(PROCESS_PY)!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['_p'] = m; spec.loader.exec_module(m)\n"
    )
    return subprocess.Popen([*PY, prologue + textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)


def test_children_left_running_are_killed_when_the_parent_exits(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    parent = _run_script(f"""
        argv = {with_worker(pids, ignore_term=True)!r}
        m.ChildProcess(argv, ready=lambda: __import__('os').path.exists({str(pids)!r})).start()
        print('started', flush=True)
    """)  # exits without stopping it: the atexit hook must
    out, _ = parent.communicate(timeout=30)
    assert parent.returncode == 0 and out.strip() == "started"
    leader, worker = json.loads(pids.read_text())
    assert wait_until(lambda: gone(leader) and gone(worker), 5.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_die_with_parent_stops_the_child_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = (f"import os, time\nopen({str(pid_file)!r} + '.tmp', 'w').write(str(os.getpid()))\n"
            f"os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\ntime.sleep(120)")
    parent = _run_script(f"""
        import time
        m.ChildProcess({[*PY, code]!r}, ready=lambda: __import__('os').path.exists({str(pid_file)!r}),
                       die_with_parent=True).start()
        print('started', flush=True)
        time.sleep(120)
    """)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "started"
        pid = int(pid_file.read_text())
        assert not gone(pid)
        parent.kill()  # no atexit, no finally: only the kernel's parent-death signal is left
        parent.wait(10)
        assert wait_until(lambda: gone(pid), 5.0)
    finally:
        parent.kill()
        parent.wait(10)
        if pid_file.exists() and not gone(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="argv is empty"):
        ChildProcess([])
    with pytest.raises(ValueError, match="startup_timeout must be > 0"):
        ChildProcess(["true"], startup_timeout=0)
    with pytest.raises(RuntimeError, match="never started"):
        _ = ChildProcess(["true"]).pid
    assert not ChildProcess(["true"]).alive()
