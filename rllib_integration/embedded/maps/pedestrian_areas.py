"""Where pedestrians may walk in a town: sidewalks, crosswalks and the road bits that join them.

CARLA builds its walker navigation mesh from the town's 3D meshes; this server has only the
OpenDRIVE file, so the same areas are derived from it: every sidewalk lane becomes a strip,
sidewalks that end at a junction without meeting get a corner piece, and crosswalks come from
the file's crosswalk objects (or, for towns without any, are laid across each road where it
enters a junction, as CARLA's towns paint them). Where a crosswalk stops short of the kerb, a
short piece of road (area "road", only for walkers allowed on roads) joins it to the sidewalk.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import carla
import numpy as np
import shapely
from scipy.spatial import cKDTree

GRID_M = 0.001                 # every coordinate is snapped to this grid, so overlays node exactly
SIDEWALK_SAMPLE_M = 1.0        # spacing of cross-sections along a sidewalk lane
SECTION_INSET_M = 1e-3         # keeps samples inside their lane section
STRIP_OVERLAP_M = 0.05         # strips reach this far past their ends so consecutive strips fuse
SIMPLIFY_M = 0.05              # outline simplification; curves stay within this of the lanes
CAP_PROBE_M = 0.3              # a strip end is free when this far past it there is no sidewalk
CORNER_REACH_M = 10.0          # free strip ends this close around a junction corner are joined
FACING_GAP_M = 3.0             # free ends facing each other this close are joined (driveways)
MIN_FACING_COS = 0.25          # each end of a corner must point towards the other at least this much
CROSSWALK_WIDTH_M = 3.0        # along the road, for crosswalks this module lays itself
CROSSWALK_SETBACK_M = 1.0      # from the junction's edge to the laid crosswalk
CROSSWALK_OVERLAP_M = 0.5      # crosswalks are lengthened this much into the kerb at each end
ROAD_BRIDGE_MAX_M = 3.0        # longest road piece that joins a crosswalk end to a sidewalk
WALKER_RADIUS_M = 0.3          # CARLA's walker agents; areas shrink by it, as Recast erodes its mesh
MIN_AREA_M2 = 0.01             # smaller leftovers of the overlays are dropped


@dataclass
class PedestrianAreas:
    """Disjoint walkable regions (shapely geometries on the ground plane, CARLA x/y) and heights."""

    sidewalk: shapely.Geometry
    crosswalk: shapely.Geometry
    road: shapely.Geometry
    crosswalk_zones: list[shapely.Polygon]   # each crosswalk as laid or read, before joining
    height_samples: np.ndarray               # (n, 3) samples of the walking surface

    def heights(self, xy: np.ndarray) -> np.ndarray:
        """Ground height at (n, 2) points: the nearest surface sample's."""
        if len(self.height_samples) == 0:
            return np.zeros(len(xy))
        _, index = cKDTree(self.height_samples[:, :2]).query(xy)
        return self.height_samples[index, 2]


@dataclass(frozen=True)
class _SidewalkLane:
    road_id: int
    lane_id: int
    s_start: float
    s_end: float


@dataclass(frozen=True)
class _RoadEnd:
    """A non-junction road's end that touches a junction, with its innermost sidewalks."""

    road_id: int
    s_start: float     # of the lane section at this end
    s_end: float
    at_start: bool
    left_sidewalk: int
    right_sidewalk: int


