"""Vehicle dynamics: a bicycle model per blueprint, stepped for all vehicles at once.

Longitudinal: a force model in m/s2 (forces per unit mass) calibrated so that each car
reproduces its published figures. The engine pulls hardest from standstill and its pull
falls linearly with speed until it just balances air drag and rolling resistance at the
published top speed; the standstill pull is solved once per blueprint so that a full-
throttle run, drag and rolling resistance included, takes the published 0-100 km/h time
(``VehiclePhysics.max_accel_mps2`` is that run's mean, not its peak). The brake
deceleration is solved the same way from the published 100-0 km/h stopping distance.
Gravity acts along the road's pitch; a hand brake locks the rear wheels.

Road contact: each step the car takes z, pitch and roll of the nearest road-surface
sample. That pitch is the lane's, in the lane's driving direction, so a car driving
against its lane sees the slope with the wrong sign (RoadSurface gives no lane heading).

Lateral: a kinematic bicycle, since blueprints carry no tyre stiffness or yaw inertia and
a kinematic path cannot oscillate at any speed or time step. Steer maps to a wheel angle
the way CARLA's physics control reports it (70 degrees at full steer, which the Traffic
Manager's gains expect); the path curvature is bounded by the car's real turning circle
and by tyre grip. The actor origin sits mid-wheelbase, so in a turn it slips sideways
relative to the heading and circles on a wider radius than the rear axle, as a real car.

All quantities are per vehicle row of the ActorTable and every step is vectorised.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..maps.town import RoadSurface
from . import geometry
from .actors import ActorTable
from .blueprints import VehiclePhysics

GRAVITY_MPS2 = 9.81
AIR_DENSITY_KG_M3 = 1.225
CARLA_FULL_STEER_WHEEL_DEG = 70.0   # CARLA's max_steer_angle for four-wheeled vehicles
TYRE_GRIP_G = 0.9                   # lateral acceleration limit, in g
# Locked rear wheels: sliding friction of a tyre on dry asphalt times the share of the
# car's weight on the rear axle (~40 % for a front-engined car).
LOCKED_TYRE_FRICTION = 0.7
REAR_AXLE_LOAD_FRACTION = 0.4
HAND_BRAKE_DECEL_MPS2 = LOCKED_TYRE_FRICTION * REAR_AXLE_LOAD_FRACTION * GRAVITY_MPS2
REVERSE_TOP_SPEED_MPS = 8.0         # the engine stops pulling at this speed in reverse gear
ORIGIN_FROM_REAR_AXLE = 0.5         # fraction of the wheelbase; CARLA's origin, the box centre, is ~mid-wheelbase
# Speed of the published acceleration and braking runs. A vehicle that cannot reach it
# (top speed not above it) is calibrated on a run to half its top speed instead.
REFERENCE_SPEED_MPS = 100.0 / 3.6
CALIBRATION_BISECTION_STEPS = 60    # halvings of the bracket on the peak: below float resolution
CALIBRATION_MAX_ACCEL_MPS2 = 50.0   # upper end of that bracket (~5 g, beyond any road vehicle)
MIN_SPEED_SQUARED_M2PS2 = 1e-6      # keeps the grip limit finite at standstill


def drag_per_mass(physics: VehiclePhysics) -> float:
    """Air-drag deceleration per squared speed, 1/m: 0.5 * rho * Cd * A / m."""
    return 0.5 * AIR_DENSITY_KG_M3 * physics.drag_coefficient * physics.frontal_area_m2 / physics.mass_kg


def rolling_accel(physics: VehiclePhysics) -> float:
    """Rolling-resistance deceleration, m/s2."""
    return physics.rolling_resistance * GRAVITY_MPS2


def reference_speed(physics: VehiclePhysics) -> float:
    """End speed (m/s) of the run the blueprint's acceleration and braking figures describe."""
    top = physics.top_speed_kmh / 3.6
    return REFERENCE_SPEED_MPS if top > REFERENCE_SPEED_MPS else 0.5 * top


