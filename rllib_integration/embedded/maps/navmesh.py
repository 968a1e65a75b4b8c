"""The walker navigation mesh of a town, served to clients as CARLA's 'Nav' file.

CARLA's walker AI (controller.ai.walker, get_random_location_from_navigation) runs in the
client on Detour and needs the town's navigation mesh, which the server sends as a file.
Here it is built from the town's pedestrian areas (pedestrian_areas.py): the areas are cut
into a grid of equal tiles (at most 200 m a side), triangulated without new vertices (so neighbours share exact
edges), the triangles merged into convex polygons of at most six vertices (few polygons keep
the client's 2,048-node path search and 256-polygon corridors long enough to cross a town),
and written as Detour tiles (detour.py). Built meshes are cached on disk by the town's
content hash, so a town is built once per machine.
"""
from __future__ import annotations

import hashlib
import heapq
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from .detour import EXTERNAL_LINK, VERTS_PER_POLYGON, Area, Side, Tile, navmesh_set
from .pedestrian_areas import GRID_M, PedestrianAreas, pedestrian_areas
from .town import Town

TILE_TARGET_M = 200.0        # tiles are at most this long; the town is cut into equal tiles
CELL_SIZE_M = 0.05            # quantisation of the tiles' bounding-volume trees
ON_BORDER_M = 1e-4            # a vertex this close to a tile's edge lies on it
CONVEX_TOLERANCE = 1e-9       # relative cross product still counted as a straight angle
BUILDER_VERSION = 1           # bump when the mesh for the same town changes
NAV_FOLDER = "Nav"
FILE_PREFIX = "Carla/Maps/Nav"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NavigationFile:
    """The served file: its name (versioned by content, as clients cache by name) and bytes."""

    name: str
    data: bytes


_built: dict[tuple[str, str], NavigationFile | None] = {}
_lock = threading.Lock()


def navigation_file(town: Town) -> NavigationFile | None:
    """The town's navigation file, or None for towns with nowhere to walk (no sidewalks nor
    crosswalks): clients then get no file, as from a CARLA map without a navigation mesh."""
    key = (town.name, town.content_hash)
    with _lock:
        if key not in _built:
            data = mesh_bytes(town)
            digest = hashlib.sha256(data).hexdigest()[:16] if data else ""
            _built[key] = NavigationFile(f"{FILE_PREFIX}/{town.name}_{digest}.bin", data) if data else None
        return _built[key]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carla-rllib" / "navmesh"


def mesh_bytes(town: Town) -> bytes:
    """The town's mesh from the disk cache, built and stored there on first use."""
    path = cache_dir() / f"{town.name}_{town.content_hash}_v{BUILDER_VERSION}.bin"
    if path.exists():
        return path.read_bytes()
    data = build_navmesh(pedestrian_areas(town.carla_map, town.xodr))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(path)
    except OSError as error:  # a read-only home still serves the mesh, just rebuilds it next time
        logger.warning("navigation mesh cache %s not writable: %s", path.parent, error)
    return data


def build_navmesh(areas: PedestrianAreas) -> bytes:
    """Detour tile-set bytes of the areas; empty bytes when there is nothing to walk on."""
    regions = [(Area.SIDEWALK, areas.sidewalk), (Area.CROSSWALK, areas.crosswalk), (Area.ROAD, areas.road)]
    regions = [(area, region) for area, region in regions if not region.is_empty]
    if not regions:
        return b""
    origin, tile_size, counts = _tile_grid(shapely.union_all([region for _, region in regions]).bounds)
    triangles, labels = _triangulate(regions, origin, tile_size, counts)
    vertices, corners = np.unique(triangles.reshape(-1, 2), axis=0, return_inverse=True)
    corners = corners.reshape(-1, 3)
    _wind_for_detour(vertices, corners)
    heights = areas.heights(vertices)
    centroid = triangles.mean(axis=1)
    tile_xy = np.floor((centroid - origin) / tile_size).astype(int)
    tiles = []
    for key in sorted(set(map(tuple, tile_xy)), key=lambda k: (k[1], k[0])):
        chosen = np.flatnonzero((tile_xy == key).all(axis=1))
        polygons, poly_areas = merge_convex(vertices, corners[chosen], labels[chosen])
        tiles.append(_tile(key, polygons, poly_areas, vertices, heights, origin, tile_size))
    return navmesh_set(tiles, (origin[0], 0.0, origin[1]), (tile_size[0], tile_size[1]), CELL_SIZE_M)


