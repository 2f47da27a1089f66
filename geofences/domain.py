"""Plain domain objects for places and fences: no ORM, no FastAPI.

Geometry here is always shapely in WGS 84 longitude/latitude (EPSG:4326). A circle is its
centre point plus a radius in metres; it is matched by geodesic distance, never in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shapely.geometry.base import BaseGeometry

FenceKind = Literal["polygon", "circle"]


@dataclass(frozen=True, slots=True)
class FenceSpec:
    """A fence as the user described it, before it is stored."""

    kind: FenceKind
    geometry: BaseGeometry  # Polygon or MultiPolygon for "polygon", Point (the centre) for "circle"
    radius_m: float | None = None


@dataclass(slots=True)
class PlaceSpec:
    """A place with its fences, as read from GeoJSON, OSM or the API."""

    name: str
    kind: str
    fences: list[FenceSpec]
    address: str | None = None
    timezone: str = "Europe/Helsinki"
    opening_hours: str | None = None
    # Stable id from the source, e.g. "osm:way/123456"; imports are idempotent on it.
    external_ref: str | None = None
    approach_m: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    # Overrides of the GPS transition rules for this place's fences (geofences/tuning.py), e.g. a wide glass façade
    # that reflects GPS. None: not given (an import that does not mention it keeps a stored place's; {} when new).
    gps_tuning: dict[str, float] | None = None


# One fence as the in-memory index is built from it: (fence id, place id, fence, the place's approach_m, the place's
# gps_tuning). A change to the place's approach_m or gps_tuning is a fence change (the fence version moves).
IndexRow = tuple[int, int, FenceSpec, float | None, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class GeometryLimits:
    """What counts as a sane building fence; configurable through settings."""

    max_vertices: int = 5000
    max_area_m2: float = 2_000_000.0  # 2 km² — larger is not a building
    min_area_m2: float = 1.0
    min_radius_m: float = 5.0
    max_radius_m: float = 5000.0


@dataclass(slots=True)
class PlaceRecord:
    """A stored place: its id and its spec; `fence_ids[i]` is the id of `spec.fences[i]`."""

    id: int
    organisation_id: int
    spec: PlaceSpec
    fence_ids: list[int]


@dataclass(frozen=True, slots=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float
