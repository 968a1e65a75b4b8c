"""The episode snapshot's actor records: one 119-byte record per live actor, every tick.

Why compiled: with numpy, each record field the tick changes (kinematics, pedals, gear,
speed limit, the light a vehicle faces, walker controls, light timers) is a gather and a
cast-copy of its own, a few microseconds each, and together they were most of a one-car
tick. One compiled pass writes each record's kinematics and its actor type's data block in
place instead. The record array lives until actors come or go (the table's version): ids,
states and sign ids, which never change, are written only when it is rebuilt.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

from ..protocol import encoding
from .actors import ActorKind, ActorTable

if TYPE_CHECKING:
    from .traffic_lights import TrafficLights

VEHICLE = int(ActorKind.VEHICLE)
WALKER = int(ActorKind.WALKER)
GREEN = encoding.TRAFFIC_LIGHT_GREEN   # what CARLA reports for a vehicle facing no light


class SnapshotRecords:
    """The record array of the live actors, rewritten in place each tick."""

    def __init__(self) -> None:
        self._version = -1
        self.records = np.zeros(0, encoding.ACTOR_RECORD)
        self._views: tuple[np.ndarray, np.ndarray, np.ndarray] = ()   # of records, one per actor type
        self._light_positions = np.zeros(0, np.int64)

    def write(self, table: ActorTable, live: np.ndarray, lights: "TrafficLights") -> np.ndarray:
        """The records of the `live` rows (sorted) as of now."""
        if self._version != table.version:
            self._rebuild(table, live, lights)
        _write_records(*self._views, live, table.kind, table.kinematics,
                       table.pedals, table.control_flags, table.gear, table.speed_limit, table.facing_light,
                       table.control_direction, table.walker_speed, table.jump, self._light_positions,
                       lights.light_ids, lights.state, lights.times, lights.elapsed, lights.pole_index,
                       lights.frozen)
        return self.records

    def _rebuild(self, table: ActorTable, live: np.ndarray, lights: "TrafficLights") -> None:
        records = np.zeros(len(live), encoding.ACTOR_RECORD)
        records["id"] = table.ids[live]
        records["state"] = encoding.ACTOR_STATE_ACTIVE
        position, present = _positions(live, lights.sign_rows)
        records.view(encoding.TRAFFIC_LIGHT_RECORD)["sign_id"][position[present]] = lights.sign_ids[present]
        self._light_positions = np.where(present, position, -1)[:len(lights.light_rows)]
        self.records, self._version = records, table.version
        self._views = tuple(records.view(view) for view in
                            (encoding.VEHICLE_RECORD, encoding.WALKER_RECORD, encoding.TRAFFIC_LIGHT_RECORD))


def _positions(live: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each row sits among the (sorted) live rows, and whether it is still there."""
    position = np.searchsorted(live, rows)
    present = position < len(live)
    present[present] = live[position[present]] == rows[present]
    return position, present


@numba.njit(cache=True)
def _write_records(vehicles, walkers, lights, live, kind, kinematics, pedals, control_flags, gear, speed_limit,
                   facing_light, direction, walker_speed, jump, light_positions, light_ids, light_state,
                   light_times, light_elapsed, pole_index, frozen):
    """vehicles, walkers and lights are views of one record array (encoding.*_RECORD)."""
    for p in range(len(live)):
        r = live[p]
        vehicle = vehicles[p]
        for j in range(15):
            vehicle.kinematics[j] = kinematics[r, j]
        if kind[r] == VEHICLE:
            vehicle.throttle = pedals[r, 0]
            vehicle.steer = pedals[r, 1]
            vehicle.brake = pedals[r, 2]
            vehicle.hand_brake = control_flags[r, 0]
            vehicle.reverse = control_flags[r, 1]
            vehicle.manual_gear_shift = control_flags[r, 2]
            vehicle.gear = gear[r]
            vehicle.speed_limit = speed_limit[r]
            light = facing_light[r]
            vehicle.has_traffic_light = light >= 0
            vehicle.traffic_light_id = light_ids[light] if light >= 0 else 0
            vehicle.traffic_light_state = light_state[light] if light >= 0 else GREEN
        elif kind[r] == WALKER:
            walker = walkers[p]
            for j in range(3):
                walker.direction[j] = direction[r, j]
            walker.speed = walker_speed[r]
            walker.jump = jump[r]
    for i in range(len(light_positions)):
        p = light_positions[i]
        if p < 0:
            continue
        light = lights[p]
        light.green_time = light_times[i, 0]
        light.yellow_time = light_times[i, 1]
        light.red_time = light_times[i, 2]
        light.elapsed_time = light_elapsed[i]
        light.pole_index = pole_index[i]
        light.time_is_frozen = frozen
        light.state = light_state[i]
