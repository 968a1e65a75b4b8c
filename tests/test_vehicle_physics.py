"""Vehicle dynamics through the official carla 0.9.16 client: published figures and road contact.

Reference car: vehicle.lincoln.mkz_2017 (2.0T FWD). Its published figures, as cited in
blueprints.py: 0-60 mph in 7.1 s, i.e. 0-100 km/h in ~7.5 s; 100-0 km/h in ~38 m; kerb-
to-kerb turning circle 11.9 m. Every run is synchronous with fixed_delta_seconds 0.05.
"""
from __future__ import annotations

import math
import textwrap
from typing import Iterator

import pytest

from harness import ServerProcess, run_client, start_server

DT_S = 0.05
TOLERANCE = 0.20                          # the issue asks for the published figures within 20 %
MKZ_ZERO_TO_100_KMH_S = 7.5
MKZ_STOP_FROM_100_KMH_M = 38.0
# Constant deceleration: the distance scales with the square of the initial speed.
MKZ_STOP_FROM_50_KMH_M = MKZ_STOP_FROM_100_KMH_M * (50.0 / 100.0) ** 2
MKZ_TURNING_CIRCLE_M = 11.9

PRELUDE = f"""
import math
DT = {DT_S}
client, world, _ = connect_sync(30.0, DT)
town = world.get_map()
spawn_points = town.get_spawn_points()
mkz = world.get_blueprint_library().find("vehicle.lincoln.mkz_2017")

def cleanup():
    destroy_vehicles(client, world)

def wrap(angle):
    return (angle + 180.0) % 360.0 - 180.0

def straight_ahead(point, length, step=5.0):
    '''(straight, rise): whether the lane ahead runs length metres without junction or bend.'''
    waypoint = town.get_waypoint(point.location)
    zs, yaws = [waypoint.transform.location.z], [waypoint.transform.rotation.yaw]
    for _ in range(int(length / step)):
        ahead = waypoint.next(step)
        if not ahead or ahead[0].is_junction:
            return False, 0.0
        waypoint = ahead[0]
        zs.append(waypoint.transform.location.z)
        yaws.append(waypoint.transform.rotation.yaw)
    bend = max(abs(wrap(yaw - yaws[0])) for yaw in yaws)
    return bend < 1.0, max(zs) - min(zs)

def straight_spawn(length=150.0):
    '''The first spawn point with a straight lane of this length ahead.'''
    return next(p for p in spawn_points if straight_ahead(p, length)[0])

def spawn(point):
    '''A resting MKZ at the point, settled onto the road by one tick.'''
    cleanup()
    car = world.spawn_actor(mkz, point)
    world.tick()
    return car

def speed(car):
    return car.get_velocity().length()

def along(car, start):
    '''Signed displacement along the start heading and the distance across it.'''
    delta = car.get_location() - start.location
    forward = start.get_forward_vector()
    return delta.dot(forward), abs(delta.cross(forward).z)

def hold_speed(car, target, steer=0.0):
    '''A proportional throttle/brake controller, as a driver would hold a speed.'''
    error = target - speed(car)
    throttle = min(max(0.3 + 0.5 * error, 0.0), 1.0)
    brake = min(-0.5 * error, 1.0) if error < -0.5 else 0.0
    car.apply_control(carla.VehicleControl(throttle=throttle, brake=brake, steer=steer))

def keep_lane(car, lookahead=10.0):
    '''Pure-pursuit steer toward the lane centre lookahead metres ahead (70 deg at full steer).'''
    transform = car.get_transform()
    target = town.get_waypoint(transform.location).next(lookahead)[0].transform.location
    bearing = math.degrees(math.atan2(target.y - transform.location.y, target.x - transform.location.x))
    alpha = math.radians(wrap(bearing - transform.rotation.yaw))
    wheel = math.atan(2.0 * 2.85 * math.sin(alpha) / lookahead)
    return min(max(wheel / math.radians(70.0), -1.0), 1.0)

def brake_from(kmh, control):
    '''Distance (m) and time (s) to stand still from kmh under a constant control.'''
    car = spawn(straight_spawn())
    start = car.get_transform()
    car.set_target_velocity(start.get_forward_vector() * (kmh / 3.6))
    car.apply_control(control)
    ticks = 0
    while True:
        world.tick()
        ticks += 1
        if speed(car) < 1e-3 or ticks * DT > 30.0:
            break
    distance, across = along(car, start)
    return distance, across, ticks * DT, speed(car)
"""


