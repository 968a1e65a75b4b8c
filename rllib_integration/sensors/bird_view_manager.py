"""The "sensor.birdview" pseudo-sensor: a top-down image around the hero, drawn with OpenCV.

Only the official client API is used (world snapshot, actors, client-side map), so the same world
gives the same image on the real CARLA server and on the embedded one. The town is drawn once
(see bird_view_map) and each frame is a rotated crop plus actors and the route ahead (see
bird_view_render). `python -m rllib_integration.sensors.bird_view_manager --town Town01 --out bev.png`
writes one frame (see bird_view_cli).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import carla
import numpy as np

from .bird_view_map import load_map_layer
from .bird_view_render import BOX_DTYPE, MASK_CHANNELS, MODES, BirdviewRenderer

ROUTE_STEP_M = 1.0           # spacing of the default route's points
REROUTE_DISTANCE_M = 2.0     # the default route is retraced when the hero is further than this from it
FORK_LOOKAHEAD_M = 10.0      # at forks the default route takes the branch turning least over this distance
_UNSEEN = object()           # marks actor ids not looked up yet in BirdviewManager's actor table


def validate_attributes(size: Any, radius: Any, mode: Any) -> None:
    """Rejects birdview attributes that cannot make an image, naming the setting and what it accepts."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"birdview 'size' must be a positive whole number of pixels (got {size!r})")
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.number)) or not radius > 0 \
            or not math.isfinite(radius):
        raise ValueError(f"birdview 'radius' must be a positive number of metres (got {radius!r})")
    if mode not in MODES:
        raise ValueError(f"birdview 'mode' must be one of {', '.join(map(repr, MODES))} (got {mode!r})")


def route_points(route: np.ndarray | Iterable[Any]) -> np.ndarray:
    """A route as an (N, 2) float array of world (x, y).

    Accepts an array (returned as is, the cheap way for routes reused every frame) or a sequence of
    carla.Location / carla.Transform / carla.Waypoint / (x, y) / (waypoint, RoadOption) items.
    """
    if isinstance(route, np.ndarray):
        return np.asarray(route[:, :2], np.float64)
    points = []
    for item in route:
        if isinstance(item, (tuple, list)) and not isinstance(item[0], (int, float)):
            item = item[0]
        if isinstance(item, carla.Waypoint):
            item = item.transform
        if isinstance(item, carla.Transform):
            item = item.location
        points.append((item.x, item.y) if isinstance(item, carla.Location) else (item[0], item[1]))
    return np.array(points, np.float64).reshape(-1, 2)


class _RouteAhead:
    """Default route: the hero's lane followed ahead (the straightest branch at forks).

    Traced for twice the needed length and reused until the hero strays from it or nears its end,
    so most frames only pay a nearest-point search.
    """

    def __init__(self, town: carla.Map, length_m: float) -> None:
        self._town = town
        self._points_needed = math.ceil(length_m / ROUTE_STEP_M) + 1
        self._xy = np.empty((0, 2))

    def points(self, location: carla.Location) -> np.ndarray:
        if len(self._xy):
            distances = np.hypot(self._xy[:, 0] - location.x, self._xy[:, 1] - location.y)
            nearest = int(distances.argmin())
            if distances[nearest] <= REROUTE_DISTANCE_M and len(self._xy) - nearest >= self._points_needed:
                return self._xy[nearest:]
        self._xy = self._trace(location)
        return self._xy

    def _trace(self, location: carla.Location) -> np.ndarray:
        waypoint = self._town.get_waypoint(location)
        trace = [waypoint]
        while len(trace) < 2 * self._points_needed:
            branches = waypoint.next(ROUTE_STEP_M)
            if not branches:
                break
            waypoint = branches[0] if len(branches) == 1 else min(branches, key=_fork_turn_deg)
            trace.append(waypoint)
        return route_points(trace)


def _fork_turn_deg(branch: carla.Waypoint) -> float:
    """How much a fork's branch turns, judged a little way in (turns barely start at the fork)."""
    ahead = branch.next(FORK_LOOKAHEAD_M) or [branch]
    turn = ahead[0].transform.rotation.yaw - branch.transform.rotation.yaw
    return abs((turn + 180.0) % 360.0 - 180.0)


def _boxes(fields: list[float]) -> np.ndarray:
    """BOX_DTYPE array from its fields laid end to end (much faster than from a list of tuples)."""
    return np.fromiter(fields, np.float64, len(fields)).view(BOX_DTYPE)


