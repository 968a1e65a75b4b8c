"""Walker motion: walkers go where their WalkerControl points, at its speed, all at once."""
from __future__ import annotations

import numpy as np

from .actors import ActorTable

MAX_WALKER_SPEED_MPS = 10.0


def apply_walker_control(table: ActorTable, row: int, direction: tuple[float, float, float],
                         speed: float, jump: bool) -> None:
    """Stores the control; the direction is normalised in the horizontal plane like CARLA's."""
    vector = np.array([direction[0], direction[1], 0.0])
    norm = np.linalg.norm(vector)
    table.control_direction[row] = vector / norm if norm > 1e-9 else 0.0
    table.walker_speed[row] = float(np.clip(speed, 0.0, MAX_WALKER_SPEED_MPS))
    table.jump[row] = bool(jump)


def step_walkers(table: ActorTable, rows: np.ndarray, dt: float) -> None:
    if len(rows) == 0:
        return
    velocity = table.control_direction[rows] * table.walker_speed[rows, None]
    table.location[rows] += velocity * dt
    moving = table.walker_speed[rows] > 0.0
    heading = np.degrees(np.arctan2(velocity[:, 1], velocity[:, 0]))
    table.rotation[rows, 1] = np.where(moving, heading, table.rotation[rows, 1])
    table.acceleration[rows] = (velocity - table.velocity[rows]) / dt
    table.velocity[rows] = velocity
