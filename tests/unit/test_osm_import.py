from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from shapely.geometry import Point, Polygon

from geofences.domain import GeometryLimits, PlaceSpec
from geofences.osm_import import (
    DEFAULT_PUBLIC_TAGS,
    OsmImportResult,
    parse_tag_filter,
    read_osm_places,
)

EXTRACT = Path(__file__).resolve().parents[1] / "data" / "osm" / "helsinki-centre.osm.pbf"
OBJECTS_IN_EXTRACT = 31_125  # 24,260 nodes, 5,130 ways, 620 relations and the areas assembled from them
ASSEMBLY_FAILED = [
    "osm:way/17429106",
    "osm:way/22466181",
    "osm:way/24337154",
    "osm:way/58023634",
    "osm:way/122886603",
]


@pytest.fixture(scope="module")
def public() -> OsmImportResult:
    return read_osm_places(EXTRACT, list(DEFAULT_PUBLIC_TAGS))


def by_ref(result: OsmImportResult) -> dict[str | None, PlaceSpec]:
    return {p.external_ref: p for p in result.places}


def test_libraries_are_polygon_fences(public: OsmImportResult) -> None:
    places = by_ref(public)
    oodi = places["osm:way/596937289"]
    assert (oodi.name, oodi.kind, oodi.address) == (
        "Helsingin keskustakirjasto Oodi",
        "library",
        "Töölönlahdenkatu 4, 00100 Helsinki",
    )
    assert [f.kind for f in oodi.fences] == ["polygon"] and isinstance(oodi.fences[0].geometry, Polygon)
    assert oodi.fences[0].geometry.contains(Point(24.9382, 60.1738))  # inside the building
    assert oodi.properties["wikidata"] == "Q18659999"
    assert oodi.properties["osm_tags"]["amenity"] == "library"
    national = places["osm:way/122595247"]
    assert (national.name, national.kind, national.fences[0].kind) == (
        "Kansalliskirjasto",
        "library",
        "polygon",
    )
    assert national.opening_hours == "Mo-Th 09:00-20:00; Fr-Sa 09:00-16:00"
    assert national.properties["name:en"] == "The National Library of Finland"


def test_fire_station_comes_from_a_multipolygon_relation_with_holes(public: OsmImportResult) -> None:
    station = by_ref(public)["osm:relation/167018"]
    assert (station.name, station.kind) == ("Erottajan paloasema", "fire_station")
    geometry = station.fences[0].geometry
    assert isinstance(geometry, Polygon) and len(geometry.interiors) == 2


def test_tagged_node_becomes_a_circle() -> None:
    result = read_osm_places(EXTRACT, [("amenity", "library")], node_radius_m=45.0)
    node = by_ref(result)["osm:node/369550855"]
    assert node.name == "Kansalliskirjasto" and node.address == "Fabianinkatu 35, Helsinki"
    [fence] = node.fences
    assert (fence.kind, fence.radius_m, fence.geometry) == ("circle", 45.0, Point(24.9493927, 60.1703967))


def test_counts_per_kind(public: OsmImportResult) -> None:
    kinds = Counter((p.kind, p.fences[0].kind) for p in public.places)
    assert kinds == {
        ("arts_centre", "circle"): 1,
        ("clinic", "circle"): 3,
        ("college", "polygon"): 1,
        ("community_centre", "circle"): 3,
        ("courthouse", "polygon"): 1,
        ("fire_station", "polygon"): 1,
        ("government", "circle"): 4,
        ("government", "polygon"): 2,
        ("library", "circle"): 5,
        ("library", "polygon"): 2,
        ("museum", "circle"): 4,
        ("museum", "polygon"): 2,
        ("public", "polygon"): 4,
        ("school", "polygon"): 8,
        ("social_facility", "circle"): 2,
        ("theatre", "circle"): 6,
        ("theatre", "polygon"): 2,
        ("university", "polygon"): 11,
    }
    assert len(public.places) == 62 and public.objects_seen == OBJECTS_IN_EXTRACT
    refs = [p.external_ref for p in public.places]
    assert len(set(refs)) == len(refs)
    assert sum(r is not None and r.startswith("osm:relation/") for r in refs) == 3


