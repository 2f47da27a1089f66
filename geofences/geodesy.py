"""The one sphere every distance in Placecast is measured on (pure, no I/O)."""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6371008.8  # the mean radius (IUGG); PostGIS's geography default spheroid agrees within 0.5 %


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(a, 1.0)))
