"""Which content an event should push to a device, and why the rest is not pushed.

Pure on purpose: plain facts in, decisions out, no database, clock or network. The caller loads the
rows, counts the history with SQL (see `local_day_start`) and acts on the decisions, so every edge
(DST, midnight, caps, cooldowns) is testable with plain values.

Times: schedules (validity, days, hours, opening hours) are read in the place's timezone at the moment
of the event, because they describe the place; quiet hours and the daily cap are read in the device's
timezone at `now`, because they protect the person holding the phone when it would buzz.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from opening_hours import OpeningHours, State, validate

from kernel.timezones import UnknownTimeZone, time_zone

EventKind = Literal["enter", "exit", "dwell", "checkin", "checkout"]
Zone = Literal["building", "approach"]
DeviceRole = Literal["visitor", "staff"]
# Grouped by the check that reports them, in the order they are checked.
StaticReason = Literal["inactive", "trigger", "zone", "audience_role", "audience_tags", "consent"]
ScheduleReason = Literal["not_yet_valid", "expired", "day", "hours"]
OpenReason = Literal["closed", "opening_hours_unknown", "opening_hours_invalid"]
FrequencyReason = Literal["quiet_hours", "cooldown", "daily_cap"]
Reason = Literal["sent", StaticReason, ScheduleReason, OpenReason, FrequencyReason, "no_push"]
Window = tuple[time, time]

TRIGGERS: frozenset[str] = frozenset(("enter", "exit", "dwell", "checkin", "checkout"))
ZONES: frozenset[str] = frozenset(("building", "approach"))
ROLES: frozenset[str] = frozenset(("visitor", "staff"))
# Check-in and check-out are explicit acts at the place, recorded without a geofence ring, so a rule's
# zone cannot meaningfully apply to them (and must not silently stop them firing).
_ZONELESS_KINDS: frozenset[str] = frozenset(("checkin", "checkout"))
_SCHEDULE_KEYS = frozenset(("valid_from", "valid_to", "days", "hours", "only_when_open"))
_HHMM = re.compile(r"(\d{2}):(\d{2})")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class EventFacts:
    event_id: int
    kind: EventKind
    zone: Zone
    place_id: int
    place_kind: str
    place_timezone: str
    opening_hours: str | None
    occurred_at: datetime
    late: bool = False  # its fix arrived later than the organisation's limit: recorded, never pushed

    def __post_init__(self) -> None:
        _require_aware(self.occurred_at, "EventFacts.occurred_at")


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    device_id: int
    role: DeviceRole
    tags: frozenset[str]
    consents: Mapping[str, bool]
    timezone: str
    push_enabled: bool


@dataclass(frozen=True, slots=True)
class History:
    # content_id -> last notification of it to this device at this place, pushed or inbox only: the cooldown keeps
    # either from repeating
    last_sent: Mapping[int, datetime]
    # pushes to this device since `local_day_start(now, device.timezone)`; inbox-only notifications are not pushes
    sent_today: int

    def __post_init__(self) -> None:
        if self.sent_today < 0:
            raise ValueError(f"History.sent_today must be >= 0, got {self.sent_today}")


@dataclass(frozen=True, slots=True)
class Decision:
    content_id: int
    send: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class ContentRule:
    """One content item's targeting and frequency rules.

    `valid_from`/`valid_to` are instants when aware, and wall-clock times at the place when naive;
    `valid_from` is inclusive, `valid_to` exclusive. Windows (`hours`, `quiet_hours`) are [start, end)
    and cross midnight when start > end; time(0) as end means "until midnight".
    """

    content_id: int
    place_id: int | None
    place_kind: str | None
    trigger: str
    zone: str
    audience_role: str | None
    audience_tags: frozenset[str]
    valid_from: datetime | None
    valid_to: datetime | None
    days: frozenset[int] | None
    hours: Window | None
    only_when_open: bool
    cooldown_s: int
    daily_cap: int | None
    quiet_hours: Window | None
    consent_purpose: str
    active: bool

    def __post_init__(self) -> None:
        where = f"content {self.content_id}"
        if (self.place_id is None) == (self.place_kind is None):
            raise ValueError(f"{where}: exactly one of place_id and place_kind must be set")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"{where}: trigger must be one of {sorted(TRIGGERS)}, got {self.trigger!r}")
        if self.zone not in ZONES:
            raise ValueError(f"{where}: zone must be one of {sorted(ZONES)}, got {self.zone!r}")
        if self.audience_role is not None and self.audience_role not in ROLES:
            raise ValueError(f"{where}: audience_role must be one of {sorted(ROLES)} or null")
        if self.days is not None and not self.days <= frozenset(range(7)):
            raise ValueError(f"{where}: days must be within 0..6 (Monday=0), got {sorted(self.days)}")
        for name, window in (("hours", self.hours), ("quiet_hours", self.quiet_hours)):
            if window is not None and window[0] == window[1]:
                raise ValueError(f"{where}: {name} start equals end; omit it instead of an empty/full window")
        if self.cooldown_s < 0:
            raise ValueError(f"{where}: cooldown_s must be >= 0, got {self.cooldown_s}")
        if self.daily_cap is not None and self.daily_cap < 0:
            raise ValueError(f"{where}: daily_cap must be >= 0 or null, got {self.daily_cap}")
        start, end = self.valid_from, self.valid_to
        # Mixed naive/aware bounds are legal but only comparable per event, at the place.
        if start is not None and end is not None and (start.tzinfo is None) == (end.tzinfo is None) and start >= end:
            raise ValueError(f"{where}: schedule.valid_from must be before schedule.valid_to")

    @classmethod
    def from_model_values(
        cls,
        *,
        id: int,
        place_id: int | None = None,
        place_kind: str | None = None,
        trigger: str = "enter",
        zone: str = "building",
        audience_role: str | None = None,
        audience_tags: Iterable[str] | None = (),
        schedule: Mapping[str, Any] | None = None,
        cooldown_s: int = 86400,
        daily_cap: int | None = None,
        quiet_hours: list[str] | tuple[str, ...] | None = None,
        consent_purpose: str = "offers",
        active: bool = True,
        **_other_columns: object,
    ) -> ContentRule:
        """Build from `ContentItem` column values (defaults mirror its server defaults).

        Extra columns (title, body, ...) are ignored so the caller can pass a whole row. Raises
        ValueError naming the field when the stored schedule or windows are malformed.
        """
        where = f"content {id}"
        sched = dict(schedule or {})
        unknown = set(sched) - _SCHEDULE_KEYS
        if unknown:
            # A typo such as "only_when_opne" must not silently drop a constraint.
            raise ValueError(f"{where}: unknown schedule key(s) {sorted(unknown)}")
        only_when_open = sched.get("only_when_open")
        if only_when_open is not None and not isinstance(only_when_open, bool):
            raise ValueError(f"{where}: schedule.only_when_open must be true/false, got {only_when_open!r}")
        return cls(
            content_id=id,
            place_id=place_id,
            place_kind=place_kind,
            trigger=trigger,
            zone=zone,
            audience_role=audience_role,
            audience_tags=frozenset(audience_tags or ()),
            valid_from=_parse_bound(sched.get("valid_from"), f"{where}: schedule.valid_from", end=False),
            valid_to=_parse_bound(sched.get("valid_to"), f"{where}: schedule.valid_to", end=True),
            days=_parse_days(sched.get("days"), f"{where}: schedule.days"),
            hours=_parse_window(sched.get("hours"), f"{where}: schedule.hours"),
            only_when_open=bool(only_when_open),
            cooldown_s=cooldown_s,
            daily_cap=daily_cap,
            quiet_hours=_parse_window(quiet_hours, f"{where}: quiet_hours"),
            consent_purpose=consent_purpose,
            active=active,
        )


def evaluate(
    event: EventFacts,
    device: DeviceFacts,
    rules: Iterable[ContentRule],
    history: History,
    now: datetime,
) -> list[Decision]:
    """One decision per rule that targets the event's place (by id or by kind), ordered by content_id.

    Rules are taken in content_id order so the outcome does not depend on the order the caller loaded
    them in: when the daily cap leaves fewer slots than there are eligible rules, older content wins.
    `no_push` is checked last and does not use a cap slot, so it means "everything else passed".
    """
    _require_aware(now, "now")
    candidates = sorted((r for r in rules if _targets(r, event)), key=lambda r: r.content_id)
    ids = [r.content_id for r in candidates]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate content_id among rules: {sorted(ids)}")
    place_local = event.occurred_at.astimezone(_zone(event.place_timezone, "EventFacts.place_timezone"))
    device_local = now.astimezone(_zone(device.timezone, "DeviceFacts.timezone"))
    open_state: _OpenState | None = None  # computed once, and only if some rule asks
    sent = 0
    decisions: list[Decision] = []
    for rule in candidates:
        reason: Reason | None = _static_refusal(rule, event, device) or _schedule_refusal(rule, place_local)
        if reason is None and rule.only_when_open:
            if open_state is None:
                open_state = _open_state(event.opening_hours, place_local.replace(tzinfo=None))
            reason = _OPEN_REFUSAL[open_state]
        if reason is None:
            reason = _frequency_refusal(rule, device_local, history, now, sent)
        if reason is None and not device.push_enabled:
            reason = "no_push"
        if reason is None:
            sent += 1
        decisions.append(Decision(rule.content_id, reason is None, reason or "sent"))
    return decisions


def open_now(opening_hours: str | None, now: datetime, place_timezone: str) -> Literal["open", "closed", "unknown"]:
    """Whether the place is open at `now` by its OSM `opening_hours`, as told to its visitors: "unknown" when it
    has none, they say so, or they cannot be read."""
    if opening_hours is None or not opening_hours.strip():
        return "unknown"
    local = now.astimezone(_zone(place_timezone, "place_timezone")).replace(tzinfo=None)
    state = _open_state(opening_hours, local)
    return state if state in ("open", "closed") else "unknown"


def on_show(rule: ContentRule, now: datetime, place_timezone: str, opening_hours: str | None) -> bool:
    """Whether the content belongs on the place's page for its visitors at `now`: active, within its schedule
    (validity, days, hours at the place) and, if it asks for it, while the place is open. The per-device rules
    (audience, consent, frequency) decide pushes only; the page is the place's public notice board."""
    if not rule.active:
        return False
    place_local = _require_aware(now, "now").astimezone(_zone(place_timezone, "place_timezone"))
    if _schedule_refusal(rule, place_local) is not None:
        return False
    return not rule.only_when_open or _open_state(opening_hours, place_local.replace(tzinfo=None)) == "open"


