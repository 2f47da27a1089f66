"""GeoJSON FeatureCollection import and export of places. Pure: parsed JSON in, parsed JSON out.

One Feature is one place. Its geometry is one fence (Polygon, MultiPolygon, or Point + radius_m),
or a GeometryCollection of such fences. A Point's radius is `radius_m` on the Point itself (a
foreign member, RFC 7946 §6.1) or else `properties.radius_m`. `properties.gps_tuning` is the place's GPS tuning
(geofences/tuning.py), checked like the API's; left out (or null), an import keeps a stored place's tuning, and an
export leaves it out when the place has none. The other properties are the place's free-form properties, within
the API's limits of depth, size and values (`validation.properties_problems`). Exporting and re-importing gives
equal PlaceSpecs (an empty tuning comes back as not said).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shapely.geometry import MultiPolygon, Polygon

from geofences.domain import FenceSpec, GeometryLimits, PlaceSpec
from geofences.tuning import check_gps_tuning
from geofences.validation import (
    GeometryProblem,
    GeometryValidationError,
    json_type,
    properties_problems,
    validate_fence_geometry,
)
from kernel.timezones import UnknownTimeZone, time_zone

# Properties with a meaning of their own; everything else is kept in PlaceSpec.properties.
# "place_id" is the exporting server's own id: informative, never imported.
RESERVED_PROPERTIES = frozenset(
    {
        "name",
        "kind",
        "address",
        "timezone",
        "opening_hours",
        "external_ref",
        "approach_m",
        "radius_m",
        "place_id",
        "gps_tuning",
    }
)
DEFAULT_KIND = "other"
DEFAULT_TIMEZONE = "Europe/Helsinki"


@dataclass(frozen=True, slots=True)
class RefusedFeature:
    index: int  # position in "features"
    external_ref: str | None
    problems: list[GeometryProblem]


class FeatureCollectionError(GeometryValidationError):
    """The document as a whole is not a FeatureCollection; nothing in it can be imported."""


def _optional_text(props: dict[str, Any], key: str, path: str, problems: list[GeometryProblem]) -> str | None:
    value = props.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(
            GeometryProblem(f"{path}.{key}", f"{key} must be a string, got {json_type(value)}", "wrong_type")
        )
        return None
    return value


def _timezone(props: dict[str, Any], path: str, problems: list[GeometryProblem]) -> str:
    value = _optional_text(props, "timezone", path, problems)
    if value is None:
        return DEFAULT_TIMEZONE
    try:
        time_zone(value)
    except UnknownTimeZone as error:
        problems.append(GeometryProblem(f"{path}.timezone", str(error), "unknown_timezone"))
    return value


def _approach(
    props: dict[str, Any], path: str, limits: GeometryLimits, problems: list[GeometryProblem]
) -> float | None:
    value = props.get("approach_m")
    if value is None:
        return None
    field = f"{path}.approach_m"
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(GeometryProblem(field, f"approach_m must be a number, got {json_type(value)}", "wrong_type"))
        return None
    if not (math.isfinite(value) and 0 <= value <= limits.max_radius_m):
        problems.append(
            GeometryProblem(field, f"approach_m must be within [0, {limits.max_radius_m:g}] m", "out_of_range")
        )
        return None
    return float(value)


def _gps_tuning(props: dict[str, Any], path: str, problems: list[GeometryProblem]) -> dict[str, float] | None:
    value = props.get("gps_tuning")
    if value is None:
        return None  # not said: a stored place keeps its own
    tuning, found = check_gps_tuning(value, f"{path}.gps_tuning")
    problems.extend(found)
    return tuning


def _external_ref(
    feature: dict[str, Any], props: dict[str, Any], path: str, problems: list[GeometryProblem]
) -> str | None:
    ref = _optional_text(props, "external_ref", f"{path}.properties", problems)
    if ref:
        return ref
    fid = feature.get("id")
    if isinstance(fid, str) and fid:
        return fid
    if isinstance(fid, int) and not isinstance(fid, bool):
        return str(fid)
    if fid is not None and fid != "":
        problems.append(
            GeometryProblem(f"{path}.id", f"id must be a string or an integer, got {json_type(fid)}", "wrong_type")
        )
    return None


def _fences(
    geometry: object,
    props: dict[str, Any],
    path: str,
    limits: GeometryLimits,
    problems: list[GeometryProblem],
) -> list[FenceSpec]:
    field = f"{path}.geometry"
    if geometry is None:
        problems.append(GeometryProblem(field, "a place needs at least one fence; geometry is null", "missing"))
        return []
    members: list[tuple[object, str]] = [(geometry, field)]
    if isinstance(geometry, dict) and geometry.get("type") == "GeometryCollection":
        geometries = geometry.get("geometries")
        if not isinstance(geometries, list) or not geometries:
            problems.append(
                GeometryProblem(
                    f"{field}.geometries",
                    "a GeometryCollection needs a non-empty array of geometries",
                    "wrong_type",
                )
            )
            return []
        members = [(g, f"{field}.geometries[{j}]") for j, g in enumerate(geometries)]
    fences: list[FenceSpec] = []
    for member, member_field in members:
        radius: object = props.get("radius_m")
        radius_field = f"{path}.properties.radius_m"
        is_point = isinstance(member, dict) and member.get("type") == "Point"
        if isinstance(member, dict) and "radius_m" in member:
            radius, radius_field = member["radius_m"], f"{member_field}.radius_m"
        elif len(members) > 1 and not is_point:
            radius = None  # a collection's properties.radius_m is the default for its Points only
        try:
            fences.append(validate_fence_geometry(member, radius, limits, member_field, radius_field))
        except GeometryValidationError as exc:
            problems.extend(exc.errors)
    return fences


def _feature_to_place(feature: object, path: str, limits: GeometryLimits) -> PlaceSpec:
    problems: list[GeometryProblem] = []
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        shown = json_type(feature) if not isinstance(feature, dict) else repr(feature.get("type"))
        raise GeometryValidationError([GeometryProblem(path, f"expected a Feature, got {shown}", "wrong_type")])
    props = feature.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        problems.append(
            GeometryProblem(f"{path}.properties", f"properties must be an object, got {json_type(props)}", "wrong_type")
        )
        props = {}
    ppath = f"{path}.properties"
    name = _optional_text(props, "name", ppath, problems)
    if not (name and name.strip()) and not (props.get("name") is not None and name is None):
        problems.append(GeometryProblem(f"{ppath}.name", "every place needs a non-empty name", "missing"))
    kind = _optional_text(props, "kind", ppath, problems) or DEFAULT_KIND
    free = {k: v for k, v in props.items() if k not in RESERVED_PROPERTIES}
    problems.extend(properties_problems(free, ppath))
    place = PlaceSpec(
        name=name or "",
        kind=kind,
        fences=_fences(feature.get("geometry"), props, path, limits, problems),
        address=_optional_text(props, "address", ppath, problems),
        timezone=_timezone(props, ppath, problems),
        opening_hours=_optional_text(props, "opening_hours", ppath, problems),
        external_ref=_external_ref(feature, props, path, problems),
        approach_m=_approach(props, ppath, limits, problems),
        gps_tuning=_gps_tuning(props, ppath, problems),
        properties=free,
    )
    if problems:
        raise GeometryValidationError(problems)
    return place


def _best_effort_ref(feature: object) -> str | None:
    if not isinstance(feature, dict):
        return None
    props = feature.get("properties")
    ref = props.get("external_ref") if isinstance(props, dict) else None
    if isinstance(ref, str) and ref:
        return ref
    fid = feature.get("id")
    if isinstance(fid, bool):
        return None
    return str(fid) if isinstance(fid, str | int) and fid != "" else None


def features_to_places(
    fc: object, limits: GeometryLimits | None = None
) -> tuple[list[PlaceSpec], list[RefusedFeature]]:
    """Read places from a parsed GeoJSON FeatureCollection.

    Good features become PlaceSpecs; bad ones are refused one by one with their problems, so one
    broken building does not block a city's import. Raises FeatureCollectionError only when the
    document itself is not a FeatureCollection.
    """
    limits = limits or GeometryLimits()
    if not isinstance(fc, dict):
        raise FeatureCollectionError(
            [GeometryProblem("", f"expected a GeoJSON FeatureCollection object, got {json_type(fc)}", "wrong_type")]
        )
    top: list[GeometryProblem] = []
    if fc.get("type") != "FeatureCollection":
        got = fc.get("type")
        shown = repr(got) if isinstance(got, str) else json_type(got)
        top.append(GeometryProblem("type", f'type must be "FeatureCollection", got {shown}', "wrong_type"))
    features = fc.get("features")
    if not isinstance(features, list):
        top.append(GeometryProblem("features", f"features must be an array, got {json_type(features)}", "wrong_type"))
    if top:
        raise FeatureCollectionError(top)
    assert isinstance(features, list)

    places: list[PlaceSpec] = []
    refused: list[RefusedFeature] = []
    seen_refs: dict[str, int] = {}
    for index, feature in enumerate(features):
        path = f"features[{index}]"
        try:
            place = _feature_to_place(feature, path, limits)
        except GeometryValidationError as exc:
            refused.append(RefusedFeature(index, _best_effort_ref(feature), exc.errors))
            continue
        ref = place.external_ref
        if ref is not None and ref in seen_refs:
            # Imports are idempotent on external_ref; two features with one ref would overwrite each other.
            problem = GeometryProblem(
                f"{path}.properties.external_ref",
                f"external_ref {ref!r} is already used by features[{seen_refs[ref]}]",
                "duplicate_external_ref",
            )
            refused.append(RefusedFeature(index, ref, [problem]))
            continue
        if ref is not None:
            seen_refs[ref] = index
        places.append(place)
    return places, refused


def _ring_coords(ring: Any) -> list[list[float]]:
    return [[float(x), float(y)] for x, y, *_ in ring.coords]


def _polygon_coords(poly: Polygon) -> list[list[list[float]]]:
    return [_ring_coords(poly.exterior), *(_ring_coords(hole) for hole in poly.interiors)]


def fence_to_geojson(fence: FenceSpec) -> dict[str, Any]:
    """The GeoJSON geometry of one fence; a circle is its centre Point (radius not included)."""
    geom = fence.geometry
    if fence.kind == "circle":
        return {"type": "Point", "coordinates": [float(geom.x), float(geom.y)]}
    if isinstance(geom, MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": [_polygon_coords(p) for p in geom.geoms]}
    if isinstance(geom, Polygon):
        return {"type": "Polygon", "coordinates": _polygon_coords(geom)}
    raise ValueError(f"a polygon fence cannot be a {geom.geom_type}")


def place_to_feature(place_id: int | None, place: PlaceSpec) -> dict[str, Any]:
    props: dict[str, Any] = {k: v for k, v in place.properties.items() if k not in RESERVED_PROPERTIES}
    props.update(name=place.name, kind=place.kind, timezone=place.timezone)
    optional = {
        "address": place.address,
        "opening_hours": place.opening_hours,
        "external_ref": place.external_ref,
        "approach_m": place.approach_m,
        "gps_tuning": dict(place.gps_tuning) if place.gps_tuning else None,
        "place_id": place_id,
    }
    props.update({k: v for k, v in optional.items() if v is not None})
    geometry: dict[str, Any] | None
    if len(place.fences) == 1:
        fence = place.fences[0]
        geometry = fence_to_geojson(fence)
        if fence.kind == "circle":
            props["radius_m"] = fence.radius_m
    elif place.fences:
        members = []
        for fence in place.fences:
            member = fence_to_geojson(fence)
            if fence.kind == "circle":
                member["radius_m"] = fence.radius_m  # each circle keeps its own radius
            members.append(member)
        geometry = {"type": "GeometryCollection", "geometries": members}
    else:
        geometry = None
    feature: dict[str, Any] = {"type": "Feature", "geometry": geometry, "properties": props}
    if place.external_ref is not None:
        feature["id"] = place.external_ref
    return feature


def places_to_feature_collection(places: Iterable[tuple[int | None, PlaceSpec]]) -> dict[str, Any]:
    """Export (place_id, place) pairs; features_to_places on the result gives equal PlaceSpecs."""
    return {"type": "FeatureCollection", "features": [place_to_feature(pid, p) for pid, p in places]}
