"""The pure parts of services/activity.py: time bounds, kinds, `--since`, CSV cells."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofences.activity import EventRow
from kernel.errors import ValidationFailed
from services.activity import check_range, check_time, csv_cell, csv_text, parse_kinds, parse_since

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2))),  # year 0 in UTC: must not overflow
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))),  # year 10000 in UTC
        datetime(9999, 12, 31, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2000, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),  # 1999 in UTC
        datetime(2100, 1, 1, 0, 0, 1, tzinfo=UTC),
    ],
)
def test_absurd_times_are_refused_not_crashed(value: datetime) -> None:
    with pytest.raises(ValidationFailed) as error:
        check_time(value, "from")
    assert error.value.problems[0].field == "from" and "2000" in error.value.problems[0].reason


def test_times_need_a_zone_and_come_back_in_utc() -> None:
    with pytest.raises(ValidationFailed, match="time zone"):
        check_time(datetime(2025, 3, 10), "to")
    local = datetime(2025, 3, 10, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert check_time(local, "to") == NOW and check_time(local, "to").tzinfo == UTC  # type: ignore[union-attr]
    assert check_time(None, "to") is None


@given(st.datetimes(timezones=st.timezones()), st.datetimes(timezones=st.timezones()))
def test_any_range_is_checked_or_refused(first: datetime, second: datetime) -> None:
    """Whatever the years and zones: a clean 422 or a valid range, never another exception."""
    try:
        start, end = check_range(first, second)
    except ValidationFailed:
        return
    assert start is not None and end is not None and start <= end


def test_from_after_to_is_refused() -> None:
    with pytest.raises(ValidationFailed) as error:
        check_range(NOW, NOW - timedelta(seconds=1))
    assert error.value.problems[0].field == "from"
    assert check_range(NOW, NOW) == (NOW, NOW)


def test_kinds_repeat_or_comma_separate() -> None:
    assert parse_kinds(None) == ()
    assert parse_kinds(["enter, exit", "Dwell", "enter", ""]) == ("enter", "exit", "dwell")
    with pytest.raises(ValidationFailed) as error:
        parse_kinds(["enter,teleport"], field="--kind")
    assert error.value.problems[0].field == "--kind" and "'teleport'" in error.value.problems[0].reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        (" 1W ", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T08:00:00+02:00", datetime(2025, 3, 1, 6, tzinfo=UTC)),
    ],
)
def test_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2x", "-2h", "", "0001-01-01", "9999-01-01T00:00:00Z", "999999d"])
def test_bad_since_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_since(text, NOW)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+49 30 1234", "'+49 30 1234"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Oodi = library", "Oodi = library"),
        (-2, "-2"),  # numbers are numbers, not text
        (2.5, "2.5"),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (datetime(2025, 3, 10, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2025-03-10T12:00:00+00:00"),
    ],
)
def test_csv_cells_never_start_a_formula(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


def test_csv_quotes_commas_quotes_and_newlines() -> None:
    name = '=A1, "quoted"\nnext line'
    row = EventRow(1, "enter", "building", 2, name, None, 3, None, NOW, NOW, False)
    parsed = list(csv.reader(io.StringIO(csv_text([row], ("id", "place_name", "fence_id"), header=True), newline="")))
    assert parsed == [["id", "place_name", "fence_id"], ["1", "'" + name, ""]]