def pedestrian_areas(carla_map: carla.Map, xodr: str) -> PedestrianAreas:
    """The walkable regions of a town; `xodr` is the text `carla_map` was parsed from."""
    lanes, road_ends = _parse_sidewalks(xodr)
    strips, caps, points = _sidewalk_strips(carla_map, lanes)
    sidewalk = shapely.union_all(strips, grid_size=GRID_M) if strips else shapely.Polygon()
    corners = _corner_pieces(caps, sidewalk)
    if corners:
        sidewalk = shapely.union_all([sidewalk, *corners], grid_size=GRID_M)
    sidewalk = shapely.set_precision(shapely.simplify(sidewalk, SIMPLIFY_M), GRID_M)

    zones, zone_points = _crosswalks_of_map(carla_map)
    if not zones:
        zones, zone_points = _laid_crosswalks(carla_map, road_ends)
    lengthened, bridges = _join_crosswalks(zones, sidewalk)
    crosswalk = shapely.difference(shapely.union_all(lengthened, grid_size=GRID_M), sidewalk, grid_size=GRID_M)
    walkable = shapely.union(sidewalk, crosswalk, grid_size=GRID_M)
    road = shapely.difference(shapely.union_all(bridges, grid_size=GRID_M), walkable, grid_size=GRID_M)
    heights = np.concatenate([points, zone_points]) if len(zone_points) else points
    inner = _eroded(shapely.union(walkable, road, grid_size=GRID_M))
    sidewalk, crosswalk, road = (_polygons_only(shapely.intersection(region, inner, grid_size=GRID_M))
                                 for region in (sidewalk, crosswalk, road))
    return PedestrianAreas(sidewalk, crosswalk, road, zones, heights)


def _eroded(walkable: shapely.Geometry) -> shapely.Geometry:
    """Where a walker's centre may be: its whole body stays on the walkable area, so the
    client's crowd never puts a walker's centre on a kerb line or past it."""
    return shapely.set_precision(shapely.buffer(walkable, -WALKER_RADIUS_M, join_style="mitre"), GRID_M)


def _polygons_only(geometry: shapely.Geometry) -> shapely.Geometry:
    """Overlays can leave lines and points where regions touch; only areas are walkable."""
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type == "Polygon" and p.area > MIN_AREA_M2]
    return shapely.MultiPolygon(parts) if parts else shapely.MultiPolygon()


# --------------------------------------------------------------------------- the OpenDRIVE file


def _parse_sidewalks(xodr: str) -> tuple[list[_SidewalkLane], list[_RoadEnd]]:
    """Sidewalk lanes of every lane section, and the road ends that meet junctions.

    carla.Map lists driving lanes only (generate_waypoints, topology), so the lane
    sections are read from the file; their geometry then comes from carla.Map.
    """
    lanes: list[_SidewalkLane] = []
    ends: list[_RoadEnd] = []
    for road in ElementTree.fromstring(xodr).iter("road"):
        road_id, length = int(road.get("id")), float(road.get("length"))
        sections = road.find("lanes").findall("laneSection") if road.find("lanes") is not None else []
        bounds = [float(section.get("s", 0.0)) for section in sections] + [length]
        innermost: list[dict[str, int]] = []
        for index, section in enumerate(sections):
            found: dict[str, int] = {}
            for side in ("left", "right"):
                ids = [int(lane.get("id")) for lane in section.findall(f"{side}/lane") if lane.get("type") == "sidewalk"]
                lanes += [_SidewalkLane(road_id, lane_id, bounds[index], bounds[index + 1]) for lane_id in ids]
                if ids:
                    found[side] = min(ids, key=abs)
            innermost.append(found)
        if road.get("junction", "-1") != "-1" or not sections:
            continue
        link = road.find("link")
        for tag, index, at_start in (("predecessor", 0, True), ("successor", -1, False)):
            node = link.find(tag) if link is not None else None
            found = innermost[index]
            if node is not None and node.get("elementType") == "junction" and len(found) == 2:
                section = index % len(sections)
                ends.append(_RoadEnd(road_id, bounds[section], bounds[section + 1], at_start,
                                     found["left"], found["right"]))
    return lanes, ends


# --------------------------------------------------------------------------- sidewalks


@dataclass(frozen=True)
class _Cap:
    """The end edge of a sidewalk strip and the direction pointing out of the strip."""

    a: np.ndarray
    b: np.ndarray
    outward: np.ndarray

    @property
    def middle(self) -> np.ndarray:
        return (self.a + self.b) / 2


