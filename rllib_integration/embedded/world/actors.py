"""Actors as a struct of numpy arrays, so a tick updates all of them at once.

Each live actor owns one row; rows of destroyed actors are reused. Per-actor Python
objects (ActorInfo) hold only what the hot path never reads: blueprint, attributes.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .blueprints import BlueprintDef, VehiclePhysics

INITIAL_CAPACITY = 64


class ActorKind(enum.IntEnum):
    SPECTATOR = 0
    VEHICLE = 1
    WALKER = 2
    SENSOR = 3
    TRAFFIC = 4
    CONTROLLER = 5
    OTHER = 6


@dataclass
class ActorInfo:
    id: int
    row: int
    kind: ActorKind
    blueprint: BlueprintDef
    attributes: dict[str, tuple[int, str]]  # attribute id -> (type, value) as spawned
    parent_id: int = 0
    stream_id: int = 0
    semantic_tags: bytes = b""
    children: list[int] = field(default_factory=list)
    light_state: int = 0  # carla.VehicleLightState bit flags
    physics_override: VehiclePhysics | None = None  # set by apply_physics_control


class ActorTable:
    """Kinematic state of every actor plus vehicle inputs and parameters, one row each."""

    # Packed side by side in one (capacity, 15) array, in the snapshot record's order, so a
    # snapshot copies them with one assignment; the names are views into it.
    KINEMATIC_COLUMNS = ("location", "rotation", "velocity", "angular_velocity", "acceleration")
    # Likewise throttle, steer, brake (floats) and hand_brake, reverse, manual_gear_shift (flags).
    PEDAL_COLUMNS = ("throttle", "steer", "brake")
    FLAG_COLUMNS = ("hand_brake", "reverse", "manual_gear_shift")
    FLOAT_COLUMNS_3 = ("relative_location", "relative_rotation", "extent", "box_center", "control_direction",
                       "slide_velocity")  # slide: velocity an impact gave across a body's own motion (m/s)
    # A vehicle's calibrated physics (vehicle_physics), packed likewise for the compiled step.
    VEHICLE_PARAMETER_COLUMNS = ("wheelbase", "full_steer_rad", "max_curvature", "max_accel", "top_speed",
                                 "brake_decel", "drag_per_mass", "rolling_accel")
    FLOAT_COLUMNS = ("speed", "speed_limit",
                     "walker_speed", "mass")  # mass in kg, for exchanging momentum in collisions
    # facing_light: index (into the episode's TrafficLights) of the light a vehicle faces, -1 none
    INT_COLUMNS = ("gear", "parent_row", "facing_light")
    # off_road: the vehicle step found no road-surface sample within reach of a vehicle this tick
    BOOL_COLUMNS = ("alive", "simulate_physics", "off_road", "jump", "collisions_disabled")

    def __init__(self) -> None:
        self.capacity = 0
        self.ids = np.zeros(0, np.uint32)
        self.kind = np.zeros(0, np.uint8)
        self._free: list[int] = []
        self.size = 0
        self.version = 0   # bumped whenever the set of rows or their roles change; caches key on it
        self._grow(INITIAL_CAPACITY)

    def _grow(self, capacity: int) -> None:
        def grown(old: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
            new = np.zeros(shape, dtype)
            if old is not None and len(old):
                new[: len(old)] = old
            return new

        self.kinematics = grown(getattr(self, "kinematics", None), (capacity, 15), np.float64)
        for index, name in enumerate(self.KINEMATIC_COLUMNS):
            setattr(self, name, self.kinematics[:, 3 * index: 3 * index + 3])
        self.pedals = grown(getattr(self, "pedals", None), (capacity, 3), np.float64)
        self.control_flags = grown(getattr(self, "control_flags", None), (capacity, 3), bool)
        for index, name in enumerate(self.PEDAL_COLUMNS):
            setattr(self, name, self.pedals[:, index])
        for index, name in enumerate(self.FLAG_COLUMNS):
            setattr(self, name, self.control_flags[:, index])
        self.vehicle_parameters = grown(getattr(self, "vehicle_parameters", None),
                                        (capacity, len(self.VEHICLE_PARAMETER_COLUMNS)), np.float64)
        for index, name in enumerate(self.VEHICLE_PARAMETER_COLUMNS):
            setattr(self, name, self.vehicle_parameters[:, index])
        for name in self.FLOAT_COLUMNS_3:
            setattr(self, name, grown(getattr(self, name, None), (capacity, 3), np.float64))
        for name in self.FLOAT_COLUMNS:
            setattr(self, name, grown(getattr(self, name, None), (capacity,), np.float64))
        for name in self.INT_COLUMNS:
            setattr(self, name, grown(getattr(self, name, None), (capacity,), np.int64))
        for name in self.BOOL_COLUMNS:
            setattr(self, name, grown(getattr(self, name, None), (capacity,), bool))
        self.ids = grown(self.ids, (capacity,), np.uint32)
        self.kind = grown(self.kind, (capacity,), np.uint8)
        self.capacity = capacity

    def allocate(self, actor_id: int, kind: ActorKind) -> int:
        if self._free:
            row = self._free.pop()
        else:
            if self.size == self.capacity:
                self._grow(self.capacity * 2)
            row = self.size
            self.size += 1
        self._clear(row)
        self.ids[row] = actor_id
        self.kind[row] = kind
        self.alive[row] = True
        self.parent_row[row] = -1
        self.facing_light[row] = -1
        self.version += 1
        return row

    def release(self, row: int) -> None:
        self.alive[row] = False
        self._free.append(row)
        self.version += 1

    def _clear(self, row: int) -> None:
        for name in ("kinematics", "pedals", "control_flags", "vehicle_parameters") + self.FLOAT_COLUMNS_3 + self.FLOAT_COLUMNS \
                + self.INT_COLUMNS + self.BOOL_COLUMNS:
            getattr(self, name)[row] = 0

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.size])
