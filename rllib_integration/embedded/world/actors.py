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

    FLOAT_COLUMNS_3 = ("location", "rotation", "velocity", "angular_velocity", "acceleration",
                       "relative_location", "relative_rotation", "extent", "box_center", "control_direction")
    FLOAT_COLUMNS = ("speed", "throttle", "steer", "brake", "wheelbase", "full_steer_rad", "max_curvature",
                     "max_accel", "top_speed", "brake_decel", "drag_per_mass", "rolling_accel", "speed_limit",
                     "walker_speed")
    INT_COLUMNS = ("gear", "parent_row")
    BOOL_COLUMNS = ("alive", "hand_brake", "reverse", "manual_gear_shift", "simulate_physics", "on_ground", "jump")

    def __init__(self) -> None:
        self.capacity = 0
        self.ids = np.zeros(0, np.uint32)
        self.kind = np.zeros(0, np.uint8)
        self._free: list[int] = []
        self.size = 0
        self._grow(INITIAL_CAPACITY)

    def _grow(self, capacity: int) -> None:
        def grown(old: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
            new = np.zeros(shape, dtype)
            if old is not None and len(old):
                new[: len(old)] = old
            return new

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
        return row

    def release(self, row: int) -> None:
        self.alive[row] = False
        self._free.append(row)

    def _clear(self, row: int) -> None:
        for name in self.FLOAT_COLUMNS_3 + self.FLOAT_COLUMNS + self.INT_COLUMNS + self.BOOL_COLUMNS:
            getattr(self, name)[row] = 0

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive[: self.size])