def _tile_grid(bounds: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, tile size and tile count along x and y: equal tiles from the mesh's corner.

    Detour picks a random location by choosing a tile uniformly, then a polygon by area, so
    tiles of equal size over the town keep random locations spread evenly; a thin leftover
    tile at the edge would collect as many as a full one.
    """
    low = np.floor(np.array(bounds[:2]) / GRID_M) * GRID_M - GRID_M
    extent = np.array(bounds[2:]) - low + GRID_M
    counts = np.maximum(1, np.ceil(extent / TILE_TARGET_M)).astype(int)
    size = np.ceil(extent / counts / GRID_M) * GRID_M
    return low, size, counts


def _triangulate(regions: list[tuple[Area, shapely.Geometry]], origin: np.ndarray, tile_size: np.ndarray,
                 counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 2) triangles covering the regions and each one's area, cut along the tile grid.

    All region outlines and grid lines are noded together and polygonised, so faces meet
    at shared vertices; constrained Delaunay triangulation adds no vertex, so triangles of
    neighbouring faces share whole edges (Detour links neighbours edge to edge).
    """
    top = origin + tile_size * counts
    grid = [shapely.LineString([(origin[0] + i * tile_size[0], origin[1]), (origin[0] + i * tile_size[0], top[1])])
            for i in range(1, counts[0])]
    grid += [shapely.LineString([(origin[0], origin[1] + j * tile_size[1]), (top[0], origin[1] + j * tile_size[1])])
             for j in range(1, counts[1])]
    lines = shapely.union_all([region.boundary for _, region in regions] + grid, grid_size=GRID_M)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(lines)))
    inside = shapely.point_on_surface(faces)
    labels = np.zeros(len(faces), dtype=int)
    for area, region in regions:
        shapely.prepare(region)
        labels[(labels == 0) & shapely.contains(region, inside)] = area
    faces, labels = faces[labels > 0], labels[labels > 0]
    triangles, face = shapely.get_parts(shapely.constrained_delaunay_triangles(faces), return_index=True)
    coords = shapely.get_coordinates(triangles).reshape(-1, 4, 2)[:, :3]
    return coords, labels[face]


