"""Limits on free-form input (place properties), IPv6 spellings of private webhook targets, [lat, lon] fences."""

from __future__ import annotations

import ipaddress
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon

from geofences.domain import FenceSpec
from geofences.geodesy import haversine_m
from geofences.geojson_io import features_to_places
from geofences.osm_import import read_osm_places
from geofences.validation import (
    MAX_PROPERTIES_BYTES,
    MAX_PROPERTIES_DEPTH,
    properties_problems,
    swapped_axes_problem,
)
from notifications.egress import embedded_ipv4, public_address, url_problem


def nested(depth: int, leaf: Any = 1) -> Any:
    """An object `depth` levels deep: nested(1) is {"k": leaf}."""
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


# ---- properties ----


def test_properties_nested_300_deep_are_refused_at_the_level_past_the_limit() -> None:
    [problem] = properties_problems({"deep": nested(300)})
    assert problem.code == "too_deep"
    assert problem.field == "properties.deep" + ".k" * (MAX_PROPERTIES_DEPTH - 1)
    assert str(MAX_PROPERTIES_DEPTH) in problem.reason


def test_the_depth_limit_is_exact_and_counts_arrays() -> None:
    assert properties_problems(nested(MAX_PROPERTIES_DEPTH)) == []  # `properties` itself is the first level
    assert [p.code for p in properties_problems(nested(MAX_PROPERTIES_DEPTH + 1))] == ["too_deep"]
    arrays: Any = 1
    for _ in range(MAX_PROPERTIES_DEPTH):
        arrays = [arrays]
    [problem] = properties_problems({"a": arrays})
    assert problem.field == "properties.a" + "[0]" * (MAX_PROPERTIES_DEPTH - 1)


def test_any_depth_is_answered_without_recursion() -> None:
    [problem] = properties_problems(nested(200_000))
    assert problem.code == "too_deep"


def test_values_the_encoders_or_postgresql_cannot_hold_are_refused_with_their_paths() -> None:
    problems = properties_problems(
        {"n": 2**64, "nan": math.nan, "text": "a\ud800", "list": [1, {"nul": "a\x00b"}], "fine": -(2**63)}
    )
    assert {(p.field, p.code) for p in problems} == {
        ("properties.n", "out_of_range"),
        ("properties.nan", "not_finite"),
        ("properties.text", "bad_text"),
        ("properties.list[1].nul", "bad_text"),
    }


def test_keys_that_are_not_plain_are_quoted_in_the_path() -> None:
    [problem] = properties_problems({"opening notes": {"x.y": math.inf}})
    assert problem.field == 'properties["opening notes"]["x.y"]'


def test_size_is_limited_and_the_largest_member_named() -> None:
    [problem] = properties_problems({"small": "x", "description": "é" * MAX_PROPERTIES_BYTES})
    assert problem.code == "too_large" and problem.field == "properties"
    assert "properties.description" in problem.reason
    assert properties_problems({"description": "x" * (MAX_PROPERTIES_BYTES - 100)}) == []


def test_ordinary_properties_pass() -> None:
    osm_like = {"amenity": "library", "osm_tags": {"name": "Oodi", "addr:street": "Töölönlahdenkatu", "level": "0-3"}}
    assert properties_problems(osm_like) == []
    assert properties_problems({"floors": [1, 2, {"rooms": [True, None, 2.5]}]}) == []


BLOCK = [[24.9370, 60.1735], [24.9406, 60.1735], [24.9406, 60.1745], [24.9370, 60.1745], [24.9370, 60.1735]]


def test_a_geojson_feature_with_deep_properties_is_refused_with_its_path_and_the_rest_imported() -> None:
    good = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [BLOCK]}, "properties": {"name": "A"}}
    deep = {**good, "properties": {"name": "B", "notes": nested(300)}}
    places, refused = features_to_places({"type": "FeatureCollection", "features": [good, deep]})
    assert [p.name for p in places] == ["A"]
    [feature] = refused
    assert feature.index == 1
    assert [p.code for p in feature.problems] == ["too_deep"]
    assert feature.problems[0].field.startswith("features[1].properties.notes.k.k")


def test_osm_tags_are_kept_under_the_same_limits(tmp_path: Any) -> None:
    import osmium

    path = tmp_path / "big-tags.osm.pbf"
    writer = osmium.SimpleWriter(str(path))
    try:
        tags = {"amenity": "library", "name": "Big", **{f"note:{i}": "x" * 250 for i in range(200)}}
        writer.add_node(osmium.osm.mutable.Node(id=1, location=(24.94, 60.17), tags=tags, version=1))
        writer.add_node(
            osmium.osm.mutable.Node(id=2, location=(24.95, 60.17), tags={"amenity": "library", "name": "S"}, version=1)
        )
    finally:
        writer.close()
    result = read_osm_places(path, [("amenity", "library")])
    assert [p.name for p in result.places] == ["S"]
    [skipped] = result.skipped
    assert skipped.problems[0].code == "too_large"


