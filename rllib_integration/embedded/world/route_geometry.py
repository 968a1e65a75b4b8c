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


@dataclass
class RouteFrame:
    """Where each route slot starts and ends, measured from the start of slot 0 (one per tick)."""

    route: np.ndarray       # (N, K) segments, -1 past the planned ones
    ends: np.ndarray        # (N, K) end of each slot; unplanned slots add no length
    starts: np.ndarray      # (N, K)
    last: np.ndarray        # (N, 1) last planned slot
    rows: np.ndarray        # (N, 1) row numbers


@dataclass
class RouteSamples:
    """Values at distances along routes, shape (vehicles, distances)."""

    xy: np.ndarray
    z: np.ndarray
    yaw: np.ndarray          # radians
    curvature: np.ndarray    # 1/m, positive turning right
    segment: np.ndarray


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Radians to [-pi, pi)."""
    return np.remainder(angle + np.pi, 2.0 * np.pi) - np.pi


def frame(graph: LaneGraph, route: np.ndarray) -> RouteFrame:
    planned = route >= 0
    lengths = np.where(planned, graph.length[np.maximum(route, 0)], 0.0)
    ends = np.cumsum(lengths, axis=1)
    rows = np.arange(len(route))[:, None]
    last = np.maximum(planned.sum(axis=1) - 1, 0)[:, None]
    return RouteFrame(route, ends, ends - lengths, last, rows)


def sample(graph: LaneGraph, plan: RouteFrame, s: np.ndarray, distances: np.ndarray) -> RouteSamples:
    """Route points at `distances` (N, P) metres from each vehicle's arc length s on slot 0;
    points past the planned route stay at its end."""
    rows = plan.rows
    d = s[:, None] + distances
    # the slot holding each point: count the slot ends it has passed (routes are short; stop early)
    slot = np.zeros(d.shape, np.int64)
    farthest = d.max(initial=0.0)
    for k in range(plan.route.shape[1] - 1):
        end = plan.ends[:, k:k + 1]
        if end.min() > farthest:
            break
        slot += d >= end
    slot = np.minimum(slot, plan.last)
    flat = slot + rows * plan.route.shape[1]
    segment = np.take(plan.route, flat)
    values = graph.interpolate(segment, d - np.take(plan.starts, flat))
    return RouteSamples(values[..., :2], values[..., 2], values[..., 3], values[..., 4], segment)


def project(points_xy: np.ndarray, points_yaw: np.ndarray, points_curvature: np.ndarray, distances: np.ndarray,
            xy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Nearest point to each vehicle on the polyline through its route points (N, P).

    Returns the distance along the points' frame (same origin as `distances`), the signed
    lateral offset from the route (positive to the right, CARLA's right), the route heading
    there, and the distance from the polyline. The lateral offset is measured from the arc
    the route follows between two points, not from their chord (a 1.5 m chord of a 10 m
    radius turn lies 3 cm inside it).
    """
    a, b = points_xy[:, :-1], points_xy[:, 1:]
    ab = b - a
    length_sq = np.maximum(np.einsum("npk,npk->np", ab, ab), 1e-12)
    t = np.clip(np.einsum("npk,npk->np", xy[:, None, :] - a, ab) / length_sq, 0.0, 1.0)
    gap = xy[:, None, :] - a - ab * t[..., None]
    distance_sq = np.einsum("npk,npk->np", gap, gap)
    piece = np.argmin(distance_sq, axis=1)
    rows = np.arange(len(xy))
    t_best = t[rows, piece]
    along = distances[rows, piece] + t_best * (distances[rows, piece + 1] - distances[rows, piece])
    turn = points_yaw[rows, piece + 1] - points_yaw[rows, piece]
    yaw = points_yaw[rows, piece] + wrap_angle(turn) * t_best   # samples of two segments may differ by 2 pi
    offset = gap[rows, piece]
    chord = distances[rows, piece + 1] - distances[rows, piece]
    sagitta = 0.5 * points_curvature[rows, piece] * chord * chord * t_best * (1.0 - t_best)
    lateral = -offset[:, 0] * np.sin(yaw) + offset[:, 1] * np.cos(yaw) + sagitta
    return along, lateral, yaw, np.sqrt(distance_sq[rows, piece])
