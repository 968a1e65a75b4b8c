"""The embedded server as the official client's (remote) Traffic Manager: long autopilot runs,
no hang in synchronous mode, setters that change behaviour, reproducible seeded runs.

Every check runs the real carla 0.9.16 client in a subprocess against a real server process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from harness import ServerProcess, run_client, start_server

LONG_RUN_CARS = 100        # autopilot cars of the five-minute runs
LONG_RUN_TICKS = 6000      # 5 simulated minutes at 0.05 s
STUCK_LIMIT_S = 30.0
HANG_RUNS = 20
HANG_RUN_TICKS = 2000
HANG_RUN_CARS = 10
HANG_RUN_TIMEOUT_S = 90.0

SYNC_TM = """
client, world, settings = connect_sync(20.0)
tm = client.get_trafficmanager(8000)
tm.set_synchronous_mode(True)
library = world.get_blueprint_library()
town = world.get_map()
points = town.get_spawn_points()
destroy_vehicles(client, world)
def spawn_autopilot(transforms, blueprints=("vehicle.tesla.model3",)):
    batch = [carla.command.SpawnActor(library.find(blueprints[k % len(blueprints)]), t)
             .then(carla.command.SetAutopilot(carla.command.FutureActor, True, tm.get_port()))
             for k, t in enumerate(transforms)]
    return [world.get_actor(r.actor_id) for r in client.apply_batch_sync(batch, True) if not r.error]
"""

# Five-minute run, checked from the snapshots every tick. A car counts as stuck when it has not
# moved (< 0.1 m/s) for STUCK_LIMIT_S while it was neither at a red or yellow light nor behind a
# stopped leader that is itself waiting for a good reason (the chain must end at a red light:
# a gridlock, where the chain loops or ends at a car waiting for nothing, counts as stuck). A
# leader is the nearest stopped car within 15 m ahead, heading the same way (within 45 degrees),
# in a band that widens with distance (curves). Waits at a green light for a gap in crossing
# traffic, or for room behind a queue past the junction, count as stuck time.
LONG_RUN = """
import numpy as np
import math
rng = np.random.default_rng(1)
order = rng.permutation(len(points))[:CARS]
blueprints = ["vehicle.tesla.model3", "vehicle.audi.tt", "vehicle.lincoln.mkz_2017", "vehicle.nissan.patrol",
              "vehicle.mercedes.coupe"]
cars = spawn_autopilot([points[int(i)] for i in order], blueprints)
ids = [c.id for c in cars]
half = np.array([[c.bounding_box.extent.x, c.bounding_box.extent.y] for c in cars])
centre = np.array([[c.bounding_box.location.x, c.bounding_box.location.y] for c in cars])
n = len(cars)
pairs_i, pairs_j = np.triu_indices(n, 1)

def corners(xy, yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    f = np.stack([c, s], 1)[:, None, :] * half[:, None, :1]
    r = np.stack([-s, c], 1)[:, None, :] * half[:, None, 1:]
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], float)
    box = xy + centre[:, 0:1] * np.stack([c, s], 1) + centre[:, 1:2] * np.stack([-s, c], 1)
    return box[:, None, :] + signs[None, :, :1] * f + signs[None, :, 1:] * r

def overlapping(a, b):
    hit = np.ones(len(a), bool)
    for poly in (a, b):
        for e in (1, 2):
            axis = poly[:, e] - poly[:, e - 1]
            axis /= np.linalg.norm(axis, axis=1, keepdims=True)
            pa, pb = np.einsum("nkj,nj->nk", a, axis), np.einsum("nkj,nj->nk", b, axis)
            hit &= ~((pa.max(1) < pb.min(1)) | (pb.max(1) < pa.min(1)))
    return hit

