"""Traffic lights and stop signs of one episode: map actors at their OpenDRIVE signals,
light states cycling per junction group, and what each vehicle's snapshot says about the
road it is on (speed limit, the light it faces).

Why here and not in the client: CARLA's client reads a light's state, timings and sign id,
and a vehicle's light and speed limit, from the episode snapshot only; the server decides
them. Lights of one junction take turns as CARLA's light groups do: one phase (one
controller's lights) green, then yellow, then all red for the red time, then the next
phase. The per-tick work (cycle, each vehicle's light) is compiled loops over all groups,
lights and vehicles; the snapshot writer (snapshot.py) copies the results into the records.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numba
import numpy as np

from ..maps.lane_graph import LaneGraph, lane_graph_for
from ..maps.signals import STOP_SIGN_BLUEPRINT, TRAFFIC_LIGHT_BLUEPRINT, SignalSpec
from ..protocol import encoding
from .blueprints import find_blueprint
from .errors import WorldError

if TYPE_CHECKING:
    from .world import World

GREEN_TIME_S = 10.0        # CARLA's default controller timings
YELLOW_TIME_S = 3.0
RED_TIME_S = 2.0           # all-red clearance after a phase
LONE_LIGHT_RED_TIME_S = 10.0   # a light without a controller is its own group; CARLA gives it a long red
STAGE_COLORS = np.array([encoding.TRAFFIC_LIGHT_GREEN, encoding.TRAFFIC_LIGHT_YELLOW, encoding.TRAFFIC_LIGHT_RED],
                        np.uint8)
STAGES = len(STAGE_COLORS)
RED = encoding.TRAFFIC_LIGHT_RED
# A vehicle is "at" a light while its centre is within this distance before the stop line: CARLA's
# trigger box spans 1.5-4.5 m before the line, plus half a car length.
TRIGGER_REACH_M = 7.0
MS_TO_KMH = 3.6
LIGHT_HEAD_OFFSET_M = (0.0, 0.0, 4.4)     # light head centre above the actor origin, for get_light_boxes
LIGHT_HEAD_EXTENT_M = (0.25, 0.25, 0.6)


class TrafficLightError(WorldError):
    """A request about a traffic light this episode refuses (unknown light, bad state or time)."""


class TrafficLights:
    """Map-placed signal actors and the state of every light and light group."""

    def __init__(self, world: "World", specs: list[SignalSpec]) -> None:
        self.world = world
        lights = [spec for spec in specs if spec.blueprint == TRAFFIC_LIGHT_BLUEPRINT]
        stops = [spec for spec in specs if spec.blueprint == STOP_SIGN_BLUEPRINT]
        self.light_specs, self.stop_specs = lights, stops
        self.light_rows, self.light_ids = self._spawn(lights)
        self.stop_rows, self.stop_ids = self._spawn(stops)
        self.sign_rows = np.concatenate([self.light_rows, self.stop_rows])   # lights first, then stops
        self.sign_ids = np.array([spec.sign_id.encode()[:encoding.SIGN_ID_BYTES] for spec in lights + stops],
                                 f"S{encoding.SIGN_ID_BYTES}")
        self.index_of_id = {int(actor_id): i for i, actor_id in enumerate(self.light_ids)}
        self.frozen = False

        group_keys = sorted({spec.group for spec in lights})
        self.group = np.array([group_keys.index(spec.group) for spec in lights], np.int64)
        phase_rank = np.zeros(len(lights), np.int64)
        self.pole_index = np.zeros(len(lights), np.uint32)
        for g in range(len(group_keys)):
            members = np.flatnonzero(self.group == g)
            phases = sorted({lights[i].phase for i in members})
            phase_rank[members] = [phases.index(lights[i].phase) for i in members]
            self.pole_index[members] = np.arange(len(members))
        self.phase_rank = phase_rank
        self.phase_count = np.array([phase_rank[self.group == g].max() + 1 for g in range(len(group_keys))], np.int64)
        self.times = np.tile([GREEN_TIME_S, YELLOW_TIME_S, RED_TIME_S], (len(lights), 1))
        lone = self.phase_count[self.group] == 1
        self.times[lone, 2] = LONE_LIGHT_RED_TIME_S
        # head[g, p]: a light of group g's phase p, whose timings stand for its controller's
        self.head = np.zeros((len(group_keys), int(self.phase_count.max(initial=1))), np.int64)
        self.head[self.group[::-1], phase_rank[::-1]] = np.arange(len(lights))[::-1]
        self.current = np.zeros(len(group_keys), np.int64)
        self.stage = np.zeros(len(group_keys), np.int64)
        self.timer = np.zeros(len(group_keys))
        self.state = np.zeros(len(lights), np.uint8)
        self.elapsed = np.zeros(len(lights))
        self._recompute(np.ones(len(group_keys), bool))
        self._graph_tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _spawn(self, specs: list[SignalSpec]) -> tuple[np.ndarray, np.ndarray]:
        """Adds one map actor per signal; its rpc bounding box is the trigger volume, as in
        CARLA, while the table keeps the pole's physical box for sensors."""
        rows, ids = [], []
        for spec in specs:
            base = find_blueprint(spec.blueprint)
            blueprint = dataclasses.replace(base, extent=spec.box_extent, box_center=spec.box_location)
            info = self.world._add_actor(blueprint, {}, (spec.location, spec.rotation))
            self.world.table.extent[info.row] = base.extent
            self.world.table.box_center[info.row] = base.box_center
            rows.append(info.row)
            ids.append(info.id)
        return np.array(rows, np.int64), np.array(ids, np.int64)

    # --- light cycle -------------------------------------------------------------

    def _recompute(self, groups: np.ndarray) -> None:
        """States of the lights of the given groups (bool mask) from their group's phase and stage."""
        _recompute_states(groups, self.current, self.stage, self.group, self.phase_rank, self.state, self.elapsed)

    def step(self, dt: float) -> None:
        """Advances every group's cycle, then updates what each vehicle's snapshot reports."""
        if len(self.state) and not self.frozen:
            _advance_cycles(dt, self.timer, self.times, self.head, self.current, self.stage, self.phase_count,
                            self.group, self.phase_rank, self.state, self.elapsed)
        self._update_vehicles(dt)

    # --- requests ------------------------------------------------------------------

    def light(self, actor_id: int) -> int:
        index = self.index_of_id.get(actor_id)
        if index is None:
            raise TrafficLightError(f"actor {actor_id} is not a traffic light of this map")
        return index

    def set_state(self, actor_id: int, state: int) -> None:
        """The light shows `state` until its group's cycle next changes (never, while frozen)."""
        index = self.light(actor_id)
        if int(state) not in range(5):
            raise TrafficLightError(f"traffic light state must be 0-4 (Red, Yellow, Green, Off, Unknown), got {state}")
        if self.state[index] != state:
            self.elapsed[index] = 0.0
        self.state[index] = state

    def set_time(self, actor_id: int, stage_color: int, seconds: float) -> None:
        """Green, yellow or red time of the light's controller (every light of its phase)."""
        index = self.light(actor_id)
        if not seconds >= 0.0:
            raise TrafficLightError(f"traffic light time must be a non-negative number of seconds, got {seconds}")
        stage = int(np.flatnonzero(STAGE_COLORS == stage_color)[0])
        same_phase = (self.group == self.group[index]) & (self.phase_rank == self.phase_rank[index])
        self.times[same_phase, stage] = float(seconds)

    def group_ids(self, actor_id: int) -> list[int]:
        return self.light_ids[self.group == self.group[self.light(actor_id)]].tolist()

    def reset_group(self, actor_id: int) -> None:
        self._reset(self.group == self.group[self.light(actor_id)])

    def reset_all(self) -> None:
        self._reset(np.ones(len(self.light_ids), bool))

    def _reset(self, lights: np.ndarray) -> None:
        groups = np.zeros(len(self.current), bool)
        groups[self.group[lights]] = True
        self.current[groups] = 0
        self.stage[groups] = 0
        self.timer[groups] = 0.0
        self._recompute(groups)

    def light_boxes(self, actor_id: int) -> list[list]:
        """The light head's box in world coordinates."""
        row = self.light_rows[self.light(actor_id)]
        location, rotation = self.world.table.location[row], self.world.table.rotation[row]
        yaw = np.radians(rotation[1])
        dx, dy, dz = LIGHT_HEAD_OFFSET_M
        centre = (location[0] + dx * np.cos(yaw) - dy * np.sin(yaw), location[1] + dx * np.sin(yaw) + dy * np.cos(yaw),
                  location[2] + dz)
        return [[encoding.location(centre), encoding.location(LIGHT_HEAD_EXTENT_M), encoding.location(rotation),
                 int(actor_id)]]

    # --- vehicles ----------------------------------------------------------------------

    def governed_paths(self, graph: LaneGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per segment: light governing entry into this junction path, stop sign of it, and the
        light an approach lane's vehicles face (-1: none)."""
        if self._graph_tables is None:
            path_light = np.full(graph.size, -1, np.int64)
            path_stop = np.full(graph.size, -1, np.int64)
            approach_light = np.full(graph.size, -1, np.int64)
            for table, specs in ((path_light, self.light_specs), (path_stop, self.stop_specs)):
                for index, spec in enumerate(specs):
                    paths = [graph.index_of[key] for key in spec.paths if key in graph.index_of]
                    for key in spec.approaches:
                        if key in graph.index_of:
                            following = graph.successors(graph.index_of[key])
                            paths += [p for p in following.tolist() if graph.junction[p] >= 0]
                    table[paths] = index
            governed = np.flatnonzero(path_light >= 0)
            entries = graph.entry[governed]
            approach_light[entries[entries >= 0]] = path_light[governed[entries >= 0]]
            self._graph_tables = (path_light, path_stop, approach_light)
        return self._graph_tables

    def _update_vehicles(self, dt: float) -> None:
        """Speed limit and faced light of every vehicle, from the lane it is on: an autopilot
        car's from its route, any other vehicle's located."""
        world, table = self.world, self.world.table
        rows = world.autopilot.vehicle_rows()
        if len(rows) == 0:
            return
        graph = lane_graph_for(world.town)
        _, _, approach_light = self.governed_paths(graph)
        tracked, segment, s, others = world.autopilot.route_positions(rows, dt)
        signals = (graph.speed_limit, graph.length, approach_light, table.speed_limit, table.facing_light)
        if len(tracked):
            _vehicle_signals(tracked, segment, s, *signals)
        if len(others):
            _vehicle_signals(others, *graph.locate_rows(table.location, table.rotation, others)[:2], *signals)


@numba.njit(cache=True)
def _recompute_states(groups, current, stage, group, phase_rank, state, elapsed):
    """See TrafficLights._recompute; a light whose state changes restarts its elapsed time."""
    for i in range(len(state)):
        g = group[i]
        if not groups[g]:
            continue
        new = STAGE_COLORS[stage[g]] if phase_rank[i] == current[g] else RED
        if new != state[i]:
            elapsed[i] = 0.0
            state[i] = new


@numba.njit(cache=True)
def _advance_cycles(dt, timer, times, head, current, stage, phase_count, group, phase_rank, state, elapsed):
    """One tick of every group's cycle: timers run, expired stages pass to the next stage
    (after the last, to the next phase's green), and the lights of those groups follow."""
    elapsed += dt
    expired = np.zeros(len(timer), np.bool_)
    any_expired = False
    for g in range(len(timer)):
        timer[g] += dt
        duration = times[head[g, current[g]], stage[g]]
        if timer[g] >= duration:
            timer[g] -= duration
            stage[g] += 1
            if stage[g] == STAGES:
                stage[g] = 0
                current[g] = (current[g] + 1) % phase_count[g]
            expired[g] = True
            any_expired = True
    if any_expired:
        _recompute_states(expired, current, stage, group, phase_rank, state, elapsed)


@numba.njit(cache=True)
def _vehicle_signals(rows, segment, s, lane_speed_limit, lane_length, approach_light, speed_limit, facing_light):
    """Each row's speed limit (km/h) from its lane (segment), and the light it faces: its lane's,
    once within the trigger reach of the stop line (arc length s)."""
    for k in range(len(rows)):
        lane = segment[k]
        speed_limit[rows[k]] = lane_speed_limit[lane] * MS_TO_KMH
        facing_light[rows[k]] = approach_light[lane] if lane_length[lane] - s[k] <= TRIGGER_REACH_M else -1
