"""What stands in each autopilot vehicle's way: the nearest body whose box reaches into the
corridor its route sweeps ahead.

Why a corridor along the route and not "the car ahead in my lane": inside junctions and
around curves the lane a blocking car occupies may be another lane (a crossing path, a car
changing lanes, a walker, a car driven by a client), and all of them must stop an autopilot
car the same way. Candidate pairs come from a k-d tree, then every test is numpy over pairs.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numba
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
    vehicle, other = pairs_within(corridor.xy[:, 0], bodies.xy, corridor.reach)
    points = int(np.searchsorted(corridor.distance[0], corridor.reach.max(), side="right")) + 1
    _nearest_kernel(vehicle, other, points, corridor.body, corridor.xy, corridor.yaw, corridor.distance, corridor.low,
                    corridor.high, corridor.front, bodies.xy, bodies.yaw, bodies.half, bodies.velocity, bodies.walker,
                    ignore_vehicles, ignore_walkers, ignored_pairs, gap, speed, which)
    return Obstacles(gap, speed, which)


@numba.njit(cache=True)
def _nearest_kernel(vehicle, other, points, own_body, route_xy, route_yaw, route_distance, low, high, front, body_xy,
                    body_yaw, body_half, body_velocity, walker, ignore_vehicles, ignore_walkers, ignored_pairs,
                    gap, speed, which):
    """nearest() over the candidate (vehicle, other body) pairs, checking each against the
    first `points` route points of the vehicle's corridor; fills gap, speed and which."""
    bodies = len(body_xy)
    for k in range(len(vehicle)):
        v, o = vehicle[k], other[k]
        if o == own_body[v]:
            continue
        if ignore_walkers[v] if walker[o] else ignore_vehicles[v]:
            continue
        heading = route_yaw[v, 0]
        dx, dy = body_xy[o, 0] - route_xy[v, 0, 0], body_xy[o, 1] - route_xy[v, 0, 1]
        # bodies behind the car's centre cannot be ahead on its route (short of a U-turn within reach)
        if dx * math.cos(heading) + dy * math.sin(heading) <= -body_half[o, 0]:
            continue
        if len(ignored_pairs):
            key = own_body[v] * bodies + o
            at = np.searchsorted(ignored_pairs, key)
            if at < len(ignored_pairs) and ignored_pairs[at] == key:
                continue
        # the route point nearest the body, and the body's footprint in that point's frame
        point, best = 0, np.inf
        for p in range(points):
            px, py = body_xy[o, 0] - route_xy[v, p, 0], body_xy[o, 1] - route_xy[v, p, 1]
            squared = px * px + py * py
            if squared < best:
                point, best = p, squared
        rx, ry = body_xy[o, 0] - route_xy[v, point, 0], body_xy[o, 1] - route_xy[v, point, 1]
        yaw = route_yaw[v, point]
        cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
        along = route_distance[v, point] + rx * cos_yaw + ry * sin_yaw
        lateral = ry * cos_yaw - rx * sin_yaw
        turn = body_yaw[o] - yaw
        cos_turn, sin_turn = abs(math.cos(turn)), abs(math.sin(turn))
        half_length = body_half[o, 0] * cos_turn + body_half[o, 1] * sin_turn
        half_width = body_half[o, 0] * sin_turn + body_half[o, 1] * cos_turn + LATERAL_MARGIN_M
        if along <= 0.0 or lateral + half_width <= low[v, point] or lateral - half_width >= high[v, point]:
            continue
        clearance = along - half_length - front[v]
        if clearance <= gap[v]:   # ties: either body will do
            gap[v] = clearance
            which[v] = o
            speed[v] = body_velocity[o, 0] * cos_yaw + body_velocity[o, 1] * sin_yaw
