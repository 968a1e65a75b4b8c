"""The walker navigation file: Detour's layout field by field, and how it is built and cached."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from navmesh_file import parse
from rllib_integration.embedded.maps import navmesh
from rllib_integration.embedded.maps.detour import (EXTERNAL_LINK, MIN_SALT_BITS, REF_BITS, SET_MAGIC, SET_VERSION,
                                                    TILE_MAGIC, TILE_VERSION, Area, PolyFlag, Side)
from rllib_integration.embedded.maps.pedestrian_areas import pedestrian_areas
from rllib_integration.embedded.maps.town import load_town
from rllib_integration.embedded.maps.towns import find_town



@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(path))
        yield path


@pytest.fixture(scope="module", params=["Town01", "GridCity"])
def town_file(request: pytest.FixtureRequest, cache_home: Path):
    town = load_town(find_town(request.param))
    nav = navmesh.navigation_file(town)
    assert nav is not None
    return town, nav, *parse(nav.data)


def _detour_area_2d(points: np.ndarray) -> np.ndarray:
    """Detour's dtTriArea2D over a triangle fan, in Recast axes (x, up, z)."""
    a, b, c = points[0], points[1:-1], points[2:]
    return (c[:, 0] - a[0]) * (b[:, 2] - a[2]) - (b[:, 0] - a[0]) * (c[:, 2] - a[2])


def test_file_header_and_tile_references_follow_detours_rules(town_file):
    _, nav, header, tiles = town_file
    assert (header["magic"], header["version"], header["num_tiles"]) == (SET_MAGIC, SET_VERSION, len(tiles))
    assert header["max_tiles"] >= len(tiles) and header["max_polys"] >= max(len(t.polys) for t in tiles)
    tile_bits = int(np.ceil(np.log2(header["max_tiles"])))
    poly_bits = int(np.ceil(np.log2(header["max_polys"])))
    assert REF_BITS - tile_bits - poly_bits >= MIN_SALT_BITS       # i.e. tile + poly bits <= 22
    for index, tile in enumerate(tiles):
        salt = tile.ref >> (tile_bits + poly_bits)
        assert salt >= 1 and tile.ref == salt << (tile_bits + poly_bits) | index << poly_bits
    assert nav.name.startswith(f"Carla/Maps/Nav/{town_file[0].name}_") and nav.name.endswith(".bin")


def test_every_tile_is_a_detour_v7_tile_of_convex_positive_polygons(town_file):
    _, _, header, tiles = town_file
    for tile in tiles:
        mesh = tile.header
        assert (mesh["magic"], mesh["version"], mesh["layer"]) == (TILE_MAGIC, TILE_VERSION, 0)
        assert tile.trailing_bytes == 0 and tile.data_size % 4 == 0
        assert mesh["detail_mesh_count"] == len(tile.polys) and mesh["off_mesh_base"] == len(tile.polys)
        counts = tile.polys["vert_count"]
        assert counts.min() >= 3 and counts.max() <= 6
        assert tile.details["tri_count"].sum() == len(tile.detail_tris) == (counts - 2).sum()
        for index in range(len(tile.polys)):
            assert (tile.polys[index]["verts"][: counts[index]] < len(tile.verts)).all()
            area = _detour_area_2d(tile.poly_verts(index))
            assert (area > -1e-6).all() and area.sum() > 0, f"polygon {index} wound the wrong way"
        assert (tile.verts[:, [0, 2]] >= mesh["bmin"][[0, 2]] - 1e-3).all()
        assert (tile.verts[:, [0, 2]] <= mesh["bmax"][[0, 2]] + 1e-3).all()
        corner = np.array(header["orig"])[[0, 2]] + np.array([mesh["x"], mesh["y"]]) * \
            np.array([header["tile_width"], header["tile_height"]])
        assert np.allclose(mesh["bmin"][[0, 2]], corner, atol=1e-3)


