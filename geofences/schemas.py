"""Wire shapes of places and fences for the admin API; geometry is checked and converted here, at the edge."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from shapely.geometry import mapping

from geofences.domain import FenceSpec, GeometryLimits, PlaceRecord, PlaceSpec
from geofences.tuning import ALLOWED as GPS_TUNABLES
from geofences.tuning import check_gps_tuning
from geofences.validation import GeometryValidationError, properties_problems, validate_fence_geometry
from kernel.errors import Problem, ValidationFailed
from kernel.timezones import time_zone


def _check_timezone(value: str | None) -> str | None:
    if value is None:
        return value
    time_zone(value)  # an UnknownTimeZone is a ValueError: a 422 naming the field
    return value


class FenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon; a Point with radius_m is a circle")
    radius_m: float | None = Field(default=None, description="Circle radius in metres (geodesic)")


GPS_TUNING_DOC = (
    "Advanced: this place's overrides of the GPS enter/exit rules (e.g. wider margins for a glass façade), a flat"
    f" object of numbers; keys: {', '.join(GPS_TUNABLES)}. {{}} means the organisation's settings."
)


class PlaceFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=300)
    kind: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9_:\-]+$")
    address: str | None = Field(default=None, max_length=1000)
    timezone: str = "Europe/Helsinki"
    opening_hours: str | None = Field(default=None, max_length=1000)
    external_ref: str | None = Field(default=None, max_length=200)
    approach_m: float | None = Field(default=None, ge=0, le=2000)
    properties: dict[str, Any] = Field(default_factory=dict)
    gps_tuning: dict[str, Any] = Field(default_factory=dict, description=GPS_TUNING_DOC)

    _tz = field_validator("timezone")(_check_timezone)


class PlaceIn(PlaceFields):
    fences: list[FenceIn] = Field(min_length=1, max_length=50)


class PlacePatch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str | None = Field(default=None, min_length=1, max_length=300)
    kind: str | None = Field(default=None, min_length=1, max_length=80, pattern=r"^[a-z0-9_:\-]+$")
    address: str | None = Field(default=None, max_length=1000)
    timezone: str | None = None
    opening_hours: str | None = Field(default=None, max_length=1000)
    approach_m: float | None = Field(default=None, ge=0, le=2000)
    properties: dict[str, Any] | None = None
    gps_tuning: dict[str, Any] | None = Field(default=None, description=GPS_TUNING_DOC + " Replaces the whole object.")
    fences: list[FenceIn] | None = Field(default=None, min_length=1, max_length=50)

    _tz = field_validator("timezone")(_check_timezone)


def fences_to_specs(fences: list[FenceIn], limits: GeometryLimits, prefix: str = "fences") -> list[FenceSpec]:
    """Validate every fence and report every problem at once, each with its path in the request."""
    specs: list[FenceSpec] = []
    problems: list[Problem] = []
    for position, fence in enumerate(fences):
        try:
            specs.append(
                validate_fence_geometry(fence.geometry, fence.radius_m, limits, field=f"{prefix}[{position}].geometry")
            )
        except GeometryValidationError as error:
            # Geometry problems carry the path we gave; others (radius_m) are relative to the fence.
            fence_path = f"{prefix}[{position}]"
            problems += [
                Problem(
                    p.field if p.field.startswith(fence_path) else f"{fence_path}.{p.field}",
                    p.reason,
                    p.code,
                    p.point,
                )
                for p in error.errors
            ]
    if problems:
        raise ValidationFailed("invalid geometry", problems)
    return specs


def gps_tuning_problems(value: object) -> tuple[dict[str, float], list[Problem]]:
    """The tuning as numbers, and its problems as the API reports them (`gps_tuning.<key>`)."""
    tuning, problems = check_gps_tuning(value)
    return tuning, [Problem(p.field, p.reason, p.code) for p in problems]


def place_properties_problems(value: object) -> list[Problem]:
    """The free-form properties' problems as the API reports them (`properties.<path>`): depth, size, values."""
    return [Problem(p.field, p.reason, p.code) for p in properties_problems(value)]


def place_in_to_spec(place: PlaceIn, limits: GeometryLimits) -> PlaceSpec:
    """Every problem at once: the properties', the tuning's and the fences'."""
    fields = place.model_dump(exclude={"fences", "gps_tuning"})
    tuning, problems = gps_tuning_problems(place.gps_tuning)
    problems = place_properties_problems(place.properties) + problems
    try:
        fences = fences_to_specs(place.fences, limits)
    except ValidationFailed as error:
        raise ValidationFailed(error.message, problems + error.problems) from error
    if problems:
        raise ValidationFailed("invalid place", problems)
    return PlaceSpec(**fields, gps_tuning=tuning, fences=fences)


class FenceOut(BaseModel):
    id: int
    kind: str
    geometry: dict[str, Any]
    radius_m: float | None


class PlaceOut(PlaceFields):
    model_config = ConfigDict(extra="ignore")
    id: int
    fences: list[FenceOut]

    @classmethod
    def from_record(cls, record: PlaceRecord) -> PlaceOut:
        spec = record.spec
        return cls.model_construct(
            id=record.id,
            name=spec.name,
            kind=spec.kind,
            address=spec.address,
            timezone=spec.timezone,
            opening_hours=spec.opening_hours,
            external_ref=spec.external_ref,
            approach_m=spec.approach_m,
            properties=spec.properties,
            gps_tuning=spec.gps_tuning or {},
            fences=[
                FenceOut(
                    id=fence_id,
                    kind=fence.kind,
                    geometry=dict(mapping(fence.geometry)),
                    radius_m=fence.radius_m,
                )
                for fence_id, fence in zip(record.fence_ids, spec.fences, strict=True)
            ],
        )


class PlacePage(BaseModel):
    items: list[PlaceOut]
    next_cursor: int | None


class ImportSummary(BaseModel):
    created: int = 0
    updated: int = 0
    refused: list[dict[str, Any]] = Field(default_factory=list)
