"""The one check of a time-zone name, for every area (places, imports, devices, rules, analytics)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class UnknownTimeZone(ValueError):
    """No IANA time zone has this name. A ValueError, so pydantic validators may let it through as a 422."""


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name` (cached by `zoneinfo`), or `UnknownTimeZone`. Names that are no zone key at
    all ('../etc', '', a folder such as 'Europe') are unknown too, whatever `zoneinfo` raises for them."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise UnknownTimeZone(f"unknown IANA timezone {name!r}") from error
