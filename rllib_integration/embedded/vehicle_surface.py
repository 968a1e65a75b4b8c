"""CARLA's vehicle-physics API (VehiclePhysicsControl, wheels, telemetry) over the bicycle model.

Scripts read mass, drag, max steer angle and wheel layout through these shapes; the values
reflect what the model really uses, and apply_physics_control changes those same inputs.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .world import vehicle_physics
from .world.actors import ActorInfo, ActorTable
from .world.blueprints import VehiclePhysics
from .world.errors import WorldError

WHEEL_RADIUS_M = 0.35
REAR_WHEEL_STEER_DEG = 0.0
MAX_RPM = 6000.0
FORWARD_GEAR_RATIOS = (3.5, 2.1, 1.4, 1.0, 0.8)
FINAL_RATIO = 4.0
TIRE_FRICTION = 3.5
FRONT_WHEELS = (0, 1)


def _physics(info: ActorInfo) -> VehiclePhysics:
    return info.physics_override or info.blueprint.physics


def physics_control(info: ActorInfo, table: ActorTable) -> list[Any]:
    """VehiclePhysicsControl's 17 fields, with wheels placed on the blueprint's box."""
    physics = _physics(info)
    row = info.row
    peak_torque = physics.mass_kg * table.max_accel[row] * WHEEL_RADIUS_M / (FORWARD_GEAR_RATIOS[0] * FINAL_RATIO)
    full_steer_deg = float(np.degrees(table.full_steer_rad[row]))
    half_track = max(info.blueprint.extent[1] - 0.2, 0.2)
    half_base = physics.wheelbase_m / 2.0
    wheels = []
    for index, (x, y) in enumerate(((half_base, -half_track), (half_base, half_track),
                                    (-half_base, -half_track), (-half_base, half_track))):
        steer = full_steer_deg if index in FRONT_WHEELS else REAR_WHEEL_STEER_DEG
        wheels.append([TIRE_FRICTION, 0.25, steer, WHEEL_RADIUS_M * 100.0, 1500.0, 3000.0 if index > 1 else 0.0,
                       2.0, 17.0, 1000.0, _wheel_world_position(table, row, x, y)])
    gears = [[ratio, 0.5, 0.65] for ratio in FORWARD_GEAR_RATIOS]
    return [[[0.0, peak_torque], [MAX_RPM * 0.7, peak_torque], [MAX_RPM, 0.8 * peak_torque]],
            MAX_RPM, 1.0, 0.15, 2.0, 0.35, True, 0.5, 10.0, FINAL_RATIO, gears,
            float(physics.mass_kg), float(physics.drag_coefficient), [0.0, 0.0, 0.0],
            [[0.0, 1.0], [20.0, 0.9], [60.0, 0.8], [120.0, 0.7]], wheels, True]


def _wheel_world_position(table: ActorTable, row: int, x: float, y: float) -> list[float]:
    yaw = np.radians(table.rotation[row, 1])
    loc = table.location[row]
    return [float(loc[0] + x * np.cos(yaw) - y * np.sin(yaw)),
            float(loc[1] + x * np.sin(yaw) + y * np.cos(yaw)),
            float(loc[2] + WHEEL_RADIUS_M)]


def apply_physics_control(info: ActorInfo, table: ActorTable, control: list[Any]) -> None:
    """Mass, drag coefficient and front-wheel max steer angle feed the model; the rest is shape only."""
    mass, drag, wheels = float(control[11]), float(control[12]), control[15]
    if mass <= 0:
        raise WorldError(f"mass must be positive (got {mass} kg)")
    info.physics_override = dataclasses.replace(_physics(info), mass_kg=mass, drag_coefficient=drag)
    row = info.row
    keep = (table.simulate_physics[row], table.gear[row])
    vehicle_physics.set_vehicle_parameters(table, row, info.physics_override)
    table.simulate_physics[row], table.gear[row] = keep
    if wheels:
        table.full_steer_rad[row] = np.radians(float(wheels[0][2]))


def wheel_steer_angle(info: ActorInfo, table: ActorTable, wheel: int) -> float:
    if wheel not in FRONT_WHEELS:
        return REAR_WHEEL_STEER_DEG
    return float(np.degrees(table.steer[info.row] * table.full_steer_rad[info.row]))


def telemetry(info: ActorInfo, table: ActorTable) -> list[Any]:
    """VehicleTelemetryData: speed, control, a nominal engine rpm and the drag force."""
    row = info.row
    physics = _physics(info)
    speed = float(table.speed[row])
    engine_rpm = abs(speed) / WHEEL_RADIUS_M * 60.0 / (2 * np.pi) * FORWARD_GEAR_RATIOS[-1] * FINAL_RATIO
    drag = float(table.drag_per_mass[row] * speed * speed * physics.mass_kg)
    return [speed, float(table.steer[row]), float(table.throttle[row]), float(table.brake[row]),
            min(engine_rpm, MAX_RPM), int(table.gear[row]), drag, []]
