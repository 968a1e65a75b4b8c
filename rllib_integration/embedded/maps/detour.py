"""Byte layout of the navigation file CARLA's client loads: a tile set of Detour (v7) tiles.

The client (LibCarla's Navigation::Load) reads a 40-byte set header, then per tile a
{tileRef, dataSize} pair and the tile's data exactly as Detour's dtCreateNavMeshData lays it
out; it hands each tile to dtNavMesh::addTile. Detour reads the data in place, so every
field, size and alignment below matters. The client's Detour uses 32-bit polygon
references. Recast axes: x = CARLA x, y = up (CARLA z), z = CARLA y.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

SET_MAGIC = ord("M") << 24 | ord("S") << 16 | ord("E") << 8 | ord("T")
SET_VERSION = 1
TILE_MAGIC = ord("D") << 24 | ord("N") << 16 | ord("A") << 8 | ord("V")
TILE_VERSION = 7
VERTS_PER_POLYGON = 6                 # DT_VERTS_PER_POLYGON
EXTERNAL_LINK = 0x8000                # neighbour code bit: the edge is a portal to the next tile
MAX_POLYS_PER_TILE = EXTERNAL_LINK - 2  # neighbour codes store index + 1 below that bit
MAX_VERTS_PER_TILE = 0xFFFF           # vertex indices are u16
REF_BITS = 32                         # dtPolyRef of the client's Detour
MIN_SALT_BITS = 10                    # dtNavMesh::init refuses fewer
TILE_SALT = 1                         # a zero tile reference ends loading, so salts start at 1
BOUNDARY_EDGE = 0x01                  # DT_DETAIL_EDGE_BOUNDARY, two bits per detail-triangle edge
QUANT_MAX = 0xFFFF

# Agent size CARLA's walkers use (its Navigation.cpp); walkable climb also bounds how far
# apart in height two tiles' portal edges may be and still connect.
WALKABLE_HEIGHT_M = 1.8
WALKABLE_RADIUS_M = 0.3
WALKABLE_CLIMB_M = 0.9


class Area(enum.IntEnum):
    """CARLA's navigation areas (the walker AI treats crosswalk and road points as crossings)."""
    BLOCK = 0
    SIDEWALK = 1
    CROSSWALK = 2
    ROAD = 3
    GRASS = 4


class PolyFlag(enum.IntFlag):
    """CARLA's polygon flags: random locations use SIDEWALK only; walkers that may not cross
    roads (set_pedestrians_cross_factor) exclude ROAD."""
    NONE = 0x01
    SIDEWALK = 0x02
    CROSSWALK = 0x04
    ROAD = 0x08
    GRASS = 0x10


FLAG_OF_AREA = {Area.SIDEWALK: PolyFlag.SIDEWALK, Area.CROSSWALK: PolyFlag.CROSSWALK, Area.ROAD: PolyFlag.ROAD,
                Area.GRASS: PolyFlag.GRASS}


class Side(enum.IntEnum):
    """Portal sides: which tile edge a portal edge lies on (Recast x and z)."""
    X_MAX = 0
    Z_MAX = 2
    X_MIN = 4
    Z_MIN = 6


SET_HEADER = np.dtype([("magic", "<i4"), ("version", "<i4"), ("num_tiles", "<i4"), ("orig", "<f4", 3),
                       ("tile_width", "<f4"), ("tile_height", "<f4"), ("max_tiles", "<i4"), ("max_polys", "<i4")])
TILE_ENTRY = np.dtype([("tile_ref", "<u4"), ("data_size", "<i4")])
MESH_HEADER = np.dtype([
    ("magic", "<i4"), ("version", "<i4"), ("x", "<i4"), ("y", "<i4"), ("layer", "<i4"), ("user_id", "<u4"),
    ("poly_count", "<i4"), ("vert_count", "<i4"), ("max_link_count", "<i4"), ("detail_mesh_count", "<i4"),
    ("detail_vert_count", "<i4"), ("detail_tri_count", "<i4"), ("bv_node_count", "<i4"),
    ("off_mesh_con_count", "<i4"), ("off_mesh_base", "<i4"), ("walkable_height", "<f4"),
    ("walkable_radius", "<f4"), ("walkable_climb", "<f4"), ("bmin", "<f4", 3), ("bmax", "<f4", 3),
    ("bv_quant_factor", "<f4")])
