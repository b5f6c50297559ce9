"""Every script in examples/ runs against the simulator and exits 0 (small sizes via arguments).

Each example takes ``--base-url`` (the convention its header documents); one without an entry in
RUNS runs with no other arguments. The scripts start together (each is a fresh interpreter that
spends most of its time importing) and each test waits for its own, so the file costs about as
long as the slowest script.

Covers: examples/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.sim
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
RUNS = {
    "migrate_from_chatopenai.py": ["--n", "16"],
    "lcel_abatch_pipeline.py": ["--n", "200", "--max-tokens", "16"],
    "agent_with_tools.py": [],
    "structured_extraction.py": ["--n", "8"],
    "ray_bulk_job.py": ["--rows", "2000", "--max-tokens", "16"],  # a local Ray cluster, two actors
}
EXPECT = {
    "migrate_from_chatopenai.py": "after  BatchedChatQwen 16 answers",
    "lcel_abatch_pipeline.py": "200 taglines in",
    "agent_with_tools.py": "tool: ",  # the agent called a tool and got its result
    "structured_extraction.py": "8/8 extracted",
    "ray_bulk_job.py": "2000/2000 rows answered, 0 failed",
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    with SimServer(SimConfig(latency="zero")) as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN_", "OPENAI_"))}
        procs = {
            name: subprocess.Popen([sys.executable, str(EXAMPLES / name), "--base-url",
                                    srv.base_url, *RUNS.get(name, [])], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for name in SCRIPTS
        }
        try:
            yield procs
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def test_every_example_named_here_exists() -> None:
    assert set(RUNS) <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_runs_against_the_simulator(name: str,
                                            runs: dict[str, subprocess.Popen[str]]) -> None:
    out, _ = runs[name].communicate(timeout=120)
    assert runs[name].returncode == 0, out
    assert EXPECT.get(name, "") in out, out
    text = (EXAMPLES / name).read_text()
    assert "python -m langchain_qwen_fast.testing.server --port 8000 &" in text
