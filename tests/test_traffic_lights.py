"""Traffic lights and stop signs from the towns' OpenDRIVE signals, seen through the official
client: actors at their signals with trigger volumes, light groups taking turns, the RPCs that
set and freeze them, what vehicles report, and autopilot cars obeying them."""
from __future__ import annotations

from typing import Iterator

import pytest

from harness import ServerProcess, run_client, start_server

SYNC = """
import collections, re
client, world, settings = connect_sync(20.0)
town = world.get_map()
points = town.get_spawn_points()
library = world.get_blueprint_library()
destroy_vehicles(client, world)
lights = list(world.get_actors().filter("traffic.traffic_light"))
world.reset_all_traffic_lights()
lights[0].freeze(False)
def before_junction(point, within=40.0):
    ahead = town.get_waypoint(point.location).next_until_lane_end(1.0)
    return len(ahead) < within and ahead[-1].next(1.0)[0].is_junction
"""


@pytest.fixture(scope="module")
def grid_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("grid"), town="GridCity")
    yield process
    process.stop()


def test_town01_has_one_light_actor_per_opendrive_light_signal(server: ServerProcess) -> None:
    result = run_client(server, SYNC, """
    signals = set(re.findall(r'<signal [^>]*id="([0-9]+)"[^>]*type="1000001"', town.to_opendrive()))
    report = {"signals": sorted(signals), "ids": sorted(l.get_opendrive_id() for l in lights), "groups": [],
              "poles": [], "trigger_on_lane": 0, "stop_waypoints": 0, "affected": 0, "boxes": 0}
    for light in lights:
        group = light.get_group_traffic_lights()
        report["groups"].append(sorted(g.id for g in group) if light.id in [g.id for g in group] else None)
        report["poles"].append(sorted(g.get_pole_index() for g in group))
        volume = light.get_transform().transform(light.trigger_volume.location)
        lane = town.get_waypoint(volume, project_to_road=False, lane_type=carla.LaneType.Driving)
        report["trigger_on_lane"] += lane is not None and before_junction(lane.transform, 12.0)
        stops = light.get_stop_waypoints()
        report["stop_waypoints"] += bool(stops) and all(w.lane_type == carla.LaneType.Driving for w in stops)
        report["affected"] += bool(light.get_affected_lane_waypoints())
        report["boxes"] += len(light.get_light_boxes()) == 1
    emit(report)
    """)
    assert len(result["signals"]) == 36 and result["ids"] == result["signals"]
    assert all(group is not None and len(group) == 3 for group in result["groups"])
    assert all(poles == [0, 1, 2] for poles in result["poles"])
    assert result["trigger_on_lane"] == result["stop_waypoints"] == result["affected"] == result["boxes"] == 36


def test_lights_of_a_junction_take_turns_green_yellow_red(server: ServerProcess) -> None:
    result = run_client(server, SYNC, """
    groups = {l.id: tuple(sorted(g.id for g in l.get_group_traffic_lights())) for l in lights}
    history = collections.defaultdict(list)
    worst_lit_per_group = 0
    elapsed_ok = True
    last = {}
    for _ in range(1200):   # one minute: more than one full cycle of a 3-light junction
        world.tick()
        lit = collections.Counter()
        for light in lights:
            state, elapsed = light.get_state(), light.get_elapsed_time()
            history[light.id].append(str(state))
            if state != carla.TrafficLightState.Red:
                lit[groups[light.id]] += 1
            if light.id in last and last[light.id][0] == state and elapsed < last[light.id][1]:
                elapsed_ok = False
            last[light.id] = (state, elapsed)
        worst_lit_per_group = max([worst_lit_per_group] + list(lit.values()))
    def runs(states, name):
        lengths, count = [], 0
        for state in states + ["end"]:
            if state == name:
                count += 1
            elif count:
                lengths.append(count)
                count = 0
        return lengths[1:-1]   # the first and last runs may be cut short by the window
    green = [n for states in history.values() for n in runs(states, "Green")]
    yellow = [n for states in history.values() for n in runs(states, "Yellow")]
    emit({"worst_lit": worst_lit_per_group, "every_light_green": all("Green" in s for s in history.values()),
          "green_ticks": sorted(set(green)), "yellow_ticks": sorted(set(yellow)), "elapsed_ok": elapsed_ok,
          "times": [lights[0].get_green_time(), lights[0].get_yellow_time(), lights[0].get_red_time()]})
    """)
    assert result["worst_lit"] == 1
    assert result["every_light_green"] and result["elapsed_ok"]
    assert result["times"] == [10.0, 3.0, 2.0]
    assert set(result["green_ticks"]) <= {199, 200, 201} and set(result["yellow_ticks"]) <= {59, 60, 61}, result


