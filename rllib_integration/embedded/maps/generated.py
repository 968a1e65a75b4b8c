"""Towns this project generates itself, as OpenDRIVE (.xodr) text.

Why: the embedded simulator parses towns with CARLA's own OpenDRIVE parser, but CARLA's
towns ship with the (large, separately licensed) CARLA download. A fresh install must
still have somewhere to drive, so this module writes its own towns: a city grid with
avenues, side streets, sidewalks and 4-way junctions, and a highway loop with an
interchange and a hill. Output is deterministic (same text every call) and cheap to
build, so towns need no cache and no files on disk.

Conventions used throughout (they are OpenDRIVE's):
  * a road's reference line runs along its planView; lanes with negative ids lie to its
    right and carry traffic along the reference direction, positive ids lie to its left
    and carry traffic against it (right-hand traffic);
  * a junction's connecting road starts at the incoming road (contactPoint "start") and
    puts its reference line on the inner edge of the lanes it carries, lanes to its right.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Callable, Literal

Contact = Literal["start", "end"]

_EPS = 1e-6
HALF_PI = math.pi / 2


def _num(value: float) -> str:
    """Short, stable number text; rounding keeps float noise (and '-0') out of the file."""
    value = round(value, 9)
    return format(value + 0.0 if value else 0.0, ".12g")


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Pose:
    """A point on the ground plane with a heading (radians, counter-clockwise from +x)."""

    x: float
    y: float
    hdg: float

    def advance(self, length: float, curvature: float = 0.0) -> Pose:
        """Where driving `length` metres along a line (curvature 0) or an arc ends."""
        if abs(curvature) < 1e-12:
            return Pose(self.x + length * math.cos(self.hdg), self.y + length * math.sin(self.hdg), self.hdg)
        hdg = self.hdg + curvature * length
        return Pose(self.x + (math.sin(hdg) - math.sin(self.hdg)) / curvature,
                    self.y + (math.cos(self.hdg) - math.cos(hdg)) / curvature, hdg)

    def shifted(self, t: float) -> Pose:
        """The pose `t` metres to the left (negative: to the right)."""
        return Pose(self.x - t * math.sin(self.hdg), self.y + t * math.cos(self.hdg), self.hdg)

    def turned_around(self) -> Pose:
        return Pose(self.x, self.y, self.hdg + math.pi)


@dataclass(frozen=True)
class Segment:
    """One planView geometry record: a line (curvature 0) or an arc."""

    length: float
    curvature: float = 0.0


def connect_poses(start: Pose, end: Pose, max_radius: float = math.inf) -> list[Segment]:
    """Lines and arcs from `start` to `end`, for the shapes towns need.

    Same heading: a line, or an S-curve of two opposite arcs when the end is offset
    sideways (lane shifts, ramps). A 90 degree turn: line, arc, line with the largest
    radius that fits (at most `max_radius`). Other shapes raise ValueError, so a
    generator bug shows up as an error instead of as a road that misses its target.
    """
    dx, dy = end.x - start.x, end.y - start.y
    forward = dx * math.cos(start.hdg) + dy * math.sin(start.hdg)
    left = -dx * math.sin(start.hdg) + dy * math.cos(start.hdg)
    turn = math.remainder(end.hdg - start.hdg, 2 * math.pi)
    if forward <= _EPS:
        raise ValueError(f"end {end} is not ahead of start {start}")
    if abs(turn) < _EPS:
        if abs(left) < _EPS:
            return [Segment(forward)]
        angle = 2 * math.atan(abs(left) / forward)
        radius = forward / (2 * math.sin(angle))
        sign = math.copysign(1.0, left)
        return [Segment(radius * angle, sign / radius), Segment(radius * angle, -sign / radius)]
    if abs(abs(turn) - HALF_PI) < _EPS:
        sign = math.copysign(1.0, turn)
        side = left * sign
        if side <= _EPS:
            raise ValueError(f"end {end} is on the wrong side of start {start} for this turn")
        radius = min(forward, side, max_radius)
        segments = [Segment(forward - radius)] if forward - radius > _EPS else []
        segments.append(Segment(radius * HALF_PI, sign / radius))
        if side - radius > _EPS:
            segments.append(Segment(side - radius))
        return segments
    raise ValueError(f"no line/arc shape from {start} to {end}")


@dataclass(frozen=True)
class Elevation:
    """One elevationProfile record: z = a + b*ds + c*ds^2 + d*ds^3 from `s` on."""

    s: float
    a: float
    b: float = 0.0
    c: float = 0.0
    d: float = 0.0

    def z(self, s: float) -> float:
        ds = s - self.s
        return self.a + ds * (self.b + ds * (self.c + ds * self.d))


def smooth_profile(knots: list[tuple[float, float]]) -> list[Elevation]:
    """Elevation through (s, z) knots with level tangents at every knot.

    Cubic "smoothstep" pieces keep pitch continuous, so vehicles do not see a kink
    where a slope starts or ends.
    """
    records = []
    for (s0, z0), (s1, z1) in zip(knots, knots[1:]):
        length, rise = s1 - s0, z1 - z0
        records.append(Elevation(s0, z0, 0.0, 3 * rise / length ** 2, -2 * rise / length ** 3))
    return records


# --------------------------------------------------------------------------- lanes


@dataclass(frozen=True)
class Lane:
    """One lane; its road mark describes the lane's outer border (OpenDRIVE's rule)."""

    type: str
    width: float
    mark: str = "none"
    mark_color: str = "white"


@dataclass(frozen=True)
class LaneProfile:
    """The lanes across a road, each side listed from the centre outward."""

    left: tuple[Lane, ...]
    right: tuple[Lane, ...]
    center_mark: str = "none"
    center_color: str = "yellow"

    def lane(self, lane_id: int) -> Lane:
        return self.left[lane_id - 1] if lane_id > 0 else self.right[-lane_id - 1]

    def inner_offset(self, lane_id: int) -> float:
        """Signed lateral offset (left positive) of the lane's border nearest the centre."""
        side = self.left if lane_id > 0 else self.right
        offset = sum(lane.width for lane in side[:abs(lane_id) - 1])
        return offset if lane_id > 0 else -offset

    def driving_ids(self, side: Literal["left", "right"]) -> list[int]:
        """Driving lane ids of one side, centre outward."""
        lanes, sign = (self.left, 1) if side == "left" else (self.right, -1)
        return [sign * (i + 1) for i, lane in enumerate(lanes) if lane.type == "driving"]

    def half_width(self) -> float:
        return max(sum(lane.width for lane in self.left), sum(lane.width for lane in self.right))


