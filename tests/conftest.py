"""Suite-wide: report the wall time spent in each test tier (unit, sim, reliability, integration); a
self-signed certificate for the TLS tests of any tier."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from support import self_signed_cert

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


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(cert, key)`` for 127.0.0.1, ::1 and localhost; trusting ``cert`` trusts the server."""
    try:
        return self_signed_cert(tmp_path_factory.mktemp("tls"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        pytest.fail("the openssl command is needed to make a self-signed certificate")
