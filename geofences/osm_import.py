"""Public buildings from an OpenStreetMap extract (.osm.pbf, .osm, ...) as places, by tag filter.

Closed ways and multipolygon relations become polygon fences through libosmium's area assembly;
tagged nodes become circles. Every geometry goes through the same validation as the API, so an
OSM outline the service would refuse is skipped and reported rather than stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import osmium
import shapely
from shapely.geometry import MultiPolygon, mapping

from geofences.domain import FenceSpec, GeometryLimits, PlaceSpec
from geofences.validation import (
    GeometryProblem,
    GeometryValidationError,
    properties_problems,
    validate_fence_geometry,
)

TagFilter = Sequence[tuple[str, str | None]]
Progress = Callable[[int, int | None], None]

DEFAULT_PUBLIC_TAGS: tuple[tuple[str, str | None], ...] = (
    *(
        ("amenity", v)
        for v in (
            "library",
            "townhall",
            "community_centre",
            "school",
            "fire_station",
            "police",
            "courthouse",
            "arts_centre",
            "theatre",
            "university",
            "college",
            "kindergarten",
            "social_facility",
            "hospital",
            "clinic",
        )
    ),
    ("tourism", "museum"),
    ("office", "government"),
    *(("building", v) for v in ("public", "civic", "government", "school", "university")),
)
# Tags copied into PlaceSpec.properties for the UI; all tags are also kept under "osm_tags".
PROPERTY_TAGS = ("website", "wikidata", "name:fi", "name:sv", "name:en", "operator")
NAME_TAGS = ("name", "name:fi", "name:sv", "name:en", "official_name", "short_name", "alt_name")
PROGRESS_EVERY = 10_000
_TYPE_ORDER = {"node": 0, "way": 1, "relation": 2}


@dataclass(frozen=True, slots=True)
class SkippedObject:
    external_ref: str  # "osm:way/123"
    name: str
    kind: str
    problems: list[GeometryProblem]


@dataclass(slots=True)
class OsmImportResult:
    places: list[PlaceSpec]  # sorted by OSM type (node, way, relation), then id
    skipped: list[SkippedObject] = field(default_factory=list)
    objects_seen: int = 0


def parse_tag_filter(text: str) -> list[tuple[str, str | None]]:
    """Parse "amenity=library,amenity=townhall,building" into [(key, value or None for any), ...]."""
    result: list[tuple[str, str | None]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not key or (sep and not value):
            raise ValueError(f"bad tag filter {item!r}: use key=value or key")
        pair = (key, value if sep else None)
        if pair not in result:
            result.append(pair)
    if not result:
        raise ValueError("the tag filter is empty: give at least one key=value or key")
    return result


def _match(tags: Any, wanted: TagFilter, keys: Sequence[str]) -> tuple[str, str] | None:
    """The first filter entry the tags satisfy, as (key, actual value); its value is the place kind."""
    values = {k: tags.get(k) for k in keys}
    for key, value in wanted:
        actual = values[key]
        if actual is not None and (value is None or actual == value):
            return key, actual
    return None


def _name(tags: Mapping[str, str], kind: str, osm_type: str, osm_id: int) -> str:
    for key in NAME_TAGS:
        if tags.get(key, "").strip():
            return tags[key].strip()
    return f"{kind} {osm_type}/{osm_id}"


def _address(tags: Mapping[str, str]) -> str | None:
    street = " ".join(filter(None, (tags.get("addr:street"), tags.get("addr:housenumber"))))
    town = " ".join(filter(None, (tags.get("addr:postcode"), tags.get("addr:city"))))
    return ", ".join(filter(None, (street, town))) or None


class _Reader:
    def __init__(self, wanted: TagFilter, node_radius_m: float, limits: GeometryLimits, timezone: str) -> None:
        self.wanted = wanted
        self.keys = list(dict.fromkeys(k for k, _ in wanted))
        self.node_radius_m = node_radius_m
        self.limits = limits
        self.timezone = timezone
        self.factory = osmium.geom.WKBFactory()
        self.places: dict[tuple[int, int], PlaceSpec] = {}
        self.skipped: dict[tuple[int, int], SkippedObject] = {}
        # Matching ways/relations whose area we expect; any still missing at the end failed assembly.
        # Order-independent: a relation's area is emitted once its last way is read, before the relation.
        self.expected_areas: dict[tuple[int, int], SkippedObject] = {}
        self.areas_seen: set[tuple[int, int]] = set()

    def _add(
        self,
        osm_type: str,
        osm_id: int,
        tags: dict[str, str],
        kind: str,
        geometry: dict[str, Any],
        radius: float | None,
    ) -> None:
        key = (_TYPE_ORDER[osm_type], osm_id)
        ref = f"osm:{osm_type}/{osm_id}"
        name = _name(tags, kind, osm_type, osm_id)
        try:
            fence: FenceSpec = validate_fence_geometry(geometry, radius, self.limits)
        except GeometryValidationError as exc:
            self.skipped[key] = SkippedObject(ref, name, kind, exc.errors)
            return
        properties: dict[str, Any] = {k: tags[k] for k in PROPERTY_TAGS if k in tags}
        properties["osm_tags"] = tags
        if too_much := properties_problems(properties):  # stored and echoed like the API's: same limits
            self.skipped[key] = SkippedObject(ref, name, kind, too_much)
            return
        self.places[key] = PlaceSpec(
            name=name,
            kind=kind,
            fences=[fence],
            address=_address(tags),
            timezone=self.timezone,
            opening_hours=tags.get("opening_hours"),
            external_ref=ref,
            properties=properties,
        )

    def _skip(self, osm_type: str, osm_id: int, tags: Mapping[str, str], kind: str, reason: str, code: str) -> None:
        ref = f"osm:{osm_type}/{osm_id}"
        problem = GeometryProblem("geometry", reason, code)
        self.skipped[(_TYPE_ORDER[osm_type], osm_id)] = SkippedObject(
            ref, _name(tags, kind, osm_type, osm_id), kind, [problem]
        )

    def _expect(self, osm_type: str, osm_id: int, tags: Mapping[str, str], kind: str, why: str = "") -> None:
        reason = f"{osm_type} outline could not be assembled into an area ({why or 'broken or incomplete'})"
        problem = GeometryProblem("geometry", reason, "area_assembly_failed")
        name = _name(tags, kind, osm_type, osm_id)
        failed = SkippedObject(f"osm:{osm_type}/{osm_id}", name, kind, [problem])
        self.expected_areas[(_TYPE_ORDER[osm_type], osm_id)] = failed

    def handle(self, obj: Any) -> None:
        if len(obj.tags) == 0:
            return  # most nodes: checked first because it is the cheapest test
        matched = _match(obj.tags, self.wanted, self.keys)
        if matched is None:
            return
        kind = matched[1]
        tags = {t.k: t.v for t in obj.tags}
        if isinstance(obj, osmium.osm.Node):
            if not obj.location.valid():
                self._skip("node", obj.id, tags, kind, "node has no valid location", "invalid_location")
                return
            point = {"type": "Point", "coordinates": [obj.location.lon, obj.location.lat]}
            self._add("node", obj.id, tags, kind, point, self.node_radius_m)
        elif isinstance(obj, osmium.osm.Way):
            if obj.is_closed():
                # Extracts clipped at a bounding box cut buildings on the edge: name the cause.
                missing = sum(1 for n in obj.nodes if not n.location.valid())
                why = f"{missing} of its {len(obj.nodes)} nodes are missing from the extract" if missing else ""
                self._expect("way", obj.id, tags, kind, why)
            else:
                self._skip("way", obj.id, tags, kind, "way is not closed, so it outlines no area", "not_an_area")
        elif isinstance(obj, osmium.osm.Relation):
            rel_type = tags.get("type")
            if rel_type in ("multipolygon", "boundary"):
                self._expect("relation", obj.id, tags, kind)
            else:
                reason = f"relation type={rel_type} is not a multipolygon, so it has no outline"
                self._skip("relation", obj.id, tags, kind, reason, "not_an_area")
        elif isinstance(obj, osmium.osm.Area):
            self._area(obj, tags, kind)

    def _area(self, area: Any, tags: dict[str, str], kind: str) -> None:
        # libosmium numbers areas way id*2 / relation id*2+1; orig_id() and from_way() undo that.
        osm_type = "way" if area.from_way() else "relation"
        osm_id = int(area.orig_id())
        self.areas_seen.add((_TYPE_ORDER[osm_type], osm_id))
        try:
            geom = shapely.from_wkb(self.factory.create_multipolygon(area))
        except (RuntimeError, shapely.errors.ShapelyError) as exc:
            self._skip(osm_type, osm_id, tags, kind, f"area geometry could not be built: {exc}", "invalid_geometry")
            return
        if isinstance(geom, MultiPolygon) and len(geom.geoms) == 1:
            geom = geom.geoms[0]  # one building is a Polygon; MultiPolygon only when it really is several
        self._add(osm_type, osm_id, tags, kind, mapping(geom), None)

    def finish(self) -> OsmImportResult:
        for key, failed in self.expected_areas.items():
            if key not in self.areas_seen:
                self.skipped[key] = failed
        return OsmImportResult(
            places=[self.places[k] for k in sorted(self.places)],
            skipped=[self.skipped[k] for k in sorted(self.skipped)],
        )


def read_osm_places(
    path: str | os.PathLike[str],
    tags: TagFilter = DEFAULT_PUBLIC_TAGS,
    node_radius_m: float = 30.0,
    progress: Progress | None = None,
    *,
    limits: GeometryLimits | None = None,
    timezone: str = "Europe/Helsinki",
) -> OsmImportResult:
    """Read every object matching `tags` from an OSM file as places (all of them, named or not).

    `progress(objects_seen, None)` is called every PROGRESS_EVERY objects while reading (the total
    is unknown until the end: an OSM file does not say how many objects it holds), then once with
    `(objects_seen, objects_seen)` when done. Reading is deterministic: the same file gives equal
    results.
    """
    limits = limits or GeometryLimits()
    if not tags:
        raise ValueError("the tag filter is empty")
    if not limits.min_radius_m <= node_radius_m <= limits.max_radius_m:
        raise ValueError(f"node_radius_m must be within [{limits.min_radius_m:g}, {limits.max_radius_m:g}]")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such OSM file: {os.fspath(path)}")
    reader = _Reader(tags, node_radius_m, limits, timezone)
    # The key filter only narrows which relations the first pass keeps for area assembly; ways
    # and nodes still all reach the loop, which is what keeps `objects_seen` a real count.
    processor = osmium.FileProcessor(os.fspath(path)).with_areas(osmium.filter.KeyFilter(*reader.keys))
    seen = 0
    for obj in processor:
        seen += 1
        reader.handle(obj)
        if progress is not None and seen % PROGRESS_EVERY == 0:
            progress(seen, None)
    if progress is not None:
        progress(seen, seen)
    result = reader.finish()
    result.objects_seen = seen
    return result