# ---- [lat, lon] fences ----

OODI = (24.9388, 60.1740)


def near_of(points: list[tuple[float, float]]) -> Any:
    async def near(lon: float, lat: float, radius_m: float) -> bool:
        return any(float(haversine_m(lon, lat, x, y)) <= radius_m for x, y in points)

    return near


def polygon(ring: list[list[float]]) -> FenceSpec:
    return FenceSpec(kind="polygon", geometry=Polygon(ring))


async def test_a_fence_given_as_lat_lon_near_the_organisations_fences_is_refused() -> None:
    swapped = polygon([[lat, lon] for lon, lat in BLOCK])
    problem = await swapped_axes_problem(swapped, "fences[0].geometry", near_of([OODI]))
    assert problem is not None and problem.code == "swapped_coordinates"
    assert problem.field == "fences[0].geometry.coordinates"
    assert problem.point is not None and problem.point[0] > 60  # where it is as given: [lat, lon]


async def test_circles_are_judged_the_same_way() -> None:
    circle = FenceSpec(kind="circle", geometry=Point(60.1740, 24.9388), radius_m=40)
    assert await swapped_axes_problem(circle, "fences[0].geometry", near_of([OODI])) is not None


@pytest.mark.parametrize(
    "others",
    [
        [],  # an organisation's first place: nothing to judge it by
        [OODI, (60.20, 24.90)],  # the organisation already has fences there: a real place
        [(139.69, 35.69)],  # nothing near its mirror image
    ],
)
async def test_fences_are_accepted_unless_the_other_fences_point_to_a_swap(
    others: list[tuple[float, float]],
) -> None:
    swapped = polygon([[lat, lon] for lon, lat in BLOCK])
    assert await swapped_axes_problem(swapped, "g", near_of(others)) is None
    assert await swapped_axes_problem(polygon(BLOCK), "g", near_of([OODI, *others])) is None


# ---- webhook targets: IPv6 spellings of private IPv4 addresses ----

PRIVATE_V4 = [
    ipaddress.IPv4Network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
]


@st.composite
def private_v4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    network = draw(st.sampled_from(PRIVATE_V4))
    return network[draw(st.integers(0, network.num_addresses - 1))]


def spellings(v4: ipaddress.IPv4Address, suffix: int) -> list[str]:
    """IPv6 addresses that reach `v4`: mapped, compatible, NAT64, 6to4 (any host part), Teredo — in several texts."""
    value = int(v4)
    addresses = [
        ipaddress.IPv6Address((0xFFFF << 32) | value),
        ipaddress.IPv6Address(value),
        ipaddress.IPv6Address((0x64FF9B << 96) | value),
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | (suffix & ((1 << 80) - 1))),
        ipaddress.IPv6Address((0x20010000 << 96) | (suffix & ((1 << 64) - 1)) << 32 | (value ^ 0xFFFFFFFF)),
    ]
    texts = []
    for address in addresses:
        texts += [address.compressed, address.exploded, address.exploded.upper()]
        if int(address) >> 32 in (0, 0xFFFF, 0x64FF9B << 64):  # the mixed notation with a dotted tail
            texts.append(address.compressed.rsplit(":", 2)[0] + f":{v4}")
    return texts


@given(private_v4(), st.integers(0, 2**80 - 1))
def test_no_spelling_of_a_private_ipv4_address_is_public(v4: ipaddress.IPv4Address, suffix: int) -> None:
    for text in spellings(v4, suffix):
        assert not public_address(text), text
        assert url_problem(f"http://[{text}]:8080/hook") is not None, text


@given(st.sampled_from(["8.8.8.8", "93.184.216.34", "1.1.1.1"]), st.integers(0, 2**80 - 1))
def test_public_ipv4_addresses_stay_public_through_nat64_and_6to4(v4: str, suffix: int) -> None:
    address = ipaddress.IPv4Address(v4)
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | int(address))
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | suffix)
    for carrier in (nat64, six_to_four):
        assert embedded_ipv4(carrier) == address
        assert public_address(str(carrier)), carrier


@pytest.mark.parametrize(
    "url",
    [
        "http://[::127.0.0.1]/",
        "http://[::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[2002:c0a8:101::1]/",
        "http://[64:ff9b:1::1]/",  # local-use NAT64: reaches whatever its operator chose
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
    ],
)
def test_webhook_urls_spelling_a_private_address_are_refused(url: str) -> None:
    assert url_problem(url) is not None


def test_a_public_url_still_passes() -> None:
    assert url_problem("https://[2001:4860:4860::8888]/hook") is None
    assert url_problem("https://8.8.8.8/hook") is None
    assert json.dumps(url_problem("https://hooks.example.org/")) == "null"
