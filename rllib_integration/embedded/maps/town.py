"""A loaded town: CARLA's own OpenDRIVE parser, generated spawn points and the road surface.

The server parses the .xodr with the same ``carla.Map`` the client uses, so roads,
lanes and junctions agree on both sides of the wire.
"""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

import carla
import numpy as np
from scipy.spatial import cKDTree

from .road_grid import build_road_grid

from ..world import geometry
from .towns import TownSource

SPAWN_SPACING_M = 12.0           # distance between spawn points along a lane
SPAWN_HEIGHT_M = 0.3             # above the lane surface, as CARLA's recommended points are
SPAWN_FOOTPRINT_HALF_M = (2.6, 1.1)  # a large car's footprint; no two spawn points' footprints overlap
SURFACE_SAMPLE_M = 1.0           # spacing of road-surface samples
PARSE_PROBE_TIMEOUT_S = 120.0    # CARLA's largest towns parse in about a second

# Runs in a child process: CARLA's parser kills its process (segfault, abort) on some
# malformed files, e.g. a <road> whose <planView> has no <geometry>.
_PARSE_PROBE = r"""
import json, sys
import carla
try:
    town = carla.Map(sys.argv[1], sys.stdin.buffer.read().decode("utf-8"))
    result = {"driving_samples": len(town.generate_waypoints(float(sys.argv[2])))}
except RuntimeError as error:
    result = {"error": str(error)}
print("PROBE " + json.dumps(result), flush=True)
"""
_probed_ok: set[str] = set()     # content hashes of files that parsed without crashing


class TownLoadError(ValueError):
    """An .xodr that cannot be used; the message names the file and the parser's complaint."""


@dataclass
class Town:
    name: str
    xodr: str
    carla_map: carla.Map
    spawn_points: list[tuple[tuple[float, float, float], tuple[float, float, float]]]
    surface: "RoadSurface"
    content_hash: str = field(default="")

    @property
    def map_path(self) -> str:
        """What get_map_info reports as the map name, like CARLA's 'Carla/Maps/Town01'."""
        return f"Carla/Maps/{self.name}"


