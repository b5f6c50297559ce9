"""README.md's quick start, run as a new user runs it: its commands and code blocks, read from README.md.

Nothing is copied here: the test finds the "Quick start" shell block (the simulator command and the doctor
command) and the migration program's Python blocks (``# before``, ``# after``, and the lines every program
keeps) in README.md and runs them as written, each in a fresh interpreter with this tree on its path and an
environment like a new user's (no ``QWEN_*``; an unrelated ``OPENAI_API_KEY``). The one change: port 8000
becomes a free port everywhere it appears, so the test never meets a server someone runs on 8000 (or a real
vLLM) and two runs never collide; the test checks that the README says 8000 there. The blocks run the way
Jupyter runs a cell (top-level ``await`` allowed), since the program ends with ``await chain.abatch(...)``.

Covers: README.md, testing/server.py, doctor/, chat_models.py.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_qwen_fast._process import ChildProcess

pytestmark = pytest.mark.sim
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PORT = "8000"
#: Runs a README block the way a notebook cell runs: top-level await allowed; prints the answers.
RUNNER = """
import ast, asyncio, json, sys
code = compile(sys.stdin.read(), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
ns = {"__name__": "__main__"}
result = eval(code, ns)
if asyncio.iscoroutine(result):
    asyncio.run(result)
print("ANSWERS " + json.dumps(ns["answers"]))
"""


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def block_starting(comment: str) -> str:
    (found,) = [b for b in blocks("python") if b.startswith(comment)]
    return found


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def on_port(text: str, port: str) -> str:
    assert PORT in text, text  # the README says 8000 here; the test moves it to a free port
    return text.replace(f"localhost:{PORT}", f"localhost:{port}").replace(f"--port {PORT}", f"--port {port}")


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN_", "OPENAI_"))}
    env["OPENAI_API_KEY"] = "sk-a-users-openai-key"  # common in a user's environment; not this server's
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def command(line: str) -> list[str]:
    """A README shell line as argv: the comment and a trailing ``&`` dropped; ``python``/``qwen-fast`` are the
    ones of this environment (what ``pip install -e .`` put on PATH)."""
    argv = shlex.split(line.split("#", 1)[0].strip().rstrip("&").strip())
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "qwen-fast":
        script = Path(sys.executable).parent / "qwen-fast"
        argv[:1] = [str(script)] if script.exists() else [sys.executable, "-m", "langchain_qwen_fast.cli"]
    return argv


def quick_start_lines() -> tuple[str, str]:
    (shell,) = re.findall(r"^```bash\n(.*?)^```", section("Quick start"), flags=re.S | re.M)
    lines = [x for x in shell.splitlines() if x.strip()]
    assert lines[0].startswith("pip install -e "), lines  # from a clone; this test runs in one
    (server,) = [x for x in lines if "langchain_qwen_fast.testing.server" in x]
    (doctor,) = [x for x in lines if x.startswith("qwen-fast doctor")]
    return server, doctor


def start_server(line: str, port: str, *extra: str) -> ChildProcess:
    argv = [*command(on_port(line, port)), *extra]
    return ChildProcess(argv, env=user_env(), name="simulator", startup_timeout=30,
                        ready=lambda: _answers(port)).start()


def _answers(port: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def run_program(*parts: str, port: str) -> list[str]:
    source = "\n".join(on_port(p, port) if PORT in p else p for p in parts)
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=source, capture_output=True, text=True,
                          env=user_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("ANSWERS "))
    import json

    answers: list[str] = json.loads(line.removeprefix("ANSWERS "))
    return answers


@pytest.fixture
def port() -> Iterator[str]:
    yield free_port()


def test_the_quick_start_commands_and_the_migrated_program_run_as_written(port: str) -> None:
    server_line, doctor_line = quick_start_lines()
    server = start_server(server_line, port)
    try:
        doctor = subprocess.run(command(on_port(doctor_line, port)), capture_output=True, text=True,
                                env=user_env(), timeout=120)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "0 warn, 0 fail" in doctor.stdout and "no failures" in doctor.stdout, doctor.stdout
        rest = block_starting("# every program keeps the rest")
        for first in ("# after", "# before"):
            answers = run_program(block_starting(first), rest, port=port)
            assert len(answers) == 3 and all(a.strip() for a in answers), (first, answers)
    finally:
        server.stop()


def test_the_migrated_program_runs_against_a_server_started_under_another_name(port: str) -> None:
    # The widely copied way to start vLLM serves "Qwen-0.6B": the program, unchanged, uses what is served.
    server_line, _ = quick_start_lines()
    server = start_server(server_line, port, "--model-name", "Qwen-0.6B")
    try:
        answers = run_program(block_starting("# after"), block_starting("# every program keeps the rest"),
                              port=port)
        assert len(answers) == 3 and all(a.strip() for a in answers), answers
    finally:
        server.stop()