@pytest.fixture(scope="module")
def town04(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Town04 has elevation (highway ramps and hills); one server for the module."""
    process = start_server(tmp_path_factory.mktemp("town04"), town="Town04")
    yield process
    process.stop()


def client(server: ServerProcess, *parts: str) -> dict:
    """Runs the client code parts after PRELUDE; each part is dedented on its own."""
    return run_client(server, PRELUDE + "".join(textwrap.dedent(part) for part in parts), timeout=180.0)


def test_zero_to_100_kmh_matches_published_time(server):
    result = client(server, """
    car = spawn(straight_spawn())
    start = car.get_transform()
    car.apply_control(carla.VehicleControl(throttle=1.0))
    ticks = 0
    while speed(car) < 100.0 / 3.6 and ticks < 1000:
        world.tick()
        ticks += 1
    distance, across = along(car, start)
    emit({"time": ticks * DT, "distance": distance, "across": across,
          "forward_speed": car.get_velocity().dot(car.get_transform().get_forward_vector())})
    cleanup()
    """)
    print(f"0-100 km/h: {result['time']:.2f} s over {result['distance']:.1f} m")
    assert abs(result["time"] - MKZ_ZERO_TO_100_KMH_S) <= TOLERANCE * MKZ_ZERO_TO_100_KMH_S
    assert result["forward_speed"] > 0 and result["distance"] > 50.0 and result["across"] < 0.5


def test_full_brake_from_50_kmh_stops_in_published_distance(server):
    result = client(server, """
    distance, across, seconds, final = brake_from(50.0, carla.VehicleControl(brake=1.0))
    emit({"distance": distance, "across": across, "time": seconds, "final": final})
    cleanup()
    """)
    print(f"50-0 km/h full brake: {result['distance']:.2f} m in {result['time']:.2f} s "
          f"(published-derived {MKZ_STOP_FROM_50_KMH_M:.2f} m)")
    assert result["final"] < 1e-3
    assert abs(result["distance"] - MKZ_STOP_FROM_50_KMH_M) <= TOLERANCE * MKZ_STOP_FROM_50_KMH_M
    assert result["across"] < 0.1


def test_hand_brake_stops_the_car_in_a_longer_distance_than_full_brake(server):
    result = client(server, """
    foot = brake_from(50.0, carla.VehicleControl(brake=1.0))
    hand = brake_from(50.0, carla.VehicleControl(hand_brake=True))
    emit({"foot": foot[0], "hand": hand[0], "hand_time": hand[2], "hand_final": hand[3]})
    cleanup()
    """)
    print(f"50-0 km/h hand brake: {result['hand']:.2f} m in {result['hand_time']:.2f} s")
    assert result["hand_final"] < 1e-3 and result["hand_time"] < 15.0
    assert result["foot"] < result["hand"] < 100.0


def test_full_lock_turning_radius_matches_turning_circle_and_positive_steer_turns_right(server):
    result = client(server, """
    car = spawn(straight_spawn())
    start = car.get_transform()
    points, yaws = [], [start.rotation.yaw]
    for tick in range(600):
        hold_speed(car, 10.0 / 3.6, steer=1.0)
        world.tick()
        if tick >= 100:   # up to speed, on the circle
            location = car.get_location()
            points.append((location.x, location.y))
        yaws.append(car.get_transform().rotation.yaw)
    turned = sum(wrap(b - a) for a, b in zip(yaws, yaws[1:]))
    # Least-squares circle: x^2 + y^2 = 2 a x + 2 b y + c, radius^2 = c + a^2 + b^2.
    n = len(points)
    sx = sum(x for x, _ in points) / n
    sy = sum(y for _, y in points) / n
    u = [(x - sx, y - sy) for x, y in points]
    suu = sum(a * a for a, _ in u); svv = sum(b * b for _, b in u); suv = sum(a * b for a, b in u)
    suuu = sum(a ** 3 for a, _ in u); svvv = sum(b ** 3 for _, b in u)
    suvv = sum(a * b * b for a, b in u); svuu = sum(b * a * a for a, b in u)
    det = suu * svv - suv * suv
    uc = (0.5 * (suuu + suvv) * svv - 0.5 * (svvv + svuu) * suv) / det
    vc = (0.5 * (svvv + svuu) * suu - 0.5 * (suuu + suvv) * suv) / det
    radius = math.sqrt(uc * uc + vc * vc + (suu + svv) / n)
    residual = max(abs(math.hypot(x - sx - uc, y - sy - vc) - radius) for x, y in points)
    centre = carla.Location(x=sx + uc, y=sy + vc, z=start.location.z)
    right = start.get_right_vector()
    emit({"radius": radius, "residual": residual, "turned": turned,
          "centre_right": (centre - start.location).dot(right), "speed": speed(car)})
    cleanup()
    """)
    print(f"full-lock turning radius at 10 km/h: {result['radius']:.2f} m "
          f"(published circle/2 {MKZ_TURNING_CIRCLE_M / 2:.2f} m)")
    assert abs(result["radius"] - MKZ_TURNING_CIRCLE_M / 2) <= TOLERANCE * MKZ_TURNING_CIRCLE_M / 2
    assert result["residual"] < 0.1                    # a clean circle
    assert result["turned"] > 360.0                     # yaw increases: a right turn
    assert result["centre_right"] > 0.0                 # the centre lies to the right of the start
    assert abs(result["speed"] - 10.0 / 3.6) < 0.5


def test_small_steer_at_speed_gives_a_smooth_constant_curve(server):
    result = client(server, """
    car = spawn(straight_spawn())
    car.set_target_velocity(car.get_transform().get_forward_vector() * 20.0)
    yaws = []
    for _ in range(60):
        hold_speed(car, 20.0, steer=0.02)
        world.tick()
        yaws.append(car.get_transform().rotation.yaw)
    rates = [wrap(b - a) / DT for a, b in zip(yaws, yaws[1:])]
    emit({"rates": rates, "speed": speed(car)})
    cleanup()
    """)
    rates = result["rates"][5:]
    mean = sum(rates) / len(rates)
    assert mean > 0.0                                              # right turn for positive steer
    assert max(abs(rate - mean) for rate in rates) < 0.05 * mean    # steady, no oscillation
    # lateral acceleration of a gentle curve, well inside the tyres' grip
    assert 0.5 < result["speed"] * math.radians(mean) < 9.0


def test_reverse_flag_drives_backward_along_minus_heading(server):
    result = client(server, """
    car = spawn(straight_spawn())
    start = car.get_transform()
    car.apply_control(carla.VehicleControl(throttle=0.5, reverse=True))
    for _ in range(60):
        world.tick()
    distance, across = along(car, start)
    emit({"along": distance, "across": across, "velocity": car.get_velocity().dot(start.get_forward_vector()),
          "yaw_change": abs(wrap(car.get_transform().rotation.yaw - start.rotation.yaw)),
          "reverse": car.get_control().reverse})
    cleanup()
    """)
    assert result["reverse"] is True
    assert result["along"] < -3.0 and result["velocity"] < -1.0
    assert result["across"] < 0.05 and result["yaw_change"] < 0.1


def test_manual_gear_minus_one_reverses_and_gear_zero_is_neutral(server):
    result = client(server, """
    car = spawn(straight_spawn())
    start = car.get_transform()
    car.apply_control(carla.VehicleControl(throttle=1.0, manual_gear_shift=True, gear=0))
    for _ in range(40):
        world.tick()
    neutral = along(car, start)[0]
    car.apply_control(carla.VehicleControl(throttle=0.5, manual_gear_shift=True, gear=-1))
    for _ in range(40):
        world.tick()
    reverse = along(car, start)[0]
    car.apply_control(carla.VehicleControl(throttle=0.5, manual_gear_shift=True, gear=1))
    for _ in range(80):
        world.tick()
    emit({"neutral": neutral, "reverse": reverse, "forward": along(car, start)[0]})
    cleanup()
    """)
    assert abs(result["neutral"]) < 1e-3
    assert result["reverse"] < -1.0
    assert result["forward"] > result["reverse"] + 1.0


SLOPE_PRELUDE = """
def sloped_spawn(length=150.0, min_rise=4.0):
    '''The spawn point with the most elevation change along a straight lane ahead.'''
    best, best_rise = None, min_rise
    for point in spawn_points:
        straight, rise = straight_ahead(point, length)
        if straight and rise > best_rise:
            best, best_rise = point, rise
    return best
"""


def test_z_and_pitch_follow_the_road_on_a_slope(town04):
    result = client(town04, SLOPE_PRELUDE, """
    point = sloped_spawn()
    car = spawn(point)
    z_errors, pitch_errors, zs = [], [], []
    for _ in range(200):
        hold_speed(car, 15.0, steer=keep_lane(car))
        world.tick()
        transform = car.get_transform()
        road = town.get_waypoint(transform.location).transform
        z_errors.append(abs(transform.location.z - road.location.z))
        pitch_errors.append(abs(wrap(transform.rotation.pitch - road.rotation.pitch)))
        zs.append(transform.location.z)
    emit({"z_error": max(z_errors), "pitch_error": max(pitch_errors), "rise": max(zs) - min(zs)})
    cleanup()
    """)
    assert result["rise"] > 3.0            # the run really climbs or descends
    assert result["z_error"] < 0.1
    assert result["pitch_error"] < 1.0


@pytest.mark.parametrize("facing", ["along the lane", "against the lane"])
def test_brake_holds_a_car_on_a_slope_and_neutral_rolls_it_downhill(town04, facing):
    result = client(town04, SLOPE_PRELUDE, f"""
    point = sloped_spawn()
    if {facing == "against the lane"}:
        point = carla.Transform(point.location, carla.Rotation(yaw=point.rotation.yaw + 180.0))
    car = spawn(point)
    start = car.get_transform()
    car.apply_control(carla.VehicleControl(brake=1.0))
    for _ in range(60):
        world.tick()
    held = car.get_location().distance(start.location)
    car.apply_control(carla.VehicleControl(manual_gear_shift=True, gear=0))
    speeds = []
    for _ in range(100):
        world.tick()
        speeds.append(speed(car))
    emit({{"held": held, "pitch": start.rotation.pitch, "speeds": speeds,
          "rolled": car.get_location().distance(start.location), "dz": car.get_location().z - start.location.z}})
    cleanup()
    """)
    assert abs(result["pitch"]) > 1.0                 # a real slope
    assert result["held"] < 1e-3
    speeds = result["speeds"]
    assert all(b > a for a, b in zip(speeds, speeds[1:]))   # gravity keeps speeding it up
    assert result["dz"] < -0.5 * result["rolled"] * math.sin(math.radians(abs(result["pitch"])))   # ... downhill
    # at most what gravity alone gives, at least half of it (rolling resistance is ~1 % of g)
    free_fall_along_slope = 9.81 * math.sin(math.radians(abs(result["pitch"]))) * len(speeds) * DT_S
    assert 0.5 * free_fall_along_slope < speeds[-1] < free_fall_along_slope


def test_same_controls_after_reload_world_give_identical_transforms(server):
    result = client(server, """
    def drive():
        car = spawn(straight_spawn())
        poses = []
        for tick in range(120):
            car.apply_control(carla.VehicleControl(throttle=0.8 if tick < 60 else 0.2,
                                                   steer=0.3 * math.sin(tick * 0.1),
                                                   brake=0.5 if tick >= 100 else 0.0))
            world.tick()
            t = car.get_transform()
            poses.append([t.location.x, t.location.y, t.location.z, t.rotation.pitch, t.rotation.yaw, t.rotation.roll])
        return poses
    first = drive()
    world = client.reload_world()
    synchronous(world, DT)
    town = world.get_map()
    spawn_points = town.get_spawn_points()
    second = drive()
    emit({"first": first, "second": second})
    cleanup()
    """)
    first, second = result["first"], result["second"]
    assert math.dist(first[0][:2], first[-1][:2]) > 10.0    # the car really drove and turned
    assert abs(first[-1][4] - first[0][4]) > 1.0
    assert first == second