def test_outlines_cut_by_the_extract_edge_are_reported(public: OsmImportResult) -> None:
    assert [s.external_ref for s in public.skipped] == ASSEMBLY_FAILED
    townhall = public.skipped[2]
    assert (townhall.name, townhall.kind) == ("Helsingin kaupungintalo", "townhall")
    assert townhall.problems[0].code == "area_assembly_failed"
    assert "7 of its 27 nodes are missing" in townhall.problems[0].reason


def test_unnamed_objects_are_kept_with_a_fallback_name(public: OsmImportResult) -> None:
    assert by_ref(public)["osm:relation/1688819"].name == "university relation/1688819"


def test_library_filter_returns_only_libraries() -> None:
    result = read_osm_places(EXTRACT, parse_tag_filter("amenity=library"))
    assert {p.kind for p in result.places} == {"library"}
    assert len(result.places) == 7 and result.skipped == []


def test_first_matching_filter_entry_sets_the_kind() -> None:
    places = by_ref(read_osm_places(EXTRACT, [("building", "public"), ("amenity", "library")]))
    assert places["osm:way/122595247"].kind == "public"  # amenity=library + building=public
    assert places["osm:way/596937289"].kind == "library"


def test_key_only_filter_uses_the_tag_value_as_kind() -> None:
    kinds = Counter(p.kind for p in read_osm_places(EXTRACT, [("tourism", None)]).places)
    assert kinds["museum"] == 6 and len(kinds) > 3


def test_geometry_failing_validation_is_skipped_and_reported() -> None:
    # Oodi's OSM footprint is about 4,420 m², the National Library's about 1,830 m².
    result = read_osm_places(EXTRACT, [("amenity", "library")], limits=GeometryLimits(max_area_m2=4_000))
    assert "osm:way/596937289" not in by_ref(result)
    assert "osm:way/122595247" in by_ref(result)
    [skipped] = [s for s in result.skipped if s.external_ref == "osm:way/596937289"]
    assert skipped.problems[0].code == "area_too_large"


def test_non_areas_are_reported() -> None:
    routes = read_osm_places(EXTRACT, [("route", "tram")])
    assert routes.places == [] and {s.problems[0].code for s in routes.skipped} == {"not_an_area"}
    footways = read_osm_places(EXTRACT, [("highway", "pedestrian")])
    assert "not_an_area" in {s.problems[0].code for s in footways.skipped}


def test_reading_twice_gives_identical_results(public: OsmImportResult) -> None:
    again = read_osm_places(EXTRACT, list(DEFAULT_PUBLIC_TAGS))
    assert again.places == public.places and again.skipped == public.skipped


def test_progress_reports_objects_then_completes() -> None:
    calls: list[tuple[int, int | None]] = []
    result = read_osm_places(
        EXTRACT, [("amenity", "library")], progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [
        (10_000, None),
        (20_000, None),
        (30_000, None),
        (result.objects_seen, result.objects_seen),
    ]


def test_parse_tag_filter() -> None:
    assert parse_tag_filter(" amenity=library, amenity=townhall,building=school,amenity,amenity=library,") == [
        ("amenity", "library"),
        ("amenity", "townhall"),
        ("building", "school"),
        ("amenity", None),
    ]
    for bad in ["", " , ", "=library", "amenity="]:
        with pytest.raises(ValueError):
            parse_tag_filter(bad)


def test_default_tags_cover_the_public_buildings() -> None:
    assert ("amenity", "fire_station") in DEFAULT_PUBLIC_TAGS and ("tourism", "museum") in DEFAULT_PUBLIC_TAGS
    assert len(DEFAULT_PUBLIC_TAGS) == 22


def test_bad_arguments() -> None:
    with pytest.raises(FileNotFoundError):
        read_osm_places(EXTRACT.with_name("missing.osm.pbf"), [("amenity", "library")])
    with pytest.raises(ValueError):
        read_osm_places(EXTRACT, [("amenity", "library")], node_radius_m=1.0)
    with pytest.raises(ValueError):
        read_osm_places(EXTRACT, [])


def test_notice_travels_with_the_extract() -> None:
    notice = (EXTRACT.parent / "NOTICE.md").read_text()
    assert "OpenStreetMap contributors" in notice and "ODbL" in notice