def _sidewalk_strips(carla_map: carla.Map, lanes: list[_SidewalkLane]
                     ) -> tuple[list[shapely.Polygon], list[_Cap], np.ndarray]:
    """One polygon per sidewalk lane section (edges from the lane's waypoints), its end caps,
    and (x, y, z) samples of both edges for heights."""
    strips: list[shapely.Polygon] = []
    caps: list[_Cap] = []
    points: list[np.ndarray] = []
    for lane in lanes:
        count = max(2, int(np.ceil((lane.s_end - lane.s_start) / SIDEWALK_SAMPLE_M)) + 1)
        samples = []
        for s in np.linspace(lane.s_start + SECTION_INSET_M, lane.s_end - SECTION_INSET_M, count):
            waypoint = carla_map.get_waypoint_xodr(lane.road_id, lane.lane_id, float(s))
            if waypoint is None:
                continue
            location, right = waypoint.transform.location, waypoint.transform.get_right_vector()
            samples.append((location.x, location.y, location.z, right.x, right.y, waypoint.lane_width / 2))
        if len(samples) < 2:
            continue
        data = np.array(samples)
        centre, z, right, half = data[:, :2], data[:, 2], data[:, 3:5], data[:, 5:6]
        start_dir = _unit(centre[1] - centre[0])
        end_dir = _unit(centre[-1] - centre[-2])
        centre[0] -= start_dir * STRIP_OVERLAP_M
        centre[-1] += end_dir * STRIP_OVERLAP_M
        one, other = centre - right * half, centre + right * half
        polygon = shapely.make_valid(shapely.Polygon(np.concatenate([one, other[::-1]])))
        strips.append(polygon)
        caps += [_Cap(one[0], other[0], -start_dir), _Cap(one[-1], other[-1], end_dir)]
        points += [np.column_stack([one, z]), np.column_stack([other, z])]
    return strips, caps, np.concatenate(points) if points else np.zeros((0, 3))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.hypot(*vector))
    return vector / norm if norm > 1e-9 else np.zeros(2)


def _corner_pieces(caps: list[_Cap], sidewalk: shapely.Geometry) -> list[shapely.Polygon]:
    """Pieces that join sidewalk ends left open around junction corners.

    Towns whose junction roads carry no sidewalks (this project's generated towns, many
    exported files) stop each sidewalk at the junction's edge; a person walks round the
    corner. Two free ends are joined when each points towards the other, around a corner
    (within CORNER_REACH_M) or facing each other across a short gap (FACING_GAP_M).
    """
    if not caps:
        return []
    shapely.prepare(sidewalk)
    probes = np.array([cap.middle + cap.outward * CAP_PROBE_M for cap in caps])
    free = [cap for cap, covered in zip(caps, shapely.contains_xy(sidewalk, probes[:, 0], probes[:, 1]))
            if not covered]
    if len(free) < 2:
        return []
    middles = np.array([cap.middle for cap in free])
    candidates = []
    for i, j in cKDTree(middles).query_pairs(CORNER_REACH_M):
        gap = middles[j] - middles[i]
        distance = float(np.hypot(*gap))
        if distance < 1e-6:
            continue
        toward_j = float(free[i].outward @ gap) / distance
        toward_i = float(-free[j].outward @ gap) / distance
        facing = float(free[i].outward @ free[j].outward) < -0.5
        if toward_j > MIN_FACING_COS and toward_i > MIN_FACING_COS and (not facing or distance <= FACING_GAP_M):
            candidates.append((distance, i, j))
    used: set[int] = set()
    pieces = []
    for _, i, j in sorted(candidates):
        if i in used or j in used:
            continue
        used.update((i, j))
        pieces.append(shapely.convex_hull(shapely.multipoints([free[i].a, free[i].b, free[j].a, free[j].b])))
    return pieces


# --------------------------------------------------------------------------- crosswalks


def _crosswalks_of_map(carla_map: carla.Map) -> tuple[list[shapely.Polygon], np.ndarray]:
    """The file's crosswalk objects; carla.Map lists each outline closed by its first point again."""
    points = np.array([(p.x, p.y, p.z) for p in carla_map.get_crosswalks()]).reshape(-1, 3)
    zones: list[shapely.Polygon] = []
    start = 0
    for index in range(1, len(points)):
        if index > start and np.allclose(points[index], points[start]):
            ring = points[start:index, :2]
            if len(ring) >= 3:
                zones += [p for p in shapely.get_parts(shapely.make_valid(shapely.Polygon(ring)))
                          if p.geom_type == "Polygon" and p.area > 0.1]
            start = index + 1
    return zones, points


