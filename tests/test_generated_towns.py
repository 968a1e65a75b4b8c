"""Generated towns must be maps CARLA's own OpenDRIVE parser accepts and can drive on.

CARLA's client library can abort the whole process on malformed OpenDRIVE, so every
check that touches ``carla.Map`` runs in a subprocess that reports plain JSON.
"""
from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the tests run from a checkout, without installing the package
    sys.path.insert(0, str(ROOT))

from rllib_integration.embedded.maps.generated import (  # noqa: E402
    GENERATED_TOWN_NAMES, GENERATED_TOWNS, generate_town)

# Runs in a fresh interpreter: parse the town and report what the tests need as JSON.
PROBE = r"""
import json, math, sys
import carla
from rllib_integration.embedded.maps.generated import generate_town

name = sys.argv[1]
town = carla.Map(name, generate_town(name))
waypoints = town.generate_waypoints(2.0)
key = lambda w: [w.road_id, w.section_id, w.lane_id]

def same_direction_driving(w, other):
    return other is not None and other.lane_type == carla.LaneType.Driving and (other.lane_id > 0) == (w.lane_id > 0)

def lane_changes(w):
    # topology has no lane-change edges; add them where markings allow, as CARLA's route planner does
    allowed = []
    if w.lane_change in (carla.LaneChange.Right, carla.LaneChange.Both):
        allowed.append(w.get_right_lane())
    if w.lane_change in (carla.LaneChange.Left, carla.LaneChange.Both):
        allowed.append(w.get_left_lane())
    return [[key(w), key(other)] for other in allowed if same_direction_driving(w, other)]

def outer_lane_type(w):
    lane = w.get_right_lane()
    while lane is not None and lane.get_right_lane() is not None:
        lane = lane.get_right_lane()
    return str(lane.lane_type) if lane is not None else None

report = {
    "waypoints": len(waypoints),
    "dead_ends": [key(w) for w in waypoints if not w.next(5.0) or not w.previous(5.0)],
    # distance from where a lane ends to where its successor starts
    "max_gap": max(a.next_until_lane_end(0.25)[-1].transform.location.distance(b.transform.location)
                   for a, b in town.get_topology()),
    "edges": [[key(a), key(b)] for a, b in town.get_topology()]
             + [edge for a, _ in town.get_topology() for edge in lane_changes(a)],
    "lanes": {}, "outer_lanes": {}, "marks": {}, "junctions": {},
    "z": [min(w.transform.location.z for w in waypoints), max(w.transform.location.z for w in waypoints)],
}
for w in waypoints:
    if w.is_junction:
        continue
    road = str(w.road_id)
    report["lanes"].setdefault(road, set()).add(w.lane_id)
    report["outer_lanes"].setdefault(road, {})[str(w.lane_id)] = outer_lane_type(w)
    report["marks"].setdefault(road, {})[str(w.lane_id)] = [str(w.left_lane_marking.type),
                                                            str(w.right_lane_marking.type)]
report["lanes"] = {road: sorted(ids) for road, ids in report["lanes"].items()}

for junction in {w.get_junction().id: w.get_junction() for w in waypoints if w.is_junction}.values():
    movements = []
    for start, end in junction.get_waypoints(carla.LaneType.Driving):
        before, after = start.previous(0.5)[0], end.next(0.5)[0]
        turn = (end.transform.rotation.yaw - start.transform.rotation.yaw + 180.0) % 360.0 - 180.0
        movements.append({
            "from_road": before.road_id, "to_road": after.road_id, "turn": round(turn),
            # CARLA's yaw grows clockwise seen from above: +90 is a right turn
            "from_rightmost": not same_direction_driving(before, before.get_right_lane()),
            "from_leftmost": not same_direction_driving(before, before.get_left_lane()),
            "to_rightmost": not same_direction_driving(after, after.get_right_lane()),
            "to_leftmost": not same_direction_driving(after, after.get_left_lane()),
        })
    report["junctions"][str(junction.id)] = movements

geo = {}
for label, location in [("origin", (0, 0, 0)), ("east", (1000, 0, 0)), ("south", (0, 1000, 0))]:
    g = town.transform_to_geolocation(carla.Location(*location))
    geo[label] = [g.latitude, g.longitude]
report["geo"] = geo

if name == "HighwayLoop":
    start = [w for w in waypoints if w.lane_id == -3 and not w.is_junction][0]
    here, travelled, closest, zs = start, 0.0, math.inf, []
    while travelled < 4000.0:
        here = here.next(5.0)[0]
        travelled += 5.0
        zs.append(here.transform.location.z)
        if travelled > 1000.0:
            distance = here.transform.location.distance(start.transform.location)
            if distance < closest:
                closest, closest_at = distance, travelled
    report["loop"] = {"closest": closest, "at": closest_at, "z_range": max(zs) - min(zs)}
print(json.dumps(report))
"""


@functools.cache
def probe(name: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, name], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"CARLA could not use {name}: rc={result.returncode}\n{result.stderr[-2000:]}"
    return json.loads(result.stdout)


@functools.cache
def raw_roads(name: str) -> dict[int, ElementTree.Element]:
    root = ElementTree.fromstring(generate_town(name))
    return {int(road.get("id")): road for road in root.iter("road")}


def road_kind(name: str, road_id: int) -> str:
    return raw_roads(name)[road_id].get("name").split()[0]


