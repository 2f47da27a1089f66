"""The flap benchmark as a regression guard: a small, seeded run of the same corpus `placecast bench` uses.

The figures the README quotes come from the full run (20 traces per scenario); this one (6 per scenario, one
seed) only guards the direction: the product's rules must stay far better than the previous ones where those
failed, and must not lose what those did right.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.flap import run_flap_bench


@pytest.fixture(scope="module")
def flap() -> dict[str, Any]:
    return run_flap_bench(per_scenario=6, seed=7)


def test_standing_near_walls_does_not_flap(flap: dict[str, Any]) -> None:
    old, new = flap["old"]["near_walls"], flap["new"]["near_walls"]
    assert old["false_per_device_hour"] > 2  # the corpus does provoke the old rules
    assert new["false_per_device_hour"] <= 0.1
    assert new["false_exits"] <= 1


def test_walks_in_are_entered_and_walks_past_are_not(flap: dict[str, Any]) -> None:
    new = flap["new"]
    assert new["walks_in"]["missed_enters"] <= 0.25 * new["walks_in"]["true_enters"]
    assert new["scenarios"]["walk_in_deep"]["missed_enters"] == 0
    assert new["scenarios"]["walk_in_deep"]["median_enter_delay_s"] <= 60
    assert new["scenarios"]["walk_past"]["false_enters"] + new["scenarios"]["walk_along"]["false_enters"] <= 1


def test_late_fixes_never_push_and_missing_accuracy_still_enters(flap: dict[str, Any]) -> None:
    assert flap["old"]["all"]["pushes_from_late_fixes"] > 0
    assert flap["new"]["all"]["pushes_from_late_fixes"] == 0
    old, new = (flap[rules]["scenarios"]["walk_in_out_no_accuracy"] for rules in ("old", "new"))
    assert old["missed_enters"] == old["true_enters"]  # the old rules never entered on such fixes
    assert new["missed_enters"] <= new["true_enters"] // 2