class Scene(NamedTuple):
    """What a frame shows besides the map: BOX_DTYPE boxes taken from one world snapshot."""
    hero: np.ndarray                  # 0-d BOX_DTYPE array
    hero_location: carla.Location
    vehicles: np.ndarray              # (N,) BOX_DTYPE, hero excluded
    walkers: np.ndarray               # (M,) BOX_DTYPE


class BirdviewManager:
    """Top-down image around the hero: hero at the centre facing up, `radius` metres to each edge.

    mode "rgb": (size, size, 3) uint8 RGB. mode "masks": (size, size, len(MASK_CHANNELS)) uint8 with
    one 0/255 channel per entry of MASK_CHANNELS (road, lane_markings, sidewalk, shoulder, vehicles,
    walkers, route, hero). The map layer is cached per town content and resolution in memory and
    in `cache_dir` (default $XDG_CACHE_HOME/carla-rllib/birdview).
    """

    channels = MASK_CHANNELS

    def __init__(self, world: carla.World, size: int = 84, radius: float = 15.0, mode: str = "rgb",
                 cache_dir: Path | str | None = None) -> None:
        validate_attributes(size, radius, mode)
        self.size = int(size)
        self.radius = float(radius)
        self.mode = mode
        self.pixels_per_metre = self.size / (2.0 * self.radius)
        self._world = world
        town = world.get_map()
        self.renderer = BirdviewRenderer(load_map_layer(town, self.pixels_per_metre, cache_dir),
                                          self.size, self.radius, mode)
        self._route_ahead = _RouteAhead(town, self.radius * math.sqrt(2.0))
        # actor id -> (is_vehicle, (offset_x, offset_y, extent_x, extent_y)), or None for actors not drawn
        self._shapes: dict[int, tuple[bool, tuple[float, float, float, float]] | None] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of every rendered frame (for observation spaces)."""
        return self.size, self.size, 3 if self.mode == "rgb" else len(MASK_CHANNELS)

    def render(self, hero: carla.Actor, route: np.ndarray | Iterable[Any] | None = None,
               snapshot: carla.WorldSnapshot | None = None) -> np.ndarray:
        """One frame of the world as of `snapshot` (default: the latest one the client received).

        `route`: the hero's planned route (see route_points); default: its current lane ahead.
        """
        snapshot = self._world.get_snapshot() if snapshot is None else snapshot
        scene = self.scene(snapshot, hero.id)
        return self.renderer.render(scene.hero, scene.vehicles, scene.walkers, self.route(scene, route))

    def route(self, scene: Scene, route: np.ndarray | Iterable[Any] | None = None) -> np.ndarray:
        """The route to draw as (N, 2) world points: `route` converted, else the hero's lane ahead."""
        return self._route_ahead.points(scene.hero_location) if route is None else route_points(route)

    def scene(self, snapshot: carla.WorldSnapshot, hero_id: int) -> Scene:
        """Hero, vehicle and walker boxes from one snapshot; only actors never seen before cost an RPC."""
        fields: dict[bool, list[float]] = {True: [], False: []}  # flat BOX_DTYPE fields: vehicles, walkers
        hero = None
        unseen = []
        for actor in snapshot:
            actor_id = actor.id
            shape = self._shapes.get(actor_id, _UNSEEN)
            if shape is None:
                continue
            if shape is _UNSEEN:
                unseen.append(actor_id)
                continue
            transform = actor.get_transform()
            location = transform.location
            row = (location.x, location.y, transform.rotation.yaw) + shape[1]
            if actor_id == hero_id:
                hero = (np.array(row, BOX_DTYPE), location)
            else:
                fields[shape[0]] += row
        if unseen:
            self._learn_shapes(unseen)
            return self.scene(snapshot, hero_id)
        if hero is None:
            raise ValueError(f"birdview hero actor {hero_id} is not in the world snapshot of frame "
                             f"{snapshot.frame} (destroyed, or spawned after the last tick?)")
        return Scene(hero[0], hero[1], _boxes(fields[True]), _boxes(fields[False]))

    def _learn_shapes(self, actor_ids: list[int]) -> None:
        """Asks the server once per new actor id for its type and bounding box."""
        for actor_id in actor_ids:
            self._shapes[actor_id] = None
        for actor in self._world.get_actors(actor_ids):
            is_vehicle = actor.type_id.startswith("vehicle.")
            if is_vehicle or actor.type_id.startswith("walker."):
                box = actor.bounding_box
                self._shapes[actor.id] = (is_vehicle, (box.location.x, box.location.y, box.extent.x, box.extent.y))


if __name__ == "__main__":
    from .bird_view_cli import main

    raise SystemExit(main())
