"""Reads a served navigation file back with the writer's own dtypes, for checks and path lengths."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from rllib_integration.embedded.maps import detour


@dataclass
class ParsedTile:
    ref: int
    data_size: int
    header: np.void
    verts: np.ndarray          # (n, 3) Recast x, up, z
    polys: np.ndarray          # POLY records
    links: np.ndarray
    details: np.ndarray
    detail_tris: np.ndarray
    bv_nodes: np.ndarray
    trailing_bytes: int

    def poly_verts(self, index: int) -> np.ndarray:
        poly = self.polys[index]
        return self.verts[poly["verts"][: poly["vert_count"]]]


def parse(data: bytes) -> tuple[np.void, list[ParsedTile]]:
    header = np.frombuffer(data, detour.SET_HEADER, count=1)[0]
    position = detour.SET_HEADER.itemsize
    tiles = []
    for _ in range(int(header["num_tiles"])):
        entry = np.frombuffer(data, detour.TILE_ENTRY, count=1, offset=position)[0]
        position += detour.TILE_ENTRY.itemsize
        tile = data[position: position + int(entry["data_size"])]
        position += int(entry["data_size"])
        mesh = np.frombuffer(tile, detour.MESH_HEADER, count=1)[0]
        offset = detour.MESH_HEADER.itemsize
        sections = []
        for dtype, count in ((detour.VERTEX, mesh["vert_count"]), (detour.POLY, mesh["poly_count"]),
                             (detour.LINK, mesh["max_link_count"]), (detour.POLY_DETAIL, mesh["detail_mesh_count"]),
                             (detour.VERTEX, mesh["detail_vert_count"]), (detour.DETAIL_TRI, mesh["detail_tri_count"]),
                             (detour.BV_NODE, mesh["bv_node_count"])):
            sections.append(np.frombuffer(tile, dtype, count=int(count), offset=offset))
            offset += dtype.itemsize * int(count)
        verts, polys, links, details, _, tris, nodes = sections
        tiles.append(ParsedTile(int(entry["tile_ref"]), int(entry["data_size"]), mesh, verts, polys, links, details,
                                tris, nodes, len(tile) - offset))
    assert position == len(data), "bytes after the last tile"
    return header, tiles


class PolygonGraph:
    """Every polygon of the mesh and its neighbours (inside tiles and through portals), for
    finding the polygon under a point and the length of a walk between two points."""

    def __init__(self, tiles: list[ParsedTile]) -> None:
        outlines, centres, edges = [], [], {}
        for tile in tiles:
            for index in range(len(tile.polys)):
                corners = tile.poly_verts(index)[:, [0, 2]]   # CARLA x, y
                node = len(outlines)
                outlines.append(shapely.Polygon(corners))
                centres.append(corners.mean(axis=0))
                for k in range(len(corners)):
                    a, b = corners[k], corners[(k + 1) % len(corners)]
                    edges.setdefault(tuple(np.round(np.concatenate([np.minimum(a, b), np.maximum(a, b)]), 3)),
                                     []).append((node, (a + b) / 2))
        rows, cols, weights = [], [], []
        for sharing in edges.values():
            for node, middle in sharing:
                for other, _ in sharing:
                    if other != node:
                        rows.append(node)
                        cols.append(other)
                        weights.append(np.hypot(*(centres[node] - middle)) + np.hypot(*(middle - centres[other])))
        self.outlines = np.array(outlines, dtype=object)
        self.tree = shapely.STRtree(self.outlines)
        self.matrix = coo_matrix((weights, (rows, cols)), shape=(len(outlines), len(outlines))).tocsr()
        self.centres = np.array(centres)

    def polygon_at(self, xy: tuple[float, float]) -> int:
        return int(self.tree.nearest(shapely.Point(xy)))

    def walk_length(self, start: tuple[float, float], end: tuple[float, float]) -> float:
        """Metres from start to end through polygon centres; infinite when not connected."""
        first, last = self.polygon_at(start), self.polygon_at(end)
        through = dijkstra(self.matrix, indices=first)[last]
        return float(np.hypot(*(np.array(start) - self.centres[first])) + through
                     + np.hypot(*(self.centres[last] - np.array(end))))
