"""Spawn points of every shared CARLA town and of the generated towns, and seeded determinism.

Spawn points are what training code spawns its cars on, so each one must sit on a driving
lane centre, face along the lane, stay out of junctions and leave room for a car on every
other one: CARLA refuses a spawn whose box overlaps another actor's.
"""
from __future__ import annotations

import numpy as np
import pytest

from harness import run_client, start_server

TOWNS = ("Town01", "Town02", "Town04", "Town06", "GridCity", "HighwayLoop")
MIN_SPAWN_POINTS = {"Town01": 100, "Town02": 50, "Town04": 300, "Town06": 300, "GridCity": 100, "HighwayLoop": 100}
MAX_LATERAL_OFFSET_M = 0.3
MAX_HEADING_ERROR_DEG = 5.0
CAR_FOOTPRINT_M = (4.9, 2.1)         # length x width of a large car's box
SAME_LEVEL_M = 3.0                   # boxes further apart than this in z are on different levels (bridges)
RANDOM_SPAWNS = 30

SPAWN_POINT_PROBE = """
import random
client = connect(30.0)
world = client.get_world()
town = world.get_map()
points = town.get_spawn_points()
rows = []
for p in points:
    w = town.get_waypoint(p.location, project_to_road=False, lane_type=carla.LaneType.Driving)
    if w is None:
        rows.append([p.location.x, p.location.y, p.location.z, p.rotation.yaw, None, None, None, None, None])
        continue
    c = w.transform.location
    right = w.transform.get_right_vector()
    lateral = (p.location.x - c.x) * right.x + (p.location.y - c.y) * right.y
    forward = p.get_forward_vector()
    ends = [town.get_waypoint(p.location + sign * HALF_LENGTH * forward, project_to_road=False,
                              lane_type=carla.LaneType.Driving) for sign in (1.0, -1.0)]
    rows.append([p.location.x, p.location.y, p.location.z, p.rotation.yaw,
                 lateral, w.transform.rotation.yaw, w.is_junction, str(w.lane_type),
                 any(e is not None and e.is_junction for e in ends)])

settings = synchronous(world)
cars = [bp for bp in world.get_blueprint_library().filter("vehicle.*")
        if bp.get_attribute("base_type").as_str() == "car"]
rng = random.Random(7)
chosen = rng.sample(range(len(points)), min(RANDOM_SPAWNS, len(points)))
responses = client.apply_batch_sync(
    [carla.command.SpawnActor(rng.choice(cars), points[i]) for i in chosen], True)
spawned = [r.actor_id for r in responses if not r.error]
errors = [r.error for r in responses if r.error]
for _ in range(5):
    world.tick()
alive = len(world.get_actors(spawned))
client.apply_batch_sync([carla.command.DestroyActor(i) for i in spawned], True)
emit({"name": town.name, "rows": rows, "spawned": len(spawned), "errors": errors, "alive": alive,
      "chosen": len(chosen)})
"""


def overlapping_pairs(points: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of oriented CAR_FOOTPRINT_M boxes (x, y, z, yaw rows) that overlap on the same level."""
    half = np.array(CAR_FOOTPRINT_M) / 2.0
    yaw = np.radians(points[:, 3])
    axes = np.stack([np.stack([np.cos(yaw), np.sin(yaw)], 1), np.stack([-np.sin(yaw), np.cos(yaw)], 1)], 1)
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], float) * half
    corners = points[:, None, :2] + np.einsum("kj,njd->nkd", signs, axes)      # (n, 4, 2)
    reach = 2.0 * float(np.hypot(*half))
    i, j = np.triu_indices(len(points), 1)
    near = (np.hypot(*(points[i, :2] - points[j, :2]).T) < reach) & (np.abs(points[i, 2] - points[j, 2]) < SAME_LEVEL_M)
    i, j = i[near], j[near]
    overlap = np.ones(len(i), bool)
    for axis in np.concatenate([axes[i], axes[j]], 1).transpose(1, 0, 2):     # 4 separating axes per pair
        a = np.einsum("nkd,nd->nk", corners[i], axis)
        b = np.einsum("nkd,nd->nk", corners[j], axis)
        overlap &= ~((a.max(1) < b.min(1)) | (b.max(1) < a.min(1)))
    return list(zip(i[overlap].tolist(), j[overlap].tolist()))


def test_overlap_check_itself() -> None:
    """The test's own geometry: touching-but-apart, crossing and rotated boxes."""
    apart = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [0.0, 2.2, 0.0, 0.0]])
    assert overlapping_pairs(apart) == []
    crossing = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 90.0], [4.0, 1.0, 0.0, 30.0], [0.0, 0.0, 8.0, 0.0]])
    assert overlapping_pairs(crossing) == [(0, 1), (0, 2)]


