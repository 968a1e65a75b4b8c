"""Vehicle dynamics: a bicycle model per blueprint, stepped for all vehicles at once.

Longitudinal: engine force falling off toward top speed, brakes, hand brake, air drag
and rolling resistance. Lateral: steer maps to a wheel angle the way CARLA's physics
control reports it (70 degrees at full steer, which the Traffic Manager's gains expect),
with curvature bounded by the car's real turning circle and by tyre grip.
"""
from __future__ import annotations

import numpy as np

from ..maps.town import RoadSurface
from .actors import ActorTable
from .blueprints import VehiclePhysics

GRAVITY_MPS2 = 9.81
AIR_DENSITY_KG_M3 = 1.225
CARLA_FULL_STEER_WHEEL_DEG = 70.0   # CARLA's max_steer_angle for four-wheeled vehicles
TYRE_GRIP_G = 0.9                   # lateral acceleration limit, in g
HAND_BRAKE_DECEL_MPS2 = 5.0
REVERSE_TOP_SPEED_MPS = 8.0


def set_vehicle_parameters(table: ActorTable, row: int, physics: VehiclePhysics) -> None:
    """Copies one blueprint's physics into the row's parameter columns."""
    table.wheelbase[row] = physics.wheelbase_m
    table.full_steer_rad[row] = np.radians(CARLA_FULL_STEER_WHEEL_DEG)
    table.max_curvature[row] = np.tan(np.radians(physics.max_steer_deg)) / physics.wheelbase_m
    table.max_accel[row] = physics.max_accel_mps2
    table.top_speed[row] = physics.top_speed_kmh / 3.6
    table.brake_decel[row] = physics.max_brake_decel_mps2
    table.drag_per_mass[row] = 0.5 * AIR_DENSITY_KG_M3 * physics.drag_coefficient * physics.frontal_area_m2 / physics.mass_kg
    table.rolling_accel[row] = physics.rolling_resistance * GRAVITY_MPS2
    table.simulate_physics[row] = True
    table.gear[row] = 1


def step_vehicles(table: ActorTable, rows: np.ndarray, dt: float, surface: RoadSurface) -> None:
    """Advances the given vehicle rows by dt seconds and puts them on the road surface."""
    if len(rows) == 0:
        return
    speed = table.speed[rows]
    throttle = np.clip(table.throttle[rows], 0.0, 1.0)
    brake = np.clip(table.brake[rows], 0.0, 1.0)
    steer = np.clip(table.steer[rows], -1.0, 1.0)
    gear = table.gear[rows]
    manual = table.manual_gear_shift[rows]
    backwards = np.where(manual, gear < 0, table.reverse[rows])
    neutral = manual & (gear == 0)
    direction = np.where(backwards, -1.0, 1.0)
    top = np.where(backwards, REVERSE_TOP_SPEED_MPS, table.top_speed[rows])

    drive = np.where(neutral, 0.0, throttle * table.max_accel[rows] * np.clip(1.0 - np.abs(speed) / top, 0.0, 1.0))
    resist = (brake * table.brake_decel[rows]
              + table.hand_brake[rows] * HAND_BRAKE_DECEL_MPS2
              + table.drag_per_mass[rows] * speed * speed
              + table.rolling_accel[rows])
    pitch = np.radians(table.rotation[rows, 0])
    slope = -GRAVITY_MPS2 * np.sin(pitch)
    # Drive and gravity push; resistances only shrink the speed toward zero, never past it.
    pushed = speed + (direction * drive + slope) * dt
    new_speed = np.sign(pushed) * np.maximum(np.abs(pushed) - resist * dt, 0.0)

    mean_speed = 0.5 * (speed + new_speed)
    curvature = np.tan(steer * table.full_steer_rad[rows]) / table.wheelbase[rows]
    grip_limit = TYRE_GRIP_G * GRAVITY_MPS2 / np.maximum(mean_speed * mean_speed, 1e-6)
    limit = np.minimum(table.max_curvature[rows], grip_limit)
    curvature = np.clip(curvature, -limit, limit)
    yaw_rate = mean_speed * curvature

    yaw = np.radians(table.rotation[rows, 1])
    mid_yaw = yaw + 0.5 * yaw_rate * dt
    travel = mean_speed * dt * np.cos(pitch)
    location = table.location[rows]
    location[:, 0] += travel * np.cos(mid_yaw)
    location[:, 1] += travel * np.sin(mid_yaw)
    new_yaw = yaw + yaw_rate * dt

    ground_z, ground_pitch, ground_roll, _ = surface.query(location)
    location[:, 2] = ground_z
    table.location[rows] = location
    rotation = np.stack([ground_pitch, np.degrees((new_yaw + np.pi) % (2 * np.pi) - np.pi), ground_roll], axis=1)
    table.rotation[rows] = rotation

    cos_p = np.cos(np.radians(ground_pitch))
    heading = np.stack([np.cos(new_yaw) * cos_p, np.sin(new_yaw) * cos_p, np.sin(np.radians(ground_pitch))], axis=1)
    right = np.stack([-np.sin(new_yaw), np.cos(new_yaw), np.zeros_like(new_yaw)], axis=1)
    table.velocity[rows] = heading * new_speed[:, None]
    table.angular_velocity[rows] = np.stack([np.zeros_like(yaw_rate), np.zeros_like(yaw_rate), np.degrees(yaw_rate)], axis=1)
    longitudinal = (new_speed - speed) / dt
    table.acceleration[rows] = heading * longitudinal[:, None] + right * (mean_speed * yaw_rate)[:, None]
    table.speed[rows] = new_speed


def set_velocity(table: ActorTable, row: int, velocity: np.ndarray) -> None:
    """Target velocity: the component along the heading becomes the car's speed."""
    yaw = np.radians(table.rotation[row, 1])
    pitch = np.radians(table.rotation[row, 0])
    heading = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    table.speed[row] = float(heading @ velocity)
    table.velocity[row] = heading * table.speed[row]
