"""Vehicle dynamics: a bicycle model per blueprint, stepped for all vehicles at once.

Longitudinal: a force model in m/s2 (forces per unit mass) calibrated so that each car
reproduces its published figures. The engine pulls hardest from standstill and its pull
falls linearly with speed until it just balances air drag and rolling resistance at the
published top speed; the standstill pull is solved once per blueprint so that a full-
throttle run, drag and rolling resistance included, takes the published 0-100 km/h time
(``VehiclePhysics.max_accel_mps2`` is that run's mean, not its peak). The brake
deceleration is solved the same way from the published 100-0 km/h stopping distance.
Gravity acts along the road's pitch; a hand brake locks the rear wheels.

Road contact: each step the car takes z of the nearest road-surface sample and that
lane's pitch and roll projected on the car's heading, so a car driving against its lane
feels the slope with the right sign.

Lateral: a kinematic bicycle, since blueprints carry no tyre stiffness or yaw inertia and
a kinematic path cannot oscillate at any speed or time step. Steer maps to a wheel angle
the way CARLA's physics control reports it (70 degrees at full steer, which the Traffic
Manager's gains expect); the path curvature is bounded by the car's real turning circle
and by tyre grip. The actor origin sits mid-wheelbase, so in a turn it slips sideways
relative to the heading and circles on a wider radius than the rear axle, as a real car.

All quantities are per vehicle row of the ActorTable. The step is one compiled (numba)
loop over the vehicle rows: with numpy's per-call overhead a tick of one car cost ~100 us,
compiled it costs ~2 us, and it scales linearly to hundreds of cars.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ..maps.road_grid import nearest_sample
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
    table.mass[row] = physics.mass_kg
    table.simulate_physics[row] = True
    table.gear[row] = 1


def step_vehicles(table: ActorTable, rows: np.ndarray, dt: float, surface: RoadSurface) -> None:
    """Advances the given vehicle rows by dt seconds and puts them on the road surface."""
    if len(rows) == 0:
        return
    grid = surface.grid
    if _step_kernel(rows, dt, table.speed, table.pedals, table.control_flags, table.gear, table.vehicle_parameters,
                    table.kinematics, table.off_road, grid.origin, grid.shape, grid.starts, grid.members, grid.points,
                    surface.pitch, surface.roll, surface.yaw):
        # Beyond the grid's reach the nearest road sample may be far: the k-d tree finds it.
        lost = rows[table.off_road[rows]]
        ground_z, pitch, roll = surface.ground_under(table.location[lost], table.rotation[lost, 1])
        table.location[lost, 2] = ground_z
        table.rotation[lost, 0] = geometry.wrap_degrees(pitch)
        table.rotation[lost, 2] = geometry.wrap_degrees(roll)


@numba.njit(cache=True)
def _wrap_deg(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


# Columns of the packed table arrays the compiled step reads.
(WHEELBASE, FULL_STEER_RAD, MAX_CURVATURE, MAX_ACCEL, TOP_SPEED, BRAKE_DECEL, DRAG_PER_MASS, ROLLING_ACCEL) = (
    ActorTable.VEHICLE_PARAMETER_COLUMNS.index(name) for name in (
        "wheelbase", "full_steer_rad", "max_curvature", "max_accel", "top_speed", "brake_decel", "drag_per_mass",
        "rolling_accel"))
THROTTLE, STEER, BRAKE = (ActorTable.PEDAL_COLUMNS.index(name) for name in ("throttle", "steer", "brake"))
HAND_BRAKE, REVERSE, MANUAL_GEAR_SHIFT = (ActorTable.FLAG_COLUMNS.index(name)
                                          for name in ("hand_brake", "reverse", "manual_gear_shift"))


@numba.njit(cache=True)
def _step_kernel(rows, dt, speed_col, pedals, control_flags, gear_col, parameters, kinematics, off_road, grid_origin,
                 grid_shape, grid_starts, grid_members, grid_points, lane_pitch, lane_roll, lane_yaw):
    """The model of this module's docstring for each row; marks in off_road the rows that found
    no road nearby and returns how many did.

    kinematics holds location, rotation, velocity, angular velocity, acceleration (ActorTable)."""
    location, rotation, velocity = kinematics[:, 0:3], kinematics[:, 3:6], kinematics[:, 6:9]
    angular_velocity, acceleration = kinematics[:, 9:12], kinematics[:, 12:15]
    lost = 0
    for k in range(len(rows)):
        r = rows[k]
        speed = speed_col[r]   # signed, along the direction of travel; negative backwards
        throttle = min(max(pedals[r, THROTTLE], 0.0), 1.0)
        brake = min(max(pedals[r, BRAKE], 0.0), 1.0)
        steer = min(max(pedals[r, STEER], -1.0), 1.0)
        manual = control_flags[r, MANUAL_GEAR_SHIFT]
        backwards = gear_col[r] < 0 if manual else control_flags[r, REVERSE]
        neutral = manual and gear_col[r] == 0
        direction = -1.0 if backwards else 1.0
        drag, rolling = parameters[r, DRAG_PER_MASS], parameters[r, ROLLING_ACCEL]
        peak, top = parameters[r, MAX_ACCEL], parameters[r, TOP_SPEED]

        # Engine pull along the gear's direction, falling with the speed in that direction.
        geared_speed = max(direction * speed, 0.0)
        if backwards:
            pull = peak * (1.0 - geared_speed / REVERSE_TOP_SPEED_MPS)
        else:
            pull = peak * (1.0 - geared_speed / top) + (drag * top * top + rolling) * geared_speed / top
        drive = 0.0 if neutral else throttle * max(pull, 0.0)
        # Foot and hand brake together cannot out-brake the better of the two alone (grip).
        full_brake = parameters[r, BRAKE_DECEL]
        hand = HAND_BRAKE_DECEL_MPS2 if control_flags[r, HAND_BRAKE] else 0.0
        braking = min(brake * full_brake + hand, max(full_brake, HAND_BRAKE_DECEL_MPS2))
        resist = braking + drag * speed * speed + rolling
        pitch = math.radians(rotation[r, 0])
        gravity = -GRAVITY_MPS2 * math.sin(pitch)
        # Drive and gravity push; resistances only shrink the speed toward zero, never past it,
        # so a braked car holds on a slope and a coasting one stops instead of reversing.
        pushed = speed + (direction * drive + gravity) * dt
        new_speed = math.copysign(max(abs(pushed) - resist * dt, 0.0), pushed)

        # Rear-axle path curvature from the wheel angle, bounded by the turning circle and grip.
        mean_speed = 0.5 * (speed + new_speed)
        wheelbase = parameters[r, WHEELBASE]
        curvature = math.tan(steer * parameters[r, FULL_STEER_RAD]) / wheelbase
        limit = min(parameters[r, MAX_CURVATURE],
                    TYRE_GRIP_G * GRAVITY_MPS2 / max(mean_speed * mean_speed, MIN_SPEED_SQUARED_M2PS2))
        curvature = min(max(curvature, -limit), limit)
        slip = math.atan(ORIGIN_FROM_REAR_AXLE * wheelbase * curvature)   # origin's sideslip
        yaw_rate = mean_speed * math.cos(slip) * curvature

        yaw = math.radians(rotation[r, 1])
        course = yaw + 0.5 * yaw_rate * dt + slip   # direction the origin travels, mid-step
        travel = mean_speed * dt * math.cos(pitch)
        location[r, 0] += travel * math.cos(course)
        location[r, 1] += travel * math.sin(course)
        new_yaw = yaw + yaw_rate * dt
        new_yaw_deg = _wrap_deg(math.degrees(new_yaw))

        sample = nearest_sample(grid_origin, grid_shape, grid_starts, grid_members, grid_points,
                                location[r, 0], location[r, 1], location[r, 2])
        if sample >= 0:
            # A lane's slope is stored along its own direction; the car feels it along its heading.
            alignment = math.cos(math.radians(new_yaw_deg - lane_yaw[sample]))
            location[r, 2] = grid_points[sample, 2]
            rotation[r, 0] = _wrap_deg(lane_pitch[sample] * alignment)
            rotation[r, 2] = _wrap_deg(lane_roll[sample] * alignment)
        off_road[r] = sample < 0
        lost += sample < 0
        rotation[r, 1] = new_yaw_deg

        new_course = new_yaw + slip
        ground_pitch = math.radians(rotation[r, 0])
        cos_p, sin_p = math.cos(ground_pitch), math.sin(ground_pitch)
        along_x, along_y, along_z = math.cos(new_course) * cos_p, math.sin(new_course) * cos_p, sin_p
        right_x, right_y = -math.sin(new_course), math.cos(new_course)
        velocity[r, 0], velocity[r, 1], velocity[r, 2] = along_x * new_speed, along_y * new_speed, along_z * new_speed
        angular_velocity[r, 0], angular_velocity[r, 1] = 0.0, 0.0
        angular_velocity[r, 2] = math.degrees(yaw_rate)
        longitudinal = (new_speed - speed) / dt
        lateral = mean_speed * yaw_rate
        acceleration[r, 0] = along_x * longitudinal + right_x * lateral
        acceleration[r, 1] = along_y * longitudinal + right_y * lateral
        acceleration[r, 2] = along_z * longitudinal
        speed_col[r] = new_speed
    return lost


def set_velocity(table: ActorTable, row: int, velocity: np.ndarray) -> None:
    """Target velocity: the component along the heading becomes the car's speed."""
    yaw = np.radians(table.rotation[row, 1])
    pitch = np.radians(table.rotation[row, 0])
    heading = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    table.speed[row] = float(heading @ velocity)
    table.velocity[row] = heading * table.speed[row]
