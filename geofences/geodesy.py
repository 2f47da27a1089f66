"""The one sphere every distance in Placecast is measured on (pure, no I/O): its radius and the haversine
distance, once for two points and once element-wise over arrays (the index's bulk path)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_M = 6371008.8  # the mean radius (IUGG); PostGIS's geography default spheroid agrees within 0.5 %


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS 84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(a, 1.0)))


def haversine_m_array(
    lon1: npt.ArrayLike, lat1: npt.ArrayLike, lon2: npt.ArrayLike, lat2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """`haversine_m` element-wise (numpy broadcasting); NaN for non-finite input."""
    p1, p2, dlon = np.radians(lat1), np.radians(lat2), np.radians(np.subtract(lon2, lon1))
    with np.errstate(invalid="ignore"):
        a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0))), dtype=np.float64)
