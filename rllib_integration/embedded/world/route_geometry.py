"""Geometry along planned routes: points ahead of every vehicle and where each vehicle is.

Why a module of its own: the autopilot asks the same question many times per tick ("what
lies d metres further along this vehicle's route?") for all vehicles and many distances
at once. A route is a row of lane-graph segments; these functions answer it with a few
gathers over the lane graph's sample arrays, never a per-vehicle loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..maps.lane_graph import LaneGraph

ROW_BAND_M = 1.0e7     # beyond any route length: keeps rows apart in one sorted array


@dataclass
class RouteSamples:
    """Values at distances along routes, shape (vehicles, distances)."""

    xy: np.ndarray
    z: np.ndarray
    yaw: np.ndarray          # radians
    curvature: np.ndarray    # 1/m, positive turning right
    segment: np.ndarray
    slot: np.ndarray         # route slot holding each point
    beyond: np.ndarray       # the route ends before this distance (point clamped to its end)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Radians to [-pi, pi)."""
    return np.remainder(angle + np.pi, 2.0 * np.pi) - np.pi


def slot_ends(graph: LaneGraph, route: np.ndarray) -> np.ndarray:
    """(N, K) distance from the start of slot 0 to the end of each slot (unplanned slots add 0)."""
    return np.cumsum(np.where(route >= 0, graph.length[np.maximum(route, 0)], 0.0), axis=1)


def sample(graph: LaneGraph, route: np.ndarray, ends: np.ndarray, s: np.ndarray,
           distances: np.ndarray) -> RouteSamples:
    """Route points at `distances` (N, P) metres from each vehicle's arc length s on slot 0."""
    rows = np.arange(len(route))[:, None]
    d = s[:, None] + distances
    planned = (route >= 0).sum(axis=1)
    last = np.maximum(planned - 1, 0)[:, None]
    # Row-wise searchsorted in one call: each row's values are lifted into a band of their own.
    band = rows * ROW_BAND_M
    slot = np.searchsorted((ends + band).ravel(), (d + band).ravel(), side="right").reshape(d.shape) \
        - rows * route.shape[1]
    beyond = slot > last
    slot = np.minimum(slot, last)
    segment = np.maximum(route[rows, slot], 0)
    starts = ends[rows, slot] - graph.length[segment]
    local = np.where(beyond, graph.length[segment], d - starts)
    values = graph.interpolate(segment, local)
    xy, z, yaw, curvature = values[..., :2], values[..., 2], values[..., 3], values[..., 4]
    return RouteSamples(xy, z, yaw, curvature, segment, slot, beyond)


def project(points: RouteSamples, distances: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Nearest point to each vehicle on the polyline through its route samples.

    Returns the distance along the samples' frame (same origin as `distances`), the signed
    lateral offset (positive to the right of the route, CARLA's right) and the route heading
    there, and the distance from the polyline.
    """
    a, b = points.xy[:, :-1], points.xy[:, 1:]
    ab = b - a
    length_sq = np.maximum(np.einsum("npk,npk->np", ab, ab), 1e-12)
    t = np.clip(np.einsum("npk,npk->np", xy[:, None, :] - a, ab) / length_sq, 0.0, 1.0)
    nearest = a + ab * t[..., None]
    gap = xy[:, None, :] - nearest
    distance_sq = np.einsum("npk,npk->np", gap, gap)
    piece = np.argmin(distance_sq, axis=1)
    rows = np.arange(len(xy))
    t_best = t[rows, piece]
    step = distances[rows, piece + 1] - distances[rows, piece]
    along = distances[rows, piece] + t_best * step
    turn = points.yaw[rows, piece + 1] - points.yaw[rows, piece]
    yaw = points.yaw[rows, piece] + wrap_angle(turn) * t_best   # samples of two segments may differ by 2 pi
    offset = gap[rows, piece]
    lateral = -offset[:, 0] * np.sin(yaw) + offset[:, 1] * np.cos(yaw)
    return along, lateral, yaw, np.sqrt(distance_sq[rows, piece])
