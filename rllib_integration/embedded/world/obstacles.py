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
        offset = points[:, None, :] - targets[None, :, :]
        return np.nonzero(np.einsum("nmk,nmk->nm", offset, offset) <= (radius * radius)[:, None])
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
    vehicle, other = pairs_within(corridor.xy[:, 0], bodies.xy, corridor.reach)
    heading = corridor.yaw[vehicle, 0]
    relative = bodies.xy[other] - corridor.xy[vehicle, 0]
    # bodies behind the car's centre cannot be ahead on its route (short of a U-turn within reach)
    keep = (other != corridor.body[vehicle]) & (relative[:, 0] * np.cos(heading) + relative[:, 1] * np.sin(heading)
                                               > -bodies.half[other].max(axis=1))
    keep &= ~np.where(bodies.walker[other], ignore_walkers[vehicle], ignore_vehicles[vehicle])
    if len(ignored_pairs):
        keys = corridor.body[vehicle] * len(bodies.rows) + other
        keep &= ~np.isin(keys, ignored_pairs)
    vehicle, other = vehicle[keep], other[keep]
    if len(vehicle) == 0:
        return Obstacles(gap, speed, which)

    points = int(np.searchsorted(corridor.distance[0], corridor.reach.max(), side="right")) + 1
    offset = bodies.xy[other][:, None, :] - corridor.xy[vehicle, :points]
    point = np.argmin(np.einsum("npk,npk->np", offset, offset), axis=1)
    pair = np.arange(len(vehicle))
    yaw = corridor.yaw[vehicle, point]
    tangent = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    normal = np.stack([-np.sin(yaw), np.cos(yaw)], axis=1)
    relative = offset[pair, point]
    along = corridor.distance[vehicle, point] + np.einsum("nk,nk->n", relative, tangent)
    lateral = np.einsum("nk,nk->n", relative, normal)
    turn = bodies.yaw[other] - yaw
    cos_turn, sin_turn = np.abs(np.cos(turn)), np.abs(np.sin(turn))
    half_length = bodies.half[other, 0] * cos_turn + bodies.half[other, 1] * sin_turn
    half_width = bodies.half[other, 0] * sin_turn + bodies.half[other, 1] * cos_turn
    blocking = ((along > 0.0) & (along - half_length < corridor.reach[vehicle])
                & (lateral + half_width > corridor.low[vehicle, point] - LATERAL_MARGIN_M)
                & (lateral - half_width < corridor.high[vehicle, point] + LATERAL_MARGIN_M))
    if not blocking.any():
        return Obstacles(gap, speed, which)
    vehicle, other = vehicle[blocking], other[blocking]
    clearance = (along - half_length)[blocking] - corridor.front[vehicle]
    closest = np.lexsort((clearance, vehicle))
    first = closest[np.concatenate([[True], vehicle[closest][1:] != vehicle[closest][:-1]])]
    chosen = vehicle[first]
    gap[chosen] = clearance[first]
    speed[chosen] = np.einsum("nk,nk->n", bodies.velocity[other[first]], tangent[blocking][first])
    which[chosen] = other[first]
    return Obstacles(gap, speed, which)
