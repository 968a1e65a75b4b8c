"""What stands in each autopilot vehicle's way: the nearest body whose box reaches into the
corridor its route sweeps ahead.

Why a corridor along the route and not "the car ahead in my lane": inside junctions and
around curves the lane a blocking car occupies may be another lane (a crossing path, a car
changing lanes, a walker, a car driven by a client), and all of them must stop an autopilot
car the same way. Candidate pairs come from a k-d tree, then every test is numpy over pairs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

LATERAL_MARGIN_M = 0.35     # clearance kept to a body beside the corridor
NO_OBSTACLE_M = 1.0e9
BRUTE_FORCE_PAIRS = 40_000  # below this many point-target pairs a distance matrix beats a k-d tree


@dataclass
class Bodies:
    """Every vehicle and walker: box centres, headings, half sizes, velocities."""

    rows: np.ndarray
    xy: np.ndarray          # (M, 2) box centres
    yaw: np.ndarray         # (M,) radians
    half: np.ndarray        # (M, 2) half length, half width
    velocity: np.ndarray    # (M, 2)
    walker: np.ndarray      # (M,) bool


@dataclass
class Corridor:
    """Each autopilot vehicle's route ahead and the lateral band its body will sweep."""

    body: np.ndarray        # (N,) index of the vehicle itself among the bodies
    xy: np.ndarray          # (N, P, 2) route points
    yaw: np.ndarray         # (N, P)
    distance: np.ndarray    # (N, P) metres from the vehicle's origin along the route
    low: np.ndarray         # (N, P) lateral band of its body (positive right of the route)
    high: np.ndarray
    front: np.ndarray       # (N,) origin to front bumper
    reach: np.ndarray       # (N,) how far ahead to look


@dataclass
class Obstacles:
    gap: np.ndarray         # (N,) front bumper to the nearest obstacle's near side, NO_OBSTACLE_M if none
    speed: np.ndarray       # (N,) that obstacle's speed along the route
    body: np.ndarray        # (N,) its index among the bodies, -1 if none


def pairs_within(points: np.ndarray, targets: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, target) index pairs closer than the point's radius: all pairs at once while the
    product is small, a k-d tree beyond."""
    if len(points) * len(targets) <= BRUTE_FORCE_PAIRS:
        return np.nonzero(cdist(points, targets, "sqeuclidean") <= (radius * radius)[:, None])
    found = cKDTree(targets).query_ball_point(points, radius, return_sorted=False)
    lengths = np.fromiter(map(len, found), np.int64, len(points))
    other = np.fromiter(itertools.chain.from_iterable(found), np.int64, int(lengths.sum()))
    return np.repeat(np.arange(len(points)), lengths), other


def nearest(corridor: Corridor, bodies: Bodies, ignore_vehicles: np.ndarray, ignore_walkers: np.ndarray,
            ignored_pairs: np.ndarray) -> Obstacles:
    """The nearest body ahead in each corridor.

    A body counts when its centre is ahead of the vehicle's centre (so of two cars side by
    side only the one behind yields, never both) and its footprint reaches the band.
    ignored_pairs: sorted keys vehicle_body * M + other_body of pairs told to ignore each other.
    """
    count = len(corridor.body)
    gap = np.full(count, NO_OBSTACLE_M)
    speed = np.zeros(count)
    which = np.full(count, -1, np.int64)
    if count == 0 or len(bodies.rows) < 2:
        return Obstacles(gap, speed, which)
    # np.take rather than fancy indexing for the gathers: several times faster on these shapes
    vehicle, other = pairs_within(corridor.xy[:, 0], bodies.xy, corridor.reach)
    heading = np.take(corridor.yaw[:, 0], vehicle)
    relative = np.take(bodies.xy, other, axis=0) - np.take(corridor.xy[:, 0], vehicle, axis=0)
    # bodies behind the car's centre cannot be ahead on its route (short of a U-turn within reach)
    keep = ((other != np.take(corridor.body, vehicle))
            & (relative[:, 0] * np.cos(heading) + relative[:, 1] * np.sin(heading) > -np.take(bodies.half[:, 0], other))
            & ~np.where(np.take(bodies.walker, other), np.take(ignore_walkers, vehicle),
                        np.take(ignore_vehicles, vehicle)))
    if len(ignored_pairs):
        keep &= ~np.isin(np.take(corridor.body, vehicle) * len(bodies.rows) + other, ignored_pairs)
    vehicle, other = vehicle[keep], other[keep]
    if len(vehicle) == 0:
        return Obstacles(gap, speed, which)

    points = int(np.searchsorted(corridor.distance[0], corridor.reach.max(), side="right")) + 1
    route_points = np.ascontiguousarray(corridor.xy[:, :points])
    offset = np.take(bodies.xy, other, axis=0)[:, None, :] - np.take(route_points, vehicle, axis=0)
    point = np.argmin(np.einsum("npk,npk->np", offset, offset), axis=1)
    relative = offset[np.arange(len(vehicle)), point]
    flat = vehicle * corridor.yaw.shape[1] + point
    yaw = np.take(corridor.yaw, flat)
    cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
    along = np.take(corridor.distance, flat) + relative[:, 0] * cos_yaw + relative[:, 1] * sin_yaw
    lateral = relative[:, 1] * cos_yaw - relative[:, 0] * sin_yaw
    turn = np.take(bodies.yaw, other) - yaw
    cos_turn, sin_turn = np.abs(np.cos(turn)), np.abs(np.sin(turn))
    half = np.take(bodies.half, other, axis=0)
    half_length = half[:, 0] * cos_turn + half[:, 1] * sin_turn
    half_width = half[:, 0] * sin_turn + half[:, 1] * cos_turn + LATERAL_MARGIN_M
    blocking = ((along > 0.0) & (lateral + half_width > np.take(corridor.low, flat))
                & (lateral - half_width < np.take(corridor.high, flat)))
    if not blocking.any():
        return Obstacles(gap, speed, which)
    vehicle, other = vehicle[blocking], other[blocking]
    clearance = (along - half_length)[blocking] - np.take(corridor.front, vehicle)
    np.minimum.at(gap, vehicle, clearance)
    nearest_one = clearance == np.take(gap, vehicle)        # ties: either body will do
    chosen, body = vehicle[nearest_one], other[nearest_one]
    which[chosen] = body
    moving = np.take(bodies.velocity, body, axis=0)
    speed[chosen] = moving[:, 0] * cos_yaw[blocking][nearest_one] + moving[:, 1] * sin_yaw[blocking][nearest_one]
    return Obstacles(gap, speed, which)