def local_day_start(now: datetime, tz: str) -> datetime:
    """The UTC instant at which the local day containing `now` began in `tz`."""
    _require_aware(now, "now")
    zone = _zone(tz, "tz")
    # fold=0 gives the first midnight when it repeats, and when midnight is skipped it applies the offset
    # in force before the jump, which lands exactly on the jump: the day's first instant either way.
    return datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone).astimezone(UTC)


# --- checks, in the order a reason is reported ---------------------------------------------------------


def _targets(rule: ContentRule, event: EventFacts) -> bool:
    if rule.place_id is not None:
        return rule.place_id == event.place_id
    return rule.place_kind == event.place_kind


def _static_refusal(rule: ContentRule, event: EventFacts, device: DeviceFacts) -> StaticReason | None:
    if not rule.active:
        return "inactive"
    if rule.trigger != event.kind:
        return "trigger"
    if event.kind not in _ZONELESS_KINDS and rule.zone != event.zone:
        return "zone"
    if rule.audience_role is not None and rule.audience_role != device.role:
        return "audience_role"
    # Tags target "anyone interested in one of these", not "people carrying all of them".
    if rule.audience_tags and not rule.audience_tags & device.tags:
        return "audience_tags"
    # Anything but an explicit True (absent, False, a stray string) is no consent.
    if device.consents.get(rule.consent_purpose) is not True:
        return "consent"
    return None


