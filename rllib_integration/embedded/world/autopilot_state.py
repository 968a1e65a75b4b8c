"""Traffic Manager settings and the per-vehicle state of the autopilot, as arrays.

Why arrays of all registered vehicles instead of one object per vehicle: the autopilot's
tick reads and writes every field for every vehicle at once. Per-vehicle settings that
CARLA also has as "global" (per Traffic Manager port) hold NaN until set, meaning "use the
port's value".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUTE_SLOTS = 8                       # lane segments planned ahead of (and including) the current one
RANDOM_DRAWS = 6                      # per-segment random numbers: lights, signs, vehicles, walkers, left, right
DRAW_LIGHTS, DRAW_SIGNS, DRAW_VEHICLES, DRAW_WALKERS, DRAW_LEFT, DRAW_RIGHT = range(RANDOM_DRAWS)
DEFAULT_DISTANCE_TO_LEADER_M = 2.0    # bumper gap kept behind a stopped leader
DEFAULT_HYBRID_RADIUS_M = 50.0        # CARLA's default hybrid-physics radius


@dataclass
class PortSettings:
    """What one Traffic Manager port sets for all its vehicles (CARLA's "global" setters)."""

    speed_difference_pct: float = 0.0     # 30 -> drive 30 % below the limit; negative: above it
    distance_to_leader_m: float = DEFAULT_DISTANCE_TO_LEADER_M
    lane_offset_m: float = 0.0            # positive: right of the lane centre
    hybrid_physics: bool = False
    hybrid_radius_m: float = DEFAULT_HYBRID_RADIUS_M
    synchronous: bool = False
    synchronous_timeout_ms: float = 0.0
    osm_mode: bool = False
    respawn_dormant: bool = False
    respawn_bounds_m: tuple[float, float] = (25.0, 100.0)
    max_bounds_m: tuple[float, float] = (25.0, 100.0)


# name -> (dtype, default, trailing shape)
FIELDS: dict[str, tuple[type, object, tuple[int, ...]]] = {
    "id": (np.int64, 0, ()),
    "row": (np.int64, 0, ()),
    "port": (np.int64, 0, ()),
    # where the vehicle is on its route
    "route": (np.int64, -1, (ROUTE_SLOTS,)),
    "s": (np.float64, 0.0, ()),                  # arc length along route slot 0
    "previous": (np.int64, -1, ()),              # segment left last (its rear may still be there)
    "reserved": (np.int64, -1, ()),              # junction path granted, not yet entered
    "waiting_since": (np.float64, np.inf, ()),   # simulation time it started asking to enter a junction
    "odometer": (np.float64, 0.0, ()),
    "stop_done": (np.bool_, False, ()),          # stopped at the coming stop sign
    "draws": (np.float64, 1.0, (RANDOM_DRAWS,)),
    # lane change in progress: lateral offset (m, right positive) decaying to 0 over shift_length metres
    "shift": (np.float64, 0.0, ()),
    "shift_start": (np.float64, 0.0, ()),
    "shift_length": (np.float64, 0.0, ()),
    "lane_change_after": (np.float64, 0.0, ()),  # simulation time before which no new lane change starts
    "lead_gap": (np.float64, 1.0e9, ()),         # last tick's obstacle ahead, for overtaking decisions
    "lead_speed": (np.float64, 0.0, ()),
    # Traffic Manager per-vehicle settings (NaN: the port's)
    "speed_difference_pct": (np.float64, np.nan, ()),
    "desired_speed": (np.float64, np.nan, ()),   # m/s, replaces the speed limit when set
    "distance_to_leader": (np.float64, np.nan, ()),
    "lane_offset": (np.float64, np.nan, ()),
    "ignore_lights_pct": (np.float64, 0.0, ()),
    "ignore_signs_pct": (np.float64, 0.0, ()),
    "ignore_vehicles_pct": (np.float64, 0.0, ()),
    "ignore_walkers_pct": (np.float64, 0.0, ()),
    "auto_lane_change": (np.bool_, True, ()),
    "force_lane_change": (np.int8, 0, ()),       # +1 left, -1 right, until done
    "keep_right_pct": (np.float64, 0.0, ()),
    "random_left_pct": (np.float64, 0.0, ()),
    "random_right_pct": (np.float64, 0.0, ()),
    "update_lights": (np.bool_, False, ()),
}


class Fleet:
    """The registered vehicles: one array per field, one entry per vehicle, in registration order."""

    def __init__(self) -> None:
        for name, (dtype, default, shape) in FIELDS.items():
            setattr(self, name, np.full((0, *shape), default, dtype))
        self.index_of: dict[int, int] = {}
        self.version = 0   # bumped when vehicles come or go, or a route is replanned from scratch

    def __len__(self) -> int:
        return len(self.id)

    def append(self, ids: list[int], rows: list[int], port: int) -> np.ndarray:
        """Adds vehicles with default state; returns their indexes."""
        start, count = len(self), len(ids)
        for name, (dtype, default, shape) in FIELDS.items():
            setattr(self, name, np.concatenate([getattr(self, name), np.full((count, *shape), default, dtype)]))
        new = np.arange(start, start + count)
        self.id[new], self.row[new], self.port[new] = ids, rows, port
        self._reindex()
        return new

    def keep(self, mask: np.ndarray) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name)[mask])
        self._reindex()

    def touch(self) -> None:
        """Marks per-vehicle caches (cached settings, last tick's route points) stale."""
        self.version += 1

    def _reindex(self) -> None:
        self.index_of = {int(actor_id): i for i, actor_id in enumerate(self.id)}
        self.touch()
