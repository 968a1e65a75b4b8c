"""The town's driving lanes as arrays: dense lane-centre polylines, successors, neighbours,
speed limits and which junction paths cross each other.

Why arrays: the autopilot drives every registered vehicle in one numpy pass per tick,
so each per-lane fact it needs (where the centre line runs, how fast one may go, where a
lane leads) must be one gather away. The graph is built once per town from the same
``carla.Map`` the clients parse, so lanes agree on both sides of the wire.

A segment is one lane of one lane section (CARLA's topology unit), sampled in its driving
direction at a uniform arc-length spacing.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import carla
import numba
import numpy as np
from scipy.spatial import cKDTree

from .road_grid import CELL_M, REACH_M, RoadGrid, build_road_grid
from .xodr_records import KMH_TO_MPS, XodrRecords, scan

if TYPE_CHECKING:
    from .town import Town

LANE_SAMPLE_M = 1.0              # polyline spacing on roads (chord error < 1 mm on 100 m curves)
JUNCTION_SAMPLE_M = 0.5          # polyline spacing inside junctions (3 mm chord error on 10 m turns)
SUCCESSOR_PROBE_M = 0.1          # how far past a lane's end its successors are looked up
DEFAULT_SPEED_LIMIT_MPS = 30.0 * KMH_TO_MPS   # CARLA's vehicle speed limit where no sign says otherwise
CONFLICT_DISTANCE_M = 3.0        # junction paths whose centre lines come closer than this cross
STRAIGHT_TURN_DEG = 30.0         # heading change below which a junction path counts as straight
LOCATE_CANDIDATES = 8            # nearest centre-line samples considered when locating a pose
HEADING_PENALTY_M = 4.0          # locating: metres of distance one radian of heading error costs
GRAPH_CACHE_SIZE = 4             # towns whose graphs stay built (a reload reuses its town's)

# carla.RoadOption-like codes of junction paths (the TM's route option numbering)
TURN_LEFT, TURN_RIGHT, TURN_STRAIGHT = 1, 2, 3


@dataclass
class LaneGraph:
    """Per-segment arrays (index = segment) and per-sample arrays (index = sample)."""

    keys: np.ndarray            # (S, 3) road id, section id, lane id
    start: np.ndarray           # (S,) first sample
    count: np.ndarray           # (S,) samples (>= 2)
    spacing: np.ndarray         # (S,) metres between consecutive samples
    length: np.ndarray          # (S,) metres
    speed_limit: np.ndarray     # (S,) m/s
    junction: np.ndarray        # (S,) junction id, -1 outside junctions
    turn: np.ndarray            # (S,) TURN_* for junction paths, 0 elsewhere
    left: np.ndarray            # (S,) same-direction driving lane to the left, -1 if none
    right: np.ndarray           # (S,) same-direction driving lane to the right, -1 if none
    succ_start: np.ndarray      # (S,) CSR offsets into succ
    succ_count: np.ndarray      # (S,)
    succ: np.ndarray            # (E,) successor segments
    entry: np.ndarray           # (S,) a predecessor segment (the incoming lane of a junction path), -1
    junction_index: np.ndarray  # (S,) row in conflict for junction paths, -1 elsewhere
    conflict: np.ndarray        # (J, J) bool: junction paths that cross or merge
    xy: np.ndarray              # (P, 2)
    z: np.ndarray               # (P,)
    yaw: np.ndarray             # (P,) radians, unwrapped within a segment
    curvature: np.ndarray       # (P,) 1/m, positive when turning right (CARLA's yaw grows clockwise)
    lane_change: np.ndarray     # (P,) carla.LaneChange bits: 1 right, 2 left
    width: np.ndarray           # (P,) lane width, m
    segment_of: np.ndarray      # (P,) segment of each sample
    tree: cKDTree               # over xy
    grid: RoadGrid              # over xy, for the compiled locate
    index_of: dict[tuple[int, int, int], int]
    # The same numbers packed for the autopilot's gathers (one fancy index instead of several):
    segment_table: np.ndarray   # (S, 4) start, last lower sample (count - 2), spacing, length
    last_lower: np.ndarray      # (S,) count - 2 (the last sample a lerp may start from)
    sample_table: np.ndarray    # (P, 5) x, y, z, yaw, curvature

    @property
    def size(self) -> int:
        return len(self.length)

    def sample_index(self, segment: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower sample index and fraction toward the next one at arc length s (clamped).

        np.take rather than fancy indexing throughout: several times faster on these shapes."""
        table = np.take(self.segment_table, segment, axis=0)
        position = np.minimum(np.maximum(s, 0.0), table[..., 3]) / table[..., 2]
        lower = np.minimum(position.astype(np.int64), np.take(self.last_lower, segment))
        return np.take(self.start, segment) + lower, position - lower

    def interpolate(self, segment: np.ndarray, s: np.ndarray) -> np.ndarray:
        """x, y, z, yaw, curvature at arc length s along segments: (..., 5)."""
        index, fraction = self.sample_index(segment, s)
        lower = np.take(self.sample_table, index, axis=0)
        return lower + (np.take(self.sample_table, index + 1, axis=0) - lower) * fraction[..., None]

    def locate(self, xy: np.ndarray, yaw_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest lane going the pose's way: segment, arc length along it, distance from its centre.

        Poses on a road are answered by a compiled search of the nearby samples (the call
        runs every tick for every vehicle); poses off every road by the k-d tree."""
        xy = np.ascontiguousarray(xy, dtype=np.float64)
        yaw_rad = np.ascontiguousarray(yaw_rad, dtype=np.float64)
        segment, s, distance, far = _locate_kernel(*self._search_tables, xy, yaw_rad)
        if far:
            self._place_far(segment, s, distance, xy, yaw_rad)
        return segment, s, distance

    def locate_rows(self, location: np.ndarray, rotation: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """locate() for rows of the actor table, read straight from its location and rotation
        (degrees) columns: the per-tick call for vehicles, without gathering their poses first."""
        segment, s, distance, far = _locate_rows_kernel(*self._search_tables, location, rotation, rows)
        if far:
            self._place_far(segment, s, distance, location[rows, :2], np.radians(rotation[rows, 1]))
        return segment, s, distance

    @functools.cached_property
    def _search_tables(self) -> tuple[np.ndarray, ...]:
        """The arrays _nearest_lane searches, in its argument order."""
        grid = self.grid
        return (grid.origin, grid.shape, grid.starts, grid.members, self.xy, self.yaw, self.segment_of,
                self.start, self.spacing, self.length)

    def _place_far(self, segment: np.ndarray, s: np.ndarray, distance: np.ndarray, xy: np.ndarray,
                   yaw_rad: np.ndarray) -> None:
        """Fills in, from the k-d tree, the poses the compiled search found no lane near (segment -1)."""
        far = segment < 0
        segment[far], s[far], distance[far] = self._locate_far(xy[far], yaw_rad[far])

    def _locate_far(self, xy: np.ndarray, yaw_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(LOCATE_CANDIDATES, len(self.xy))
        distance, index = self.tree.query(xy, k=k)
        distance, index = distance.reshape(len(xy), k), index.reshape(len(xy), k)
        heading_error = np.abs(np.angle(np.exp(1j * (self.yaw[index] - yaw_rad[:, None]))))
        best = np.argmin(distance + HEADING_PENALTY_M * heading_error, axis=1)
        rows = np.arange(len(xy))
        sample = index[rows, best]
        segment = self.segment_of[sample]
        tangent = np.stack([np.cos(self.yaw[sample]), np.sin(self.yaw[sample])], axis=1)
        along = np.einsum("ij,ij->i", xy - self.xy[sample], tangent)
        s = np.clip((sample - self.start[segment]) * self.spacing[segment] + along, 0.0, self.length[segment])
        return segment, s, distance[rows, best]

    def successors(self, segment: int) -> np.ndarray:
        return self.succ[self.succ_start[segment]:self.succ_start[segment] + self.succ_count[segment]]


_cache: OrderedDict[str, LaneGraph] = OrderedDict()


def lane_graph_for(town: "Town") -> LaneGraph:
    """The town's graph, built on first use and kept for its content hash (reloads reuse it)."""
    graph = _cache.get(town.content_hash)
    if graph is None:
        graph = build_lane_graph(town.carla_map, scan(town.xodr))
        _cache[town.content_hash] = graph
        while len(_cache) > GRAPH_CACHE_SIZE:
            _cache.popitem(last=False)
    _cache.move_to_end(town.content_hash)
    return graph


def _key(waypoint: carla.Waypoint) -> tuple[int, int, int]:
    return waypoint.road_id, waypoint.section_id, waypoint.lane_id


def _segment_starts(carla_map: carla.Map) -> dict[tuple[int, int, int], carla.Waypoint]:
    """First waypoint of every driving-lane segment, in a fixed order."""
    starts: dict[tuple[int, int, int], carla.Waypoint] = {}
    for entry, exit_ in carla_map.get_topology():
        starts.setdefault(_key(entry), entry)
        starts.setdefault(_key(exit_), exit_)
    return dict(sorted(starts.items()))


def _trace_lane(first: carla.Waypoint, step: float,
                starts: dict[tuple[int, int, int], carla.Waypoint]) -> tuple[list[carla.Waypoint], set]:
    """The lane's waypoints from its first to its end, every `step` metres, and the keys of
    the segments it leads to.

    CARLA's next_until_lane_end follows a lane through lane-section changes (where it may
    change its id) and refuses some lanes outright ("distance > 0.0"), so its list is cut
    at the first point of another segment, refused lanes are walked with next(), and a lane
    that ends at a section change is closed with its successor's first point.
    """
    key = _key(first)
    try:
        ahead = first.next_until_lane_end(step)
    except RuntimeError:
        ahead, here = [], first
        while True:
            following = here.next(step)
            same = [w for w in following if _key(w) == key]
            if not same:
                ahead.extend(following)
                break
            here = same[0]
            ahead.append(here)
    own = [first]
    for waypoint in ahead:
        if _key(waypoint) != key:
            break
        own.append(waypoint)
    beyond = [_key(w) for w in ahead[len(own) - 1:] if _key(w) != key][:1]
    if beyond:
        successors = set(beyond)
    else:
        successors = {_key(w) for w in own[-1].next(SUCCESSOR_PROBE_M)} - {key}
    successors &= starts.keys()
    if beyond and successors:
        own.append(starts[next(iter(successors))])
    return own, successors


def _resample(waypoints: list[carla.Waypoint], step: float) -> dict[str, np.ndarray]:
    """Waypoints of one lane, resampled to a uniform arc-length spacing."""
    raw = np.array([(w.transform.location.x, w.transform.location.y, w.transform.location.z,
                     w.transform.rotation.yaw, int(w.lane_change), w.lane_width, w.s) for w in waypoints])
    # Drop repeats at the lane end: CARLA can list the end twice, once displaced into the next road.
    keep = np.concatenate([[True], (np.hypot(*np.diff(raw[:, :2], axis=0).T) > 1e-6) & (np.diff(raw[:, 6]) != 0)])
    raw = raw[keep]
    if len(raw) == 1:   # a lane shorter than the float noise of its ends: give it a tiny extent
        raw = np.vstack([raw, raw])
        raw[1, 0] += 1e-3 * math.cos(math.radians(raw[0, 3]))
        raw[1, 1] += 1e-3 * math.sin(math.radians(raw[0, 3]))
    xy = raw[:, :2]
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    length = float(arc[-1])
    count = max(2, int(math.ceil(length / step)) + 1)
    s = np.linspace(0.0, length, count)
    yaw = np.unwrap(np.radians(raw[:, 3]))
    nearest = np.clip(np.searchsorted(arc, s, side="right") - 1, 0, len(arc) - 1)
    resampled_yaw = np.interp(s, arc, yaw)
    return {
        "xy": np.stack([np.interp(s, arc, raw[:, 0]), np.interp(s, arc, raw[:, 1])], axis=1),
        "z": np.interp(s, arc, raw[:, 2]),
        "yaw": resampled_yaw,
        "curvature": np.gradient(resampled_yaw, s) if length > 1e-6 else np.zeros(count),
        "lane_change": raw[nearest, 4].astype(np.uint8),
        "width": np.interp(s, arc, raw[:, 5]),
        "length": np.array(max(length, 1e-3)),
    }


def _same_way_neighbour(waypoint: carla.Waypoint, side: str,
                        index_of: dict[tuple[int, int, int], int]) -> int:
    other = waypoint.get_left_lane() if side == "left" else waypoint.get_right_lane()
    if other is None or other.lane_type != carla.LaneType.Driving or (other.lane_id > 0) != (waypoint.lane_id > 0):
        return -1
    return index_of.get(_key(other), -1)


def _turn(yaw: np.ndarray) -> int:
    change = math.degrees(yaw[-1] - yaw[0])
    change = (change + 180.0) % 360.0 - 180.0
    if abs(change) < STRAIGHT_TURN_DEG:
        return TURN_STRAIGHT
    return TURN_RIGHT if change > 0 else TURN_LEFT


def build_lane_graph(carla_map: carla.Map, records: XodrRecords) -> LaneGraph:
    starts = _segment_starts(carla_map)
    index_of = {key: i for i, key in enumerate(starts)}
    size = len(starts)
    parts, successors = [], []
    junction = np.full(size, -1, np.int64)
    left = np.full(size, -1, np.int64)
    right = np.full(size, -1, np.int64)
    declared_speed = np.full(size, np.nan)
    for i, (key, first) in enumerate(starts.items()):
        step = JUNCTION_SAMPLE_M if first.is_junction else LANE_SAMPLE_M
        waypoints, following = _trace_lane(first, step, starts)
        parts.append(_resample(waypoints, step))
        if first.is_junction:
            junction[i] = first.junction_id
        middle = waypoints[len(waypoints) // 2]
        left[i] = _same_way_neighbour(middle, "left", index_of)
        right[i] = _same_way_neighbour(middle, "right", index_of)
        successors.append(sorted(index_of[k] for k in following))
        speed = records.speed_at(key[0], first.s)
        if speed is not None:
            declared_speed[i] = speed

    count = np.array([len(p["z"]) for p in parts], np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    length = np.array([float(p["length"]) for p in parts])
    succ_count = np.array([len(s) for s in successors], np.int64)
    succ_start = np.concatenate([[0], np.cumsum(succ_count)[:-1]]).astype(np.int64)
    succ = np.array([t for s in successors for t in s], np.int64)
    predecessors: list[list[int]] = [[] for _ in range(size)]
    for i, targets in enumerate(successors):
        for target in targets:
            predecessors[target].append(i)
    entry = np.array([p[0] if p else -1 for p in predecessors], np.int64)

    speed_limit = _speed_limits(declared_speed, junction, predecessors)
    turn = np.array([_turn(p["yaw"]) if junction[i] >= 0 else 0 for i, p in enumerate(parts)], np.int8)
    sample_table = np.concatenate([np.column_stack([p["xy"], p["z"], p["yaw"], p["curvature"]]) for p in parts])
    xy = sample_table[:, :2]
    segment_of = np.repeat(np.arange(size), count)
    junction_index, conflict = _junction_conflicts(xy, segment_of, junction, predecessors)
    return LaneGraph(
        keys=np.array(list(starts), np.int64).reshape(size, 3), start=start, count=count,
        spacing=length / (count - 1), length=length, speed_limit=speed_limit, junction=junction, turn=turn,
        left=left, right=right, succ_start=succ_start, succ_count=succ_count, succ=succ, entry=entry,
        junction_index=junction_index, conflict=conflict, xy=xy,
        z=sample_table[:, 2], yaw=sample_table[:, 3], curvature=sample_table[:, 4],
        lane_change=np.concatenate([p["lane_change"] for p in parts]),
        width=np.concatenate([p["width"] for p in parts]),
        segment_of=segment_of, tree=cKDTree(xy), grid=build_road_grid(sample_table[:, :3]), index_of=index_of,
        segment_table=np.column_stack([start, count - 2, length / (count - 1), length]).astype(float),
        last_lower=count - 2,
        sample_table=sample_table)


def _speed_limits(declared: np.ndarray, junction: np.ndarray, predecessors: list[list[int]]) -> np.ndarray:
    """Declared limits; a junction path without one keeps the limit of the road it comes from
    (a car carries the last sign's limit), other lanes without one get CARLA's default."""
    speed = declared.copy()
    for i in np.flatnonzero(np.isnan(speed) & (junction >= 0)):
        incoming = [declared[p] for p in predecessors[i] if not np.isnan(declared[p])]
        if incoming:
            speed[i] = min(incoming)
    speed[np.isnan(speed)] = DEFAULT_SPEED_LIMIT_MPS
    return speed


def _junction_conflicts(xy: np.ndarray, segment_of: np.ndarray, junction: np.ndarray,
                        predecessors: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Which junction paths cross or merge: centre lines closer than CONFLICT_DISTANCE_M.

    Paths leaving the same incoming lane do not conflict: cars on them are in one queue,
    kept apart by car following until the paths part.
    """
    paths = np.flatnonzero(junction >= 0)
    junction_index = np.full(len(junction), -1, np.int64)
    junction_index[paths] = np.arange(len(paths))
    conflict = np.zeros((len(paths), len(paths)), bool)
    in_junction = np.flatnonzero(junction[segment_of] >= 0)
    if len(in_junction) < 2:
        return junction_index, conflict
    pairs = cKDTree(xy[in_junction]).query_pairs(CONFLICT_DISTANCE_M, output_type="ndarray")
    a, b = segment_of[in_junction[pairs[:, 0]]], segment_of[in_junction[pairs[:, 1]]]
    close = (a != b) & (junction[a] == junction[b])
    for first, second in set(zip(a[close].tolist(), b[close].tolist())):
        if set(predecessors[first]) & set(predecessors[second]):
            continue
        conflict[junction_index[first], junction_index[second]] = True
        conflict[junction_index[second], junction_index[first]] = True
    return junction_index, conflict


@numba.njit(cache=True)
def _nearest_lane(origin, shape, starts, members, lane_xy, lane_yaw, segment_of, seg_start, seg_spacing,
                  seg_length, x, y, yaw):
    """LaneGraph.locate of one pose within REACH_M of a lane (cost = distance + penalty x heading
    error): segment, arc length, distance; segment -1 when no lane sample is that near."""
    cx = int(np.floor((x - origin[0]) / CELL_M))
    cy = int(np.floor((y - origin[1]) / CELL_M))
    if cx < 0 or cy < 0 or cx >= shape[0] or cy >= shape[1]:
        return -1, 0.0, 0.0
    cell = cx * shape[1] + cy
    best, best_cost, best_distance = -1, np.inf, 0.0
    for k in range(starts[cell], starts[cell + 1]):
        i = members[k]
        dx, dy = lane_xy[i, 0] - x, lane_xy[i, 1] - y
        distance = math.sqrt(dx * dx + dy * dy)
        if distance > REACH_M:
            continue
        error = abs((lane_yaw[i] - yaw + math.pi) % (2.0 * math.pi) - math.pi)
        cost = distance + HEADING_PENALTY_M * error
        if cost < best_cost:
            best, best_cost, best_distance = i, cost, distance
    if best < 0:
        return -1, 0.0, 0.0
    segment = segment_of[best]
    along = (x - lane_xy[best, 0]) * math.cos(lane_yaw[best]) + (y - lane_xy[best, 1]) * math.sin(lane_yaw[best])
    s = (best - seg_start[segment]) * seg_spacing[segment] + along
    return segment, min(max(s, 0.0), seg_length[segment]), best_distance


@numba.njit(cache=True)
def _locate_kernel(origin, shape, starts, members, lane_xy, lane_yaw, segment_of, seg_start, seg_spacing,
                   seg_length, xy, yaw):
    """_nearest_lane of each pose: segments, arc lengths, distances, and how many found no lane."""
    n = len(xy)
    segment, s, distance = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    for q in range(n):
        segment[q], s[q], distance[q] = _nearest_lane(origin, shape, starts, members, lane_xy, lane_yaw, segment_of,
                                                      seg_start, seg_spacing, seg_length, xy[q, 0], xy[q, 1], yaw[q])
    return segment, s, distance, np.count_nonzero(segment < 0)


@numba.njit(cache=True)
def _locate_rows_kernel(origin, shape, starts, members, lane_xy, lane_yaw, segment_of, seg_start, seg_spacing,
                        seg_length, location, rotation, rows):
    """_locate_kernel for the poses of actor-table rows (rotation in degrees, yaw second)."""
    n = len(rows)
    segment, s, distance = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    for q in range(n):
        r = rows[q]
        segment[q], s[q], distance[q] = _nearest_lane(origin, shape, starts, members, lane_xy, lane_yaw, segment_of,
                                                      seg_start, seg_spacing, seg_length, location[r, 0],
                                                      location[r, 1], math.radians(rotation[r, 1]))
    return segment, s, distance, np.count_nonzero(segment < 0)
