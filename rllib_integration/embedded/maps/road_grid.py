"""Constant-time lookup of the nearest road-surface sample, callable from compiled kernels.

Every sample is registered in the grid cells within REACH_M of it, so a point whose
nearest sample lies within REACH_M finds it among its own cell's candidates; the one
closest in 3-D wins, which keeps bridges and the roads under them apart. Points further
from every road report -1 and the caller falls back to a k-d tree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

CELL_M = 2.0
REACH_M = 3.0   # a lane's half width plus margin: cars on the road always find their lane


@dataclass(frozen=True)
class RoadGrid:
    origin: np.ndarray      # (2,) x, y of cell (0, 0)
    shape: np.ndarray       # (2,) cells along x, y
    starts: np.ndarray      # (cells + 1,) CSR offsets into members
    members: np.ndarray     # sample indices, grouped by cell
    points: np.ndarray      # (n, 3) sample positions


def build_road_grid(points: np.ndarray) -> RoadGrid:
    origin = points[:, :2].min(axis=0) - REACH_M
    shape = (np.ceil((points[:, :2].max(axis=0) + REACH_M - origin) / CELL_M)).astype(np.int64) + 1
    span = int(np.ceil(REACH_M / CELL_M))
    offsets = np.arange(-span, span + 1)
    home = np.floor((points[:, :2] - origin) / CELL_M).astype(np.int64)
    cell_x = (home[:, 0:1] + offsets[None, :]).repeat(len(offsets), axis=1)
    cell_y = np.tile(home[:, 1:2] + offsets[None, :], (1, len(offsets)))
    sample = np.repeat(np.arange(len(points)), len(offsets) ** 2)
    cell_x, cell_y = cell_x.ravel(), cell_y.ravel()
    inside = (cell_x >= 0) & (cell_x < shape[0]) & (cell_y >= 0) & (cell_y < shape[1])
    keys = cell_x[inside] * shape[1] + cell_y[inside]
    order = np.argsort(keys, kind="stable")
    members = sample[inside][order].astype(np.int32)
    starts = np.searchsorted(keys[order], np.arange(shape[0] * shape[1] + 1)).astype(np.int64)
    return RoadGrid(origin.astype(np.float64), shape, starts, members, np.ascontiguousarray(points))


@numba.njit(cache=True)
def nearest_sample(origin: np.ndarray, shape: np.ndarray, starts: np.ndarray, members: np.ndarray,
                   points: np.ndarray, x: float, y: float, z: float) -> int:
    """Index of the closest sample within REACH_M horizontally, or -1."""
    cx = int(np.floor((x - origin[0]) / CELL_M))
    cy = int(np.floor((y - origin[1]) / CELL_M))
    if cx < 0 or cy < 0 or cx >= shape[0] or cy >= shape[1]:
        return -1
    cell = cx * shape[1] + cy
    best, best_d2 = -1, np.inf
    for k in range(starts[cell], starts[cell + 1]):
        i = members[k]
        dx, dy, dz = points[i, 0] - x, points[i, 1] - y, points[i, 2] - z
        horizontal = dx * dx + dy * dy
        if horizontal > REACH_M * REACH_M:
            continue
        d2 = horizontal + dz * dz
        if d2 < best_d2:
            best, best_d2 = i, d2
    return best