# --------------------------------------------------------------------------- roads and junctions


@dataclass(frozen=True)
class Link:
    element_type: Literal["road", "junction"]
    element_id: int
    contact: Contact | None = None


TRAFFIC_LIGHT_TYPE = "1000001"       # CARLA's OpenDRIVE signal types
STOP_SIGN_TYPE = "206"
SIGNAL_SETBACK_M = 1.0               # signals stand this far before the road's junction end ...
SIGNAL_KERB_OFFSET_M = 0.5           # ... and this far beyond its outermost lane


@dataclass(frozen=True)
class Signal:
    """A traffic light or stop sign at (s, t) on its road, governing the lanes of `orientation`
    ("+": lanes driving along the road, "-": against it)."""

    id: int
    type: str            # CARLA's signal types: TRAFFIC_LIGHT_TYPE, STOP_SIGN_TYPE
    s: float
    t: float
    orientation: Literal["+", "-"]


@dataclass(frozen=True)
class SignalReference:
    """A junction path governed by a signal placed on another road (as CARLA's towns do)."""

    signal: int
    from_lane: int
    to_lane: int


@dataclass(frozen=True)
class Controller:
    """Signals that turn green together (one phase of a junction's light cycle)."""

    id: int
    signals: tuple[int, ...]


@dataclass(frozen=True)
class Crosswalk:
    """A painted crossing: centre at (s, t) on its road, `length` across the road, `width` along it."""

    s: float
    t: float
    length: float
    width: float


@dataclass
class Road:
    """A road: reference line from `start` through `segments`, one lane section."""

    id: int
    name: str
    start: Pose
    segments: list[Segment]
    profile: LaneProfile
    speed_kmh: float
    elevation: list[Elevation] = field(default_factory=lambda: [Elevation(0.0, 0.0)])
    junction: int = -1
    predecessor: Link | None = None
    successor: Link | None = None
    lane_links: dict[int, list[int | None]] = field(default_factory=dict)  # id -> [pred, succ]
    crosswalks: list[Crosswalk] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    signal_references: list[SignalReference] = field(default_factory=list)

    @property
    def length(self) -> float:
        return sum(segment.length for segment in self.segments)

    def pose_at(self, s: float) -> Pose:
        pose = self.start
        for segment in self.segments:
            if s <= segment.length + _EPS:
                return pose.advance(min(s, segment.length), segment.curvature)
            pose = pose.advance(segment.length, segment.curvature)
            s -= segment.length
        return pose

    def z_at(self, s: float) -> float:
        return [record for record in self.elevation if record.s <= s + _EPS][-1].z(s)

    def contact_s(self, contact: Contact) -> float:
        return 0.0 if contact == "start" else self.length

    def link_lane(self, lane_id: int, predecessor: int | None = None, successor: int | None = None) -> None:
        entry = self.lane_links.setdefault(lane_id, [None, None])
        if predecessor is not None:
            entry[0] = predecessor
        if successor is not None:
            entry[1] = successor


@dataclass(frozen=True)
class Connection:
    incoming: int
    connecting: int
    lane_links: tuple[tuple[int, int], ...]


@dataclass
class Junction:
    id: int
    name: str
    connections: list[Connection] = field(default_factory=list)
    controllers: list[int] = field(default_factory=list)   # controller ids, in cycle order


