"""Process helpers shared by the unit tests that start real children (test_process.py, test_launch.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def gone(pid: int) -> bool:
    """No such process, or only its zombie (exited, not yet reaped by whoever adopted it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    """Poll ``pred`` every 20 ms until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False