def test_setting_timing_freezing_and_resetting_lights(server: ServerProcess) -> None:
    result = run_client(server, SYNC, """
    light = lights[5]
    light.set_green_time(4.0)
    light.set_yellow_time(1.5)
    light.set_red_time(3.0)
    world.tick()
    timings = [light.get_green_time(), light.get_yellow_time(), light.get_red_time()]
    for other in light.get_group_traffic_lights():
        other.set_state(carla.TrafficLightState.Red)
    light.set_state(carla.TrafficLightState.Green)
    light.freeze(True)
    for _ in range(400): world.tick()
    frozen = [str(light.get_state()), light.is_frozen(),
              sorted(str(o.get_state()) for o in light.get_group_traffic_lights())]
    light.freeze(False)
    light.reset_group()
    world.tick()
    after_reset = sorted(str(o.get_state()) for o in light.get_group_traffic_lights())
    world.reset_all_traffic_lights()
    world.tick()
    emit({"timings": timings, "frozen": frozen, "after_reset": after_reset,
          "unfrozen": not light.is_frozen()})
    """)
    assert result["timings"] == [4.0, 1.5, 3.0]
    assert result["frozen"] == ["Green", True, ["Green", "Red", "Red"]]
    assert result["after_reset"] == ["Green", "Red", "Red"]
    assert result["unfrozen"]


def test_autopilot_car_stops_at_red_reports_the_light_and_goes_on_green(server: ServerProcess) -> None:
    result = run_client(server, SYNC, """
    for light in lights:
        light.set_state(carla.TrafficLightState.Red)
    lights[0].freeze(True)
    tm = client.get_trafficmanager(8000)
    tm.set_synchronous_mode(True)
    start = next(p for p in points if before_junction(p))
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), start)
    car.set_autopilot(True, 8000)
    for _ in range(400): world.tick()
    waiting = {"speed": car.get_velocity().length(), "at_light": car.is_at_traffic_light(),
               "state": str(car.get_traffic_light_state()), "limit": car.get_speed_limit(),
               "in_junction": town.get_waypoint(car.get_location()).is_junction}
    light = car.get_traffic_light()
    light.set_state(carla.TrafficLightState.Green)
    after = None
    for _ in range(300):
        world.tick()
        if after is None and town.get_waypoint(car.get_location()).is_junction:
            after = {"at_light": car.is_at_traffic_light(), "state": str(car.get_traffic_light_state())}
    emit({"waiting": waiting, "light_is_a_light": light.type_id, "crossed": after is not None, "after": after})
    lights[0].freeze(False)
    world.reset_all_traffic_lights()
    """)
    waiting = result["waiting"]
    assert waiting["speed"] < 0.05 and not waiting["in_junction"], waiting
    assert waiting["at_light"] and waiting["state"] == "Red", waiting
    assert waiting["limit"] == pytest.approx(40.2336, abs=1e-3)   # Town01's roads: 25 mph
    assert result["light_is_a_light"] == "traffic.traffic_light"
    assert result["crossed"]
    assert result["after"] == {"at_light": False, "state": "Green"}


def test_grid_city_has_lights_at_crossings_and_stop_signs_at_t_junctions(grid_city: ServerProcess) -> None:
    result = run_client(grid_city, SYNC, """
    stops = list(world.get_actors().filter("traffic.stop"))
    group_sizes = sorted({len(l.get_group_traffic_lights()) for l in lights})
    on_lane = 0
    for sign in stops:
        volume = sign.get_transform().transform(sign.trigger_volume.location)
        lane = town.get_waypoint(volume)   # the box spans the governed lanes: its centre is on one or between two
        on_lane += lane.lane_type == carla.LaneType.Driving and lane.transform.location.distance(volume) < 2.5
    emit({"lights": len(lights), "group_sizes": group_sizes, "stops": len(stops), "stops_on_lane": on_lane})
    """)
    assert result["lights"] == 36 and result["group_sizes"] == [4]
    assert result["stops"] == 12 and result["stops_on_lane"] == 12


def test_autopilot_car_comes_to_a_full_stop_at_a_stop_sign(grid_city: ServerProcess) -> None:
    result = run_client(grid_city, SYNC, """
    tm = client.get_trafficmanager(8000)
    tm.set_synchronous_mode(True)
    signed = set()
    for sign in world.get_actors().filter("traffic.stop"):
        volume = sign.get_transform().transform(sign.trigger_volume.location)
        lane = town.get_waypoint(volume)
        signed.add((lane.road_id, lane.lane_id))
    start = next(p for p in points if before_junction(p, 60.0)
                 and (town.get_waypoint(p.location).road_id, town.get_waypoint(p.location).lane_id) in signed)
    car = world.spawn_actor(library.find("vehicle.audi.tt"), start)
    car.set_autopilot(True, 8000)
    slowest_before, crossed, limits = 99.0, False, set()
    for _ in range(600):
        world.tick()
        here = town.get_waypoint(car.get_location())
        limits.add(round(car.get_speed_limit()))
        if here.is_junction:
            crossed = True
        elif not crossed and car.get_velocity().length() < slowest_before and len(here.next_until_lane_end(1.0)) < 8:
            slowest_before = car.get_velocity().length()
    emit({"slowest_before": slowest_before, "crossed": crossed, "limits": sorted(limits)})
    """)
    assert result["crossed"]
    assert result["slowest_before"] < 0.1
    assert set(result["limits"]) <= {30, 50}