@dataclass
class OpenDriveMap:
    """Roads and junctions of one town, and the code that writes them as .xodr."""

    name: str
    latitude: float
    longitude: float
    roads: list[Road] = field(default_factory=list)
    junctions: list[Junction] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)
    _next_id: int = 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def add_road(self, name: str, start: Pose, segments: list[Segment], profile: LaneProfile,
                 speed_kmh: float, elevation: list[Elevation] | None = None) -> Road:
        road = Road(self._new_id(), name, start, segments, profile, speed_kmh)
        if elevation:
            road.elevation = elevation
        self.roads.append(road)
        return road

    def add_junction(self, name: str) -> Junction:
        junction = Junction(self._new_id(), name)
        self.junctions.append(junction)
        return junction

    def join(self, first: Road, second: Road) -> None:
        """Continue `first` (its end) into `second` (its start); lanes keep their ids."""
        first.successor = Link("road", second.id, "start")
        second.predecessor = Link("road", first.id, "end")
        for lane_id in [*range(1, len(first.profile.left) + 1), *range(-1, -len(first.profile.right) - 1, -1)]:
            first.link_lane(lane_id, successor=lane_id)
            second.link_lane(lane_id, predecessor=lane_id)

    @staticmethod
    def attach(road: Road, contact: Contact, junction: Junction) -> None:
        if contact == "start":
            road.predecessor = Link("junction", junction.id)
        else:
            road.successor = Link("junction", junction.id)

    @staticmethod
    def lane_pose(road: Road, contact: Contact, lane_id: int) -> Pose:
        """Inner edge of a lane at a road end, heading the way that lane's traffic drives."""
        pose = road.pose_at(road.contact_s(contact)).shifted(road.profile.inner_offset(lane_id))
        return pose if lane_id < 0 else pose.turned_around()

    def connect(self, junction: Junction, incoming: tuple[Road, Contact], in_lanes: list[int],
                outgoing: tuple[Road, Contact], out_lanes: list[int]) -> Road:
        """Add a connecting road carrying `in_lanes` (centre outward) onto `out_lanes`."""
        (in_road, in_contact), (out_road, out_contact) = incoming, outgoing
        if any((lane < 0) != (in_contact == "end") for lane in in_lanes) or \
                any((lane < 0) != (out_contact == "start") for lane in out_lanes):
            raise ValueError(f"lanes {in_lanes}->{out_lanes} do not drive into/out of junction {junction.name}")
        start = self.lane_pose(in_road, in_contact, in_lanes[0])
        end = self.lane_pose(out_road, out_contact, out_lanes[0])
        lanes = tuple(Lane("driving", in_road.profile.lane(lane).width) for lane in in_lanes)
        road = self.add_road(f"{junction.name} {in_road.id}>{out_road.id}", start, connect_poses(start, end),
                             LaneProfile(left=(), right=lanes), min(in_road.speed_kmh, out_road.speed_kmh))
        z0 = in_road.z_at(in_road.contact_s(in_contact))
        z1 = out_road.z_at(out_road.contact_s(out_contact))
        road.elevation = [Elevation(0.0, z0, (z1 - z0) / road.length)]
        road.junction = junction.id
        road.predecessor = Link("road", in_road.id, in_contact)
        road.successor = Link("road", out_road.id, out_contact)
        for index, (in_lane, out_lane) in enumerate(zip(in_lanes, out_lanes)):
            road.link_lane(-index - 1, predecessor=in_lane, successor=out_lane)
        junction.connections.append(Connection(in_road.id, road.id, tuple(
            (in_lane, -index - 1) for index, in_lane in enumerate(in_lanes))))
        return road

    # ----------------------------------------------------------------------- writing

    def _bounds(self) -> tuple[float, float, float, float]:
        xs, ys = [], []
        for road in self.roads:
            for step in range(int(road.length // 10.0) + 2):
                pose = road.pose_at(min(step * 10.0, road.length))
                xs.append(pose.x)
                ys.append(pose.y)
        return max(ys), min(ys), max(xs), min(xs)

    def to_xodr(self) -> str:
        root = ElementTree.Element("OpenDRIVE")
        north, south, east, west = self._bounds()
        header = ElementTree.SubElement(root, "header", revMajor="1", revMinor="4", name=self.name, version="1.0",
                                        north=_num(north), south=_num(south), east=_num(east), west=_num(west),
                                        vendor="carla-rllib")
        ElementTree.SubElement(header, "geoReference").text = (
            f"+proj=tmerc +lat_0={self.latitude} +lon_0={self.longitude} +k=1 +x_0=0 +y_0=0 "
            "+datum=WGS84 +units=m +vunits=m +no_defs")
        for road in self.roads:
            _write_road(root, road)
        for controller in self.controllers:
            node = ElementTree.SubElement(root, "controller", name=f"Controller {controller.id}",
                                          id=str(controller.id), sequence="0")
            for signal in controller.signals:
                ElementTree.SubElement(node, "control", signalId=str(signal), type="")
        for junction in self.junctions:
            _write_junction(root, junction)
        ElementTree.indent(root, space="  ")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def _write_link(parent: ElementTree.Element, tag: str, link: Link | None) -> None:
    if link is None:
        return
    attributes = {"elementType": link.element_type, "elementId": str(link.element_id)}
    if link.contact:
        attributes["contactPoint"] = link.contact
    ElementTree.SubElement(parent, tag, attributes)


def _write_lane(parent: ElementTree.Element, road: Road, lane_id: int, lane: Lane) -> None:
    node = ElementTree.SubElement(parent, "lane", id=str(lane_id), type=lane.type, level="false")
    predecessor, successor = road.lane_links.get(lane_id, (None, None))
    if predecessor is not None or successor is not None:
        link = ElementTree.SubElement(node, "link")
        if predecessor is not None:
            ElementTree.SubElement(link, "predecessor", id=str(predecessor))
        if successor is not None:
            ElementTree.SubElement(link, "successor", id=str(successor))
    ElementTree.SubElement(node, "width", sOffset="0", a=_num(lane.width), b="0", c="0", d="0")
    _write_mark(node, lane.mark, lane.mark_color)


def _write_mark(parent: ElementTree.Element, mark: str, color: str) -> None:
    attributes = {"sOffset": "0", "type": mark, "color": color, "material": "standard"}
    if mark != "none":
        attributes["width"] = "0.15"
    attributes["laneChange"] = "both" if "solid" not in mark else "none"
    ElementTree.SubElement(parent, "roadMark", attributes)


def _write_road(root: ElementTree.Element, road: Road) -> None:
    node = ElementTree.SubElement(root, "road", name=road.name, length=_num(road.length), id=str(road.id),
                                  junction=str(road.junction))
    link = ElementTree.SubElement(node, "link")
    _write_link(link, "predecessor", road.predecessor)
    _write_link(link, "successor", road.successor)
    road_type = ElementTree.SubElement(node, "type", s="0", type="town")
    ElementTree.SubElement(road_type, "speed", max=_num(road.speed_kmh), unit="km/h")
    plan_view = ElementTree.SubElement(node, "planView")
    pose, s = road.start, 0.0
    for segment in road.segments:
        geometry = ElementTree.SubElement(plan_view, "geometry", s=_num(s), x=_num(pose.x), y=_num(pose.y),
                                          hdg=_num(math.remainder(pose.hdg, 2 * math.pi)),
                                          length=_num(segment.length))
        if segment.curvature:
            ElementTree.SubElement(geometry, "arc", curvature=_num(segment.curvature))
        else:
            ElementTree.SubElement(geometry, "line")
        pose, s = pose.advance(segment.length, segment.curvature), s + segment.length
    profile = ElementTree.SubElement(node, "elevationProfile")
    for record in road.elevation:
        ElementTree.SubElement(profile, "elevation", s=_num(record.s), a=_num(record.a), b=_num(record.b),
                               c=_num(record.c), d=_num(record.d))
    ElementTree.SubElement(ElementTree.SubElement(node, "lateralProfile"), "superelevation",
                           s="0", a="0", b="0", c="0", d="0")
    lanes = ElementTree.SubElement(node, "lanes")
    ElementTree.SubElement(lanes, "laneOffset", s="0", a="0", b="0", c="0", d="0")
    section = ElementTree.SubElement(lanes, "laneSection", s="0")
    if road.profile.left:
        left = ElementTree.SubElement(section, "left")
        for index in range(len(road.profile.left), 0, -1):
            _write_lane(left, road, index, road.profile.left[index - 1])
    center = ElementTree.SubElement(ElementTree.SubElement(section, "center"), "lane", id="0", type="none",
                                    level="false")
    _write_mark(center, road.profile.center_mark, road.profile.center_color)
    if road.profile.right:
        right = ElementTree.SubElement(section, "right")
        for index, lane in enumerate(road.profile.right, start=1):
            _write_lane(right, road, -index, lane)
    _write_crosswalks(node, road)
    _write_signals(node, road)


CROSSWALK_ID_BASE = 1_000_000  # object ids: base + 10 * road id + index, apart from other ids


def _write_crosswalks(parent: ElementTree.Element, road: Road) -> None:
    """OpenDRIVE crosswalk objects (CARLA's get_crosswalks, walker navigation): the object is
    turned 90 degrees so its outline's u axis runs across the road."""
    if not road.crosswalks:
        return
    objects = ElementTree.SubElement(parent, "objects")
    for index, crosswalk in enumerate(road.crosswalks):
        node = ElementTree.SubElement(objects, "object", type="crosswalk", name="Crosswalk",
                                      id=str(CROSSWALK_ID_BASE + 10 * road.id + index), s=_num(crosswalk.s),
                                      t=_num(crosswalk.t), zOffset="0", hdg=_num(HALF_PI), pitch="0", roll="0",
                                      orientation="none", length=_num(crosswalk.length), width=_num(crosswalk.width))
        outline = ElementTree.SubElement(node, "outline")
        half_u, half_v = crosswalk.length / 2, crosswalk.width / 2
        for u, v in ((-half_u, -half_v), (half_u, -half_v), (half_u, half_v), (-half_u, half_v), (-half_u, -half_v)):
            ElementTree.SubElement(outline, "cornerLocal", u=_num(u), v=_num(v), z="0")


SIGNAL_NAMES = {TRAFFIC_LIGHT_TYPE: "Signal_3Light_Post01", STOP_SIGN_TYPE: "Stop"}
SIGNAL_SIZE_M = {TRAFFIC_LIGHT_TYPE: (1.16, 0.52), STOP_SIGN_TYPE: (0.9, 0.9)}   # height, width


def _write_signals(parent: ElementTree.Element, road: Road) -> None:
    """Signals as CARLA's towns write them: the signal on the road it stands by (lane validity
    0: no lane of its own), one reference per governed junction path on that path."""
    if not road.signals and not road.signal_references:
        return
    signals = ElementTree.SubElement(parent, "signals")
    for signal in road.signals:
        height, width = SIGNAL_SIZE_M[signal.type]
        node = ElementTree.SubElement(
            signals, "signal", name=SIGNAL_NAMES[signal.type], id=str(signal.id), s=_num(signal.s), t=_num(signal.t),
            zOffset="0", hOffset="0", roll="0", pitch="0", orientation=signal.orientation,
            dynamic="yes" if signal.type == TRAFFIC_LIGHT_TYPE else "no", country="OpenDRIVE", type=signal.type,
            subtype="-1", value="-1", text="", height=_num(height), width=_num(width))
        ElementTree.SubElement(node, "validity", fromLane="0", toLane="0")
    for reference in road.signal_references:
        node = ElementTree.SubElement(signals, "signalReference", id=str(reference.signal), s="0", t="0",
                                      orientation="+")
        ElementTree.SubElement(node, "validity", fromLane=str(reference.from_lane), toLane=str(reference.to_lane))


def _write_junction(root: ElementTree.Element, junction: Junction) -> None:
    node = ElementTree.SubElement(root, "junction", id=str(junction.id), name=junction.name)
    for index, connection in enumerate(junction.connections):
        child = ElementTree.SubElement(node, "connection", id=str(index), incomingRoad=str(connection.incoming),
                                       connectingRoad=str(connection.connecting), contactPoint="start")
        for from_lane, to_lane in connection.lane_links:
            ElementTree.SubElement(child, "laneLink", {"from": str(from_lane), "to": str(to_lane)})
    for sequence, controller in enumerate(junction.controllers):
        ElementTree.SubElement(node, "controller", id=str(controller), type="0", sequence=str(sequence))


# --------------------------------------------------------------------------- crossings

EAST, NORTH, WEST, SOUTH = range(4)  # arm directions: outward heading = direction * 90 degrees


@dataclass
class Crossing:
    """A 3- or 4-way junction of axis-aligned roads; arms are filled in as roads are laid."""

    junction: Junction
    x: float
    y: float
    arm_length: dict[int, float]  # centre to where each arm's road begins
    arms: dict[int, tuple[Road, Contact]] = field(default_factory=dict)

    def arm_pose(self, direction: int) -> Pose:
        """Where the road of an arm touches the junction, heading away from it."""
        hdg = direction * HALF_PI
        reach = self.arm_length[direction]
        return Pose(self.x + reach * math.cos(hdg), self.y + reach * math.sin(hdg), hdg)


def _lanes_into(road: Road, contact: Contact) -> list[int]:
    return road.profile.driving_ids("right" if contact == "end" else "left")


def _lanes_out_of(road: Road, contact: Contact) -> list[int]:
    return road.profile.driving_ids("right" if contact == "start" else "left")


def lay_road(town: OpenDriveMap, name: str, begin: tuple[Crossing, int], finish: tuple[Crossing, int],
             profile: LaneProfile, speed_kmh: float, corner_radius: float = math.inf,
             elevation: list[Elevation] | None = None) -> Road:
    """A road from one crossing's arm to another's, registered on both crossings."""
    (first, first_dir), (last, last_dir) = begin, finish
    start, end = first.arm_pose(first_dir), last.arm_pose(last_dir).turned_around()
    road = town.add_road(name, start, connect_poses(start, end, corner_radius), profile, speed_kmh, elevation)
    first.arms[first_dir] = (road, "start")
    last.arms[last_dir] = (road, "end")
    town.attach(road, "start", first.junction)
    town.attach(road, "end", last.junction)
    return road


def connect_crossing(town: OpenDriveMap, crossing: Crossing) -> None:
    """Every straight, left and right movement between the crossing's arms, lane-correct.

    Straight: lane k to lane k. Left turns use the innermost lanes, right turns the
    outermost ones, as traffic rules require. No U-turns.
    """
    for in_dir, incoming in sorted(crossing.arms.items()):
        in_lanes = _lanes_into(*incoming)
        for out_dir, outgoing in sorted(crossing.arms.items()):
            out_lanes = _lanes_out_of(*outgoing)
            turn = (out_dir - in_dir - 2) % 4  # 0 straight, 1 left, 3 right, 2 U-turn
            if not in_lanes or not out_lanes or turn == 2:
                continue
            if turn == 0:
                count = min(len(in_lanes), len(out_lanes))
                town.connect(crossing.junction, incoming, in_lanes[:count], outgoing, out_lanes[:count])
            elif turn == 1:
                town.connect(crossing.junction, incoming, in_lanes[:1], outgoing, out_lanes[:1])
            else:
                town.connect(crossing.junction, incoming, in_lanes[-1:], outgoing, out_lanes[-1:])


def signalise_arm(town: OpenDriveMap, crossing: Crossing, direction: int, signal_type: str) -> Signal | None:
    """A signal by the kerb where an arm's traffic enters the crossing, governing every
    junction path that traffic can take; traffic lights get a controller (a phase) each, in
    arm order, so a crossing's approaches take turns."""
    road, contact = crossing.arms[direction]
    if not _lanes_into(road, contact):
        return None
    into_along = contact == "end"   # traffic drives along the road's reference direction into the junction
    side = road.profile.right if into_along else road.profile.left
    kerb = sum(lane.width for lane in side) + SIGNAL_KERB_OFFSET_M
    s = road.length - SIGNAL_SETBACK_M if into_along else SIGNAL_SETBACK_M
    signal = Signal(town._new_id(), signal_type, s, -kerb if into_along else kerb, "+" if into_along else "-")
    road.signals.append(signal)
    for connecting in town.roads:
        if connecting.junction == crossing.junction.id and connecting.predecessor is not None \
                and connecting.predecessor.element_id == road.id:
            lanes = len(connecting.profile.right)
            connecting.signal_references.append(SignalReference(signal.id, -lanes, -1))
    if signal_type == TRAFFIC_LIGHT_TYPE:
        controller = Controller(town._new_id(), (signal.id,))
        town.controllers.append(controller)
        crossing.junction.controllers.append(controller.id)
    return signal


# --------------------------------------------------------------------------- GridCity

CITY_LANE_WIDTH = 3.5
SIDEWALK_WIDTH = 3.0
CROSSWALK_MARGIN = 2.0   # junction boxes reach this far past the crossing road's sidewalk
CROSSWALK_WIDTH = 3.0    # along the road
CROSSWALK_SETBACK = 1.0  # from the junction's edge to the crosswalk
CITY_CORNER_RADIUS = 25.0


def _city_profile(lanes_per_direction: int) -> LaneProfile:
    """Driving lanes (broken between them, solid at the kerb) and a sidewalk on each side."""
    side = tuple(Lane("driving", CITY_LANE_WIDTH, "solid" if i == lanes_per_direction - 1 else "broken")
                 for i in range(lanes_per_direction)) + (Lane("sidewalk", SIDEWALK_WIDTH),)
    return LaneProfile(side, side, "solid solid" if lanes_per_direction > 1 else "broken")


AVENUE = _city_profile(2)
STREET = _city_profile(1)


def build_grid_city(blocks: int = 4, block_size: float = 120.0) -> str:
    """A square grid: `blocks` x `blocks` blocks, avenues through the middle.

    Interior crossings are 4-way junctions; the border is a ring of side streets with
    T-junctions and rounded corners, so every lane can reach every other lane.
    """
    town = OpenDriveMap("GridCity", latitude=48.137154, longitude=11.576124)
    middle = blocks // 2

    def line(index: int) -> tuple[str, LaneProfile, float]:
        """Name, lanes and speed limit of grid line `index`."""
        return ("Avenue", AVENUE, 50.0) if index == middle else ("Street", STREET, 30.0)

    crossings: dict[tuple[int, int], Crossing] = {}
    for i in range(blocks + 1):
        for j in range(blocks + 1):
            if i in (0, blocks) and j in (0, blocks):
                continue  # corners are curves, not junctions
            across_x = line(i)[1].half_width() + CROSSWALK_MARGIN  # clearance of the north-south road
            across_y = line(j)[1].half_width() + CROSSWALK_MARGIN
            crossings[i, j] = Crossing(town.add_junction(f"Junction {i}-{j}"), i * block_size, j * block_size,
                                       {EAST: across_x, WEST: across_x, NORTH: across_y, SOUTH: across_y})

    for i in range(1, blocks):
        kind, profile, speed = line(i)
        for j in range(blocks):
            lay_road(town, f"{kind} x{i} {j}-{j + 1}", (crossings[i, j], NORTH), (crossings[i, j + 1], SOUTH),
                     profile, speed)
    for j in range(1, blocks):
        kind, profile, speed = line(j)
        for i in range(blocks):
            lay_road(town, f"{kind} y{j} {i}-{i + 1}", (crossings[i, j], EAST), (crossings[i + 1, j], WEST),
                     profile, speed)

    # The ring, counter-clockwise: (crossing, direction of travel there).
    ring = ([((i, 0), EAST) for i in range(1, blocks)] + [((blocks, j), NORTH) for j in range(1, blocks)]
            + [((i, blocks), WEST) for i in range(blocks - 1, 0, -1)]
            + [((0, j), SOUTH) for j in range(blocks - 1, 0, -1)])
    for (key, travel), (next_key, next_travel) in zip(ring, ring[1:] + ring[:1]):
        lay_road(town, f"Street ring {key[0]}-{key[1]}>{next_key[0]}-{next_key[1]}", (crossings[key], travel),
                 (crossings[next_key], (next_travel + 2) % 4), STREET, 30.0, corner_radius=CITY_CORNER_RADIUS)

    for road in town.roads:
        add_crosswalks(road)
    for crossing in crossings.values():
        connect_crossing(town, crossing)
    for (i, j), crossing in crossings.items():
        if len(crossing.arms) == 4:   # inner crossings: traffic lights, one approach at a time
            for direction in sorted(crossing.arms):
                signalise_arm(town, crossing, direction, TRAFFIC_LIGHT_TYPE)
        else:                         # T-junctions on the ring: the side street stops
            side_street = EAST if i == 0 else WEST if i == blocks else NORTH if j == 0 else SOUTH
            signalise_arm(town, crossing, side_street, STOP_SIGN_TYPE)
    return town.to_xodr()


def add_crosswalks(road: Road) -> None:
    """A crosswalk from kerb to kerb near each end of a road with sidewalks on both sides."""
    sidewalks = [[index for index, lane in enumerate(side, start=1) if lane.type == "sidewalk"]
                 for side in (road.profile.left, road.profile.right)]
    if not all(sidewalks) or road.length < 2 * (CROSSWALK_SETBACK + CROSSWALK_WIDTH):
        return
    left = road.profile.inner_offset(sidewalks[0][0])
    right = -road.profile.inner_offset(-sidewalks[1][0])
    centre = CROSSWALK_SETBACK + CROSSWALK_WIDTH / 2
    for s in (centre, road.length - centre):
        road.crosswalks.append(Crosswalk(s, (left - right) / 2, left + right, CROSSWALK_WIDTH))


# --------------------------------------------------------------------------- HighwayLoop

HIGHWAY_LANE_WIDTH = 3.75
HIGHWAY_SPEED = 110.0
RAMP_SPEED = 70.0
LOCAL_SPEED = 50.0


def _highway_profile() -> LaneProfile:
    """Median, three driving lanes and a shoulder per side; the carriageways never touch."""
    side = (Lane("median", 1.5, "solid", "yellow"), Lane("driving", HIGHWAY_LANE_WIDTH, "broken"),
            Lane("driving", HIGHWAY_LANE_WIDTH, "broken"), Lane("driving", HIGHWAY_LANE_WIDTH, "solid"),
            Lane("shoulder", 2.5))
    return LaneProfile(side, side)


HIGHWAY = _highway_profile()
RAMP = LaneProfile(left=(Lane("shoulder", 1.0),),
                   right=(Lane("driving", HIGHWAY_LANE_WIDTH, "solid"), Lane("shoulder", 1.5)), center_mark="solid")
LOCAL_ROAD = LaneProfile(left=(Lane("driving", 3.5, "solid"), Lane("shoulder", 1.5)),
                         right=(Lane("driving", 3.5, "solid"), Lane("shoulder", 1.5)), center_mark="broken")


def build_highway_loop() -> str:
    """A stadium-shaped divided highway with a hill and a full interchange.

    The loop runs counter-clockwise (reference direction) along y = -radius, around an
    east arc, back along y = +radius over a hill, and around a west arc. On the south
    straight, junctions A (west) and B (east) hold the ramps: traffic leaving either
    carriageway reaches a local road that bridges the highway and can rejoin the other
    carriageway, so both directions are reachable from each other (no one-way trap).
    """
    town = OpenDriveMap("HighwayLoop", latitude=52.520008, longitude=13.404954)
    straight, radius = 700.0, 200.0               # the local road's junctions need radius > 150 m
    half, y_south = straight / 2, -radius
    merge_length = 60.0                           # length of junctions A and B along the highway
    a_west, b_east = -half + 100.0, half - 100.0
    a_east, b_west = a_west + merge_length, b_east - merge_length
    outer_lane = HIGHWAY.driving_ids("right")[-1]   # -4: the lane ramps leave from / join
    ramp_shift = 9.0                              # lateral move of a ramp inside a junction
    ramp_offset = -HIGHWAY.inner_offset(outer_lane) + ramp_shift  # ramp reference line from highway centre
    local_y, local_junction_reach = 150.0, 7.0    # junctions S and N sit this far off the highway
    bridge_height = 7.0

    south_w = town.add_road("Highway south west", Pose(-half, y_south, 0.0), [Segment(a_west + half)], HIGHWAY,
                            HIGHWAY_SPEED)
    south_mid = town.add_road("Highway south middle", Pose(a_east, y_south, 0.0), [Segment(b_west - a_east)],
                              HIGHWAY, HIGHWAY_SPEED)
    south_e = town.add_road("Highway south east", Pose(b_east, y_south, 0.0), [Segment(half - b_east)], HIGHWAY,
                            HIGHWAY_SPEED)
    arc_east = town.add_road("Highway east arc", Pose(half, y_south, 0.0), [Segment(math.pi * radius, 1 / radius)],
                             HIGHWAY, HIGHWAY_SPEED)
    hill = smooth_profile([(0.0, 0.0), (100.0, 0.0), (260.0, 8.0), (straight - 260.0, 8.0), (straight - 100.0, 0.0),
                           (straight, 0.0)])
    north = town.add_road("Highway north", Pose(half, radius, math.pi), [Segment(straight)], HIGHWAY, HIGHWAY_SPEED,
                          hill)
    arc_west = town.add_road("Highway west arc", Pose(-half, radius, math.pi),
                             [Segment(math.pi * radius, 1 / radius)], HIGHWAY, HIGHWAY_SPEED)
    for first, second in [(south_e, arc_east), (arc_east, north), (north, arc_west), (arc_west, south_w)]:
        town.join(first, second)

    junction_s = Crossing(town.add_junction("Junction S"), 0.0, y_south - local_y,
                          {NORTH: RAMP.half_width() + 2.0, EAST: local_junction_reach, WEST: local_junction_reach})
    junction_n = Crossing(town.add_junction("Junction N"), 0.0, y_south + local_y,
                          {SOUTH: RAMP.half_width() + 2.0, EAST: local_junction_reach, WEST: local_junction_reach})
    bridge_start = local_y - junction_s.arm_length[NORTH]
    lay_road(town, "Local road bridge", (junction_s, NORTH), (junction_n, SOUTH), LOCAL_ROAD, LOCAL_SPEED,
             elevation=smooth_profile([(0.0, 0.0), (25.0, 0.0), (bridge_start - 30.0, bridge_height),
                                       (bridge_start + 30.0, bridge_height), (2 * bridge_start - 25.0, 0.0),
                                       (2 * bridge_start, 0.0)]))

    def ramp(name: str, start: Pose, end: Pose) -> Road:
        return town.add_road(name, start, connect_poses(start, end), RAMP, RAMP_SPEED)

    exit_eastbound = ramp("Ramp exit eastbound", Pose(a_east, y_south - ramp_offset, 0.0),
                    junction_s.arm_pose(WEST).turned_around())
    entry_eastbound = ramp("Ramp entry eastbound", junction_s.arm_pose(EAST), Pose(b_west, y_south - ramp_offset, 0.0))
    exit_westbound = ramp("Ramp exit westbound", Pose(b_west, y_south + ramp_offset, math.pi),
                   junction_n.arm_pose(EAST).turned_around())
    entry_westbound = ramp("Ramp entry westbound", junction_n.arm_pose(WEST), Pose(a_east, y_south + ramp_offset, math.pi))
    junction_s.arms.update({WEST: (exit_eastbound, "end"), EAST: (entry_eastbound, "start")})
    junction_n.arms.update({EAST: (exit_westbound, "end"), WEST: (entry_westbound, "start")})
    for crossing in (junction_s, junction_n):
        for road, contact in crossing.arms.values():
            town.attach(road, contact, crossing.junction)
        connect_crossing(town, crossing)
    signalise_arm(town, junction_s, WEST, STOP_SIGN_TYPE)   # exit ramps stop before the local road
    signalise_arm(town, junction_n, EAST, STOP_SIGN_TYPE)

    eastbound, westbound = HIGHWAY.driving_ids("right"), HIGHWAY.driving_ids("left")
    junction_a = town.add_junction("Junction A")  # eastbound traffic leaves, westbound joins
    junction_b = town.add_junction("Junction B")  # eastbound traffic joins, westbound leaves
    for junction, west_road, east_road in [(junction_a, south_w, south_mid), (junction_b, south_mid, south_e)]:
        town.attach(west_road, "end", junction)
        town.attach(east_road, "start", junction)
        town.connect(junction, (west_road, "end"), eastbound, (east_road, "start"), eastbound)
        town.connect(junction, (east_road, "start"), westbound, (west_road, "end"), westbound)
    for road, contact, junction in [(exit_eastbound, "start", junction_a), (entry_westbound, "end", junction_a),
                                    (entry_eastbound, "end", junction_b), (exit_westbound, "start", junction_b)]:
        town.attach(road, contact, junction)
    town.connect(junction_a, (south_w, "end"), [outer_lane], (exit_eastbound, "start"), [-1])
    town.connect(junction_a, (entry_westbound, "end"), [-1], (south_w, "end"), [-outer_lane])
    town.connect(junction_b, (entry_eastbound, "end"), [-1], (south_e, "start"), [outer_lane])
    town.connect(junction_b, (south_e, "start"), [-outer_lane], (exit_westbound, "start"), [-1])
    return town.to_xodr()


# --------------------------------------------------------------------------- registry

GENERATED_TOWNS: dict[str, Callable[[], str]] = {
    "GridCity": build_grid_city,
    "HighwayLoop": build_highway_loop,
}
GENERATED_TOWN_NAMES: tuple[str, ...] = tuple(GENERATED_TOWNS)


def generate_town(name: str) -> str:
    """The .xodr text of a generated town; KeyError names the towns that exist."""
    try:
        builder = GENERATED_TOWNS[name]
    except KeyError:
        raise KeyError(f"no generated town '{name}'; generated towns: {', '.join(GENERATED_TOWN_NAMES)}") from None
    return builder()
