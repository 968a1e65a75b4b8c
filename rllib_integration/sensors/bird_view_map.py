"""The birdview's static map layer: a town's lanes rasterised once per town and resolution.

Drawing thousands of lane polygons every frame would cost milliseconds, so the town is drawn once
into a raster that each frame crops with a single warpAffine. The raster is a bitfield (one bit per
`MapBit`), so "rgb" and "masks" birdviews share one cached file. Only the client-side `carla.Map`
(parsed from the OpenDRIVE text) is used, so both backends give the same layer.
"""
from __future__ import annotations

import enum
import hashlib
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import carla
import cv2
import numpy as np

LOGGER = logging.getLogger(__name__)

SAMPLE_STEP_M = 1.0           # distance between lane samples; lane pieces are trapezoids between samples
DASH_LENGTH_M = 3.0           # painted part of a broken lane marking
DASH_PERIOD_M = 6.0           # dash plus gap of a broken lane marking
MAP_MARGIN_M = 2.0            # empty border around the town's lanes
MAX_MAP_PIXELS = 64_000_000   # above this the layer is drawn coarser (and scaled up per frame)
SHIFT_BITS = 4                # OpenCV fixed-point fraction bits: polygon vertices in 1/16 px
CACHE_FORMAT_VERSION = 1      # bump when drawing changes so stale cache files are not reused

_FIXED_POINT_SCALE = 1 << SHIFT_BITS


class MapBit(enum.IntFlag):
    """One bit per static layer in `MapLayer.bits`; layers overlap (markings lie on the road)."""
    ROAD = 1
    WHITE_MARKING = 2
    YELLOW_MARKING = 4
    SIDEWALK = 8
    SHOULDER = 16    # paved but not for driving: shoulder, parking and biking lanes


LANE_TYPE_BITS = {
    carla.LaneType.Driving: MapBit.ROAD,
    carla.LaneType.Bidirectional: MapBit.ROAD,
    carla.LaneType.Sidewalk: MapBit.SIDEWALK,
    carla.LaneType.Shoulder: MapBit.SHOULDER,
    carla.LaneType.Parking: MapBit.SHOULDER,
    carla.LaneType.Biking: MapBit.SHOULDER,
}
SOLID_MARKINGS = {carla.LaneMarkingType.Solid, carla.LaneMarkingType.SolidSolid,
                  carla.LaneMarkingType.SolidBroken, carla.LaneMarkingType.BrokenSolid}
BROKEN_MARKINGS = {carla.LaneMarkingType.Broken, carla.LaneMarkingType.BrokenBroken,
                   carla.LaneMarkingType.BottsDots}


@dataclass(frozen=True)
class LaneGeometry:
    """What the map layer shows, in world metres (x, y), before rasterisation."""
    quads: np.ndarray          # (N, 4, 2) lane pieces between consecutive samples
    quad_bits: np.ndarray      # (N,) the MapBit of each piece
    lines: np.ndarray          # (M, 2, 2) painted lane-marking segments
    line_bits: np.ndarray      # (M,) MapBit.WHITE_MARKING or MapBit.YELLOW_MARKING
    line_widths_m: np.ndarray  # (M,) painted width of each segment


@dataclass(frozen=True)
class MapLayer:
    """The rasterised town: pixel (col, row) shows world (origin + (col, row) / pixels_per_metre)."""
    bits: np.ndarray                # (H, W) uint8 of MapBit flags
    origin_m: tuple[float, float]   # world (x, y) at the centre of pixel (0, 0)
    pixels_per_metre: float


def lane_geometry(town: carla.Map, step_m: float = SAMPLE_STEP_M) -> LaneGeometry:
    """Samples every driving lane and the sidewalks/shoulders beside them into trapezoids and markings."""
    driving = town.generate_waypoints(step_m)
    quads, quad_bits, lines, line_bits, line_widths = [], [], [], [], []
    for waypoint in driving + _side_lanes(driving):
        bit = LANE_TYPE_BITS.get(waypoint.lane_type)
        if bit is None:
            continue
        left, right = _edges(waypoint)
        painted = bit == MapBit.ROAD and not waypoint.is_junction
        for following in waypoint.next(step_m):
            next_left, next_right = _edges(following)
            quads.append((left, right, next_right, next_left))
            quad_bits.append(bit)
            if not painted:
                continue
            for marking, start, end in ((waypoint.left_lane_marking, left, next_left),
                                        (waypoint.right_lane_marking, right, next_right)):
                if _is_painted(marking.type, waypoint.s):
                    lines.append((start, end))
                    line_bits.append(MapBit.YELLOW_MARKING if marking.color == carla.LaneMarkingColor.Yellow
                                     else MapBit.WHITE_MARKING)
                    line_widths.append(marking.width)
    return LaneGeometry(np.array(quads, np.float64).reshape(-1, 4, 2), np.array(quad_bits, np.uint8),
                        np.array(lines, np.float64).reshape(-1, 2, 2), np.array(line_bits, np.uint8),
                        np.array(line_widths, np.float64))


def _side_lanes(driving: list[carla.Waypoint]) -> list[carla.Waypoint]:
    """Non-driving lanes beside the driving lanes (generate_waypoints only yields driving lanes).

    A lane's right side points away from the road centre on both sides of a road, so after the
    first step (right, or left across the centre of a one-way road) the walk always goes right.
    """
    seen: set[tuple[int, int, int, float]] = set()
    found = []
    for waypoint in driving:
        for side in (waypoint.get_right_lane(), waypoint.get_left_lane()):
            while side is not None and side.lane_type != carla.LaneType.Driving:
                key = (side.road_id, side.section_id, side.lane_id, round(side.s, 2))
                if key in seen:
                    break
                seen.add(key)
                found.append(side)
                side = side.get_right_lane()
    return found


