"""Traffic lights and stop signs of a town, from its OpenDRIVE signals and controllers.

Why: CARLA spawns one traffic-light actor per OpenDRIVE traffic-light signal and one sign
actor per stop signal, groups lights by the junction their controller belongs to and
gives each actor a trigger volume on the lanes it governs. This module derives the same
facts from the town's ``carla.Map`` (signal landmarks, lane validities) and the
``<controller>`` records, as plain specs the world turns into actors. Which lanes a
signal governs is kept as lane keys, so the lane graph can be built later, on demand.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import carla
import numpy as np

from .xodr_records import XodrRecords, scan

if TYPE_CHECKING:
    from .town import Town

TRAFFIC_LIGHT_TYPE = "1000001"       # OpenDRIVE/CARLA signal type of a three-light traffic light
STOP_SIGN_TYPE = "206"
TRAFFIC_LIGHT_BLUEPRINT = "traffic.traffic_light"
STOP_SIGN_BLUEPRINT = "traffic.stop"
ACTOR_YAW_OFFSET_DEG = 90.0          # CARLA's sign blueprints face their signal's heading + 90 degrees
TRIGGER_BACK_M = 3.0                 # trigger box centre: this far before the stop line, as CARLA's
TRIGGER_HALF_LENGTH_M = 1.5          # half size along the lane
TRIGGER_HALF_HEIGHT_M = 1.0
TRIGGER_WIDTH_FRACTION = 0.25        # half size across one lane, as a fraction of its width
LANE_START_SAMPLE_M = 0.5

LaneKey = tuple[int, int, int]


@dataclass(frozen=True)
class SignalSpec:
    """One signal actor: where it stands, which junction paths it governs, its trigger box."""

    sign_id: str
    blueprint: str
    location: tuple[float, float, float]
    rotation: tuple[float, float, float]      # pitch, yaw, roll (degrees) of the actor
    group: int                                # junction id (lights of a group take turns)
    phase: int                                # turn within the group (controller sequence)
    paths: tuple[LaneKey, ...]                # junction lanes it governs
    approaches: tuple[LaneKey, ...]           # lanes whose junction successors it governs
    box_location: tuple[float, float, float]  # trigger volume, relative to the actor (axis-aligned with it)
    box_extent: tuple[float, float, float]


def _key(waypoint: carla.Waypoint) -> LaneKey:
    return waypoint.road_id, waypoint.section_id, waypoint.lane_id


def _lane_ids(validity: tuple[int, int]) -> list[int]:
    low, high = sorted(validity)
    return [lane for lane in range(low, high + 1) if lane != 0]


def _stop_waypoint(waypoint: carla.Waypoint) -> carla.Waypoint:
    """Where traffic on this lane stops: a junction path's reference sits at the path's entry
    (CARLA's towns and ours), a signal by an approach lane governs that lane's end."""
    if waypoint.is_junction:
        return waypoint
    after = waypoint.next_until_lane_end(LANE_START_SAMPLE_M)
    return after[-1] if after else waypoint


def _governed(carla_map: carla.Map, landmarks: list[carla.Landmark]) -> tuple[list, list, list]:
    """Junction lanes, approach lanes and stop waypoints of one signal's landmarks."""
    paths, approaches, stops = [], [], []
    for landmark in landmarks:
        for validity in landmark.get_lane_validities():
            for lane_id in _lane_ids(validity):
                waypoint = carla_map.get_waypoint_xodr(landmark.road_id, lane_id, landmark.s)
                if waypoint is None or waypoint.lane_type != carla.LaneType.Driving:
                    continue
                (paths if waypoint.is_junction else approaches).append(_key(waypoint))
                stops.append(_stop_waypoint(waypoint))
    return list(dict.fromkeys(paths)), list(dict.fromkeys(approaches)), stops


def _trigger_box(stops: list[carla.Waypoint], location: tuple[float, float, float],
                 yaw_deg: float) -> tuple[tuple, tuple]:
    """CARLA-like trigger volume: TRIGGER_BACK_M before the stop line, across the governed
    lanes along the actor's forward axis (what TrafficLight.get_stop_waypoints sweeps)."""
    points, widths, headings = [], [], []
    for stop in stops:
        before = stop.previous(TRIGGER_BACK_M) or [stop]
        here = before[0].transform
        points.append((here.location.x, here.location.y, here.location.z))
        widths.append(before[0].lane_width)
        headings.append(here.rotation.yaw)
    if not points:
        return (0.0, 0.0, TRIGGER_HALF_HEIGHT_M), (TRIGGER_HALF_LENGTH_M,) * 2 + (TRIGGER_HALF_HEIGHT_M,)
    points_xyz = np.array(points)
    centre = points_xyz.mean(axis=0)
    yaw = math.radians(yaw_deg)
    forward, right = np.array([math.cos(yaw), math.sin(yaw)]), np.array([-math.sin(yaw), math.cos(yaw)])
    offset = centre[:2] - np.array(location[:2])
    across = (points_xyz[:, :2] - centre[:2]) @ forward
    half_across = float(np.ptp(across)) / 2.0 + TRIGGER_WIDTH_FRACTION * float(np.mean(widths))
    # The box's own axes: x across the lanes, y along them; its extent in the actor's axes
    # (an rpc bounding box of a map actor is axis-aligned with the actor).
    relative = math.radians(headings[0] + ACTOR_YAW_OFFSET_DEG - yaw_deg)
    cos_r, sin_r = abs(math.cos(relative)), abs(math.sin(relative))
    extent = (cos_r * half_across + sin_r * TRIGGER_HALF_LENGTH_M, sin_r * half_across + cos_r * TRIGGER_HALF_LENGTH_M,
              TRIGGER_HALF_HEIGHT_M)
    height = float(centre[2] - location[2]) + TRIGGER_HALF_HEIGHT_M
    box_location = (float(offset @ forward), float(offset @ right), height)
    return box_location, extent


SIGNAL_CACHE_SIZE = 4              # towns whose signals stay derived
_cache: dict[str, list["SignalSpec"]] = {}


def signals_for(town: "Town") -> list["SignalSpec"]:
    """The town's signals, derived once per town content (reloads reuse them)."""
    specs = _cache.pop(town.content_hash, None)
    if specs is None:
        specs = town_signals(town.carla_map, scan(town.xodr))
    _cache[town.content_hash] = specs      # most recent last
    while len(_cache) > SIGNAL_CACHE_SIZE:
        del _cache[next(iter(_cache))]
    return specs


def town_signals(carla_map: carla.Map, records: XodrRecords) -> list[SignalSpec]:
    """Traffic lights and stop signs, in a fixed order (by sign id)."""
    phases = records.signal_phases()
    specs: list[SignalSpec] = []
    by_type = ((TRAFFIC_LIGHT_TYPE, TRAFFIC_LIGHT_BLUEPRINT), (STOP_SIGN_TYPE, STOP_SIGN_BLUEPRINT))
    free_groups = iter(range(-1, -10**9, -1))   # lights outside any junction form groups of their own
    for signal_type, blueprint in by_type:
        landmarks: dict[str, list[carla.Landmark]] = defaultdict(list)
        for landmark in carla_map.get_all_landmarks_of_type(signal_type):
            landmarks[landmark.id].append(landmark)
        unsequenced: dict[int, list[str]] = defaultdict(list)
        pending = []
        for sign_id in sorted(landmarks, key=lambda i: (len(i), i)):
            paths, approaches, stops = _governed(carla_map, landmarks[sign_id])
            pose = landmarks[sign_id][0].transform
            location = (pose.location.x, pose.location.y, pose.location.z)
            yaw = pose.rotation.yaw + ACTOR_YAW_OFFSET_DEG
            box = _trigger_box(stops, location, yaw)
            junctions = [junction for stop in stops for junction in _junctions_at(stop)]
            group, phase = phases.get(sign_id, (junctions[0] if junctions else next(free_groups), -1))
            if phase < 0:
                unsequenced[group].append(sign_id)
            pending.append((sign_id, location, (0.0, yaw, 0.0), group, phase, paths, approaches, box))
        for sign_id, location, rotation, group, phase, paths, approaches, box in pending:
            if phase < 0:   # no controller: one phase per light, in sign id order
                phase = 1000 + unsequenced[group].index(sign_id)
            specs.append(SignalSpec(sign_id, blueprint, location, rotation, group, phase, tuple(paths),
                                    tuple(approaches), *box))
    return specs


def _junctions_at(stop: carla.Waypoint) -> list[int]:
    """The junction a stop line leads into."""
    if stop.is_junction:
        return [stop.junction_id]
    return [w.junction_id for w in stop.next(LANE_START_SAMPLE_M) if w.is_junction]