POLY = np.dtype([("first_link", "<u4"), ("verts", "<u2", VERTS_PER_POLYGON), ("neis", "<u2", VERTS_PER_POLYGON),
                 ("flags", "<u2"), ("vert_count", "u1"), ("area_and_type", "u1")])
LINK = np.dtype([("ref", "<u4"), ("next", "<u4"), ("edge", "u1"), ("side", "u1"), ("bmin", "u1"), ("bmax", "u1")])
POLY_DETAIL = np.dtype([("vert_base", "<u4"), ("tri_base", "<u4"), ("vert_count", "u1"), ("tri_count", "u1"),
                        ("pad", "u1", 2)])
DETAIL_TRI = np.dtype([("verts", "u1", 3), ("flags", "u1")])
BV_NODE = np.dtype([("bmin", "<u2", 3), ("bmax", "<u2", 3), ("i", "<i4")])
VERTEX = np.dtype(("<f4", 3))
assert (SET_HEADER.itemsize, MESH_HEADER.itemsize, POLY.itemsize, LINK.itemsize, POLY_DETAIL.itemsize,
        BV_NODE.itemsize) == (40, 100, 32, 12, 12, 16)


@dataclass
class Tile:
    """One tile's convex polygons in Recast axes, ready to be written.

    verts: (n, 3) x, up, z; polys: (m, 6) vertex indices, -1 past each polygon's end, wound
    so Detour's 2D area is positive; neis: (m, 6) neighbour codes; areas: (m,) Area values.
    """
    x: int
    y: int
    verts: np.ndarray
    polys: np.ndarray
    neis: np.ndarray
    areas: np.ndarray


def ref_bits(max_tiles: int, max_polys: int) -> tuple[int, int]:
    """Bits of a polygon reference for the tile index and the polygon index (dtNavMesh::init)."""
    tile_bits = max(0, math.ceil(math.log2(max(1, max_tiles))))
    poly_bits = max(0, math.ceil(math.log2(max(1, max_polys))))
    if REF_BITS - tile_bits - poly_bits < MIN_SALT_BITS:
        raise ValueError(f"{max_tiles} tiles of up to {max_polys} polygons do not fit 32-bit references; "
                         "use larger tiles (fewer of them) or smaller ones (fewer polygons each)")
    return tile_bits, poly_bits


def tile_ref(index: int, tile_bits: int, poly_bits: int) -> int:
    return TILE_SALT << (poly_bits + tile_bits) | index << poly_bits


def navmesh_set(tiles: list[Tile], origin: tuple[float, float, float], tile_size: tuple[float, float],
                cell_size: float) -> bytes:
    """The whole file: set header, then each tile's reference, size and data.

    origin is in Recast axes; tile_size is (along x, along Recast z = CARLA y)."""
    max_polys = max(len(tile.polys) for tile in tiles)
    tile_bits, poly_bits = ref_bits(len(tiles), max_polys)
    header = np.zeros((), SET_HEADER)
    header["magic"], header["version"], header["num_tiles"] = SET_MAGIC, SET_VERSION, len(tiles)
    header["orig"] = origin
    header["tile_width"], header["tile_height"] = tile_size
    header["max_tiles"], header["max_polys"] = len(tiles), max_polys
    parts = [header.tobytes()]
    for index, tile in enumerate(tiles):
        data = tile_data(tile, tile_size, origin, cell_size)
        entry = np.zeros((), TILE_ENTRY)
        entry["tile_ref"], entry["data_size"] = tile_ref(index, tile_bits, poly_bits), len(data)
        parts += [entry.tobytes(), data]
    return b"".join(parts)