def _laid_crosswalks(carla_map: carla.Map, road_ends: list[_RoadEnd]) -> tuple[list[shapely.Polygon], np.ndarray]:
    """Crosswalks across each road where it enters a junction, from sidewalk to sidewalk.

    For towns whose file has no crosswalk objects (CARLA's Town01 and Town02 paint them but
    do not list them): without them every block's sidewalk would be an island. Each spans
    the middles of the two sidewalks, so it overlaps both kerbs.
    """
    zones: list[shapely.Polygon] = []
    points: list[tuple[float, float, float]] = []
    for end in road_ends:
        if end.s_end - end.s_start < CROSSWALK_SETBACK_M + CROSSWALK_WIDTH_M + 2 * SECTION_INSET_M:
            continue
        if end.at_start:
            near, far = end.s_start + CROSSWALK_SETBACK_M, end.s_start + CROSSWALK_SETBACK_M + CROSSWALK_WIDTH_M
        else:
            near, far = end.s_end - CROSSWALK_SETBACK_M, end.s_end - CROSSWALK_SETBACK_M - CROSSWALK_WIDTH_M
        corners = []
        for lane_id, s_values in ((end.left_sidewalk, (near, far)), (end.right_sidewalk, (far, near))):
            for s in s_values:
                waypoint = carla_map.get_waypoint_xodr(end.road_id, lane_id, s)
                if waypoint is not None:
                    location = waypoint.transform.location
                    corners.append((location.x, location.y, location.z))
        if len(corners) == 4:
            polygon = shapely.Polygon([c[:2] for c in corners])
            if polygon.is_valid and polygon.area > 1.0:
                zones.append(polygon)
                points += corners
    return zones, np.array(points).reshape(-1, 3)


def _join_crosswalks(zones: list[shapely.Polygon], sidewalk: shapely.Geometry
                     ) -> tuple[list[shapely.Geometry], list[shapely.Polygon]]:
    """Each crosswalk lengthened into the kerb at both ends, and road pieces for ends that
    still stop short of a sidewalk (gutters, parking or bike lanes in between)."""
    lengthened: list[shapely.Geometry] = []
    bridges: list[shapely.Polygon] = []
    for zone in zones:
        centre, axis, half_length, half_width = _long_axis(zone)
        lengthened.append(shapely.union(zone, _box(centre, axis, half_length + CROSSWALK_OVERLAP_M, half_width)))
        for sign in (1.0, -1.0):
            tip = centre + sign * axis * (half_length + CROSSWALK_OVERLAP_M / 2)
            end_box = _box(tip, axis, CROSSWALK_OVERLAP_M / 2, half_width)
            if sidewalk.is_empty or end_box.intersects(sidewalk):
                continue
            gap = end_box.distance(sidewalk)
            if gap > ROAD_BRIDGE_MAX_M:
                continue
            reach = gap + CROSSWALK_OVERLAP_M
            bridges.append(_box(tip + sign * axis * (CROSSWALK_OVERLAP_M / 2 + reach / 2), axis, reach / 2 + 0.01,
                                half_width))
    return lengthened, bridges


def _long_axis(polygon: shapely.Polygon) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Centre, unit long axis, half length and half width of the polygon's smallest rectangle."""
    corners = np.array(shapely.minimum_rotated_rectangle(polygon).exterior.coords)[:4]
    sides = [corners[1] - corners[0], corners[2] - corners[1]]
    lengths = [float(np.hypot(*side)) for side in sides]
    long_index = int(np.argmax(lengths))
    axis = sides[long_index] / max(lengths[long_index], 1e-9)
    return corners.mean(axis=0), axis, lengths[long_index] / 2, lengths[1 - long_index] / 2


def _box(centre: np.ndarray, axis: np.ndarray, half_length: float, half_width: float) -> shapely.Polygon:
    across = np.array([-axis[1], axis[0]])
    return shapely.Polygon([centre + axis * half_length + across * half_width,
                            centre - axis * half_length + across * half_width,
                            centre - axis * half_length - across * half_width,
                            centre + axis * half_length - across * half_width])
