"""Admin REST API for places, fences and GeoJSON import/export. Thin: parse, authorise, call a service."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, status
from fastapi.responses import Response

from admin.qr_api import place_token, public_base_url, visitor_app_url
from geofences.domain import BBox, FenceSpec, PlaceSpec
from geofences.geojson_io import RefusedFeature, features_to_places, places_to_feature_collection
from geofences.schemas import (
    ImportSummary,
    PlaceIn,
    PlaceOut,
    PlacePage,
    PlacePatch,
    fences_to_specs,
    gps_tuning_problems,
    place_in_to_spec,
    place_properties_problems,
)
from geofences.validation import FencesNear, GeometryProblem, swapped_axes_problem
from infra.deps import MAX_ID, IdPath, PrincipalDep, SettingsDep, UowDep, resources_of
from kernel.errors import Problem, ValidationFailed
from services import places as place_service
from services.models import Role

router = APIRouter(prefix="/admin/v1", tags=["admin: places"])


def _fences_changed(request: Request) -> Any:
    return resources_of(request).fences_changed


async def _swapped_axes(fences: list[FenceSpec], fields: list[str], near: FencesNear) -> list[GeometryProblem]:
    found = [await swapped_axes_problem(fence, field, near) for fence, field in zip(fences, fields, strict=True)]
    return [problem for problem in found if problem is not None]


async def _refuse_swapped_axes(fences: list[FenceSpec], near: FencesNear) -> None:
    problems = await _swapped_axes(fences, [f"fences[{i}].geometry" for i in range(len(fences))], near)
    if problems:
        raise ValidationFailed(
            "a fence looks like [lat, lon]", [Problem(p.field, p.reason, p.code, p.point) for p in problems]
        )


async def _swapped_features(
    collection: dict[str, Any], specs: list[PlaceSpec], refused: list[RefusedFeature], near: FencesNear
) -> tuple[list[PlaceSpec], list[RefusedFeature]]:
    """Imported places that look like [lat, lon] are refused too, judged against the fences before the import."""
    skipped = {r.index for r in refused}
    positions = [i for i in range(len(collection["features"])) if i not in skipped]
    kept: list[PlaceSpec] = []
    refused = list(refused)
    for position, spec in zip(positions, specs, strict=True):
        path = f"features[{position}].geometry"
        fields = [path] if len(spec.fences) == 1 else [f"{path}.geometries[{j}]" for j in range(len(spec.fences))]
        if problems := await _swapped_axes(spec.fences, fields, near):
            refused.append(RefusedFeature(position, spec.external_ref, problems))
        else:
            kept.append(spec)
    return kept, sorted(refused, key=lambda r: r.index)


def parse_bbox(bbox: str | None) -> BBox | None:
    if bbox is None:
        return None
    parts = bbox.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValidationFailed(
            "bad bbox", [Problem("bbox", "expected four finite numbers: minLon,minLat,maxLon,maxLat")]
        )
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise ValidationFailed(
            "bad bbox", [Problem("bbox", "out of range or min > max (order: minLon,minLat,maxLon,maxLat)")]
        )
    return BBox(min_lon, min_lat, max_lon, max_lat)


@router.post("/places", status_code=status.HTTP_201_CREATED, response_model=PlaceOut)
async def create_place(
    body: PlaceIn, principal: PrincipalDep, uow: UowDep, settings: SettingsDep, request: Request
) -> PlaceOut:
    principal.require(Role.editor)
    spec = place_in_to_spec(body, settings.geometry_limits)
    await _refuse_swapped_axes(
        spec.fences, place_service.other_fences_near(uow, organisation_id=principal.organisation_id)
    )
    record = await place_service.create_place(
        uow,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        spec=spec,
        fences_changed=_fences_changed(request),
    )
    return PlaceOut.from_record(record)


@router.get("/places", response_model=PlacePage)
async def list_places(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat")] = None,
    kind: Annotated[str | None, Query(max_length=80)] = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_ID, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> PlacePage:
    records, next_cursor = await place_service.list_places(
        uow,
        organisation_id=principal.organisation_id,
        bbox=parse_bbox(bbox),
        kind=kind,
        query=q,
        after_id=cursor,
        limit=min(limit, settings.page_size_max),
    )
    return PlacePage(items=[PlaceOut.from_record(r) for r in records], next_cursor=next_cursor)


@router.get("/places/{place_id}", response_model=PlaceOut)
async def get_place(place_id: IdPath, principal: PrincipalDep, uow: UowDep) -> PlaceOut:
    record = await place_service.get_place(uow, organisation_id=principal.organisation_id, place_id=place_id)
    return PlaceOut.from_record(record)


@router.patch("/places/{place_id}", response_model=PlaceOut)
async def update_place(
    place_id: IdPath,
    body: PlacePatch,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    request: Request,
) -> PlaceOut:
    principal.require(Role.editor)
    changes = body.model_dump(exclude_unset=True, exclude={"fences"})
    for required in ("name", "kind", "timezone", "properties", "gps_tuning"):
        if required in changes and changes[required] is None:
            raise ValidationFailed("null not allowed", [Problem(required, "may not be null")])
    problems: list[Problem] = []
    if "properties" in changes:
        problems += place_properties_problems(changes["properties"])
    if "gps_tuning" in changes:  # the whole object: {} goes back to the organisation's settings
        changes["gps_tuning"], tuning_problems = gps_tuning_problems(changes["gps_tuning"])
        problems += tuning_problems
    try:
        fences = fences_to_specs(body.fences, settings.geometry_limits) if body.fences is not None else None
    except ValidationFailed as error:  # every problem at once
        raise ValidationFailed(error.message, problems + error.problems) from error
    if problems:
        raise ValidationFailed("invalid place", problems)
    if fences is not None:
        await _refuse_swapped_axes(
            fences,
            place_service.other_fences_near(uow, organisation_id=principal.organisation_id, except_place_id=place_id),
        )
    record = await place_service.update_place(
        uow,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        place_id=place_id,
        changes=changes,
        fences=fences,
        fences_changed=_fences_changed(request),
    )
    return PlaceOut.from_record(record)


@router.delete("/places/{place_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_place(place_id: IdPath, principal: PrincipalDep, uow: UowDep, request: Request) -> Response:
    principal.require(Role.editor)
    await place_service.delete_place(
        uow,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        place_id=place_id,
        fences_changed=_fences_changed(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/places/{place_id}/qr-token")
async def issue_qr_token(
    place_id: IdPath, principal: PrincipalDep, uow: UowDep, settings: SettingsDep, request: Request
) -> dict[str, Any]:
    """A signed token to print as a QR code at the door: checking in with it needs no location. `url` is what the
    printed code holds (the visitor web app's check-in page for it)."""
    principal.require(Role.editor)
    await place_service.get_place(uow, organisation_id=principal.organisation_id, place_id=place_id)
    token, ttl_s = await place_token(uow, settings, principal.organisation_id, place_id)
    url = visitor_app_url(public_base_url(settings, request), token)
    return {"place_id": place_id, "token": token, "expires_in_s": ttl_s, "url": url}


@router.post("/import/geojson", response_model=ImportSummary)
async def import_geojson(
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    request: Request,
    body: Annotated[Any, Body(description="A GeoJSON FeatureCollection of places")],
) -> ImportSummary:
    """Create or update places by `external_ref` (or feature id); refused features come back with reasons."""
    principal.require(Role.editor)
    specs, refused = features_to_places(body, settings.geometry_limits)
    if specs:
        near = place_service.other_fences_near(uow, organisation_id=principal.organisation_id)
        specs, refused = await _swapped_features(body, specs, refused, near)
    created, updated = await place_service.upsert_places(
        uow,
        organisation_id=principal.organisation_id,
        actor=principal.actor,
        specs=specs,
        fences_changed=_fences_changed(request),
    )
    return ImportSummary(
        created=created,
        updated=updated,
        refused=[
            {
                "index": r.index,
                "external_ref": r.external_ref,
                "problems": [Problem(p.field, p.reason, p.code, p.point).as_dict() for p in r.problems],
            }
            for r in refused
        ],
    )


@router.get("/export/geojson")
async def export_geojson(principal: PrincipalDep, uow: UowDep) -> dict[str, Any]:
    records = await place_service.all_places(uow, organisation_id=principal.organisation_id)
    return places_to_feature_collection((r.id, r.spec) for r in records)