def lane_offset(location):
    wp = town.get_waypoint(location, project_to_road=False, lane_type=carla.LaneType.Driving)
    if wp is None:
        return None
    # get_waypoint answers the nearest of CARLA's precomputed lane samples: measure to the lane
    # centre line through it and its neighbours instead
    line = [w.transform.location for w in wp.previous(0.5)[:1] + [wp] + wp.next(0.5)[:1]]
    best = math.inf
    for a, b in zip(line, line[1:]):
        ax, ay, bx, by = a.x, a.y, b.x, b.y
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((location.x - ax) * dx + (location.y - ay) * dy) / max(dx * dx + dy * dy, 1e-9)))
        best = min(best, math.hypot(location.x - ax - t * dx, location.y - ay - t * dy))
    return best

RED = (carla.TrafficLightState.Red, carla.TrafficLightState.Yellow)
collisions, off_lane, offsets, cruise_ratio = 0, 0, [], []
stuck_for = np.zeros(n)
worst_stuck = 0.0
for tick in range(TICKS):
    world.tick()
    snapshot = world.get_snapshot()
    state = [snapshot.find(i) for i in ids]
    xy = np.array([[s.get_transform().location.x, s.get_transform().location.y] for s in state])
    yaw = np.radians([s.get_transform().rotation.yaw for s in state])
    speed = np.array([s.get_velocity().length() for s in state])
    near = np.hypot(*(xy[pairs_i] - xy[pairs_j]).T) < 8.0
    if near.any():
        box = corners(xy, yaw)
        collisions += int(overlapping(box[pairs_i[near]], box[pairs_j[near]]).sum())
    if tick % 10 == 0 and tick >= 40:
        for car, s in zip(cars, state):
            offset = lane_offset(s.get_transform().location)
            if offset is None:
                off_lane += 1
            else:
                offsets.append(offset)
        limits = np.array([c.get_speed_limit() / 3.6 for c in cars])
        cruise_ratio += (speed[speed > 1.0] / limits[speed > 1.0]).tolist()
    stopped = speed < 0.1
    if stopped.any():
        waiting = np.zeros(n, bool)
        for k in np.flatnonzero(stopped):
            waiting[k] = cars[k].is_at_traffic_light() and cars[k].get_traffic_light_state() in RED
        leader = np.full(n, -1)
        for k in np.flatnonzero(stopped & ~waiting):
            rel = xy - xy[k]
            ahead = rel[:, 0] * math.cos(yaw[k]) + rel[:, 1] * math.sin(yaw[k])
            side = -rel[:, 0] * math.sin(yaw[k]) + rel[:, 1] * math.cos(yaw[k])
            same_way = np.cos(yaw - yaw[k]) > math.cos(math.radians(45.0))
            mask = (ahead > 0.5) & (ahead < 15.0) & (np.abs(side) < 2.5 + 0.15 * ahead) & same_way & stopped
            if mask.any():
                leader[k] = int(np.flatnonzero(mask)[np.argmin(ahead[mask])])
        for _ in range(n):
            follows = (leader >= 0) & ~waiting
            update = follows & waiting[np.maximum(leader, 0)]
            if not update.any():
                break
            waiting |= update
        stuck_for = np.where(stopped & ~waiting, stuck_for + 0.05, 0.0)
    else:
        stuck_for[:] = 0.0
    worst_stuck = max(worst_stuck, float(stuck_for.max()))
offsets = np.array(offsets)
emit({"cars": n, "collisions": collisions, "off_lane": off_lane, "samples": len(offsets) + off_lane,
      "offset_mean": float(offsets.mean()), "offset_p95": float(np.percentile(offsets, 95)),
      "cruise_p50": float(np.percentile(cruise_ratio, 50)), "cruise_p95": float(np.percentile(cruise_ratio, 95)),
      "cruise_max": float(np.max(cruise_ratio)), "worst_stuck_s": worst_stuck})
