"""Walkers driven by the official client's walker AI (controller.ai.walker) on the served
navigation mesh: random locations, walks to targets, crosswalks, cross factor, seed, stop."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import shapely

from harness import ServerProcess, run_client, start_server
from navmesh_file import PolygonGraph, parse
from rllib_integration.embedded.maps import navmesh
from rllib_integration.embedded.maps.generated import Crosswalk, Lane, LaneProfile, OpenDriveMap, Pose, Segment
from rllib_integration.embedded.maps.pedestrian_areas import pedestrian_areas
from rllib_integration.embedded.maps.signals import TRAFFIC_LIGHT_BLUEPRINT, signals_for
from rllib_integration.embedded.maps.town import load_town
from rllib_integration.embedded.maps.towns import find_town

WALKERS = 20
SPEED_MPS = 1.4
DT_S = 0.1
ARRIVED_M = 1.5            # the client's walker AI counts a point reached within sqrt(2) m
MARGIN_S = 20.0            # on top of twice the walk's length at the set speed
CROSSWALK_TOLERANCE_M = 0.5
HALF_HEIGHTS_M = (0.55, 0.93)  # child and adult walker capsules: a walker's origin is its centre

CLIENT_SETUP = f"""
import math
client, world, settings = connect_sync(20.0, {DT_S})
town = world.get_map()
library = world.get_blueprint_library()
def lane_kind(location):
    if town.get_waypoint(location, project_to_road=False, lane_type=carla.LaneType.Sidewalk) is not None:
        return "sidewalk"
    if town.get_waypoint(location, project_to_road=False, lane_type=carla.LaneType.Driving) is not None:
        return "driving"
    return "other"
def spawn_walker(location, index=0):
    walker = world.try_spawn_actor(library.filter("walker.pedestrian.*")[index % 10],
                                   carla.Transform(location + carla.Location(z=1.0)))
    if walker is None:
        return None, None
    world.tick()
    controller = world.spawn_actor(library.find("controller.ai.walker"), carla.Transform(), attach_to=walker)
    world.tick()
    return walker, controller
"""


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fresh server mesh cache and client file cache, so every run downloads the mesh."""
    path = tmp_path_factory.mktemp("caches")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(path / "server"))
        patch.setenv("CARLA_CACHE_DIR", str(path / "client"))
        yield path


@pytest.fixture(scope="module", params=["Town01", "GridCity"])
def town_server(request: pytest.FixtureRequest, caches: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("walkers"), town=request.param)
    server.town = request.param
    yield server
    server.stop()


def _assert_rpc_log_clean(server: ServerProcess) -> None:
    """Every call the client made was well formed and answered."""
    failed = [line for line in server.log_path.read_text().splitlines() if not line.endswith("-> ok")]
    assert not failed, "\n".join(failed[:10])


def test_random_navigation_locations_lie_on_sidewalks(town_server: ServerProcess):
    result = run_client(town_server, CLIENT_SETUP, """
    points = [world.get_random_location_from_navigation() for _ in range(150)]
    emit([None if p is None else [p.x, p.y, p.z, lane_kind(p),
          town.get_waypoint(p, lane_type=carla.LaneType.Sidewalk).transform.location.distance(p)] for p in points])
    """)
    assert all(point is not None for point in result)
    kinds = [point[3] for point in result]
    assert "driving" not in kinds
    assert kinds.count("sidewalk") >= 0.9 * len(kinds)          # the rest: corners joined by the mesh
    assert max(point[4] for point in result) < 6.0                 # never far from a sidewalk lane
    assert all(abs(point[2]) < 0.5 for point in result)            # on the ground of these flat towns
    _assert_rpc_log_clean(town_server)


REACH_TARGETS = """
world.set_pedestrians_seed(11)
world.set_pedestrians_cross_factor(0.0)
# The walker AI waits at a signalised crosswalk while the light is green or yellow for the cars
# (test_ai_walker_waits_at_a_signalised_crosswalk_while_cars_have_green). After such a wait the
# client sometimes replans a walker to a new random target (it re-routes walkers it finds moved
# under 0.5 m in 4 s), so with cycling lights a few of 20 never reach their first target. With
# every light held red, arrival times measure the navigation mesh alone.
for light in world.get_actors().filter("traffic.traffic_light"):
    light.set_state(carla.TrafficLightState.Red)
world.get_actors().filter("traffic.traffic_light")[0].freeze(True)   # freezes every light
"""