def _wind_for_detour(vertices: np.ndarray, corners: np.ndarray) -> None:
    """Detour needs positive area in its (x, z) convention, i.e. clockwise in CARLA's x/y."""
    a, b, c = (vertices[corners[:, k]] for k in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    flip = cross > 0
    corners[flip, 1], corners[flip, 2] = corners[flip, 2], corners[flip, 1].copy()


def merge_convex(vertices: np.ndarray, triangles: np.ndarray, labels: np.ndarray
                 ) -> tuple[list[list[int]], list[int]]:
    """Greedily merges neighbouring polygons of the same area, longest shared edge first,
    while the result stays convex with at most six vertices (as Recast merges its own)."""
    polygons: dict[int, list[int]] = {i: list(map(int, tri)) for i, tri in enumerate(triangles)}
    areas = {i: int(label) for i, label in enumerate(labels)}
    owner: dict[tuple[int, int], int] = {}
    for index, polygon in polygons.items():
        for edge in zip(polygon, polygon[1:] + polygon[:1]):
            owner[edge] = index
    heap: list[tuple[float, int, int, int, int]] = []

    def offer(index: int) -> None:
        polygon = polygons[index]
        for a, b in zip(polygon, polygon[1:] + polygon[:1]):
            other = owner.get((b, a))
            if other is not None and areas[other] == areas[index] \
                    and len(polygon) + len(polygons[other]) - 2 <= VERTS_PER_POLYGON:
                length = float(np.sum((vertices[a] - vertices[b]) ** 2))
                heapq.heappush(heap, (-length, index, other, a, b))

    for index in list(polygons):
        offer(index)
    next_index = len(polygons)
    while heap:
        _, p, q, a, b = heapq.heappop(heap)
        if p not in polygons or q not in polygons or owner.get((a, b)) != p or owner.get((b, a)) != q:
            continue
        merged = _joined(polygons[p], polygons[q], a, b)
        if len(merged) > VERTS_PER_POLYGON or not _convex_at(vertices, merged, (a, b)):
            continue
        for old in (p, q):
            polygon = polygons.pop(old)
            for edge in zip(polygon, polygon[1:] + polygon[:1]):
                del owner[edge]
        polygons[next_index], areas[next_index] = merged, areas[p]
        for edge in zip(merged, merged[1:] + merged[:1]):
            owner[edge] = next_index
        offer(next_index)
        next_index += 1
    return list(polygons.values()), [areas[i] for i in polygons]


def _joined(first: list[int], second: list[int], a: int, b: int) -> list[int]:
    """The polygon of `first` (holding edge a->b) and `second` (holding b->a) without that edge."""
    i = first.index(b)
    from_b = first[i:] + first[:i]            # b ... a
    j = second.index(a)
    from_a = second[j:] + second[:j]          # a ... b
    return from_b + from_a[1:-1]


def _convex_at(vertices: np.ndarray, polygon: list[int], joints: tuple[int, int]) -> bool:
    """Whether the polygon (clockwise) turns right or goes straight at the two joint vertices;
    its other corners are corners of the convex parts and keep their angles."""
    count = len(polygon)
    for joint in joints:
        k = polygon.index(joint)
        u, v, w = vertices[polygon[k - 1]], vertices[joint], vertices[polygon[(k + 1) % count]]
        e1, e2 = v - u, w - v
        cross = e1[0] * e2[1] - e1[1] * e2[0]
        if cross > CONVEX_TOLERANCE * float(np.hypot(*e1) * np.hypot(*e2)):
            return False
    return True


def _tile(key: tuple[int, int], polygons: list[list[int]], poly_areas: list[int], vertices: np.ndarray,
          heights: np.ndarray, origin: np.ndarray, tile_size: np.ndarray) -> Tile:
    """A tile's local vertices (Recast axes), polygons and neighbour codes: the neighbour's
    index + 1 inside the tile, a portal side on the tile's edges, 0 on the mesh's border."""
    used = sorted({v for polygon in polygons for v in polygon})
    local = {v: i for i, v in enumerate(used)}
    xy = vertices[used]
    x_min, y_min = origin + np.array(key) * tile_size
    borders = [(Side.X_MIN, 0, x_min), (Side.X_MAX, 0, x_min + tile_size[0]),
               (Side.Z_MIN, 1, y_min), (Side.Z_MAX, 1, y_min + tile_size[1])]
    owner = {edge: index for index, polygon in enumerate(polygons)
             for edge in zip(polygon, polygon[1:] + polygon[:1])}
    polys = np.full((len(polygons), VERTS_PER_POLYGON), -1, dtype=np.int64)
    neis = np.zeros((len(polygons), VERTS_PER_POLYGON), dtype=np.uint16)
    for index, polygon in enumerate(polygons):
        polys[index, :len(polygon)] = [local[v] for v in polygon]
        for k, (a, b) in enumerate(zip(polygon, polygon[1:] + polygon[:1])):
            other = owner.get((b, a))
            if other is not None:
                neis[index, k] = other + 1
                continue
            for side, axis, value in borders:
                if abs(vertices[a, axis] - value) < ON_BORDER_M and abs(vertices[b, axis] - value) < ON_BORDER_M:
                    neis[index, k] = EXTERNAL_LINK | side
    verts = np.column_stack([xy[:, 0], heights[used], xy[:, 1]])
    return Tile(key[0], key[1], verts, polys, neis, np.array(poly_areas, dtype=np.uint8))