"""


@pytest.fixture(scope="module")
def grid_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("grid"), town="GridCity")
    yield process
    process.stop()


@pytest.mark.parametrize("town", ["Town01", "GridCity"])
def test_five_minutes_of_autopilot_traffic_without_collisions_stuck_cars_or_leaving_the_lanes(
        town: str, server: ServerProcess, grid_city: ServerProcess, tmp_path: Path) -> None:
    target = server if town == "Town01" else grid_city
    code = LONG_RUN.replace("CARS", str(LONG_RUN_CARS)).replace("TICKS", str(LONG_RUN_TICKS))
    result = run_client(target, SYNC_TM, code, timeout=600)
    (tmp_path / f"driving-{town}.json").write_text(json.dumps(result))
    print(town, json.dumps(result))
    assert result["cars"] == LONG_RUN_CARS
    assert result["collisions"] == 0
    assert result["off_lane"] == 0
    assert result["offset_mean"] < 0.02 and result["offset_p95"] < 0.15, result
    assert 0.97 < result["cruise_p95"] <= 1.01, result   # free cars cruise at the limit, never above it
    assert result["worst_stuck_s"] < STUCK_LIMIT_S, result


HANG_RUN = """
cars = spawn_autopilot(points[:CARS])
last = [c.get_location() for c in cars]
travelled = [0.0] * len(cars)
frame = world.tick()
for step in range(TICKS - 1):
    next_frame = world.tick()
    assert next_frame == frame + 1, (frame, next_frame)
    frame = next_frame
    if step % 20 == 0:   # path length, not distance from the start: a car may loop back near it
        here = [c.get_location() for c in cars]
        travelled = [t + h.distance(p) for t, h, p in zip(travelled, here, last)]
        last = here
moved = sum(t > 20.0 for t in travelled)
client.apply_batch_sync([carla.command.DestroyActor(c.id) for c in cars], True)
emit({"ticks": TICKS, "cars": len(cars), "moved": moved})
"""


def test_twenty_synchronous_runs_of_two_thousand_ticks_never_hang(server: ServerProcess) -> None:
    code = HANG_RUN.replace("CARS", str(HANG_RUN_CARS)).replace("TICKS", str(HANG_RUN_TICKS))
    for run in range(HANG_RUNS):
        # the client's own timeout turns a hung tick into an error; the subprocess timeout backs it up
        result = run_client(server, SYNC_TM, code, timeout=HANG_RUN_TIMEOUT_S)
        assert result["ticks"] == HANG_RUN_TICKS and result["cars"] == HANG_RUN_CARS, (run, result)
        assert result["moved"] == HANG_RUN_CARS, (run, result)   # 100 s of driving: every car got somewhere


def test_main_port_names_this_server_as_the_traffic_manager_of_any_port(server: ServerProcess) -> None:
    result = run_client(server, SYNC_TM, """
    second = client.get_trafficmanager(9123)
    car = spawn_autopilot([points[0]])[0]
    car.set_autopilot(False, 8000)
    car.set_autopilot(True, second.get_port())
    for _ in range(60): world.tick()
    emit({"ports": [tm.get_port(), second.get_port()], "speed": car.get_velocity().length()})
    """)
    assert result["ports"] == [8000, 9123]
    assert result["speed"] > 1.0
    log = server.log_path.read_text()
    assert "get_traffic_manager_running [9123]" in log and "add_traffic_manager_running" not in log


FREE_ROAD = """
import numpy as np
def top_speed(cars, ticks):
    best = np.zeros(len(cars))
    for _ in range(ticks):
        world.tick()
        best = np.maximum(best, [c.get_velocity().length() for c in cars])
    return best.tolist()
