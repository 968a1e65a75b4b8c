"""How far the hero advanced along the road ahead of it, in metres, step by step.

Why not the straight-line distance the original rewards: circling, zig-zagging or driving on
the wrong side all cover distance. Progress is measured along a route traced from the hero's
lane (the straightest branch at forks, the route the birdview draws), so only driving along the
road counts; driving backwards along it counts negative.
"""
from __future__ import annotations

import carla
import numpy as np

ROUTE_STEP_M = 1.0          # spacing of the traced route points
ROUTE_LENGTH_M = 200.0      # traced ahead at once; extended when less than half is left
REROUTE_DISTANCE_M = 3.0    # further than this from the route (another branch taken): retraced from the hero
FORK_LOOKAHEAD_M = 10.0     # at forks the branch turning least over this distance is followed
SEARCH_BEHIND = 3           # route segments searched behind the last match ...
SEARCH_AHEAD = 40           # ... and ahead of it (the hero moves < 2 m per step)


def straightest_branch(branches: list[carla.Waypoint]) -> carla.Waypoint:
    """The branch whose heading changes least over FORK_LOOKAHEAD_M (turns barely start at the fork)."""
    def turn_deg(branch: carla.Waypoint) -> float:
        ahead = branch.next(FORK_LOOKAHEAD_M) or [branch]
        turn = ahead[0].transform.rotation.yaw - branch.transform.rotation.yaw
        return abs((turn + 180.0) % 360.0 - 180.0)
    return branches[0] if len(branches) == 1 else min(branches, key=turn_deg)


class RouteProgress:
    """Tracks the hero's arc-length position along a lane-following route."""

    def __init__(self, town: carla.Map) -> None:
        self._town = town
        self._points = np.empty((0, 2))
        self._arc = np.empty(0)           # arc length at each point
        self._last_waypoint: carla.Waypoint | None = None
        self._index = 0                   # segment of the last match
        self._position_m = 0.0

    def reset(self, location: carla.Location) -> None:
        self._trace(self._town.get_waypoint(location))
        self._position_m = self._project(location)[0]

    def advance(self, location: carla.Location) -> float:
        """Metres advanced along the route since the last call (negative when going back)."""
        position, distance = self._project(location)
        if distance > REROUTE_DISTANCE_M:
            self.reset(location)
            return 0.0
        progress = position - self._position_m
        self._position_m = position
        if self._arc[-1] - position < ROUTE_LENGTH_M / 2:
            self._extend()
        return progress

    def _trace(self, start: carla.Waypoint) -> None:
        self._points = np.array([[start.transform.location.x, start.transform.location.y]])
        self._arc = np.zeros(1)
        self._last_waypoint = start
        self._index = 0
        self._extend()

    def _extend(self) -> None:
        waypoint, points = self._last_waypoint, []
        for _ in range(int(ROUTE_LENGTH_M / ROUTE_STEP_M)):
            branches = waypoint.next(ROUTE_STEP_M)
            if not branches:
                break
            waypoint = straightest_branch(branches)
            points.append((waypoint.transform.location.x, waypoint.transform.location.y))
        if not points:
            return
        self._last_waypoint = waypoint
        new = np.array(points)
        steps = np.hypot(*np.diff(np.vstack([self._points[-1:], new]), axis=0).T)
        self._points = np.vstack([self._points, new])
        self._arc = np.concatenate([self._arc, self._arc[-1] + np.cumsum(steps)])

    def _project(self, location: carla.Location) -> tuple[float, float]:
        """(arc length of the nearest route point, distance to it) near the last match."""
        if len(self._points) < 2:
            return 0.0, 0.0
        low = max(self._index - SEARCH_BEHIND, 0)
        high = min(self._index + SEARCH_AHEAD, len(self._points) - 1)
        starts, ends = self._points[low:high], self._points[low + 1:high + 1]
        segments = ends - starts
        lengths_sq = np.maximum((segments ** 2).sum(axis=1), 1e-9)
        here = np.array([location.x, location.y])
        along = np.clip(((here - starts) * segments).sum(axis=1) / lengths_sq, 0.0, 1.0)
        nearest = starts + along[:, None] * segments
        distances = np.hypot(*(nearest - here).T)
        best = int(distances.argmin())
        self._index = low + best
        arc = self._arc[self._index] + along[best] * (self._arc[self._index + 1] - self._arc[self._index])
        return float(arc), float(distances[best])
