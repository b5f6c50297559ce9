"""Replays the frictions of a new user's first hour (the issue "The first hour as a new user") and prints what a
user sees now. Not a test: a script to read (each friction has its test; the docstring of each step names it).

    PYTHONPATH=. python tests/sim/new_user_frictions.py

Starts simulators (and, when ``redis-server`` is installed, a Redis and a ``qwen-fast worker``) on loopback,
stops them by PID at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from langchain_qwen_fast import BatchedChatQwen
from langchain_qwen_fast._process import ChildProcess
from langchain_qwen_fast.doctor import main as doctor
from langchain_qwen_fast.testing import SimConfig, SimServer

ROOT = Path(__file__).resolve().parents[2]
for var in ("QWEN_MODEL", "QWEN_BASE_URL", "QWEN_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(var, None)


def step(title: str) -> None:
    print(f"\n=== {title}")


def said(fn: object) -> None:
    try:
        print("->", fn())  # type: ignore[operator]
    except Exception as e:
        print(f"-> {type(e).__name__}: {e}".replace("\n", " ")[:700])


def doctor_lines(url: str, *names: str) -> None:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        doctor(["--base-url", url])
    for line in out.getvalue().splitlines():
        if line.startswith(names) or ("fix:" in line and names[0] != "qwen-fast doctor") or line.endswith(
                ("no failures", "FAILED")):
            print("  " + line)


def main() -> None:
    guide = SimServer(SimConfig(latency="zero", model_name="Qwen-0.6B")).start()  # the widely copied way
    plain = SimServer(SimConfig(latency="zero")).start()  # python -m langchain_qwen_fast.testing.server
    other = SimServer(SimConfig(latency="zero", model_name="Qwen3-0.6B")).start()
    keyed = SimServer(SimConfig(latency="zero", api_key="right-key")).start()
    try:
        step("1. default names: the README's program against a server serving Qwen-0.6B (test_quickstart.py)")
        llm = BatchedChatQwen(base_url=guide.base_url, max_tokens=16)
        said(lambda: llm.invoke("hello").content)
        said(lambda: llm.stats()["model"])
        step("1. a name given is never swapped; the 404 says what is served (test_model_choice.py)")
        said(lambda: BatchedChatQwen(base_url=guide.base_url, model="Qwen/Qwen3-0.6B", max_tokens=8).invoke("hi"))
        step("1. replicas serving different models: no discovery, a clear error (test_model_choice.py)")
        said(lambda: BatchedChatQwen(base_url=[guide.base_url, other.base_url], max_tokens=8).invoke("hi"))
        step("1. the simulator as the README starts it serves what vllm serve Qwen/Qwen3-0.6B serves")
        named = BatchedChatQwen(base_url=plain.base_url, model="Qwen/Qwen3-0.6B", max_tokens=8)
        said(lambda: named.invoke("hi").content)

        step("3. URL hints (test_url_hints.py)")
        said(lambda: BatchedChatQwen(base_url=plain.base_url + "/chat/completions"))
        said(lambda: BatchedChatQwen(base_url=plain.url + "/v2", max_tokens=8).invoke("hi"))
        said(lambda: BatchedChatQwen(base_url=plain.url + "/api/v1", max_tokens=8).invoke("hi"))

        step("4. doctor with a wrong prefix (test_doctor_sim.py::test_a_wrong_prefix_is_diagnosed...)")
        for suffix in ("/v2", "/api/v1"):
            doctor_lines(plain.url + suffix, "qwen-fast doctor", "reachable", "base_url")

        step("8. the simulator's --api-key, a wrong key (test_sim_auth_and_names.py)")
        said(lambda: BatchedChatQwen(base_url=keyed.base_url, api_key="wrong", max_tokens=8).invoke("hi"))

        step("9. doctor against the simulator: what it lacks is info, not warnings (test_doctor_sim.py)")
        doctor_lines(plain.base_url, "thinking_switch", "template", "priority_scheduling")

        step("10. README: installing from a clone")
        print("->", next(x for x in (ROOT / "README.md").read_text().splitlines() if "pip install -e" in x))

        step("11. user:password@ in base_url with OPENAI_API_KEY in the environment (test_secrets.py)")
        os.environ["OPENAI_API_KEY"] = "sk-for-openai"
        said(lambda: BatchedChatQwen(base_url="http://user:pw@127.0.0.1:18809/v1"))
        os.environ.pop("OPENAI_API_KEY")

        step("12. a token in default_headers and repr() (test_secrets.py)")
        said(lambda: repr(BatchedChatQwen(base_url=plain.base_url, default_headers={"Authorization": "Bearer t0k"})))

        step("7. qwen-fast worker --help (test_cli_help.py)")
        out = subprocess.run([sys.executable, "-m", "langchain_qwen_fast.cli", "worker", "--help"],
                             capture_output=True, text=True).stdout
        print("\n".join("  " + x for x in out.splitlines() if "default" in x or "``" in x))

        step("2. a worker for an unserved model (tests/integrations/test_worker_readiness.py)")
        worker_for_unserved(guide)
    finally:
        for s in (guide, plain, other, keyed):
            s.stop()


def worker_for_unserved(server: SimServer) -> None:
    import shutil

    redis = shutil.which("redis-server")
    if redis is None:
        print("-> skipped: redis-server is not installed (bash tests/servers/redis.sh install)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        with ChildProcess([redis, "--port", "0", "--unixsocket", str(sock), "--save", ""], ready=sock.exists,
                          name="redis-server"):
            argv = [sys.executable, "-m", "langchain_qwen_fast.cli", "worker", "--redis", f"unix://{sock}",
                    "--stream", "jobs", "--group", "qwen", "--base-url", server.base_url,
                    "--model", "Qwen/Qwen3-0.6B", "--http-port", "0"]
            holder: list[ChildProcess] = []
            w = ChildProcess(argv, ready=lambda: "WORKER_HTTP" in holder[0].output(), name="worker")
            holder.append(w)
            with w:
                time.sleep(2.5)
                out = w.output()
                http = out.split("WORKER_HTTP http=", 1)[1].split()[0]
                try:
                    urllib.request.urlopen(http + "/health", timeout=5)
                except urllib.error.HTTPError as e:
                    print(f"-> GET /health: {e.code} {e.read().decode()}")
                print("-> worker output:\n" + "\n".join("   " + x for x in out.splitlines()))
                print("-> WORKER_READY printed:", "WORKER_READY" in out)


if __name__ == "__main__":
    main()