@pytest.mark.parametrize("town", TOWNS)
def test_spawn_points_are_on_driving_lanes_apart_and_spawnable(town: str, tmp_path) -> None:
    server = start_server(tmp_path, town=town)
    try:
        result = run_client(server, f"RANDOM_SPAWNS, HALF_LENGTH = {RANDOM_SPAWNS}, {CAR_FOOTPRINT_M[0] / 2}\n",
                            SPAWN_POINT_PROBE)
    finally:
        server.stop()
    assert result["name"].endswith(town)
    rows = result["rows"]
    assert len(rows) > MIN_SPAWN_POINTS[town]
    off_lane = [r[:4] for r in rows if r[4] is None]
    assert off_lane == [], f"{len(off_lane)} spawn points not on a driving lane, e.g. {off_lane[:3]}"
    lateral = np.array([abs(r[4]) for r in rows])
    assert lateral.max() <= MAX_LATERAL_OFFSET_M, rows[int(lateral.argmax())]
    heading_error = np.array([abs((r[3] - r[5] + 180.0) % 360.0 - 180.0) for r in rows])
    assert heading_error.max() <= MAX_HEADING_ERROR_DEG, rows[int(heading_error.argmax())]
    in_junction = [r[:4] for r in rows if r[6]]
    assert in_junction == [], f"{len(in_junction)} spawn points inside junctions, e.g. {in_junction[:3]}"
    reaching = [r[:4] for r in rows if r[8]]
    assert reaching == [], f"{len(reaching)} spawn points whose car reaches into a junction, e.g. {reaching[:3]}"
    assert {r[7] for r in rows} == {"Driving"}
    points = np.array([r[:4] for r in rows], float)
    pairs = overlapping_pairs(points)
    assert pairs == [], f"{len(pairs)} overlapping spawn point pairs, e.g. {[(rows[i][:4], rows[j][:4]) for i, j in pairs[:2]]}"
    assert result["errors"] == [] and result["spawned"] == result["chosen"] == RANDOM_SPAWNS
    assert result["alive"] == RANDOM_SPAWNS


DETERMINISM_SCRIPT = """
client, world, settings = connect_sync(30.0)
first_frame = world.tick()
library = world.get_blueprint_library()
points = world.get_map().get_spawn_points()
kinds = ["vehicle.tesla.model3", "vehicle.lincoln.mkz_2017", "vehicle.audi.tt", "vehicle.mini.cooper_s",
         "vehicle.carlamotors.carlacola", "vehicle.yamaha.yzf"]
cars = [world.spawn_actor(library.find(kind), points[3 * i]) for i, kind in enumerate(kinds)]
blocked = world.try_spawn_actor(library.find("vehicle.audi.tt"), points[0])   # occupied: refused
batch = client.apply_batch_sync([carla.command.SpawnActor(library.find("vehicle.tesla.model3"), points[40 + i])
                                 for i in range(4)], True)
cars += [world.get_actor(r.actor_id) for r in batch if not r.error]
for step in range(240):
    for n, car in enumerate(cars):
        phase = (step // 30 + n) % 4
        control = [carla.VehicleControl(throttle=1.0),
                   carla.VehicleControl(throttle=0.6, steer=0.4 - 0.1 * n),
                   carla.VehicleControl(throttle=0.3, steer=-0.5, brake=0.1 * (n % 2)),
                   carla.VehicleControl(brake=0.7, hand_brake=n % 3 == 0)][phase]
        if step % 60 == 59 and n == 0:
            car.set_transform(points[60])
        car.apply_control(control)
    if step == 120:
        cars[-1].destroy()
        cars.pop()
        cars.append(world.spawn_actor(library.find("vehicle.nissan.patrol"), points[80]))
    if step % 40 == 0:
        client.apply_batch_sync([carla.command.ApplyVehicleControl(c.id, carla.VehicleControl(throttle=0.8, steer=0.2))
                                 for c in cars[::2]], False)
    world.tick()
poses = {}
for actor in world.get_actors().filter("vehicle.*"):
    t, v = actor.get_transform(), actor.get_velocity()
    poses[str(actor.id)] = [t.location.x, t.location.y, t.location.z, t.rotation.pitch, t.rotation.yaw,
                            t.rotation.roll, v.x, v.y, v.z]
emit({"blocked": blocked is None, "poses": poses, "ticks": world.get_snapshot().frame - first_frame})
"""


def test_same_seed_same_inputs_give_bit_identical_transforms(tmp_path) -> None:
    results = []
    for run in range(2):
        run_dir = tmp_path / f"run{run}"
        run_dir.mkdir()
        server = start_server(run_dir, "--seed=1234", town="Town01")
        try:
            results.append(run_client(server, DETERMINISM_SCRIPT))
        finally:
            server.stop()
    first, second = results
    assert first["blocked"] is True
    assert len(first["poses"]) == 10
    moved = [p for p in first["poses"].values() if abs(p[6]) + abs(p[7]) > 0.0]
    assert moved, "no car moved: the comparison would prove nothing"
    assert first == second   # floats compared exactly: JSON round-trips Python floats bit for bit