def _schedule_refusal(rule: ContentRule, place_local: datetime) -> ScheduleReason | None:
    if rule.valid_from is not None and _compare_at(place_local, rule.valid_from) < 0:
        return "not_yet_valid"
    if rule.valid_to is not None and _compare_at(place_local, rule.valid_to) >= 0:
        return "expired"
    clock = place_local.time()
    day = place_local.weekday()
    if rule.hours is not None and rule.hours[0] > rule.hours[1] and clock < rule.hours[1]:
        # The small hours of a Friday 22:00-02:00 window belong to Friday, as in OSM opening_hours.
        day = (day - 1) % 7
    if rule.days is not None and day not in rule.days:
        return "day"
    if rule.hours is not None and not _in_window(rule.hours, clock):
        return "hours"
    return None


def _frequency_refusal(
    rule: ContentRule, device_local: datetime, history: History, now: datetime, sent_now: int
) -> FrequencyReason | None:
    if rule.quiet_hours is not None and _in_window(rule.quiet_hours, device_local.time()):
        return "quiet_hours"
    last = history.last_sent.get(rule.content_id)
    cooldown = timedelta(seconds=rule.cooldown_s)
    if last is not None and now - _require_aware(last, "History.last_sent") < cooldown:
        return "cooldown"
    if rule.daily_cap is not None and history.sent_today + sent_now >= rule.daily_cap:
        return "daily_cap"
    return None


