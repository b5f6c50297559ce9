"""Suite-wide: report the wall time spent in each test tier (unit, sim, reliability, integration)."""

from __future__ import annotations

from collections import defaultdict

import pytest

_TIER_SECONDS: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _TIER_SECONDS[tier] += report.duration  # setup + call + teardown, so server start-ups count too


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIER_SECONDS:
        return
    terminalreporter.write_sep("-", "time by test tier (setup + call + teardown)")
    for tier, seconds in sorted(_TIER_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{tier:12s} {seconds:8.1f} s")