def tile_data(tile: Tile, tile_size: tuple[float, float], origin: tuple[float, float, float],
              cell_size: float) -> bytes:
    """One tile as dtCreateNavMeshData lays it out: header, vertices, polygons, an empty link
    pool, one detail mesh per polygon (a triangle fan over its own vertices), BV tree."""
    poly_count, vert_count = len(tile.polys), len(tile.verts)
    if not 0 < poly_count <= MAX_POLYS_PER_TILE or vert_count > MAX_VERTS_PER_TILE:
        raise ValueError(f"tile ({tile.x}, {tile.y}) has {poly_count} polygons and {vert_count} vertices; "
                         f"Detour allows 1..{MAX_POLYS_PER_TILE} and {MAX_VERTS_PER_TILE}: use smaller tiles")
    sizes = (tile.polys >= 0).sum(axis=1)
    polys = np.zeros(poly_count, POLY)
    polys["verts"] = np.where(tile.polys >= 0, tile.polys, 0)
    polys["neis"] = tile.neis
    polys["flags"] = [FLAG_OF_AREA.get(Area(area), PolyFlag.NONE) for area in tile.areas]
    polys["vert_count"] = sizes
    polys["area_and_type"] = tile.areas  # type bits (top two) 0: ground polygon
    edge_count = int(sizes.sum())
    portal_count = int(((tile.neis & EXTERNAL_LINK) != 0).sum())
    max_link_count = edge_count + 2 * portal_count

    tri_counts = sizes - 2
    details = np.zeros(poly_count, POLY_DETAIL)
    details["tri_base"] = np.concatenate([[0], np.cumsum(tri_counts)[:-1]])
    details["tri_count"] = tri_counts
    triangles = _fan_triangles(sizes)

    bmin = np.array([tile.x * tile_size[0] + origin[0], tile.verts[:, 1].min(), tile.y * tile_size[1] + origin[2]])
    bmax = np.array([bmin[0] + tile_size[0], tile.verts[:, 1].max(), bmin[2] + tile_size[1]])
    nodes = bv_tree(tile, bmin, 1.0 / cell_size)

    header = np.zeros((), MESH_HEADER)
    header["magic"], header["version"], header["x"], header["y"] = TILE_MAGIC, TILE_VERSION, tile.x, tile.y
    header["poly_count"], header["vert_count"], header["max_link_count"] = poly_count, vert_count, max_link_count
    header["detail_mesh_count"], header["detail_tri_count"] = poly_count, len(triangles)
    header["bv_node_count"], header["off_mesh_base"] = len(nodes), poly_count
    header["walkable_height"], header["walkable_radius"] = WALKABLE_HEIGHT_M, WALKABLE_RADIUS_M
    header["walkable_climb"] = WALKABLE_CLIMB_M
    header["bmin"], header["bmax"], header["bv_quant_factor"] = bmin, bmax, 1.0 / cell_size
    return b"".join([header.tobytes(), tile.verts.astype("<f4").tobytes(), polys.tobytes(),
                     np.zeros(max_link_count, LINK).tobytes(), details.tobytes(), triangles.tobytes(),
                     nodes.tobytes()])


def _fan_triangles(sizes: np.ndarray) -> np.ndarray:
    """Detail triangles (0, i, i + 1) per polygon, flagged with which edges are polygon edges."""
    size_of_tri = np.repeat(sizes, sizes - 2)
    first = np.concatenate([[0], np.cumsum(sizes - 2)[:-1]])
    i = np.arange(len(size_of_tri)) - np.repeat(first, sizes - 2) + 1
    triangles = np.zeros(len(size_of_tri), DETAIL_TRI)
    triangles["verts"] = np.stack([np.zeros_like(i), i, i + 1], axis=1)
    triangles["flags"] = ((i == 1) * BOUNDARY_EDGE | BOUNDARY_EDGE << 2
                          | (i + 1 == size_of_tri - 1) * (BOUNDARY_EDGE << 4))
    return triangles


def bv_tree(tile: Tile, bmin: np.ndarray, quant_factor: float) -> np.ndarray:
    """Detour's bounding-volume tree: nodes in depth-first order; a leaf holds its polygon's
    index, an inner node minus the size of its subtree (where a query skips to on a miss)."""
    corners = np.where(tile.polys[..., None] >= 0, tile.verts[np.maximum(tile.polys, 0)], np.nan)
    low = np.clip(np.floor((np.nanmin(corners, axis=1) - bmin) * quant_factor), 0, QUANT_MAX).astype(np.int64)
    high = np.clip(np.ceil((np.nanmax(corners, axis=1) - bmin) * quant_factor), 0, QUANT_MAX).astype(np.int64)
    nodes = np.zeros(2 * len(tile.polys) - 1, BV_NODE)
    count = 0

    def build(items: np.ndarray) -> None:
        nonlocal count
        here = count
        count += 1
        if len(items) == 1:
            nodes[here] = (low[items[0]], high[items[0]], items[0])
            return
        lo, hi = low[items].min(axis=0), high[items].max(axis=0)
        axis = int(np.argmax(hi - lo))
        ordered = items[np.argsort(low[items, axis] + high[items, axis], kind="stable")]
        build(ordered[: len(items) // 2])
        build(ordered[len(items) // 2:])
        nodes[here] = (lo, hi, here - count)

    build(np.arange(len(tile.polys)))
    return nodes[:count]