"""


def test_percentage_speed_difference_scales_the_cruise_speed(server: ServerProcess) -> None:
    result = run_client(server, SYNC_TM, FREE_ROAD, """
    far_apart = [points[i] for i in (0, 120, 240)]
    cars = spawn_autopilot(far_apart)
    tm.vehicle_percentage_speed_difference(cars[0], 0)
    tm.vehicle_percentage_speed_difference(cars[1], 40)    # 40 % slower
    tm.vehicle_percentage_speed_difference(cars[2], -20)   # 20 % faster
    speeds = top_speed(cars, 400)
    emit({"speeds": speeds, "limit": cars[0].get_speed_limit() / 3.6})
    """)
    plain, slower, faster = (speed / result["limit"] for speed in result["speeds"])
    assert plain == pytest.approx(1.0, abs=0.02)
    assert slower == pytest.approx(0.6, abs=0.02)
    assert faster == pytest.approx(1.2, abs=0.02)


RED_EVERYWHERE = """
for light in world.get_actors().filter("traffic.traffic_light"):
    light.set_state(carla.TrafficLightState.Red)
light.freeze(True)   # the client sends freeze_all_traffic_lights
def before_junction(point, within=40.0):
    ahead = town.get_waypoint(point.location).next_until_lane_end(1.0)
    return len(ahead) < within and ahead[-1].next(1.0)[0].is_junction
near_lights = [p for p in points if before_junction(p)]
"""
LIGHTS_BACK_TO_NORMAL = """
light.freeze(False)
world.reset_all_traffic_lights()
"""

QUEUE_AT_RED = RED_EVERYWHERE + """
def spawn_point_behind(ahead, distance):
    here = town.get_waypoint(ahead.location).previous(distance)
    return [p for p in points if here and p.location.distance(here[0].transform.location) < 1.0]
leader_at, follower_at = next((p, behind[0]) for p in near_lights for behind in [spawn_point_behind(p, 12.0)] if behind)
leader, follower = spawn_autopilot([leader_at, follower_at])
tm.distance_to_leading_vehicle(follower, DISTANCE)
for _ in range(600): world.tick()
gap = (leader.get_location().distance(follower.get_location())
       - leader.bounding_box.extent.x - follower.bounding_box.extent.x)
emit({"gap": gap, "speeds": [leader.get_velocity().length(), follower.get_velocity().length()],
      "at_light": leader.is_at_traffic_light(), "state": str(leader.get_traffic_light_state())})