def test_ai_walkers_reach_random_targets_keeping_off_the_road_except_at_crosswalks(town_server: ServerProcess):
    result = run_client(town_server, CLIENT_SETUP, REACH_TARGETS, f"""
    pairs = []
    while len(pairs) < {WALKERS}:
        pair = spawn_walker(world.get_random_location_from_navigation(), len(pairs))
        if pair[0] is not None:
            pairs.append(pair)
    targets = []
    for walker, controller in pairs:
        controller.start()
        targets.append(world.get_random_location_from_navigation())
        controller.go_to_location(targets[-1])
        controller.set_max_speed({SPEED_MPS})
    starts = [walker.get_location() for walker, _ in pairs]
    arrived = [None] * len(pairs)
    samples = []
    for step in range(1, 12000):
        world.tick()
        for i, (walker, _) in enumerate(pairs):
            here = walker.get_location()
            if arrived[i] is None and math.hypot(here.x - targets[i].x, here.y - targets[i].y) < {ARRIVED_M}:
                arrived[i] = step * {DT_S}
            if step % 10 == 0:
                samples.append([here.x, here.y, here.z, lane_kind(here)])
        if None not in arrived:
            break
    for walker, controller in pairs:
        controller.stop()
    destroyed = [controller.destroy() and walker.destroy() for walker, controller in pairs]
    world.tick()
    emit({{"starts": [[s.x, s.y] for s in starts], "targets": [[t.x, t.y] for t in targets], "arrived": arrived,
          "samples": samples, "destroyed": destroyed,
          "left": len(world.get_actors().filter("walker.*")) + len(world.get_actors().filter("controller.*"))}})
    """, timeout=300)
    graph = PolygonGraph(parse(navmesh.navigation_file(load_town(find_town(town_server.town))).data)[1])
    for start, target, arrived in zip(result["starts"], result["targets"], result["arrived"]):
        bound = 2 * graph.walk_length(start, target) / SPEED_MPS + MARGIN_S
        assert arrived is not None and arrived <= bound, f"walker from {start} to {target}: {arrived} s > {bound} s"
    samples = np.array([sample[:3] for sample in result["samples"]])
    kinds = np.array([sample[3] for sample in result["samples"]])
    town = load_town(find_town(town_server.town))
    zones = shapely.union_all(pedestrian_areas(town.carla_map, town.xodr).crosswalk_zones)
    on_road = samples[kinds == "driving"]
    off_crosswalks = shapely.distance(zones, shapely.points(on_road[:, :2])) > CROSSWALK_TOLERANCE_M
    assert not off_crosswalks.any(), f"walkers on the road outside crosswalks at {on_road[off_crosswalks][:5]}"
    assert len(on_road) > 0, "some walks cross a road at a crosswalk"
    assert (kinds == "sidewalk").mean() > 0.8
    assert ((samples[:, 2] > HALF_HEIGHTS_M[0] - 0.1) & (samples[:, 2] < HALF_HEIGHTS_M[1] + 0.1)).all()
    assert all(result["destroyed"]) and result["left"] == 0
    _assert_rpc_log_clean(town_server)


