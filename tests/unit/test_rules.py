"""Edges of content rule evaluation: DST, midnight, caps, cooldowns, two timezones, opening hours."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.rules import (
    TRIGGERS,
    ContentRule,
    Decision,
    DeviceFacts,
    EventFacts,
    History,
    evaluate,
    local_day_start,
)

HEL = "Europe/Helsinki"
NYC = "America/New_York"
PLACE = 10
SHOP_HOURS = "Mo-Fr 08:00-20:00; Sa 10:00-16:00"
NO_HISTORY = History(last_sent={}, sent_today=0)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def at(tz: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A wall-clock time somewhere, as the UTC instant the caller would hold."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz)).astimezone(UTC)


# Wednesday 2026-05-06 12:00 in Helsinki (UTC+3).
WEDNESDAY_NOON = at(HEL, 2026, 5, 6, 12, 0)


def event(**changes: Any) -> EventFacts:
    base = EventFacts(
        event_id=1,
        kind="enter",
        zone="building",
        place_id=PLACE,
        place_kind="library",
        place_timezone=HEL,
        opening_hours=None,
        occurred_at=WEDNESDAY_NOON,
    )
    return replace(base, **changes)


def device(**changes: Any) -> DeviceFacts:
    base = DeviceFacts(
        device_id=7,
        role="visitor",
        tags=frozenset(),
        consents={"offers": True},
        timezone=HEL,
        push_enabled=True,
    )
    return replace(base, **changes)


def rule(content_id: int = 1, **columns: Any) -> ContentRule:
    values: dict[str, Any] = {"id": content_id, "place_id": PLACE, **columns}
    if "place_kind" in columns and "place_id" not in columns:
        values["place_id"] = None
    return ContentRule.from_model_values(**values)


def decide(
    rules: ContentRule | list[ContentRule],
    ev: EventFacts | None = None,
    dev: DeviceFacts | None = None,
    history: History = NO_HISTORY,
    now: datetime | None = None,
) -> list[Decision]:
    ev = ev or event()
    return evaluate(ev, dev or device(), rules if isinstance(rules, list) else [rules], history, now or ev.occurred_at)


def reasons(*args: Any, **kwargs: Any) -> list[str]:
    return [d.reason for d in decide(*args, **kwargs)]


def reason(*args: Any, **kwargs: Any) -> str:
    (only,) = reasons(*args, **kwargs)
    return only


# --- parsing ---------------------------------------------------------------------------------------------


def test_from_model_values_reads_a_whole_row() -> None:
    parsed = ContentRule.from_model_values(
        id=3,
        organisation_id=1,
        title="Reading hour",
        body="Floor 2",
        place_id=None,
        place_kind="library",
        trigger="dwell",
        zone="approach",
        audience_role="visitor",
        audience_tags=["kids", "family"],
        schedule={
            "valid_from": "2026-05-01T08:00:00+03:00",
            "valid_to": "2026-06-01T00:00:00+03:00",
            "days": [0, 2],
            "hours": ["09:00", "17:30"],
            "only_when_open": True,
        },
        cooldown_s=600,
        daily_cap=2,
        quiet_hours=["22:00", "07:00"],
        consent_purpose="events",
        active=False,
    )
    assert parsed == ContentRule(
        content_id=3,
        place_id=None,
        place_kind="library",
        trigger="dwell",
        zone="approach",
        audience_role="visitor",
        audience_tags=frozenset({"kids", "family"}),
        valid_from=datetime(2026, 5, 1, 5, 0, tzinfo=UTC),
        valid_to=datetime(2026, 5, 31, 21, 0, tzinfo=UTC),
        days=frozenset({0, 2}),
        hours=(time(9), time(17, 30)),
        only_when_open=True,
        cooldown_s=600,
        daily_cap=2,
        quiet_hours=(time(22), time(7)),
        consent_purpose="events",
        active=False,
    )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"schedule": {"hours": ["9:00", "17:00"]}}, "schedule.hours"),
        ({"schedule": {"hours": ["09:00", "25:00"]}}, "schedule.hours"),
        ({"schedule": {"hours": ["09:60", "17:00"]}}, "schedule.hours"),
        ({"schedule": {"hours": ["24:00", "02:00"]}}, "schedule.hours"),
        ({"schedule": {"hours": ["09:00"]}}, "schedule.hours"),
        ({"schedule": {"hours": "09:00-17:00"}}, "schedule.hours"),
        ({"schedule": {"hours": ["09:00", "09:00"]}}, "hours start equals end"),
        ({"quiet_hours": ["22:00", 7]}, "quiet_hours"),
        ({"quiet_hours": ["00:00", "24:00"]}, "quiet_hours start equals end"),
        ({"schedule": {"days": [7]}}, "schedule.days"),
        ({"schedule": {"days": ["Mo"]}}, "schedule.days"),
        ({"schedule": {"days": [True]}}, "schedule.days"),
        ({"schedule": {"days": 1}}, "schedule.days"),
        ({"schedule": {"valid_from": "next tuesday"}}, "schedule.valid_from"),
        ({"schedule": {"valid_to": 1767225600}}, "schedule.valid_to"),
        ({"schedule": {"valid_to": "2026-02-30"}}, "schedule.valid_to"),
        ({"schedule": {"valid_from": "2026-06-01", "valid_to": "2026-05-01"}}, "before"),
        ({"schedule": {"only_when_open": "yes"}}, "only_when_open"),
        ({"schedule": {"only_when_opne": True}}, "unknown schedule key"),
        ({"place_kind": "library"}, "exactly one of place_id and place_kind"),
        ({"place_id": None}, "exactly one of place_id and place_kind"),
        ({"trigger": "wave"}, "trigger"),
        ({"zone": "garden"}, "zone"),
        ({"audience_role": "admin"}, "audience_role"),
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"daily_cap": -1}, "daily_cap"),
    ],
)
def test_bad_rows_are_refused_with_the_field_named(columns: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContentRule.from_model_values(**{"id": 9, "place_id": PLACE, **columns})


def test_end_2400_runs_to_midnight() -> None:
    evening = rule(schedule={"hours": ["18:00", "24:00"]})
    assert evening.hours == (time(18), time(0))
    assert reason(evening, event(occurred_at=at(HEL, 2026, 5, 6, 23, 59, 59))) == "sent"
    assert reason(evening, event(occurred_at=at(HEL, 2026, 5, 7, 0, 0))) == "hours"


def test_empty_days_mean_every_day() -> None:
    assert rule(schedule={"days": []}).days is None


def test_bare_dates_are_whole_days_at_the_place() -> None:
    may = rule(schedule={"valid_from": "2026-05-01", "valid_to": "2026-05-31"})
    assert reason(may, event(occurred_at=at(HEL, 2026, 4, 30, 23, 59, 59))) == "not_yet_valid"
    assert reason(may, event(occurred_at=at(HEL, 2026, 5, 1, 0, 0))) == "sent"
    assert reason(may, event(occurred_at=at(HEL, 2026, 5, 31, 23, 59, 59))) == "sent"
    assert reason(may, event(occurred_at=at(HEL, 2026, 6, 1, 0, 0))) == "expired"


def test_aware_validity_bounds_are_instants() -> None:
    from_utc_midnight = rule(schedule={"valid_from": "2026-05-01T00:00:00Z"})
    # 02:00 in Helsinki is still 23:00 UTC the day before.
    assert reason(from_utc_midnight, event(occurred_at=at(HEL, 2026, 5, 1, 2, 0))) == "not_yet_valid"
    assert reason(from_utc_midnight, event(occurred_at=utc(2026, 5, 1, 0, 0))) == "sent"


# --- targeting and audience ----------------------------------------------------------------------------


def test_only_rules_for_this_place_or_its_kind_appear() -> None:
    rules = [
        rule(1),
        rule(2, place_id=PLACE + 1),
        rule(3, place_kind="library"),
        rule(4, place_kind="school"),
    ]
    assert [d.content_id for d in decide(rules)] == [1, 3]


@pytest.mark.parametrize(
    ("columns", "ev", "expected"),
    [
        ({"trigger": "exit"}, event(kind="enter"), "trigger"),
        ({"trigger": "dwell"}, event(kind="dwell"), "sent"),
        ({"zone": "approach"}, event(zone="building"), "zone"),
        ({"zone": "approach"}, event(zone="approach"), "sent"),
        # A check-in carries no geofence ring, so an approach-zone check-in rule still fires.
        ({"zone": "approach", "trigger": "checkin"}, event(kind="checkin", zone="building"), "sent"),
        ({"active": False}, event(), "inactive"),
    ],
)
def test_trigger_zone_and_active(columns: dict[str, Any], ev: EventFacts, expected: str) -> None:
    assert reason(rule(**columns), ev) == expected


@pytest.mark.parametrize(
    ("columns", "dev", "expected"),
    [
        ({"audience_role": "staff"}, device(role="visitor"), "audience_role"),
        ({"audience_role": "staff"}, device(role="staff"), "sent"),
        ({"audience_role": None}, device(role="staff"), "sent"),
        ({"audience_tags": ["kids", "family"]}, device(tags=frozenset({"family", "x"})), "sent"),
        ({"audience_tags": ["kids", "family"]}, device(tags=frozenset({"seniors"})), "audience_tags"),
        ({"audience_tags": []}, device(tags=frozenset()), "sent"),
        ({"consent_purpose": "offers"}, device(consents={}), "consent"),
        ({"consent_purpose": "offers"}, device(consents={"offers": False}), "consent"),
        ({"consent_purpose": "offers"}, device(consents={"offers": "true"}), "consent"),
        ({"consent_purpose": "offers"}, device(consents={"analytics": True}), "consent"),
        ({"consent_purpose": "events"}, device(consents={"events": True}), "sent"),
    ],
)
def test_audience_and_consent(columns: dict[str, Any], dev: DeviceFacts, expected: str) -> None:
    assert reason(rule(**columns), dev=dev) == expected


def test_no_push_means_everything_else_passed_and_takes_no_cap_slot() -> None:
    muted = device(push_enabled=False)
    assert reason(rule(), dev=muted) == "no_push"
    assert reason(rule(consent_purpose="analytics"), dev=muted) == "consent"
    assert reasons([rule(1, daily_cap=1), rule(2, daily_cap=1)], dev=muted) == ["no_push", "no_push"]


# --- schedule: days, hours, midnight -------------------------------------------------------------------

NIGHT: dict[str, Any] = {"hours": ["22:00", "02:00"]}


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2026, 6, 5, 21, 59, 59), "hours"),
        ((2026, 6, 5, 22, 0, 0), "sent"),
        ((2026, 6, 5, 23, 59, 59), "sent"),
        ((2026, 6, 6, 0, 0, 0), "sent"),
        ((2026, 6, 6, 1, 59, 59), "sent"),
        ((2026, 6, 6, 2, 0, 0), "hours"),
        ((2026, 6, 6, 12, 0, 0), "hours"),
    ],
)
def test_window_across_midnight_end_exclusive(local: tuple[int, ...], expected: str) -> None:
    assert reason(rule(schedule=NIGHT), event(occurred_at=at(HEL, *local))) == expected


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2026, 6, 5, 23, 0), "sent"),  # Friday evening
        ((2026, 6, 6, 1, 0), "sent"),  # Saturday small hours: still Friday night
        ((2026, 6, 6, 23, 0), "day"),  # Saturday evening
        ((2026, 6, 5, 1, 0), "day"),  # Friday small hours: Thursday night
        ((2026, 6, 5, 12, 0), "hours"),
    ],
)
def test_night_window_belongs_to_the_day_it_opens(local: tuple[int, ...], expected: str) -> None:
    friday_nights = rule(schedule={**NIGHT, "days": [4]})
    assert reason(friday_nights, event(occurred_at=at(HEL, *local))) == expected


def test_days_are_read_in_the_place_timezone() -> None:
    saturdays = rule(schedule={"days": [5]})
    # Friday 22:00 in New York is already Saturday 05:00 in Helsinki.
    friday_night_ny = at(NYC, 2026, 5, 8, 22, 0)
    assert reason(saturdays, event(occurred_at=friday_night_ny)) == "sent"
    assert reason(saturdays, event(occurred_at=friday_night_ny, place_timezone=NYC)) == "day"


def test_spring_forward_hours_window() -> None:
    # 2026-03-29 Helsinki jumps 03:00 EET -> 04:00 EEST at 01:00 UTC; 03:00-05:00 holds only an hour.
    early = rule(schedule={"hours": ["03:00", "05:00"]})
    assert reason(early, event(occurred_at=utc(2026, 3, 29, 0, 59, 59))) == "hours"  # 02:59:59 EET
    assert reason(early, event(occurred_at=utc(2026, 3, 29, 1, 0, 0))) == "sent"  # 04:00 EEST
    assert reason(early, event(occurred_at=utc(2026, 3, 29, 1, 59, 59))) == "sent"
    assert reason(early, event(occurred_at=utc(2026, 3, 29, 2, 0, 0))) == "hours"  # 05:00 EEST


def test_fall_back_hours_window_covers_both_repeated_hours() -> None:
    # 2026-10-25 Helsinki goes 04:00 EEST -> 03:00 EET at 01:00 UTC; 03:00-04:00 happens twice.
    repeated = rule(schedule={"hours": ["03:00", "04:00"]})
    assert reason(repeated, event(occurred_at=utc(2026, 10, 24, 23, 59, 59))) == "hours"  # 02:59:59
    assert reason(repeated, event(occurred_at=utc(2026, 10, 25, 0, 0, 0))) == "sent"  # 03:00 EEST
    assert reason(repeated, event(occurred_at=utc(2026, 10, 25, 1, 0, 0))) == "sent"  # 03:00 EET
    assert reason(repeated, event(occurred_at=utc(2026, 10, 25, 1, 59, 59))) == "sent"
    assert reason(repeated, event(occurred_at=utc(2026, 10, 25, 2, 0, 0))) == "hours"  # 04:00 EET


# --- quiet hours ---------------------------------------------------------------------------------------

QUIET: dict[str, Any] = {"quiet_hours": ["22:00", "07:00"]}


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 3, 29, 3, 59, 59), "quiet_hours"),  # 06:59:59 EEST, the first summer morning
        (utc(2026, 3, 29, 4, 0, 0), "sent"),  # 07:00 EEST (06:00 if the offset were still +2)
        (utc(2026, 3, 29, 18, 59, 59), "sent"),
        (utc(2026, 3, 29, 19, 0, 0), "quiet_hours"),  # 22:00 EEST
        (utc(2026, 10, 25, 4, 59, 59), "quiet_hours"),  # 06:59:59 EET, the first winter morning
        (utc(2026, 10, 25, 5, 0, 0), "sent"),  # 07:00 EET
        (utc(2026, 10, 24, 18, 59, 59), "sent"),
        (utc(2026, 10, 24, 19, 0, 0), "quiet_hours"),  # 22:00 EEST, the night before the change
    ],
)
def test_quiet_hours_on_dst_days(now: datetime, expected: str) -> None:
    assert reason(rule(**QUIET), event(occurred_at=now), now=now) == expected


def test_quiet_hours_use_the_device_clock_at_now() -> None:
    quiet = rule(**QUIET)
    ny = device(timezone=NYC)
    ev = event(occurred_at=at(NYC, 2026, 5, 6, 15, 30))  # 22:30 in Helsinki, 15:30 in New York
    assert reason(quiet, ev, ny) == "sent"
    assert reason(quiet, ev, device(timezone=HEL)) == "quiet_hours"
    # The job ran late: by now it is 22:30 in New York.
    assert reason(quiet, ev, ny, now=at(NYC, 2026, 5, 6, 22, 30)) == "quiet_hours"


def test_place_hours_and_device_quiet_hours_use_their_own_clocks() -> None:
    ny = device(timezone=NYC)
    ev = event(occurred_at=at(HEL, 2026, 5, 6, 22, 30))  # 15:30 in New York
    assert reason(rule(schedule={"hours": ["09:00", "17:00"]}), ev, ny) == "hours"
    assert reason(rule(schedule={"hours": ["20:00", "23:00"]}, **QUIET), ev, ny) == "sent"


# --- cooldown and daily cap ----------------------------------------------------------------------------


def test_cooldown_boundary_is_allowed() -> None:
    now = WEDNESDAY_NOON
    ten_minutes = rule(cooldown_s=600)

    def after(elapsed: timedelta) -> str:
        return reason(ten_minutes, history=History({1: now - elapsed, 2: now}, 0), now=now)

    assert after(timedelta(seconds=600)) == "sent"
    assert after(timedelta(seconds=600) - timedelta(microseconds=1)) == "cooldown"
    assert reason(ten_minutes, history=History({2: now}, 0), now=now) == "sent"  # another content


def test_cooldown_counts_to_now_not_to_the_event() -> None:
    ev = event()
    last = ev.occurred_at - timedelta(seconds=100)
    late = ev.occurred_at + timedelta(seconds=500)
    assert reason(rule(cooldown_s=600), ev, history=History({1: last}, 0), now=late) == "sent"


def test_cap_reached_exactly() -> None:
    three = rule(daily_cap=3)
    assert reason(three, history=History({}, 2)) == "sent"  # the third of the day
    assert reason(three, history=History({}, 3)) == "daily_cap"  # the fourth
    assert reason(rule(daily_cap=0)) == "daily_cap"


def test_cap_is_shared_by_the_rules_of_one_evaluation() -> None:
    rules = [rule(i, daily_cap=3) for i in (4, 1, 3, 2)]
    # One already sent today: two slots left, the lowest content ids take them whatever the input order.
    assert decide(rules, history=History({}, 1)) == [
        Decision(1, True, "sent"),
        Decision(2, True, "sent"),
        Decision(3, False, "daily_cap"),
        Decision(4, False, "daily_cap"),
    ]


def test_uncapped_sends_count_towards_a_capped_rule_and_refusals_do_not() -> None:
    assert reasons([rule(1), rule(2, daily_cap=1)]) == ["sent", "daily_cap"]
    assert reasons([rule(1, consent_purpose="analytics"), rule(2, daily_cap=1)]) == ["consent", "sent"]


# --- opening hours -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2026, 5, 4, 7, 59, 59), "closed"),  # Monday
        ((2026, 5, 4, 8, 0, 0), "sent"),
        ((2026, 5, 4, 19, 59, 59), "sent"),
        ((2026, 5, 4, 20, 0, 0), "closed"),
        ((2026, 5, 9, 9, 59, 59), "closed"),  # Saturday
        ((2026, 5, 9, 10, 0, 0), "sent"),
        ((2026, 5, 9, 16, 0, 0), "closed"),
        ((2026, 5, 10, 12, 0, 0), "closed"),  # Sunday
    ],
)
def test_only_when_open(local: tuple[int, ...], expected: str) -> None:
    ev = event(opening_hours=SHOP_HOURS, occurred_at=at(HEL, *local))
    assert reason(rule(schedule={"only_when_open": True}), ev) == expected


def test_opening_hours_ignored_unless_asked() -> None:
    sunday = event(opening_hours=SHOP_HOURS, occurred_at=at(HEL, 2026, 5, 10, 12, 0))
    assert reason(rule(), sunday) == "sent"


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (None, "sent"),
        ("", "sent"),
        ("whenever we feel like it", "opening_hours_invalid"),
        ("Mo-Fr 08:00-20:00; We unknown", "opening_hours_unknown"),
    ],
)
def test_missing_hours_count_as_open_and_bad_hours_do_not(hours: str | None, expected: str) -> None:
    assert reason(rule(schedule={"only_when_open": True}), event(opening_hours=hours)) == expected


# --- local_day_start -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        (utc(2026, 3, 29, 20, 59, 59), HEL, utc(2026, 3, 28, 22)),  # 23-hour day starts at +2
        (utc(2026, 3, 29, 21, 0, 0), HEL, utc(2026, 3, 29, 21)),  # next day starts at +3
        (utc(2026, 10, 25, 21, 59, 59), HEL, utc(2026, 10, 24, 21)),  # 25-hour day starts at +3
        (utc(2026, 10, 25, 22, 0, 0), HEL, utc(2026, 10, 25, 22)),
        (at(NYC, 2026, 5, 6, 23, 0), NYC, utc(2026, 5, 6, 4)),  # already the 7th in UTC
        (utc(2026, 9, 6, 12), "America/Santiago", utc(2026, 9, 6, 4)),  # midnight skipped: 01:00 -03
        (utc(2026, 11, 1, 5, 30), "America/Havana", utc(2026, 11, 1, 4)),  # midnight twice: the first
    ],
)
def test_local_day_start(now: datetime, tz: str, expected: datetime) -> None:
    start = local_day_start(now, tz)
    assert start == expected
    assert start.tzinfo is UTC


def test_local_day_start_accepts_any_aware_now() -> None:
    now = utc(2026, 5, 6, 3, 0)
    assert local_day_start(now.astimezone(ZoneInfo(NYC)), HEL) == local_day_start(now, HEL)


# --- guards --------------------------------------------------------------------------------------------


def test_guards() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        decide(rule(), now=datetime(2026, 5, 6, 12))
    with pytest.raises(ValueError, match="occurred_at must be timezone-aware"):
        event(occurred_at=datetime(2026, 5, 6, 12))
    with pytest.raises(ValueError, match="unknown IANA timezone"):
        decide(rule(), dev=device(timezone="Mars/Olympus"))
    with pytest.raises(ValueError, match="unknown IANA timezone"):
        local_day_start(WEDNESDAY_NOON, "Europe/Atlantis")
    with pytest.raises(ValueError, match="duplicate content_id"):
        decide([rule(1), rule(1, trigger="exit")])
    with pytest.raises(ValueError, match="sent_today"):
        History({}, -1)


# --- properties ----------------------------------------------------------------------------------------

TIMES = st.times().map(lambda t: t.replace(second=0, microsecond=0))
WINDOWS = st.none() | st.tuples(TIMES, TIMES).filter(lambda w: w[0] != w[1])
MOMENTS = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC))
TAGS = st.frozensets(st.sampled_from(["kids", "family", "seniors"]))


@st.composite
def content_rules(draw: st.DrawFn, content_id: int) -> ContentRule:
    by_id = draw(st.booleans())
    return ContentRule(
        content_id=content_id,
        place_id=draw(st.sampled_from([PLACE, PLACE + 1])) if by_id else None,
        place_kind=None if by_id else draw(st.sampled_from(["library", "school"])),
        trigger=draw(st.sampled_from(sorted(TRIGGERS))),
        zone=draw(st.sampled_from(["building", "approach"])),
        audience_role=draw(st.sampled_from([None, "visitor", "staff"])),
        audience_tags=draw(TAGS),
        valid_from=None,
        valid_to=None,
        days=draw(st.none() | st.frozensets(st.integers(0, 6), min_size=1)),
        hours=draw(WINDOWS),
        only_when_open=draw(st.booleans()),
        cooldown_s=draw(st.integers(0, 7200)),
        daily_cap=draw(st.none() | st.integers(0, 5)),
        quiet_hours=draw(WINDOWS),
        consent_purpose=draw(st.sampled_from(["offers", "analytics"])),
        active=draw(st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[EventFacts, DeviceFacts, list[ContentRule], History, datetime]:
    ids = draw(st.lists(st.integers(1, 50), unique=True, max_size=12))
    rules = [draw(content_rules(i)) for i in ids]
    ev = event(
        kind=draw(st.sampled_from(sorted(TRIGGERS))),
        zone=draw(st.sampled_from(["building", "approach"])),
        place_id=draw(st.sampled_from([PLACE, PLACE + 1])),
        place_kind=draw(st.sampled_from(["library", "school"])),
        opening_hours=draw(st.sampled_from([None, SHOP_HOURS, "24/7"])),
        occurred_at=draw(MOMENTS),
    )
    dev = device(
        role=draw(st.sampled_from(["visitor", "staff"])),
        tags=draw(TAGS),
        consents=draw(st.dictionaries(st.sampled_from(["offers", "analytics"]), st.booleans())),
        timezone=draw(st.sampled_from([HEL, NYC, "America/Santiago", "UTC"])),
        push_enabled=draw(st.booleans()),
    )
    now = ev.occurred_at + draw(st.timedeltas(timedelta(0), timedelta(hours=3)))
    sent_at = st.timedeltas(timedelta(0), timedelta(hours=3)).map(lambda d: now - d)
    history = History(draw(st.dictionaries(st.sampled_from(ids or [0]), sent_at)), draw(st.integers(0, 6)))
    return ev, dev, rules, history, now


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_targets_determinism_and_caps(
    scenario: tuple[EventFacts, DeviceFacts, list[ContentRule], History, datetime], rnd: random.Random
) -> None:
    ev, dev, rules, history, now = scenario
    decisions = evaluate(ev, dev, rules, history, now)

    targeting = [r.content_id for r in rules if r.place_id == ev.place_id or r.place_kind == ev.place_kind]
    assert [d.content_id for d in decisions] == sorted(targeting)
    assert all(d.send == (d.reason == "sent") for d in decisions)

    shuffled = rules[:]
    rnd.shuffle(shuffled)
    assert evaluate(ev, dev, shuffled, history, now) == decisions

    caps = {r.content_id: r.daily_cap for r in rules}
    sends = 0
    for d in decisions:
        if d.send:
            sends += 1
            cap = caps[d.content_id]
            assert cap is None or history.sent_today + sends <= cap


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 15), st.integers(0, 8), st.integers(0, 10))
def test_property_sends_fill_exactly_the_remaining_cap(n_rules: int, cap: int, sent_today: int) -> None:
    rules = [rule(i, daily_cap=cap) for i in range(1, n_rules + 1)]
    sends = sum(d.send for d in decide(rules, history=History({}, sent_today)))
    assert sends == min(n_rules, max(0, cap - sent_today))