def strongly_connected(edges: list[list[list[int]]]) -> tuple[bool, int]:
    forward: dict[tuple, set] = {}
    backward: dict[tuple, set] = {}
    for a, b in edges:
        a, b = tuple(a), tuple(b)
        forward.setdefault(a, set()).add(b)
        backward.setdefault(b, set()).add(a)
        forward.setdefault(b, set())
        backward.setdefault(a, set())

    def reach(graph: dict[tuple, set], start: tuple) -> set:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    start = min(forward)
    return len(reach(forward, start)) == len(forward) == len(reach(backward, start)), len(forward)


towns = pytest.mark.parametrize("name", GENERATED_TOWN_NAMES)


def test_required_towns_are_registered() -> None:
    assert {"GridCity", "HighwayLoop"} <= set(GENERATED_TOWNS)
    with pytest.raises(KeyError, match="GridCity"):
        generate_town("NoSuchTown")


@towns
def test_generation_is_deterministic(name: str) -> None:
    assert generate_town(name) == generate_town(name)


@towns
def test_driving_lanes_have_no_dead_ends(name: str) -> None:
    report = probe(name)
    assert report["waypoints"] > 1000
    assert report["dead_ends"] == []
    assert report["max_gap"] < 0.2, "a lane does not start where its predecessor ends"


@towns
def test_road_network_is_strongly_connected(name: str) -> None:
    """Every lane reaches every other by following lanes, junctions and allowed lane changes."""
    connected, lanes = strongly_connected(probe(name)["edges"])
    assert lanes > 20
    assert connected, "some lane cannot reach (or be reached from) every other lane"


@towns
def test_lanes_per_direction(name: str) -> None:
    expected = {"Avenue": 2, "Street": 1, "Highway": 3, "Ramp": 1, "Local": 1}
    for road, lane_ids in probe(name)["lanes"].items():
        kind = road_kind(name, int(road))
        forward = [lane for lane in lane_ids if lane < 0]
        backward = [lane for lane in lane_ids if lane > 0]
        assert len(forward) == expected[kind], (road, kind, lane_ids)
        assert len(backward) == (0 if kind == "Ramp" else expected[kind]), (road, kind, lane_ids)


@towns
def test_speed_limits_are_declared_per_road(name: str) -> None:
    limits = {"Avenue": 50.0, "Street": 30.0, "Highway": 110.0, "Ramp": 70.0, "Local": 50.0}
    for road in raw_roads(name).values():
        speed = road.find("type/speed")
        assert speed is not None and speed.get("unit") == "km/h", road.get("name")
        kind = road.get("name").split()[0]
        if road.get("junction") == "-1":
            assert float(speed.get("max")) == limits[kind], road.get("name")
        else:
            assert 0 < float(speed.get("max")) <= 110.0


@towns
def test_geolocation_matches_geo_reference(name: str) -> None:
    text = generate_town(name)
    lat0 = float(re.search(r"\+lat_0=(\S+)", text).group(1))
    lon0 = float(re.search(r"\+lon_0=(\S+)", text).group(1))
    geo = probe(name)["geo"]
    assert geo["origin"] == pytest.approx([lat0, lon0], abs=1e-6)
    # 1 km should move about 1/111 degree of latitude, and 1/(111 cos lat) of longitude
    assert abs(geo["south"][0] - lat0) == pytest.approx(1000.0 / 111_195.0, rel=0.02)
    assert geo["east"][1] - lon0 == pytest.approx(1000.0 / (111_195.0 * math.cos(math.radians(lat0))), rel=0.02)


def test_grid_city_has_four_way_junctions_with_all_turns() -> None:
    junctions = probe("GridCity")["junctions"]
    assert len(junctions) >= 9
    four_way = 0
    for junction, movements in junctions.items():
        incoming = {m["from_road"] for m in movements}
        assert len(incoming) in (3, 4), junction
        for m in movements:
            if m["turn"] == 90:  # right turn: outermost lane to outermost lane
                assert m["from_rightmost"] and m["to_rightmost"], m
            elif m["turn"] == -90:  # left turn: innermost lane to innermost lane
                assert m["from_leftmost"] and m["to_leftmost"], m
            else:
                assert m["turn"] == 0, m
        if len(incoming) == 4:
            four_way += 1
            for road in incoming:
                turns = sorted(m["turn"] for m in movements if m["from_road"] == road)
                lanes = len([lane for lane in probe("GridCity")["lanes"][str(road)] if lane > 0])
                assert turns == [-90] + [0] * lanes + [90], (junction, road, turns)
    assert four_way >= 9


def test_grid_city_roads_have_sidewalks_and_markings() -> None:
    report = probe("GridCity")
    for road, outer in report["outer_lanes"].items():
        assert set(outer.values()) == {"Sidewalk"}, (road, outer)
    avenues = [road for road in report["marks"] if road_kind("GridCity", int(road)) == "Avenue"]
    assert avenues
    for road in avenues:
        marks = report["marks"][road]
        assert marks["-1"] == ["SolidSolid", "Broken"]
        assert marks["-2"] == ["Broken", "Solid"]


def test_highway_loop_is_closed_with_hills_and_shoulders() -> None:
    report = probe("HighwayLoop")
    loop = report["loop"]
    assert loop["closest"] < 3.0, loop
    assert 2500.0 < loop["at"] < 2900.0, loop   # one lap of the middle lane
    assert loop["z_range"] > 2.0
    assert report["z"][1] - report["z"][0] > 2.0
    highway = [road for road in report["outer_lanes"] if road_kind("HighwayLoop", int(road)) == "Highway"]
    assert len(highway) >= 4
    for road in highway:
        assert set(report["outer_lanes"][road].values()) == {"Shoulder"}, road
        assert report["marks"][road]["-2"] == ["Solid", "Broken"]    # median side
        assert report["marks"][road]["-4"] == ["Broken", "Solid"]    # shoulder side
    assert len(report["junctions"]) == 4