def _signalised_crosswalk(town_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A walk across the crosswalk nearest a traffic light: from 2.5 m before one end to 0.5 m
    past the other (still on the mesh), along its long axis."""
    town = load_town(find_town(town_name))
    lights = np.array([spec.location[:2] for spec in signals_for(town) if spec.blueprint == TRAFFIC_LIGHT_BLUEPRINT])
    zone = min(pedestrian_areas(town.carla_map, town.xodr).crosswalk_zones,
               key=lambda zone: np.hypot(*(lights - np.array(zone.centroid.coords[0])).T).min())
    corners = np.array(zone.minimum_rotated_rectangle.exterior.coords)[:4]
    if np.hypot(*(corners[1] - corners[0])) > np.hypot(*(corners[2] - corners[1])):
        corners = np.roll(corners, 1, axis=0)
    end, other_end = (corners[0] + corners[1]) / 2, (corners[2] + corners[3]) / 2   # mid-points of the short sides
    axis = (other_end - end) / np.hypot(*(other_end - end))
    return end - 2.5 * axis, other_end + 0.5 * axis


def test_ai_walker_waits_at_a_signalised_crosswalk_while_cars_have_green(town_server: ServerProcess):
    """The client AI asks the light nearest the crosswalk (its stop waypoints come from our
    trigger volumes) and stays off the road while it is green, then crosses on red."""
    start, target = _signalised_crosswalk(town_server.town)
    green_s, red_s = 20.0, 30.0
    result = run_client(town_server, CLIENT_SETUP, f"""
    lights = world.get_actors().filter("traffic.traffic_light")
    for light in lights:
        light.set_state(carla.TrafficLightState.Green)
    lights[0].freeze(True)   # freezes every light
    walker, controller = spawn_walker(carla.Location({start[0]}, {start[1]}, 0.5))
    target = carla.Location({target[0]}, {target[1]}, 0.0)
    controller.start()
    controller.go_to_location(target)
    controller.set_max_speed({SPEED_MPS})
    def walk(seconds):
        trail = []
        for _ in range(round(seconds / {DT_S})):
            world.tick()
            here = walker.get_location()
            trail.append([here.x, here.y, walker.get_velocity().length(), lane_kind(here)])
            if here.distance(carla.Location(target.x, target.y, here.z)) < {ARRIVED_M}:
                break
        return trail
    green = walk({green_s})
    for light in lights:
        light.set_state(carla.TrafficLightState.Red)
    red = walk({red_s})
    emit({{"green": green, "red": red, "destroyed": [controller.destroy(), walker.destroy()]}})
    """, timeout=300)
    green, red = result["green"], result["red"]
    assert len(green) == round(green_s / DT_S), "the walker crossed on green"
    assert all(sample[3] != "driving" for sample in green), "the walker stepped onto the road on green"
    waiting = green[-round(green_s / 2 / DT_S):]
    assert max(sample[2] for sample in waiting) == 0.0, "the walker did not stand still at the kerb"
    assert np.hypot(*(np.array(waiting[-1][:2]) - start)) > 1.0, "the walker never walked up to the crosswalk"
    assert any(sample[3] == "driving" for sample in red), "the walker did not cross the road"
    crossing = np.hypot(*(target - start))
    assert np.hypot(*(np.array(red[-1][:2]) - target)) < ARRIVED_M, "the walker did not reach the far side"
    assert len(red) * DT_S < 2 * crossing / SPEED_MPS + 2.0
    assert result["destroyed"] == [True, True]
    _assert_rpc_log_clean(town_server)


@pytest.fixture(scope="module")
def town01_server(caches: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("walkers-town01"), town="Town01")
    yield server
    server.stop()


def test_pedestrians_seed_makes_random_locations_reproducible(town01_server: ServerProcess):
    result = run_client(town01_server, CLIENT_SETUP, """
    def draw(seed):
        world.set_pedestrians_seed(seed)
        return [[round(p.x, 4), round(p.y, 4)] for p in (world.get_random_location_from_navigation() for _ in range(8))]
    emit([draw(3), draw(3), draw(4)])
    """)
    first, again, other = result
    assert first == again and first != other
    _assert_rpc_log_clean(town01_server)


def test_stop_halts_a_walker_and_clients_keep_the_mesh_in_their_cache(town01_server: ServerProcess, caches: Path):
    result = run_client(town01_server, CLIENT_SETUP, """
    world.set_pedestrians_seed(5)
    walker, controller = spawn_walker(world.get_random_location_from_navigation())
    controller.start()
    controller.go_to_location(world.get_random_location_from_navigation())
    controller.set_max_speed(1.4)
    start = walker.get_location()
    for _ in range(40):
        world.tick()
    moved = walker.get_location().distance(start)
    controller.stop()
    world.tick()
    stopped = walker.get_location()
    for _ in range(30):
        world.tick()
    emit({"moved": moved, "drift": walker.get_location().distance(stopped),
          "destroyed": [controller.destroy(), walker.destroy()]})
    """)
    assert result["moved"] > 0.8 * 40 * DT_S * SPEED_MPS
    assert result["drift"] < 0.01
    assert result["destroyed"] == [True, True]
    log = town01_server.log_path.read_text()
    nav = navmesh.navigation_file(load_town(find_town("Town01")))
    assert log.count("request_file") <= 1      # once per client cache: later clients read their copy
    assert (caches / "client" / "0.9.16" / nav.name).read_bytes() == nav.data
    _assert_rpc_log_clean(town01_server)


def _crossing_town() -> str:
    """A straight street whose crosswalk stops 1.5 m short of each kerb (a shoulder between):
    only road pieces join it to the sidewalks."""
    side = (Lane("driving", 3.5, "solid"), Lane("shoulder", 1.5), Lane("sidewalk", 3.0))
    town = OpenDriveMap("CrossingStreet", latitude=0.0, longitude=0.0)
    road = town.add_road("Street", Pose(0.0, 0.0, 0.0), [Segment(120.0)], LaneProfile(side, side, "broken"), 30.0)
    road.crosswalks.append(Crosswalk(60.0, 0.0, 7.0, 3.0))
    return town.to_xodr()


def test_cross_factor_decides_whether_walkers_may_use_road_to_reach_a_crosswalk(
        caches: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tmp_path_factory.mktemp("crossing"), town="Town01")
    try:
        result = run_client(server, f"XODR = {_crossing_town()!r}\n", """
    client = connect(20.0)
    client.generate_opendrive_world(XODR, carla.OpendriveGenerationParameters())
    """, CLIENT_SETUP, """
    runs = {}
    for factor, s in ((0.0, 20.0), (1.0, 25.0)):
        world.set_pedestrians_cross_factor(factor)
        here = town.get_waypoint_xodr(0, 3, s).transform.location
        there = town.get_waypoint_xodr(0, -3, s).transform.location
        walker, controller = spawn_walker(here)
        controller.start()
        controller.go_to_location(there)
        controller.set_max_speed(1.4)
        runs[factor] = (walker, there, [])
    for _ in range(1500):
        world.tick()
        for walker, there, trail in runs.values():
            location = walker.get_location()
            trail.append([location.x, location.y, location.distance(there)])
    emit({str(factor): {"target_y": there.y, "trail": trail} for factor, (_, there, trail) in runs.items()})
    """, timeout=300)
        keeps_off, crosses = (np.array(result[key]["trail"]) for key in ("0.0", "1.0"))
        assert np.sign(keeps_off[:, 1]).min() == np.sign(keeps_off[:, 1]).max() != np.sign(result["0.0"]["target_y"])
        assert keeps_off[:, 2].min() > 8.0
        assert crosses[:, 2].min() < ARRIVED_M
        _assert_rpc_log_clean(server)
    finally:
        server.stop()