""" + LIGHTS_BACK_TO_NORMAL


@pytest.mark.parametrize("distance", [2.0, 8.0])
def test_distance_to_leading_vehicle_sets_the_gap_in_a_queue(server: ServerProcess, distance: float) -> None:
    code = QUEUE_AT_RED.replace("DISTANCE", str(distance))
    result = run_client(server, SYNC_TM, code)
    assert result["speeds"][0] < 0.05 and result["speeds"][1] < 0.05, result
    assert result["at_light"] and result["state"] == "Red", result
    assert result["gap"] == pytest.approx(distance, abs=0.6), result


def test_ignore_lights_percentage_makes_cars_run_red_lights(server: ServerProcess) -> None:
    result = run_client(server, SYNC_TM, RED_EVERYWHERE, """
    obeying, running = spawn_autopilot([near_lights[0], near_lights[len(near_lights) // 2]])
    tm.ignore_lights_percentage(running, 100)
    through = {"obeying": False, "running": False}
    for _ in range(800):
        world.tick()
        for name, car in (("obeying", obeying), ("running", running)):
            through[name] |= town.get_waypoint(car.get_location()).is_junction
    emit(through)
    """, LIGHTS_BACK_TO_NORMAL)
    assert result == {"obeying": False, "running": True}


def test_forced_lane_change_moves_the_car_to_the_neighbour_lane(grid_city: ServerProcess) -> None:
    result = run_client(grid_city, SYNC_TM, """
    def same_way(w, other):
        return (other is not None and other.lane_type == carla.LaneType.Driving
                and (other.lane_id > 0) == (w.lane_id > 0))
    start = None
    for p in points:
        w = town.get_waypoint(p.location)
        long_enough = len(w.next_until_lane_end(2.0)) * 2.0 > 80.0
        if long_enough and (same_way(w, w.get_left_lane()) or same_way(w, w.get_right_lane())):
            start, left = p, same_way(w, w.get_left_lane())
            break
    car = spawn_autopilot([start])[0]
    tm.auto_lane_change(car, False)
    for _ in range(20): world.tick()
    before = town.get_waypoint(car.get_location()).lane_id
    tm.force_lane_change(car, left)
    lanes = []
    for _ in range(120):
        world.tick()
        lanes.append(town.get_waypoint(car.get_location()).lane_id)
    emit({"before": before, "after": lanes[-1], "left": left})
    """)
    assert result["after"] != result["before"], result
    assert abs(result["after"] - result["before"]) == 1, result


def test_set_path_makes_the_car_drive_through_the_given_points(server: ServerProcess) -> None:
    result = run_client(server, SYNC_TM, """
    car = spawn_autopilot([points[10]])[0]
    here, path = town.get_waypoint(points[10].location), []
    for _ in range(25):   # 250 m, taking the last branch at every fork
        here = here.next(10.0)[-1]
        path.append(here.transform.location)
    tm.set_path(car, path)
    planned = list(dict.fromkeys(town.get_waypoint(p).road_id for p in path if not town.get_waypoint(p).is_junction))
    visited = []
    for _ in range(900):
        world.tick()
        road = town.get_waypoint(car.get_location()).road_id
        if not visited or visited[-1] != road:
            visited.append(road)
    emit({"planned": planned, "visited": visited})
    """)
    visited = iter(result["visited"])
    assert all(road in visited for road in result["planned"]), result   # in order


def test_hybrid_mode_moves_cars_far_from_the_hero_along_their_lanes(server: ServerProcess) -> None:
    result = run_client(server, SYNC_TM, """
    hero_blueprint = library.find("vehicle.audi.tt")
    hero_blueprint.set_attribute("role_name", "hero")
    hero = world.spawn_actor(hero_blueprint, points[0])
    tm.set_hybrid_physics_mode(True)
    tm.set_hybrid_physics_radius(50.0)
    far = [p for p in points if p.location.distance(points[0].location) > 150.0][:10]
    cars = spawn_autopilot(far)
    start = [c.get_location() for c in cars]
    for _ in range(400): world.tick()
    on_lane = [town.get_waypoint(c.get_location(), project_to_road=False, lane_type=carla.LaneType.Driving) is not None
               for c in cars]
    moved = [c.get_location().distance(p) for c, p in zip(cars, start)]
    tm.set_hybrid_physics_mode(False)
    hero.destroy()
    emit({"on_lane": on_lane, "moved": moved})
    """)
    assert all(result["on_lane"]), result
    assert min(result["moved"]) > 30.0, result


def test_seeded_runs_are_reproducible(tmp_path: Path) -> None:
    code = """
    tm.set_random_device_seed(7)
    cars = spawn_autopilot(points[:15])
    for _ in range(600): world.tick()
    emit([[round(c.get_location().x, 4), round(c.get_location().y, 4)] for c in cars])
    """
    runs = []
    for _ in range(2):   # fresh servers: reloading a world under a synchronous TM crashes the 0.9.16 client
        fresh = start_server(tmp_path, town="Town01")
        try:
            runs.append(run_client(fresh, SYNC_TM, code))
        finally:
            fresh.stop()
    assert runs[0] == runs[1]


def test_a_car_driven_by_its_client_still_obeys_apply_control(server: ServerProcess) -> None:
    result = run_client(server, SYNC_TM, """
    spawn_autopilot(points[1:6])
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), points[100])
    car.apply_control(carla.VehicleControl(throttle=0.7, steer=0.0))
    for _ in range(40): world.tick()
    control = car.get_control()
    emit({"speed": car.get_velocity().length(), "throttle": control.throttle})
    """)
    assert result["speed"] > 3.0 and result["throttle"] == pytest.approx(0.7)