def test_neighbour_links_are_symmetric_and_portals_meet_across_tiles(town_file):
    _, _, _, tiles = town_file
    by_position = {(int(t.header["x"]), int(t.header["y"])): t for t in tiles}
    offsets = {Side.X_MAX: (1, 0), Side.X_MIN: (-1, 0), Side.Z_MAX: (0, 1), Side.Z_MIN: (0, -1)}
    portals = 0
    for tile in tiles:
        for index, poly in enumerate(tile.polys):
            count = poly["vert_count"]
            for k in range(count):
                code = int(poly["neis"][k])
                a, b = poly["verts"][k], poly["verts"][(k + 1) % count]
                if code and not code & EXTERNAL_LINK:
                    other = tile.polys[code - 1]
                    ring = list(other["verts"][: other["vert_count"]])
                    j = ring.index(b)
                    assert ring[(j + 1) % len(ring)] == a, "neighbours must share the edge's two vertices"
                    assert other["neis"][j] == index + 1, "neighbour links must point both ways"
                elif code:
                    portals += 1
                    side = Side(code & 0xFF)
                    dx, dy = offsets[side]
                    neighbour = by_position[(int(tile.header["x"]) + dx, int(tile.header["y"]) + dy)]
                    ends = tile.verts[[a, b]]
                    opposite = EXTERNAL_LINK | ((side + 4) % 8)
                    matches = [p for p in neighbour.polys for m in range(p["vert_count"]) if p["neis"][m] == opposite
                               and np.allclose(np.sort(neighbour.verts[[p["verts"][m], p["verts"][(m + 1) % p["vert_count"]]]],
                                                       axis=0), np.sort(ends, axis=0), atol=1e-3)]
                    assert len(matches) == 1, "a portal edge needs the same edge in the next tile"
    assert portals > 0 or len(tiles) == 1


def test_areas_carry_carlas_flags_and_road_only_joins_crosswalks(town_file):
    _, _, _, tiles = town_file
    expected = {Area.SIDEWALK: PolyFlag.SIDEWALK, Area.CROSSWALK: PolyFlag.CROSSWALK, Area.ROAD: PolyFlag.ROAD}
    seen = set()
    for tile in tiles:
        for poly in tile.polys:
            area = Area(poly["area_and_type"] & 0x3F)
            assert poly["area_and_type"] >> 6 == 0, "ground polygons only"
            assert poly["flags"] == expected[area]
            seen.add(area)
            if area == Area.ROAD:
                neighbours = [tile.polys[n - 1] for n in poly["neis"][: poly["vert_count"]] if n and not n & EXTERNAL_LINK]
                assert any(Area(n["area_and_type"] & 0x3F) in (Area.CROSSWALK, Area.ROAD) for n in neighbours)
    assert {Area.SIDEWALK, Area.CROSSWALK} <= seen


def test_bv_tree_holds_every_polygon_once_with_valid_escapes(town_file):
    _, _, _, tiles = town_file
    for tile in tiles:
        nodes = tile.bv_nodes
        leaves = nodes["i"][nodes["i"] >= 0]
        assert sorted(leaves) == list(range(len(tile.polys)))
        for position, node in enumerate(nodes):
            assert (node["bmin"] <= node["bmax"]).all()
            if node["i"] < 0:
                assert position - node["i"] <= len(nodes)


def test_random_and_crossing_polygons_cover_the_towns_sidewalks(town_file):
    town, _, _, tiles = town_file
    sidewalk_area = sum(abs(_detour_area_2d(t.poly_verts(i)).sum()) / 2 for t in tiles
                        for i in range(len(t.polys)) if t.polys[i]["area_and_type"] == Area.SIDEWALK)
    areas = pedestrian_areas(town.carla_map, town.xodr)
    assert sidewalk_area == pytest.approx(areas.sidewalk.area, rel=1e-3)


@pytest.mark.parametrize("name", ["Town04", "Town06"])
def test_large_towns_build_and_are_served_from_the_cache(name: str, cache_home: Path):
    town = load_town(find_town(name))
    built = navmesh.mesh_bytes(town)
    cached = navmesh.mesh_bytes(town)
    assert built == cached and len(built) > 0
    assert list((cache_home / "carla-rllib" / "navmesh").glob(f"{name}_{town.content_hash}_*.bin"))


def test_towns_without_walkable_areas_serve_no_file(cache_home: Path):
    assert navmesh.navigation_file(load_town(find_town("HighwayLoop"))) is None