class RoadSurface:
    """Height and slope of the nearest lane centre, for putting vehicles on the road."""

    def __init__(self, points: np.ndarray, pitch: np.ndarray, roll: np.ndarray, yaw: np.ndarray) -> None:
        self._points = points
        self._pitch = pitch
        self._roll = roll
        self._yaw = yaw
        self._tree = cKDTree(points)
        self.grid = build_road_grid(points)   # for compiled kernels; the tree answers off-road points
        self.pitch, self.roll, self.yaw = pitch, roll, yaw

    def query(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(n, 3) positions -> ground z, pitch, roll (degrees) and horizontal distance to the sample."""
        _, index = self._tree.query(xyz)
        sample = self._points[index]
        horizontal = np.hypot(sample[:, 0] - xyz[:, 0], sample[:, 1] - xyz[:, 1])
        return sample[:, 2], self._pitch[index], self._roll[index], horizontal

    def ground_under(self, xyz: np.ndarray, heading_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground z plus pitch and roll as felt by a body heading heading_deg (degrees).

        A lane's slope is stored along its own direction; a car driving against the lane
        (or across it) feels the same grade with the sign its heading gives.
        """
        _, index = self._tree.query(xyz)
        alignment = np.cos(np.radians(heading_deg - self._yaw[index]))
        return self._points[index, 2], self._pitch[index] * alignment, self._roll[index] * alignment


def load_town(source: TownSource) -> Town:
    text = source.read()
    origin = str(source.path) if source.path else f"generated town {source.name}"
    try:
        ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise TownLoadError(f"{origin}: malformed OpenDRIVE: {error}") from None
    content_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
    if source.path is not None and content_hash not in _probed_ok:
        _probe_parse(source.name, text, origin)  # generated towns are tested; files from disk are not
        _probed_ok.add(content_hash)
    try:
        carla_map = carla.Map(source.name, text)
    except RuntimeError as error:
        raise TownLoadError(f"{origin}: CARLA's OpenDRIVE parser failed: {error}") from None
    samples = carla_map.generate_waypoints(SURFACE_SAMPLE_M)
    if not samples:
        raise TownLoadError(f"{origin}: no driving lanes in this OpenDRIVE file")
    surface = _road_surface(samples)
    return Town(
        name=source.name,
        xodr=text,
        carla_map=carla_map,
        spawn_points=generate_spawn_points(carla_map),
        surface=surface,
        content_hash=content_hash,
    )


def _probe_parse(name: str, text: str, origin: str) -> None:
    """Parses the file in a child process first, so a file that crashes CARLA's parser
    becomes a TownLoadError instead of killing the server and every client on it."""
    try:
        result = subprocess.run([sys.executable, "-c", _PARSE_PROBE, name, str(SURFACE_SAMPLE_M)],
                                input=text.encode("utf-8"), capture_output=True, timeout=PARSE_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TownLoadError(f"{origin}: CARLA's OpenDRIVE parser did not finish within "
                            f"{PARSE_PROBE_TIMEOUT_S:.0f} s") from None
    stdout, stderr = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    reports = [line[len("PROBE "):] for line in stdout.splitlines() if line.startswith("PROBE ")]
    if result.returncode != 0 or not reports:
        if result.returncode < 0:
            how = f"crashed ({signal.strsignal(-result.returncode) or f'signal {-result.returncode}'})"
        else:
            how = f"exited with status {result.returncode}"
        # the last words of a crash (e.g. an uncaught exception's what()), not the parser's warnings
        said = ([line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING:")]
                or [""])[-1]
        raise TownLoadError(f"{origin}: CARLA's OpenDRIVE parser {how} reading this file"
                            f"{': ' + said if said else ''}; check that every <road> has a <planView> "
                            "<geometry> and <lanes> with a <laneSection>")
    report = json.loads(reports[-1])
    if "error" in report:
        raise TownLoadError(f"{origin}: CARLA's OpenDRIVE parser failed: {report['error']}")
    if not report["driving_samples"]:
        raise TownLoadError(f"{origin}: no driving lanes in this OpenDRIVE file")


def _road_surface(waypoints: list[carla.Waypoint]) -> RoadSurface:
    poses = np.array([(w.transform.location.x, w.transform.location.y, w.transform.location.z,
                       w.transform.rotation.pitch, w.transform.rotation.roll, w.transform.rotation.yaw)
                      for w in waypoints])
    wrapped = (poses[:, 3:] + 180.0) % 360.0 - 180.0   # CARLA reports pitches like 357 degrees
    return RoadSurface(poses[:, :3], wrapped[:, 0], wrapped[:, 1], wrapped[:, 2])


def generate_spawn_points(carla_map: carla.Map) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """Driving-lane points at regular spacing clear of junctions, lane-centred, heading along the lane.

    Candidates are visited in a fixed order and one is dropped when its footprint would
    overlap an accepted one, so no two spawn points collide (CARLA refuses such spawns).
    """
    candidates = [w for w in carla_map.generate_waypoints(SPAWN_SPACING_M)
                  if w.lane_type == carla.LaneType.Driving and _clear_of_junctions(carla_map, w)]
    if not candidates:
        return []
    poses = np.array([(w.transform.location.x, w.transform.location.y, w.transform.location.z,
                       w.transform.rotation.yaw) for w in candidates])
    order = np.lexsort((poses[:, 1], poses[:, 0]))
    poses = poses[order]
    half = np.tile(SPAWN_FOOTPRINT_HALF_M, (len(poses), 1))
    corners = geometry.box_corners_2d(poses[:, :2], poses[:, 3], half)
    tree = cKDTree(poses[:, :2])
    reach = 2.0 * float(np.hypot(*SPAWN_FOOTPRINT_HALF_M))
    accepted: list[int] = []
    rejected = np.zeros(len(poses), dtype=bool)
    for i in range(len(poses)):
        if rejected[i]:
            continue
        accepted.append(i)
        near = np.array([j for j in tree.query_ball_point(poses[i, :2], reach) if j > i and not rejected[j]], dtype=int)
        if len(near):
            hits = geometry.boxes_overlap_2d(np.repeat(corners[i:i + 1], len(near), 0), corners[near])
            rejected[near[hits]] = True
    return [((p[0], p[1], p[2] + SPAWN_HEIGHT_M), (0.0, float(p[3]), 0.0)) for p in poses[accepted]]


def _clear_of_junctions(carla_map: carla.Map, waypoint: carla.Waypoint) -> bool:
    """Whether a car standing on this waypoint is outside every junction, as clients see it.

    generate_waypoints reports a lane's first point as part of its own road, yet
    get_waypoint at that spot (what clients and their traffic manager ask) can answer the
    junction road starting there; and a car's footprint must not reach into a junction.
    """
    if waypoint.is_junction:
        return False
    here = carla_map.get_waypoint(waypoint.transform.location, project_to_road=False,
                                  lane_type=carla.LaneType.Driving)
    if here is None or here.is_junction:
        return False
    reach = SPAWN_FOOTPRINT_HALF_M[0]
    return not any(w.is_junction for w in waypoint.next(reach) + waypoint.previous(reach))
