"""The server-side Traffic Manager's driver: every registered vehicle, one numpy pass per tick.

Why on the server: CARLA's Traffic Manager inside the client deadlocks in synchronous mode
(see docs/wire-protocol.md §8) and costs several RPCs per tick. Here the client only
registers vehicles and changes settings; each tick the autopilot writes throttle, steer and
brake into the actor table, and the same vehicle physics as for client-driven cars moves
them, so the snapshot shows the controls that drove each car.

Per tick, for all vehicles at once:
  1. track: project each car onto its planned route of lane segments, advance the route,
     pick successors at junctions with the autopilot's seeded generator;
  2. change lanes when forced, told to at random, or to pass a slow leader, if the gap is free;
  3. look ahead along the route: curvature, speed limits, the nearest body in the corridor
     the car will sweep, the next junction, its light or stop sign;
  4. enter junctions by reservation: a car may enter a junction path while no car holds a
     path that crosses or merges with it (lane_graph.conflict);
  5. longitudinal control: the highest speed from which the car can still stop (comfortably)
     for every curve, limit, stop line and obstacle ahead, and the constant deceleration that
     meets a binding stop line or leader exactly, through an exact inverse of the physics'
     force model;
  6. lateral control: the steer whose course over the coming step (the physics' kinematic
     bicycle, body slip included) follows the route's heading there, turned toward the lane
     centre by the lateral error over a speed-proportional distance: errors decay in distance
     travelled without overshoot, at any speed, and curvature changes need no tuning.
Hybrid physics moves cars far from the hero kinematically along their lane instead.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Iterable

import numpy as np
from scipy.spatial import cKDTree

from ..maps.lane_graph import TURN_LEFT, TURN_RIGHT, TURN_STRAIGHT, LaneGraph, lane_graph_for
from ..protocol import encoding
from . import obstacles, route_geometry, vehicle_physics
from .actors import ActorKind
from .autopilot_state import (DRAW_LEFT, DRAW_LIGHTS, DRAW_RIGHT, DRAW_SIGNS, DRAW_VEHICLES, DRAW_WALKERS,
                              RANDOM_DRAWS, ROUTE_SLOTS, Fleet, PortSettings)

if TYPE_CHECKING:
    from .world import World

PATH_DISTANCES_M = np.concatenate([np.arange(0.0, 24.0, 1.5), np.arange(24.0, 60.0, 3.0), np.arange(60.0, 150.1, 7.5)])
TRACK_WINDOW_M = np.arange(-1.5, 1.51, 0.5)  # around the predicted position, where the car is looked for
_NO_ROWS, _NO_ARC = np.zeros(0, np.int64), np.zeros(0)   # route_positions' answer without autopilot cars
TRACK_POINTS = int(np.searchsorted(PATH_DISTANCES_M, 6.0)) + 1   # last tick's route points covering 6 m
LOST_DISTANCE_M = 3.0            # further from its route than this (beyond a lane change): re-locate the car
COMFORT_ACCEL_MPS2 = 2.5
COMFORT_DECEL_MPS2 = 3.5         # planning deceleration for limits, curves, stop lines, leaders
MAX_DECEL_MPS2 = 8.0             # what the controller may ask for in an emergency
LATERAL_ACCEL_MPS2 = 2.5         # curve speed: v^2 * curvature stays below this
SPEED_RESPONSE_S = 0.5           # time constant of the speed loop
HEADWAY_S = 1.0                  # time gap kept to a moving leader, on top of the distance setting
STOP_LINE_MARGIN_M = 1.0         # front bumper stops this far before a stop line
STANDSTILL_MPS = 0.1
MIN_BRAKING_ROOM_M = 0.05        # braking "to stop within" less than this means braking as hard as allowed
HOLD_TARGET_MPS = 0.05           # below this target and STANDSTILL speed: hold with the brake
STOP_SIGN_NEAR_M = 3.0           # a full stop within this distance of the line satisfies a stop sign
STEER_DISTANCE_MIN_M = 1.5       # lateral errors decay over max(this, speed * time) metres
STEER_DISTANCE_TIME_S = 0.3
STEER_NEWTON_STEPS = 3           # solving the bicycle's course equation for the curvature
JUNCTION_REQUEST_MARGIN_M = 8.0  # ask to enter a junction this far beyond the comfortable stopping distance
LANE_CHANGE_MIN_M = 25.0         # length of a lane change: max(this, speed * time)
LANE_CHANGE_TIME_S = 3.5
LANE_CHANGE_COOLDOWN_S = 8.0
LANE_CHANGE_JUNCTION_CLEARANCE_M = 10.0
LANE_CHANGE_GAP_M = 10.0         # free length needed in the target lane ahead and behind ...
LANE_CHANGE_GAP_TIME_S = 1.5     # ... plus this many seconds at the respective car's speed
LANE_CHANGE_SEARCH_M = 60.0
LANE_CHANGE_LATERAL_MARGIN_M = 0.3
OVERTAKE_SPEED_RATIO = 0.6       # pass a leader slower than this share of one's own cruise speed ...
OVERTAKE_DISTANCE_M = 25.0       # ... when it is this close (plus one second of travel)
OVERTAKE_MIN_CRUISE_MPS = 3.0
OBSTACLE_REACH_MARGIN_M = 20.0   # corridor length: stopping distance plus this (>= headway gap + distance) ...
OBSTACLE_REACH_MAX_M = float(PATH_DISTANCES_M[-1])   # ... up to the end of the sampled route
OBSTACLE_LOOK_PAST_M = 5.0       # near a junction the corridor reaches this far past the room needed after it
HERO_ROLES = ("hero", "ego_vehicle")
PATH_SEARCH_DEPTH = 24           # segments searched to join two custom-path points
TURN_OPTIONS = (TURN_LEFT, TURN_RIGHT, TURN_STRAIGHT)


class Autopilot:
    """Registered vehicles of every Traffic Manager port and the driver that moves them."""

    def __init__(self, world: "World") -> None:
        self.world = world
        self.fleet = Fleet()
        self.ports: dict[int, PortSettings] = {}
        self.rng = world.rng   # until set_random_device_seed gives the Traffic Manager its own
        self.plans: dict[int, deque] = {}           # actor id -> segments to follow next (set_path)
        self.options: dict[int, deque] = {}         # actor id -> road options at junctions (set_imported_route)
        self.ignored_pairs: set[tuple[int, int]] = set()
        self._vehicle_rows: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))
        self._previous: tuple | None = None   # last tick's first route points (xy, yaw, curvature)
        self._own: tuple | None = None
        self._row_split: tuple | None = None
        self._settings_cache: tuple | None = None
        self._bodies: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))
        self._heroes: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    # --- registration and settings ------------------------------------------------------

    def port(self, port: int) -> PortSettings:
        return self.ports.setdefault(int(port), PortSettings())

    def seed(self, seed: int) -> None:
        """set_random_device_seed: route choices and random decisions restart from this seed."""
        self.rng = np.random.default_rng(int(seed))

    def register(self, actor_ids: Iterable[int], port: int) -> None:
        """Starts driving these vehicles (ids that are not live vehicles are skipped, as CARLA's TM does)."""
        fleet, world = self.fleet, self.world
        fresh = []
        for actor_id in dict.fromkeys(int(i) for i in actor_ids):
            info = world.actors.get(actor_id)
            if info is None or info.kind != ActorKind.VEHICLE:
                continue
            if actor_id in fleet.index_of:
                fleet.port[fleet.index_of[actor_id]] = port
            else:
                fresh.append(info)
        if not fresh:
            return
        self.port(port)
        new = fleet.append([info.id for info in fresh], [info.row for info in fresh], port)
        fleet.draws[new] = self.rng.random((len(new), RANDOM_DRAWS))
        self._locate(lane_graph_for(world.town), new)

    def unregister(self, actor_ids: Iterable[int]) -> None:
        drop = {int(i) for i in actor_ids}
        if drop:
            self.fleet.keep(~np.isin(self.fleet.id, list(drop)))
            for actor_id in drop:
                self.plans.pop(actor_id, None)
                self.options.pop(actor_id, None)

    def unregister_port(self, port: int) -> None:
        self.unregister(self.fleet.id[self.fleet.port == port].tolist())

    def index(self, actor_id: int) -> int:
        """Fleet index of a registered vehicle; KeyError names the vehicle."""
        try:
            return self.fleet.index_of[int(actor_id)]
        except KeyError:
            raise KeyError(f"vehicle {actor_id} is not registered with the Traffic Manager") from None

    def set_vehicle(self, actor_id: int, name: str, value: float | bool | int) -> None:
        """One per-vehicle setting; vehicles not (yet) registered keep no setting, as in CARLA."""
        if int(actor_id) in self.fleet.index_of:
            getattr(self.fleet, name)[self.index(actor_id)] = value
            self.fleet.touch()

    def ignore_collisions(self, actor_id: int, other_id: int, detect: bool) -> None:
        pair = (int(actor_id), int(other_id))
        if detect:
            self.ignored_pairs.discard(pair)
        else:
            self.ignored_pairs.add(pair)

    def set_path(self, actor_id: int, locations: list[tuple[float, float, float]], clear: bool) -> None:
        """Follow the lanes through these points next, then drive on at random."""
        graph = lane_graph_for(self.world.town)
        if int(actor_id) not in self.fleet.index_of or not locations:
            return
        index = self.index(actor_id)
        xy = np.array([loc[:2] for loc in locations], float)
        heading = np.arctan2(*np.diff(np.vstack([self.world.table.location[self.fleet.row[index], :2], xy]),
                                      axis=0).T[::-1])
        targets, _, _ = graph.locate(xy, heading)
        chain, here = [], int(self.fleet.route[index, 0])
        for target in targets.tolist():
            chain += _connect(graph, here, target)
            here = chain[-1] if chain else here
        plan = self.plans.setdefault(int(actor_id), deque())
        if clear:
            plan.clear()
        plan.extend(chain)
        self.fleet.route[index, 1:] = -1
        self.fleet.touch()
        self._refill(graph)

    def set_route(self, actor_id: int, options: bytes, clear: bool) -> None:
        """Turn at the coming junctions as these road options say (1 left, 2 right, 3 straight)."""
        if int(actor_id) not in self.fleet.index_of:
            return
        queue = self.options.setdefault(int(actor_id), deque())
        if clear:
            queue.clear()
        queue.extend(int(option) for option in options)
        self.fleet.route[self.index(actor_id), 1:] = -1
        self.fleet.touch()
        self._refill(lane_graph_for(self.world.town))

    def forget_plan(self, actor_id: int) -> None:
        self.plans.pop(int(actor_id), None)
        self.options.pop(int(actor_id), None)

    # --- rows of the world ---------------------------------------------------------------

    def vehicle_rows(self) -> np.ndarray:
        """Rows of all live vehicles (cached until actors come or go)."""
        table = self.world.table
        if self._vehicle_rows[0] != table.version:
            size = table.size
            rows = np.flatnonzero(table.alive[:size] & (table.kind[:size] == ActorKind.VEHICLE))
            self._vehicle_rows = (table.version, rows)
        return self._vehicle_rows[1]

    def route_positions(self, rows: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Splits vehicle rows into autopilot cars and the rest. For the autopilot cars: their
        rows, and the segment and arc length each will be at after a tick of dt, from its route
        (tracked before the physics moved it dt further). Then the other rows, to be located."""
        table, fleet = self.world.table, self.fleet
        if not len(fleet):   # an agent's car alone, say: nothing to split
            return _NO_ROWS, _NO_ROWS, _NO_ARC, rows
        key = (table.version, fleet.version, len(rows))
        if self._row_split is None or self._row_split[0] != key:
            tracked = np.isin(rows, fleet.row)
            order = np.argsort(fleet.row)
            where = order[np.searchsorted(fleet.row[order], rows[tracked])] if tracked.any() else np.zeros(0, np.int64)
            self._row_split = (key, rows[tracked], where, rows[~tracked])
        _, tracked, where, others = self._row_split
        if not len(where):
            return tracked, where, _NO_ARC, others
        here = np.take(fleet.route[:, 0], where)
        length = np.take(lane_graph_for(self.world.town).length, here)
        ahead = np.take(fleet.s, where) + np.maximum(table.speed[tracked], 0.0) * dt
        following = np.take(fleet.route[:, 1], where)
        onward = (ahead > length) & (following >= 0)
        return tracked, np.where(onward, following, here), np.where(onward, ahead - length, ahead), others

    def _body_rows(self) -> np.ndarray:
        table = self.world.table
        if self._bodies[0] != table.version:
            size, kind = table.size, table.kind[:table.size]
            rows = np.flatnonzero(table.alive[:size] & ((kind == ActorKind.VEHICLE) | (kind == ActorKind.WALKER)))
            self._bodies = (table.version, rows)
        return self._bodies[1]

    def _hero_rows(self) -> np.ndarray:
        """Vehicles whose role_name marks them as the hero (recomputed only when actors change)."""
        table = self.world.table
        if self._heroes[0] != table.version:
            rows = [info.row for info in self.world.actors.values()
                    if info.kind == ActorKind.VEHICLE and info.attributes.get("role_name", (0, ""))[1] in HERO_ROLES]
            self._heroes = (table.version, np.array(rows, np.int64))
        return self._heroes[1]

    # --- the tick ----------------------------------------------------------------------

    def step(self, dt: float, physics_rows: np.ndarray) -> np.ndarray:
        """Writes every autopilot car's controls; returns the rows the physics should move
        (hybrid-mode cars far from the hero are moved here instead)."""
        self._forget_destroyed()
        fleet = self.fleet
        if len(fleet) == 0:
            return physics_rows
        world, table = self.world, self.world.table
        graph = lane_graph_for(world.town)
        rows = fleet.row
        xy = table.location[rows, :2]
        yaw = np.radians(table.rotation[rows, 1])
        speed = table.speed[rows]
        lateral, route_yaw = self._track(graph, xy, speed, dt)
        settings = self._settings()
        bodies = self._bodies_now()
        own, length, half_width, front = self._own_bodies(bodies)

        plan = route_geometry.frame(graph, fleet.route)
        entry_slot, has_entry, inside = _junction_entries(graph, fleet.route)
        entry_distance = np.where(has_entry, plan.ends[plan.rows[:, 0], entry_slot - 1] - fleet.s, np.inf)
        cruise_here = self._cruise(graph.speed_limit[fleet.route[:, 0]], settings)
        if self._change_lanes(graph, bodies, own, speed, xy, route_yaw, lateral, half_width, entry_distance,
                              inside, cruise_here):
            plan = route_geometry.frame(graph, fleet.route)
            entry_slot, has_entry, inside = _junction_entries(graph, fleet.route)
            entry_distance = np.where(has_entry, plan.ends[plan.rows[:, 0], entry_slot - 1] - fleet.s, np.inf)
            lateral, route_yaw = self._reproject(graph, plan, xy)

        distances = np.broadcast_to(PATH_DISTANCES_M, (len(fleet), len(PATH_DISTANCES_M)))
        path = route_geometry.sample(graph, plan, fleet.s, distances)
        self._previous = (fleet.version, path.xy[:, :TRACK_POINTS], path.yaw[:, :TRACK_POINTS],
                          path.curvature[:, :TRACK_POINTS])
        offset_path, _ = self._reference(settings, fleet.odometer[:, None] + distances)
        reach = speed * speed / (2.0 * COMFORT_DECEL_MPS2) + OBSTACLE_REACH_MARGIN_M
        # near a junction, also see past its exit: entering needs room there (don't block the box)
        exit_room = self._exit_room(graph, plan, entry_slot, has_entry, entry_distance, length, front, settings)
        near_entry = entry_distance < reach + JUNCTION_REQUEST_MARGIN_M + front
        reach = np.minimum(np.where(near_entry, np.maximum(reach, exit_room + OBSTACLE_LOOK_PAST_M), reach),
                           OBSTACLE_REACH_MAX_M)
        corridor = obstacles.Corridor(own, path.xy, path.yaw, distances, offset_path - half_width[:, None],
                                      offset_path + half_width[:, None], front, reach)
        ignore = fleet.draws[:, :DRAW_WALKERS + 1] * 100.0 < settings["ignore"]
        ahead = obstacles.nearest(corridor, bodies, ignore[:, DRAW_VEHICLES], ignore[:, DRAW_WALKERS],
                                  self._ignored_keys(bodies))
        fleet.lead_gap, fleet.lead_speed = ahead.gap, ahead.speed

        stop_distance = self._junction_control(graph, entry_slot, has_entry, inside, entry_distance, front,
                                               exit_room, speed, ahead, ignore, bodies)
        last_slot = plan.last[:, 0]
        dead_end = graph.succ_count[fleet.route[plan.rows[:, 0], last_slot]] == 0
        if dead_end.any():
            route_end = plan.ends[plan.rows[:, 0], last_slot] - fleet.s - front - STOP_LINE_MARGIN_M
            stop_distance = np.where(dead_end, np.minimum(stop_distance, route_end), stop_distance)
        target, accel = self._longitudinal(graph, path, settings, speed, stop_distance, ahead)

        kinematic = self._kinematic_mask(settings)
        self._write_controls(settings, target, accel, speed, yaw, lateral, path.yaw, dt, ~kinematic)
        if kinematic.any():
            self._move_kinematically(graph, kinematic, target, speed, dt)
            return np.setdiff1d(physics_rows, rows[kinematic], assume_unique=True)
        return physics_rows

    def _own_bodies(self, bodies: obstacles.Bodies) -> tuple[np.ndarray, ...]:
        """Each car's index among the bodies, its length, half width and origin-to-front distance
        (cached until cars or actors change)."""
        table = self.world.table
        key = (self.fleet.version, table.version)
        if self._own is None or self._own[0] != key:
            rows = self.fleet.row
            self._own = (key, (np.searchsorted(bodies.rows, rows), 2.0 * table.extent[rows, 0],
                               table.extent[rows, 1].copy(), table.extent[rows, 0] + table.box_center[rows, 0]))
        return self._own[1]

    # --- tracking -----------------------------------------------------------------------

    def _forget_destroyed(self) -> None:
        fleet, table = self.fleet, self.world.table
        if len(fleet) == 0:
            return
        alive = table.alive[fleet.row] & (table.ids[fleet.row] == fleet.id) \
            & (table.kind[fleet.row] == ActorKind.VEHICLE)
        if not alive.all():
            for actor_id in fleet.id[~alive].tolist():
                self.plans.pop(actor_id, None)
                self.options.pop(actor_id, None)
            fleet.keep(alive)

    def _locate(self, graph: LaneGraph, indexes: np.ndarray) -> None:
        """Puts cars on the lane they stand on (heading-aware) with a fresh route."""
        fleet, table = self.fleet, self.world.table
        rows = fleet.row[indexes]
        segment, s, _ = graph.locate_rows(table.location, table.rotation, rows)
        fleet.route[indexes] = -1
        fleet.route[indexes, 0] = segment
        fleet.s[indexes] = s
        fleet.previous[indexes] = -1
        fleet.reserved[indexes] = -1
        fleet.shift_length[indexes] = 0.0
        fleet.touch()
        self._refill(graph)

    def _track(self, graph: LaneGraph, xy: np.ndarray, speed: np.ndarray,
               dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Advances each car's arc length to where it now is; returns its lateral offset from
        the route (right positive) and the route's heading there.

        The car is looked for on the first metres of the route points sampled last tick (it
        has moved at most a few metres since); after registrations, re-locations and lane
        changes, on a window of fresh samples around where it should be.
        """
        fleet = self.fleet
        if self._previous is not None and self._previous[0] == fleet.version:
            _, points_xy, points_yaw, points_curvature = self._previous
            distances = np.broadcast_to(PATH_DISTANCES_M[:TRACK_POINTS], points_yaw.shape)
        else:
            distances = np.maximum(speed, 0.0)[:, None] * dt + TRACK_WINDOW_M[None, :]
            points = route_geometry.sample(graph, route_geometry.frame(graph, fleet.route), fleet.s, distances)
            points_xy, points_yaw, points_curvature = points.xy, points.yaw, points.curvature
        along, lateral, route_yaw, distance = route_geometry.project(points_xy, points_yaw, points_curvature,
                                                                     distances, xy)
        fleet.s += along
        fleet.odometer += np.maximum(along, 0.0)
        shift, _ = self._shift(fleet.odometer)
        lost = distance > LOST_DISTANCE_M + np.abs(shift)
        if lost.any():
            self._locate(graph, np.flatnonzero(lost))
            lateral, route_yaw = self._reproject(graph, route_geometry.frame(graph, fleet.route), xy)
        self._advance(graph)
        return lateral, route_yaw

    def _reproject(self, graph: LaneGraph, plan: route_geometry.RouteFrame,
                   xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lateral offset and route heading at the cars' current arc lengths (no advance)."""
        window = np.broadcast_to(TRACK_WINDOW_M, (len(self.fleet), len(TRACK_WINDOW_M)))
        points = route_geometry.sample(graph, plan, self.fleet.s, window)
        _, lateral, route_yaw, _ = route_geometry.project(points.xy, points.yaw, points.curvature, window, xy)
        return lateral, route_yaw

    def _advance(self, graph: LaneGraph) -> None:
        """Moves cars past the end of their current segment onto the next planned one."""
        fleet = self.fleet
        moved = np.zeros(len(fleet), bool)
        for _ in range(ROUTE_SLOTS - 1):
            length = graph.length[fleet.route[:, 0]]
            advance = (fleet.s >= length) & (fleet.route[:, 1] >= 0)
            if not advance.any():
                break
            moved |= advance
            fleet.s[advance] -= length[advance]
            fleet.previous[advance] = fleet.route[advance, 0]
            fleet.route[advance, :-1] = fleet.route[advance, 1:]
            fleet.route[advance, -1] = -1
            fleet.draws[advance] = self.rng.random((int(advance.sum()), RANDOM_DRAWS))
        if moved.any():
            entered = fleet.route[:, 0] == fleet.reserved
            fleet.reserved[entered] = -1
            fleet.stop_done[moved & (graph.junction[fleet.route[:, 0]] >= 0)] = False
            self._refill(graph)
        fleet.s = np.minimum(fleet.s, graph.length[fleet.route[:, 0]])

    def _refill(self, graph: LaneGraph) -> None:
        """Plans empty route slots: custom paths and road options first, else a random successor."""
        fleet = self.fleet
        if self.plans or self.options:
            self._refill_planned(graph)
        for slot in range(1, ROUTE_SLOTS):
            need = (fleet.route[:, slot] < 0) & (fleet.route[:, slot - 1] >= 0)
            if not need.any():
                continue
            previous = fleet.route[need, slot - 1]
            count = graph.succ_count[previous]
            pick = graph.succ_start[previous] + (self.rng.random(len(previous)) * count).astype(np.int64)
            fleet.route[need, slot] = np.where(count > 0, graph.succ[np.minimum(pick, len(graph.succ) - 1)], -1)

    def _refill_planned(self, graph: LaneGraph) -> None:
        """The few cars with a custom path or route: one Python step per planned slot."""
        fleet = self.fleet
        for actor_id in list(self.plans) + list(self.options):
            index = fleet.index_of.get(actor_id)
            if index is None:
                continue
            route = fleet.route[index]
            for slot in range(1, ROUTE_SLOTS):
                if route[slot] >= 0 or route[slot - 1] < 0:
                    continue
                successors = graph.successors(int(route[slot - 1]))
                chosen = self._planned_successor(graph, actor_id, successors)
                if chosen is None and len(successors) == 1:
                    chosen = int(successors[0])   # no choice to make: the plan waits for the next one
                if chosen is None:
                    break
                route[slot] = chosen

    def _planned_successor(self, graph: LaneGraph, actor_id: int, successors: np.ndarray) -> int | None:
        plan = self.plans.get(actor_id)
        if plan:
            while plan and plan[0] not in successors:
                plan.popleft()
            if plan:
                return int(plan.popleft())
        options = self.options.get(actor_id)
        if options and len(successors) > 1:
            while options and options[0] not in TURN_OPTIONS:
                options.popleft()
            if options:
                turn = options.popleft()
                matching = successors[graph.turn[successors] == turn]
                if len(matching):
                    return int(matching[0])
        return None

    # --- settings ---------------------------------------------------------------------

    def _settings(self) -> dict[str, np.ndarray]:
        """Effective per-vehicle settings: a vehicle's own value, else its port's (cached until a
        setting or the fleet changes)."""
        fleet = self.fleet
        key = (fleet.version, tuple((port, tuple(vars(settings).values())) for port, settings in self.ports.items()))
        if self._settings_cache is not None and self._settings_cache[0] == key:
            return self._settings_cache[1]
        ports = sorted(set(fleet.port.tolist()))
        settings = [self.port(p) for p in ports]
        which = np.searchsorted(ports, fleet.port)

        def per_port(name: str) -> np.ndarray:
            return np.array([getattr(s, name) for s in settings], float)[which]

        def own_or_port(own: np.ndarray, name: str) -> np.ndarray:
            return np.where(np.isnan(own), per_port(name), own)

        result = {
            "speed_difference": own_or_port(fleet.speed_difference_pct, "speed_difference_pct"),
            "distance": own_or_port(fleet.distance_to_leader, "distance_to_leader_m"),
            "lane_offset": own_or_port(fleet.lane_offset, "lane_offset_m"),
            "hybrid": per_port("hybrid_physics") > 0.5,
            "hybrid_radius": per_port("hybrid_radius_m"),
            "desired_speed": fleet.desired_speed.copy(),
            # percentages of ignoring lights, signs, vehicles, walkers (columns DRAW_LIGHTS ... DRAW_WALKERS)
            "ignore": np.stack([fleet.ignore_lights_pct, fleet.ignore_signs_pct, fleet.ignore_vehicles_pct,
                                fleet.ignore_walkers_pct], axis=1),
        }
        self._settings_cache = (key, result)
        return result

    @staticmethod
    def _cruise(limit: np.ndarray, settings: dict[str, np.ndarray]) -> np.ndarray:
        """Cruise speed from speed limits (broadcast over the limit's shape): CARLA's percentage
        difference (30 -> 30 % slower), or the desired speed when one is set."""
        desired = settings["desired_speed"].reshape((-1,) + (1,) * (limit.ndim - 1))
        difference = settings["speed_difference"].reshape(desired.shape)
        return np.where(np.isnan(desired), limit * (1.0 - difference / 100.0), desired)

    def _ignored_keys(self, bodies: obstacles.Bodies) -> np.ndarray:
        if not self.ignored_pairs:
            return np.zeros(0, np.int64)
        table = self.world.table
        ids = table.ids[bodies.rows].astype(np.int64)
        order = np.argsort(ids)
        pairs = np.array(sorted(self.ignored_pairs), np.int64)
        first = np.searchsorted(ids[order], pairs[:, 0])
        second = np.searchsorted(ids[order], pairs[:, 1])
        valid = (first < len(ids)) & (second < len(ids))
        valid[valid] &= (ids[order][first[valid]] == pairs[valid, 0]) & (ids[order][second[valid]] == pairs[valid, 1])
        return np.sort(order[first[valid]] * len(ids) + order[second[valid]])

    # --- the world around ---------------------------------------------------------------

    def _bodies_now(self) -> obstacles.Bodies:
        table = self.world.table
        rows = self._body_rows()
        yaw = np.radians(table.rotation[rows, 1])
        centre = table.box_center[rows]
        xy = table.location[rows, :2] + np.stack([centre[:, 0] * np.cos(yaw) - centre[:, 1] * np.sin(yaw),
                                                  centre[:, 0] * np.sin(yaw) + centre[:, 1] * np.cos(yaw)], axis=1)
        return obstacles.Bodies(rows, xy, yaw, table.extent[rows, :2], table.velocity[rows, :2],
                                table.kind[rows] == ActorKind.WALKER)

    def _shift(self, odometer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lane-change offset (m, right positive) and its slope at odometer readings (one per
        car, or (cars, distances)): a half-cosine from the full offset to zero. Computed for the
        few cars changing lanes only."""
        fleet = self.fleet
        offset, slope = np.zeros(np.shape(odometer)), np.zeros(np.shape(odometer))
        active = np.flatnonzero(fleet.shift_length > 0.0)
        if len(active) == 0:
            return offset, slope
        shape = (-1,) + (1,) * (np.ndim(odometer) - 1)
        span = fleet.shift_length[active].reshape(shape)
        u = np.clip((odometer[active] - fleet.shift_start[active].reshape(shape)) / span, 0.0, 1.0)
        amplitude = fleet.shift[active].reshape(shape)
        offset[active] = amplitude * 0.5 * (1.0 + np.cos(np.pi * u))
        slope[active] = -amplitude * np.pi / (2.0 * span) * np.sin(np.pi * u) * (u < 1.0)
        return offset, slope

    def _reference(self, settings: dict[str, np.ndarray], odometer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lateral reference (lane offset plus lane-change shift) and its slope."""
        offset, slope = self._shift(odometer)
        shape = (-1,) + (1,) * (np.ndim(odometer) - 1)
        return offset + settings["lane_offset"].reshape(shape), slope

    # --- lane changes ---------------------------------------------------------------------

    def _change_lanes(self, graph: LaneGraph, bodies: obstacles.Bodies, own: np.ndarray,
                      speed: np.ndarray, xy: np.ndarray, route_yaw: np.ndarray,
                      lateral: np.ndarray, half_width: np.ndarray, entry_distance: np.ndarray,
                      inside: np.ndarray, cruise: np.ndarray) -> bool:
        """Starts the lane changes that are asked for and safe; returns whether any started."""
        fleet, now = self.fleet, self.world.elapsed_seconds
        fleet.shift_length[fleet.odometer - fleet.shift_start >= fleet.shift_length] = 0.0
        segment = fleet.route[:, 0]
        forced = fleet.force_lane_change != 0
        slow_leader = (fleet.auto_lane_change & (fleet.lead_gap < OVERTAKE_DISTANCE_M + speed)
                       & (fleet.lead_speed < OVERTAKE_SPEED_RATIO * cruise) & (cruise > OVERTAKE_MIN_CRUISE_MPS))
        to_right = fleet.draws[:, DRAW_RIGHT] * 100.0 < fleet.random_right_pct
        to_left = fleet.draws[:, DRAW_LEFT] * 100.0 < fleet.random_left_pct
        has_neighbour = (graph.left[segment] >= 0) | (graph.right[segment] >= 0)
        wants = ((slow_leader | to_right | to_left | forced) & has_neighbour
                 & ~inside & (fleet.shift_length == 0.0) & (speed > STANDSTILL_MPS)
                 & ((now >= fleet.lane_change_after) | forced))
        if not wants.any():
            return False
        direction = np.zeros(len(fleet), np.int64)
        direction[slow_leader] = 1
        direction[to_right] = -1
        direction[to_left] = 1
        direction[forced] = fleet.force_lane_change[forced]
        sample, _ = graph.sample_index(segment, fleet.s)
        marks = graph.lane_change[sample]
        allowed = np.where(direction > 0, marks & 2, marks & 1) > 0
        # passing on the left is refused: try the right lane instead
        retry = slow_leader & ~forced & ~allowed & ((marks & 1) > 0) & (graph.right[segment] >= 0)
        direction[retry] = -1
        allowed |= retry
        target = np.where(direction > 0, graph.left[segment], graph.right[segment])
        change_length = np.maximum(LANE_CHANGE_MIN_M, speed * LANE_CHANGE_TIME_S)
        candidate = (wants & (target >= 0) & (allowed | forced)
                     & (entry_distance > change_length + LANE_CHANGE_JUNCTION_CLEARANCE_M)
                     & (graph.length[np.maximum(target, 0)] - fleet.s > change_length))
        if not candidate.any():
            return False
        chosen = np.flatnonzero(candidate)
        width = graph.width[sample[chosen]]
        free = self._lane_free(bodies, own[chosen], xy[chosen], route_yaw[chosen],
                               -(lateral[chosen] + direction[chosen] * width), half_width[chosen], speed[chosen])
        chosen, width = chosen[free], width[free]
        if len(chosen) == 0:
            return False
        old, new = segment[chosen], target[chosen]
        fleet.s[chosen] = fleet.s[chosen] * graph.length[new] / graph.length[old]
        fleet.route[chosen] = -1
        fleet.route[chosen, 0] = new
        fleet.reserved[chosen] = -1
        fleet.shift[chosen] = direction[chosen] * width + lateral[chosen]
        fleet.shift_start[chosen] = fleet.odometer[chosen]
        fleet.shift_length[chosen] = change_length[chosen]
        fleet.lane_change_after[chosen] = now + LANE_CHANGE_COOLDOWN_S
        fleet.force_lane_change[chosen] = 0
        fleet.draws[chosen, DRAW_LEFT] = fleet.draws[chosen, DRAW_RIGHT] = 1.0
        fleet.touch()
        self._refill(graph)
        return True

    @staticmethod
    def _lane_free(bodies: obstacles.Bodies, own: np.ndarray, xy: np.ndarray, yaw: np.ndarray,
                   target_offset: np.ndarray, half_width: np.ndarray, speed: np.ndarray) -> np.ndarray:
        """Whether the target lane has room around each car. target_offset: the target lane's
        centre relative to the car, to its right (positive) or left (negative)."""
        car, other = obstacles.pairs_within(xy, bodies.xy, np.full(len(xy), LANE_CHANGE_SEARCH_M))
        keep = other != own[car]
        car, other = car[keep], other[keep]
        relative = bodies.xy[other] - xy[car]
        forward = relative[:, 0] * np.cos(yaw[car]) + relative[:, 1] * np.sin(yaw[car])
        right = -relative[:, 0] * np.sin(yaw[car]) + relative[:, 1] * np.cos(yaw[car])
        turn = bodies.yaw[other] - yaw[car]
        other_half_width = bodies.half[other, 0] * np.abs(np.sin(turn)) + bodies.half[other, 1] * np.abs(np.cos(turn))
        other_speed = np.einsum("nk,nk->n", bodies.velocity[other],
                                np.stack([np.cos(yaw[car]), np.sin(yaw[car])], axis=1))
        in_lane = np.abs(right - target_offset[car]) < other_half_width + half_width[car] + LANE_CHANGE_LATERAL_MARGIN_M
        in_reach = ((forward < LANE_CHANGE_GAP_M + LANE_CHANGE_GAP_TIME_S * speed[car])
                    & (forward > -(LANE_CHANGE_GAP_M + LANE_CHANGE_GAP_TIME_S * np.maximum(other_speed, 0.0))))
        blocked = np.zeros(len(xy), bool)
        blocked[car[in_lane & in_reach]] = True
        return ~blocked

    # --- junctions, lights, signs -------------------------------------------------------------

    @staticmethod
    def _exit_room(graph: LaneGraph, plan: route_geometry.RouteFrame, entry_slot: np.ndarray, has_entry: np.ndarray,
                   entry_distance: np.ndarray, length: np.ndarray, front: np.ndarray,
                   settings: dict[str, np.ndarray]) -> np.ndarray:
        """Clear road a car needs ahead of its front to enter the coming junction: through the
        junction path and its own length plus the distance setting beyond it."""
        path = plan.route[plan.rows[:, 0], entry_slot]
        return np.where(has_entry, entry_distance + graph.length[np.maximum(path, 0)] + length
                        + settings["distance"] - front, np.inf)

    def _junction_control(self, graph: LaneGraph, entry_slot: np.ndarray, has_entry: np.ndarray, inside: np.ndarray,
                          entry_distance: np.ndarray, front: np.ndarray, exit_room: np.ndarray, speed: np.ndarray,
                          ahead: obstacles.Obstacles, ignore: np.ndarray, bodies: obstacles.Bodies) -> np.ndarray:
        """Stop-line distance for each car (inf when it may go on): waits for lights, stop
        signs and junction reservations; grants reservations."""
        fleet = self.fleet
        lights = self.world.traffic_lights
        path_light, path_stop, _ = lights.governed_paths(graph)
        rows_n = np.arange(len(fleet))
        path = np.where(has_entry, fleet.route[rows_n, entry_slot], 0)
        line = entry_distance - front - STOP_LINE_MARGIN_M
        light = np.where(has_entry, path_light[path], -1)
        state = np.where(light >= 0, lights.state[np.maximum(light, 0)], encoding.TRAFFIC_LIGHT_GREEN)
        can_stop_comfortably = line >= speed * speed / (2.0 * COMFORT_DECEL_MPS2)
        can_stop = line >= speed * speed / (2.0 * MAX_DECEL_MPS2) - STOP_LINE_MARGIN_M
        obeys_light = ~ignore[:, DRAW_LIGHTS]
        light_stop = obeys_light & (((state == encoding.TRAFFIC_LIGHT_RED) & can_stop)
                                    | ((state == encoding.TRAFFIC_LIGHT_YELLOW) & can_stop_comfortably))
        sign = has_entry & (path_stop[path] >= 0) & ~ignore[:, DRAW_SIGNS]
        fleet.stop_done |= sign & (speed < STANDSTILL_MPS) & (line < STOP_SIGN_NEAR_M)
        sign_stop = sign & ~fleet.stop_done
        held = has_entry & (fleet.reserved == path)
        release = held & (light_stop | sign_stop)
        fleet.reserved[release] = -1
        held &= ~release

        request_distance = speed * speed / (2.0 * COMFORT_DECEL_MPS2) + JUNCTION_REQUEST_MARGIN_M
        requesting = has_entry & ~inside & ~held & ~light_stop & ~sign_stop & (line < request_distance)
        fleet.waiting_since[~requesting] = np.inf
        fleet.waiting_since[requesting] = np.minimum(fleet.waiting_since[requesting], self.world.elapsed_seconds)
        if requesting.any():
            # Don't block the box: enter only if the car fits behind the obstacle ahead past the
            # junction, even should that obstacle brake to a stop from now on.
            leader_stops_at = ahead.gap + np.maximum(ahead.speed, 0.0) ** 2 / (2.0 * COMFORT_DECEL_MPS2)
            exit_free = leader_stops_at >= exit_room
            candidates = np.flatnonzero(requesting & exit_free)
            granted = self._grant(graph, candidates, path[candidates], line[candidates], bodies)
            fleet.reserved[candidates[granted]] = path[candidates[granted]]
            held[candidates[granted]] = True
        return np.where(has_entry & ~inside & ~held, line, np.inf)

    def _grant(self, graph: LaneGraph, candidates: np.ndarray, paths: np.ndarray, line: np.ndarray,
               bodies: obstacles.Bodies) -> np.ndarray:
        """Reservations: a path is granted when no held or occupied path conflicts with it and
        no conflicting request is older (first come, first served; then nearer the line, then
        lower actor id), so no approach starves."""
        if len(candidates) == 0:
            return np.zeros(0, bool)
        occupied = self._occupied_paths(graph, bodies)
        requested = graph.junction_index[paths]
        blocked = np.zeros(len(candidates), bool)
        if len(occupied):
            blocked |= graph.conflict[np.ix_(requested, graph.junction_index[occupied])].any(axis=1)
        order = np.lexsort((self.fleet.id[candidates], line, self.fleet.waiting_since[candidates]))
        rank = np.empty(len(candidates), np.int64)
        rank[order] = np.arange(len(candidates))
        mutual = graph.conflict[np.ix_(requested, requested)] & (rank[None, :] < rank[:, None])
        return ~(blocked | mutual.any(axis=1))

    def _occupied_paths(self, graph: LaneGraph, bodies: obstacles.Bodies) -> np.ndarray:
        """Junction paths held or physically taken: reservations, autopilot cars inside (and
        the path their rear is still leaving), and other vehicles located on a junction path."""
        fleet, table = self.fleet, self.world.table
        inside_run = np.cumprod(graph.junction[np.maximum(fleet.route, 0)] >= 0, axis=1).astype(bool) \
            & (fleet.route >= 0)
        taken = [fleet.reserved[fleet.reserved >= 0], fleet.route[inside_run]]
        rear_in = (fleet.previous >= 0) & (fleet.s < 2.0 * table.extent[fleet.row, 0])
        rear_in &= graph.junction[np.maximum(fleet.previous, 0)] >= 0
        taken.append(fleet.previous[rear_in])
        vehicles = bodies.rows[~bodies.walker]
        others = vehicles[~np.isin(vehicles, fleet.row)]
        if len(others):
            segment, _, _ = graph.locate_rows(table.location, table.rotation, others)
            taken.append(segment[graph.junction[segment] >= 0])
        return np.unique(np.concatenate(taken))

    # --- speed and controls ---------------------------------------------------------------------

    def _longitudinal(self, graph: LaneGraph, path: route_geometry.RouteSamples, settings: dict[str, np.ndarray],
                      speed: np.ndarray, stop_distance: np.ndarray,
                      ahead: obstacles.Obstacles) -> tuple[np.ndarray, np.ndarray]:
        """Target speed and acceleration. The target is the highest speed from which every limit,
        curve, stop line and leader ahead can still be met at the comfortable deceleration; once a
        stop line or a leader binds, the car brakes at the constant deceleration that meets it
        exactly (a speed loop alone would lag behind the braking profile and overshoot)."""
        point_speed = np.minimum(self._cruise(graph.speed_limit[path.segment], settings),
                                 np.sqrt(LATERAL_ACCEL_MPS2 / np.maximum(np.abs(path.curvature), 1e-6)))
        reachable = np.sqrt(point_speed ** 2 + 2.0 * COMFORT_DECEL_MPS2 * PATH_DISTANCES_M[None, :]).min(axis=1)
        stop = np.sqrt(2.0 * COMFORT_DECEL_MPS2 * np.clip(stop_distance, 0.0, 1e6))
        b_t = COMFORT_DECEL_MPS2 * HEADWAY_S
        leader_speed = np.maximum(ahead.speed, 0.0)
        room = ahead.gap - settings["distance"]
        follow = -b_t + np.sqrt(b_t * b_t + leader_speed ** 2 + 2.0 * COMFORT_DECEL_MPS2 * np.maximum(room, 0.0))
        target = np.minimum.reduce([reachable, stop, follow])
        accel = (target - speed) / SPEED_RESPONSE_S
        brake_for_line = speed * speed / (-2.0 * np.maximum(stop_distance, MIN_BRAKING_ROOM_M))
        accel = np.where(speed >= stop, np.minimum(accel, brake_for_line), accel)
        follow_room = np.maximum(room - HEADWAY_S * leader_speed, MIN_BRAKING_ROOM_M)
        brake_for_leader = (leader_speed ** 2 - speed * speed) / (2.0 * follow_room)
        accel = np.where(speed >= follow, np.minimum(accel, brake_for_leader), accel)
        return target, np.clip(accel, -MAX_DECEL_MPS2, COMFORT_ACCEL_MPS2)

    def _write_controls(self, settings: dict[str, np.ndarray], target: np.ndarray, accel: np.ndarray,
                        speed: np.ndarray, yaw: np.ndarray, lateral: np.ndarray, path_yaw: np.ndarray, dt: float,
                        mask: np.ndarray) -> None:
        """Throttle and brake from the inverse force model, steer from the inverse bicycle."""
        fleet, table = self.fleet, self.world.table
        rows = fleet.row
        drag, rolling = table.drag_per_mass[rows], table.rolling_accel[rows]
        peak, top = table.max_accel[rows], table.top_speed[rows]
        forward = np.maximum(speed, 0.0)
        pull = np.maximum(peak * (1.0 - forward / top) + (drag * top * top + rolling) * forward / top, 1e-3)
        gravity = -vehicle_physics.GRAVITY_MPS2 * np.sin(np.radians(table.rotation[rows, 0]))
        need = accel + drag * speed * speed + rolling - gravity
        throttle = np.clip(need / pull, 0.0, 1.0)
        brake = np.clip(-need / table.brake_decel[rows], 0.0, 1.0)
        hold = (target < HOLD_TARGET_MPS) & (speed < STANDSTILL_MPS)
        throttle[hold], brake[hold] = 0.0, 1.0

        # Steer so that the origin's course over this step (the physics moves it along
        # yaw + half the step's yaw change + the body's slip) points where the route goes there,
        # turned toward the route by the lateral error over STEER_DISTANCE: the error then decays
        # in distance without overshoot, and the course follows curvature changes exactly.
        travel = np.maximum(speed + 0.5 * accel * dt, 0.0) * dt
        reference, slope = self._reference(settings, fleet.odometer)
        # route heading half-way through the step, between the path's first two points (yaw is continuous)
        first_step = PATH_DISTANCES_M[1] - PATH_DISTANCES_M[0]
        turning = route_geometry.wrap_angle(path_yaw[:, 1] - path_yaw[:, 0])
        halfway = path_yaw[:, 0] + turning * (0.5 * travel / first_step)
        distance = np.maximum(STEER_DISTANCE_MIN_M, forward * STEER_DISTANCE_TIME_S)
        course = halfway + np.arctan(slope) - np.arctan((lateral - reference) / distance)
        turn = route_geometry.wrap_angle(course - yaw)
        wheelbase = table.wheelbase[rows]
        half = vehicle_physics.ORIGIN_FROM_REAR_AXLE * wheelbase
        curvature = turn / (0.5 * travel + half)
        for _ in range(STEER_NEWTON_STEPS):
            lever = 1.0 + (half * curvature) ** 2
            error = 0.5 * travel * curvature / np.sqrt(lever) + np.arctan(half * curvature) - turn
            curvature -= error / (0.5 * travel * lever ** -1.5 + half / lever)
        steer = np.clip(np.arctan(curvature * wheelbase) / table.full_steer_rad[rows], -1.0, 1.0)

        rows = rows[mask]
        table.throttle[rows], table.brake[rows], table.steer[rows] = throttle[mask], brake[mask], steer[mask]
        table.hand_brake[rows] = table.reverse[rows] = table.manual_gear_shift[rows] = False
        table.gear[rows] = 1

    # --- hybrid physics -------------------------------------------------------------------------

    def _kinematic_mask(self, settings: dict[str, np.ndarray]) -> np.ndarray:
        """Hybrid mode: cars farther than the radius from every hero skip the physics."""
        hybrid = settings["hybrid"]
        heroes = self._hero_rows()
        if not hybrid.any() or len(heroes) == 0:
            return np.zeros(len(self.fleet), bool)
        table = self.world.table
        xy = table.location[self.fleet.row, :2]
        nearest, _ = cKDTree(table.location[heroes, :2]).query(xy)
        return hybrid & (nearest > settings["hybrid_radius"]) & ~np.isin(self.fleet.row, heroes)

    def _move_kinematically(self, graph: LaneGraph, mask: np.ndarray, target: np.ndarray, speed: np.ndarray,
                            dt: float) -> None:
        """Teleports dormant cars along their route at the speed the planner allows."""
        fleet, table = self.fleet, self.world.table
        index = np.flatnonzero(mask)
        rows = fleet.row[index]
        lower, upper = speed[index] - MAX_DECEL_MPS2 * dt, speed[index] + COMFORT_ACCEL_MPS2 * dt
        new_speed = np.maximum(np.clip(target[index], lower, upper), 0.0)
        plan = route_geometry.frame(graph, fleet.route[index])
        point = route_geometry.sample(graph, plan, fleet.s[index], (new_speed * dt)[:, None])
        heading, zeros = point.yaw[:, 0], np.zeros(len(rows))
        table.location[rows] = np.stack([point.xy[:, 0, 0], point.xy[:, 0, 1], point.z[:, 0]], axis=1)
        table.rotation[rows] = np.stack([zeros, np.degrees(route_geometry.wrap_angle(heading)), zeros], axis=1)
        table.velocity[rows] = np.stack([np.cos(heading) * new_speed, np.sin(heading) * new_speed, zeros], axis=1)
        table.angular_velocity[rows] = 0.0
        table.acceleration[rows] = 0.0
        table.speed[rows] = new_speed


def _junction_entries(graph: LaneGraph, route: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per car: the route slot where the next junction starts, whether there is one in the
    planned route, and whether the car is inside a junction now."""
    junction = (graph.junction[np.maximum(route, 0)] >= 0) & (route >= 0)
    entry = junction[:, 1:] & ~junction[:, :-1]
    has_entry = entry.any(axis=1)
    slot = np.where(has_entry, np.argmax(entry, axis=1) + 1, 1)
    return slot, has_entry, junction[:, 0]


def _connect(graph: LaneGraph, start: int, goal: int) -> list[int]:
    """Segments after `start` leading to `goal` (breadth-first, bounded); empty if none."""
    if start == goal:
        return []
    parents = {start: -1}
    frontier = [start]
    for _ in range(PATH_SEARCH_DEPTH):
        following = []
        for segment in frontier:
            for successor in graph.successors(segment).tolist():
                if successor not in parents:
                    parents[successor] = segment
                    following.append(successor)
        if goal in parents:
            chain = [goal]
            while parents[chain[-1]] != start:
                chain.append(parents[chain[-1]])
            return chain[::-1]
        frontier = following
    return []
