"""The fault drills' table (tests/cluster/test_drills.py) at the end of the run, whether or not `-s` was given."""

from __future__ import annotations

import pytest

DRILL_TABLE = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    table = config.stash.get(DRILL_TABLE, None)
    if table:
        terminalreporter.section("fault drills (tests/cluster/test_drills.py)")
        terminalreporter.write_line(table)