def _edges(waypoint: carla.Waypoint) -> tuple[tuple[float, float], tuple[float, float]]:
    """Left and right lane-edge points at a waypoint (CARLA's y axis points right of +x)."""
    transform = waypoint.transform
    yaw = math.radians(transform.rotation.yaw)
    half_width = waypoint.lane_width / 2.0
    right_x, right_y = -math.sin(yaw) * half_width, math.cos(yaw) * half_width
    x, y = transform.location.x, transform.location.y
    return (x - right_x, y - right_y), (x + right_x, y + right_y)


def _is_painted(marking: carla.LaneMarkingType, s_m: float) -> bool:
    """Solid markings always, broken ones on the dash part of their period along the road."""
    if marking in SOLID_MARKINGS:
        return True
    return marking in BROKEN_MARKINGS and s_m % DASH_PERIOD_M < DASH_LENGTH_M


def rasterise(geometry: LaneGeometry, pixels_per_metre: float) -> MapLayer:
    """Draws the lane geometry into a bitfield raster covering the town (coarser if it would be huge).

    Pieces are filled one by one: cv2.fillPoly given many polygons XORs where they overlap.
    """
    corners = geometry.quads.reshape(-1, 2)
    low = corners.min(axis=0) - MAP_MARGIN_M
    extent_m = corners.max(axis=0) + MAP_MARGIN_M - low
    scale = min(pixels_per_metre, math.sqrt(MAX_MAP_PIXELS / float(extent_m[0] * extent_m[1])))
    if scale < pixels_per_metre:
        LOGGER.warning("town of %.0f x %.0f m drawn at %.2f px/m instead of %.2f px/m to stay under %d pixels",
                       extent_m[0], extent_m[1], scale, pixels_per_metre, MAX_MAP_PIXELS)
    width, height = (np.ceil(extent_m * scale).astype(int) + 1).tolist()
    bits = np.zeros((height, width), np.uint8)
    plane = np.empty_like(bits)

    def fixed(points_m: np.ndarray) -> np.ndarray:
        return np.rint((points_m - low) * scale * _FIXED_POINT_SCALE).astype(np.int32)

    for bit in (MapBit.SHOULDER, MapBit.SIDEWALK, MapBit.ROAD):
        plane.fill(0)
        for quad in fixed(geometry.quads[geometry.quad_bits == bit]):
            cv2.fillConvexPoly(plane, quad, int(bit), cv2.LINE_8, SHIFT_BITS)
        np.bitwise_or(bits, plane, out=bits)
    thickness = np.maximum(1, np.rint(geometry.line_widths_m * scale)).astype(int)
    for bit, pixels in sorted(set(zip(geometry.line_bits.tolist(), thickness.tolist()))):
        chosen = (geometry.line_bits == bit) & (thickness == pixels)
        plane.fill(0)
        cv2.polylines(plane, fixed(geometry.lines[chosen]), False, int(bit), pixels, cv2.LINE_8, SHIFT_BITS)
        np.bitwise_or(bits, plane, out=bits)
    return MapLayer(bits, (float(low[0]), float(low[1])), scale)


def cache_directory() -> Path:
    """$XDG_CACHE_HOME/carla-rllib/birdview, else ~/.cache/carla-rllib/birdview."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "carla-rllib" / "birdview"


_MEMORY_CACHE: dict[str, MapLayer] = {}


def cache_key(opendrive: str, pixels_per_metre: float) -> str:
    """Names a layer by the town's content (not its name: edited towns must not hit stale files)."""
    digest = hashlib.sha256(opendrive.encode()).hexdigest()[:32]
    return f"{digest}-{pixels_per_metre:.6g}ppm-v{CACHE_FORMAT_VERSION}"


def load_map_layer(town: carla.Map, pixels_per_metre: float, cache_dir: Path | str | None = None) -> MapLayer:
    """The town's layer from the process cache, else the disk cache, else drawn now and stored in both."""
    key = cache_key(town.to_opendrive(), pixels_per_metre)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]
    path = Path(cache_dir or cache_directory()) / f"{key}.npz"
    layer = _read(path)
    if layer is None:
        layer = rasterise(lane_geometry(town), pixels_per_metre)
        _write(path, layer)
    _MEMORY_CACHE[key] = layer
    return layer


def _read(path: Path) -> MapLayer | None:
    """A cached layer, or None when missing or unreadable (it is then redrawn and rewritten)."""
    try:
        with np.load(path) as data:
            return MapLayer(data["bits"], tuple(data["origin_m"].tolist()), float(data["pixels_per_metre"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        LOGGER.warning("ignoring unreadable birdview cache %s: %s", path, error)
        return None


def _write(path: Path, layer: MapLayer) -> None:
    """Writes via a temporary file and os.replace, so parallel workers never read a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError as error:
        LOGGER.warning("birdview map layer not cached at %s: %s", path, error)
        return
    try:
        with os.fdopen(handle, "wb") as tmp:
            np.savez_compressed(tmp, bits=layer.bits, origin_m=np.array(layer.origin_m),
                                pixels_per_metre=np.array(layer.pixels_per_metre))
        os.replace(tmp_name, path)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        LOGGER.warning("birdview map layer not cached at %s: %s", path, error)