def _in_window(window: Window, clock: time) -> bool:
    start, end = window
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def _compare_at(place_local: datetime, bound: datetime) -> int:
    """-1/0/1 comparing the event with a bound; naive bounds are wall-clock times at the place."""
    moment = place_local if bound.tzinfo is not None else place_local.replace(tzinfo=None)
    return (moment > bound) - (moment < bound)


# --- opening hours -------------------------------------------------------------------------------------

_OpenState = Literal["open", "closed", "unknown", "invalid"]
# Missing hours are common (many public buildings have none in OSM), so they cannot block content.
# Unparseable or explicitly "unknown" hours fail closed: the admin asked for "only while open" and we
# cannot show that it is; the distinct reasons make the bad data visible instead of silently pushing.
_OPEN_REFUSAL: dict[_OpenState, OpenReason | None] = {
    "open": None,
    "closed": "closed",
    "unknown": "opening_hours_unknown",
    "invalid": "opening_hours_invalid",
}


def _open_state(expression: str | None, local_naive: datetime) -> _OpenState:
    if expression is None or not expression.strip():
        return "open"
    parsed = _parse_opening_hours(expression)
    if parsed is None:
        return "invalid"
    state, _comment = parsed.state(local_naive)
    if state == State.OPEN:
        return "open"
    return "closed" if state == State.CLOSED else "unknown"


@lru_cache(maxsize=1024)
def _parse_opening_hours(expression: str) -> OpeningHours | None:
    # validate() rather than catching the parser's exception: that class is missing from the stubs.
    # Without a country, public holidays ("PH off") are not known and evaluate as ordinary days.
    return OpeningHours(expression) if validate(expression) else None


# --- parsing and guards --------------------------------------------------------------------------------


def _parse_bound(value: object, field: str, *, end: bool) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
            # A bare date means whole days: valid_to "2026-05-31" still runs on the 31st.
            return datetime.combine(date.fromisoformat(value) + timedelta(days=1 if end else 0), time(0))
        if isinstance(value, str):
            return datetime.fromisoformat(value)
    except ValueError:
        pass  # reported below with the field's name
    raise ValueError(f"{field}: expected an ISO 8601 date or date-time, got {value!r}")


def _parse_days(value: object, field: str) -> frozenset[int] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in value
    ):
        raise ValueError(f"{field}: expected a list of weekdays 0..6 (Monday=0), got {value!r}")
    # An empty selection in a form means "no restriction"; a rule that can never fire is no use.
    return frozenset(value) or None


def _parse_window(value: object, field: str) -> Window | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f'{field}: expected ["HH:MM", "HH:MM"], got {value!r}')
    return _parse_hhmm(value[0], field, end=False), _parse_hhmm(value[1], field, end=True)


def _parse_hhmm(value: object, field: str, *, end: bool) -> time:
    match = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'{field}: expected "HH:MM", got {value!r}')
    hour, minute = int(match[1]), int(match[2])
    if end and (hour, minute) == (24, 0):
        return time(0)  # "until midnight": an end of 00:00 makes the window run to the day's end
    if hour > 23 or minute > 59:
        raise ValueError(f"{field}: {value!r} is not a time of day")
    return time(hour, minute)


def _require_aware(moment: datetime, field: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{field} must be timezone-aware, got naive {moment.isoformat()}")
    return moment


def _zone(name: str, field: str) -> ZoneInfo:
    try:
        return time_zone(name)
    except UnknownTimeZone as error:
        raise ValueError(f"{field}: {error}") from None