def full_throttle_time(peak_accel: float, physics: VehiclePhysics, end_speed: float) -> float:
    """Seconds from standstill to end_speed at full throttle on a level road.

    Net acceleration: engine a(v) = peak (1 - v/top) + R(top) v/top minus the resistance
    R(v) = c v^2 + r, which simplifies to (c v + k)(top - v) with k = (peak - r) / top.
    Integrating dv over it by partial fractions gives the logs below; the form stays
    finite as the drag c goes to zero.
    """
    c, r, top = drag_per_mass(physics), rolling_accel(physics), physics.top_speed_kmh / 3.6
    k = (peak_accel - r) / top
    return (math.log1p(c * end_speed / k) - math.log1p(-end_speed / top)) / (c * top + k)


@functools.lru_cache(maxsize=None)
def peak_accel(physics: VehiclePhysics) -> float:
    """Standstill engine acceleration (m/s2) that reproduces the published acceleration run.

    The run's time is reference_speed / max_accel_mps2; it falls as the peak rises, so a
    bisection between the rolling resistance (no net pull) and ~5 g finds the peak.
    """
    end_speed = reference_speed(physics)
    target_s = end_speed / physics.max_accel_mps2
    low, high = rolling_accel(physics), CALIBRATION_MAX_ACCEL_MPS2
    for _ in range(CALIBRATION_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if full_throttle_time(middle, physics, end_speed) > target_s:
            low = middle
        else:
            high = middle
    return high


@functools.lru_cache(maxsize=None)
def brake_decel(physics: VehiclePhysics) -> float:
    """Full-brake deceleration (m/s2) that reproduces the published stopping distance.

    max_brake_decel_mps2 is the mean of a stop from reference_speed V, so the distance is
    d = V^2 / (2 mean). With drag c and rolling r helping the brake b the car stops in
    ln(1 + c V^2 / (b + r)) / (2c); solved for b: b + r = V^2 / (2d) * x / (e^x - 1) with
    x = 2 c d.
    """
    c, r, speed = drag_per_mass(physics), rolling_accel(physics), reference_speed(physics)
    distance = speed * speed / (2.0 * physics.max_brake_decel_mps2)
    x = 2.0 * c * distance
    not_drag = x / math.expm1(x) if x > 0.0 else 1.0   # share of the mean the drag leaves over
    return speed * speed / (2.0 * distance) * not_drag - r


def set_vehicle_parameters(table: ActorTable, row: int, physics: VehiclePhysics) -> None:
    """Copies one blueprint's calibrated physics into the row's parameter columns."""
    table.wheelbase[row] = physics.wheelbase_m
    table.full_steer_rad[row] = np.radians(CARLA_FULL_STEER_WHEEL_DEG)
    table.max_curvature[row] = np.tan(np.radians(physics.max_steer_deg)) / physics.wheelbase_m
    table.max_accel[row] = peak_accel(physics)
    table.top_speed[row] = physics.top_speed_kmh / 3.6
    table.brake_decel[row] = brake_decel(physics)
    table.drag_per_mass[row] = drag_per_mass(physics)
    table.rolling_accel[row] = rolling_accel(physics)
    table.simulate_physics[row] = True
    table.gear[row] = 1


def step_vehicles(table: ActorTable, rows: np.ndarray, dt: float, surface: RoadSurface) -> None:
    """Advances the given vehicle rows by dt seconds and puts them on the road surface."""
    if len(rows) == 0:
        return
    speed = table.speed[rows]   # signed, along the direction of travel; negative backwards
    throttle = np.clip(table.throttle[rows], 0.0, 1.0)
    brake = np.clip(table.brake[rows], 0.0, 1.0)
    steer = np.clip(table.steer[rows], -1.0, 1.0)
    gear = table.gear[rows]
    manual = table.manual_gear_shift[rows]
    backwards = np.where(manual, gear < 0, table.reverse[rows])
    neutral = manual & (gear == 0)
    direction = np.where(backwards, -1.0, 1.0)
    drag = table.drag_per_mass[rows]
    rolling = table.rolling_accel[rows]
    peak = table.max_accel[rows]
    top = table.top_speed[rows]

    # Engine pull along the gear's direction, falling with the speed in that direction.
    geared_speed = np.maximum(direction * speed, 0.0)
    forward_pull = peak * (1.0 - geared_speed / top) + (drag * top * top + rolling) * geared_speed / top
    reverse_pull = peak * (1.0 - geared_speed / REVERSE_TOP_SPEED_MPS)
    pull = np.where(backwards, reverse_pull, forward_pull)
    drive = np.where(neutral, 0.0, throttle * np.maximum(pull, 0.0))
    # Foot and hand brake together cannot out-brake the better of the two alone (grip).
    brake_decels = table.brake_decel[rows]
    braking = np.minimum(brake * brake_decels + table.hand_brake[rows] * HAND_BRAKE_DECEL_MPS2,
                         np.maximum(brake_decels, HAND_BRAKE_DECEL_MPS2))
    resist = braking + drag * speed * speed + rolling
    pitch = np.radians(table.rotation[rows, 0])
    gravity = -GRAVITY_MPS2 * np.sin(pitch)
    # Drive and gravity push; resistances only shrink the speed toward zero, never past it,
    # so a braked car holds on a slope and a coasting one stops instead of reversing.
    pushed = speed + (direction * drive + gravity) * dt
    new_speed = np.sign(pushed) * np.maximum(np.abs(pushed) - resist * dt, 0.0)

    # Rear-axle path curvature from the wheel angle, bounded by the turning circle and grip.
    mean_speed = 0.5 * (speed + new_speed)
    curvature = np.tan(steer * table.full_steer_rad[rows]) / table.wheelbase[rows]
    grip_limit = TYRE_GRIP_G * GRAVITY_MPS2 / np.maximum(mean_speed * mean_speed, MIN_SPEED_SQUARED_M2PS2)
    limit = np.minimum(table.max_curvature[rows], grip_limit)
    curvature = np.clip(curvature, -limit, limit)
    slip = np.arctan(ORIGIN_FROM_REAR_AXLE * table.wheelbase[rows] * curvature)   # origin's sideslip
    yaw_rate = mean_speed * np.cos(slip) * curvature

    yaw = np.radians(table.rotation[rows, 1])
    course = yaw + 0.5 * yaw_rate * dt + slip   # direction the origin travels, mid-step
    travel = mean_speed * dt * np.cos(pitch)
    location = table.location[rows]
    location[:, 0] += travel * np.cos(course)
    location[:, 1] += travel * np.sin(course)
    new_yaw = yaw + yaw_rate * dt

    ground_z, ground_pitch, ground_roll = surface.ground_under(location, np.degrees(new_yaw))
    ground_pitch = geometry.wrap_degrees(ground_pitch)
    location[:, 2] = ground_z
    table.location[rows] = location
    table.rotation[rows] = np.stack(
        [ground_pitch, geometry.wrap_degrees(np.degrees(new_yaw)), geometry.wrap_degrees(ground_roll)], axis=1)

    new_course = new_yaw + slip
    cos_p, sin_p = np.cos(np.radians(ground_pitch)), np.sin(np.radians(ground_pitch))
    along = np.stack([np.cos(new_course) * cos_p, np.sin(new_course) * cos_p, sin_p], axis=1)
    right = np.stack([-np.sin(new_course), np.cos(new_course), np.zeros_like(new_course)], axis=1)
    table.velocity[rows] = along * new_speed[:, None]
    table.angular_velocity[rows] = np.stack([np.zeros_like(yaw_rate), np.zeros_like(yaw_rate),
                                             np.degrees(yaw_rate)], axis=1)
    longitudinal = (new_speed - speed) / dt
    table.acceleration[rows] = along * longitudinal[:, None] + right * (mean_speed * yaw_rate)[:, None]
    table.speed[rows] = new_speed


def set_velocity(table: ActorTable, row: int, velocity: np.ndarray) -> None:
    """Target velocity: the component along the heading becomes the car's speed."""
    yaw = np.radians(table.rotation[row, 1])
    pitch = np.radians(table.rotation[row, 0])
    heading = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    table.speed[row] = float(heading @ velocity)
    table.velocity[row] = heading * table.speed[row]
