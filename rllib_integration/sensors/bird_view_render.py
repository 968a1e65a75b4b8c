"""Per-frame birdview drawing from plain arrays: the cached map crop plus actors and route.

Kept free of carla calls so it can be unit-tested and benchmarked on its own. The hero sits at the
image centre facing up; the image spans 2·radius metres on each side. Each frame is one
warpAffine of the static layer (nearest neighbour) and a few OpenCV fills for the moving parts.
"""
from __future__ import annotations

import cmath
import math

import cv2
import numpy as np

from .bird_view_map import SHIFT_BITS, MapBit, MapLayer

MODES = ("rgb", "masks")
# Channel order of "masks" output; each channel is 0 or 255. "shoulder" covers shoulder, parking and
# biking lanes; "lane_markings" is white and yellow paint together.
MASK_CHANNELS = ("road", "lane_markings", "sidewalk", "shoulder", "vehicles", "walkers", "route", "hero")
ROUTE_WIDTH_M = 1.0      # drawn width of the route polyline
MIN_BOX_HALF_PX = 1.0    # actors are at least 2 px wide so walkers stay visible at low resolutions
CULL_MARGIN_M = 10.0     # actors whose centre is this far outside the image are not drawn

# Actor boxes: pose of the actor and its bounding box (offset of the box centre in the actor frame,
# half sizes), all in metres and degrees as CARLA reports them.
BOX_DTYPE = np.dtype([("x", np.float64), ("y", np.float64), ("yaw_deg", np.float64),
                      ("offset_x", np.float64), ("offset_y", np.float64),
                      ("extent_x", np.float64), ("extent_y", np.float64)])

# Tango-like palette, RGB order.
RGB_BACKGROUND = (0, 0, 0)
RGB_ROAD = (85, 87, 83)
RGB_SHOULDER = (46, 52, 54)
RGB_SIDEWALK = (136, 138, 133)
RGB_WHITE_MARKING = (238, 238, 236)
RGB_YELLOW_MARKING = (252, 233, 79)
RGB_ROUTE = (245, 121, 0)
RGB_VEHICLE = (114, 159, 207)
RGB_WALKER = (239, 41, 41)
RGB_HERO = (138, 226, 52)

_FIXED_POINT_SCALE = 1 << SHIFT_BITS
# Box corners going round, as multiples of the half length (forward) and half width (right, imaginary axis).
_CORNER_FORWARD = np.array([1.0, 1.0, -1.0, -1.0])
_CORNER_RIGHT = np.array([-1j, 1j, 1j, -1j])
_BOX_FIELDS = len(BOX_DTYPE.names)
_MASK_BIT = {name: 1 << index for index, name in enumerate(MASK_CHANNELS)}


def _static_rgb_palette() -> np.ndarray:
    """Colour of every MapBit combination; paint wins over road, road over shoulder and sidewalk."""
    codes = np.arange(256)
    palette = np.empty((256, 3), np.uint8)
    palette[:] = RGB_BACKGROUND
    for bit, colour in ((MapBit.SIDEWALK, RGB_SIDEWALK), (MapBit.SHOULDER, RGB_SHOULDER), (MapBit.ROAD, RGB_ROAD),
                        (MapBit.WHITE_MARKING, RGB_WHITE_MARKING), (MapBit.YELLOW_MARKING, RGB_YELLOW_MARKING)):
        palette[(codes & bit) != 0] = colour
    return palette


def _static_mask_codes() -> np.ndarray:
    """MapBit combination → the static part of the "masks" bit code (one bit per MASK_CHANNELS entry)."""
    codes = np.arange(256)
    table = np.zeros(256, np.uint8)
    for bits, channel in ((MapBit.ROAD, "road"), (MapBit.WHITE_MARKING | MapBit.YELLOW_MARKING, "lane_markings"),
                          (MapBit.SIDEWALK, "sidewalk"), (MapBit.SHOULDER, "shoulder")):
        table[(codes & int(bits)) != 0] |= _MASK_BIT[channel]
    return table


def _mask_expansion() -> np.ndarray:
    """Bit code → 8 channel bytes of 0/255 packed in one uint64, so one take() expands a frame.

    This is why the bit code is a uint8 and MASK_CHANNELS has exactly 8 entries.
    """
    codes = np.arange(256)[:, None]
    channels = np.where((codes >> np.arange(len(MASK_CHANNELS))) & 1, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(channels).view(np.uint64).ravel()


_MASK_EXPANSION = _mask_expansion()


def _columns(boxes: np.ndarray) -> np.ndarray:
    """A BOX_DTYPE array as (N, 7) floats: plain arrays concatenate and slice much faster."""
    return np.ascontiguousarray(boxes).view(np.float64).reshape(-1, _BOX_FIELDS)


class BirdviewRenderer:
    """Draws birdview frames from a map layer and actor boxes (see BOX_DTYPE) in world coordinates.

    Points are handled as complex numbers x + iy: rotating by a CARLA yaw is a multiplication by
    exp(i·yaw), and the whole world → image map is one complex multiply-add.
    """

    def __init__(self, layer: MapLayer, size: int, radius_m: float, mode: str) -> None:
        """`mode` is one of MODES; BirdviewManager validates user attributes before they get here."""
        self.size = size
        self.mode = mode
        self.pixels_per_metre = size / (2.0 * radius_m)
        self._layer = layer
        self._centre_px = (size - 1) / 2.0
        self._cull_px = size / 2.0 + CULL_MARGIN_M * self.pixels_per_metre
        self._route_thickness_px = max(1, round(ROUTE_WIDTH_M * self.pixels_per_metre))
        self._min_half_m = MIN_BOX_HALF_PX / self.pixels_per_metre
        if mode == "rgb":
            self._static = _static_rgb_palette()[layer.bits]
        else:
            self._static = _static_mask_codes()[layer.bits]

    def world_to_pixel(self, hero: np.ndarray) -> tuple[complex, complex]:
        """(scale, offset) with image col + i·row = scale·(x + iy) + offset for a hero pose (BOX_DTYPE record).

        Forward (yaw) maps to image up, right (yaw + 90°) to image right, the hero to the centre.
        """
        scale = -1j * self.pixels_per_metre * cmath.exp(-1j * math.radians(float(hero["yaw_deg"])))
        position = complex(float(hero["x"]), float(hero["y"]))
        return scale, complex(self._centre_px, self._centre_px) - scale * position

    def crop(self, to_pixel: tuple[complex, complex]) -> np.ndarray:
        """The static layer around the hero, rotated so the hero faces up (rgb, or bit codes for masks)."""
        scale, offset = to_pixel
        layer = self._layer
        # WARP_INVERSE_MAP wants image → layer pixels: ((pixel - offset) / scale - origin) * layer px/m.
        inverse = layer.pixels_per_metre / scale
        shift = -offset * inverse - complex(*layer.origin_m) * layer.pixels_per_metre
        to_layer = np.array([[inverse.real, -inverse.imag, shift.real], [inverse.imag, inverse.real, shift.imag]])
        return cv2.warpAffine(self._static, to_layer, (self.size, self.size),
                              flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def draw(self, frame: np.ndarray, to_pixel: tuple[complex, complex], hero: np.ndarray, vehicles: np.ndarray,
             walkers: np.ndarray, route_xy: np.ndarray) -> np.ndarray:
        """Adds route, vehicles, walkers and hero to a crop; returns the finished output image."""
        groups = (vehicles, walkers, np.atleast_1d(hero))
        corners, visible = self._box_corners(np.concatenate([_columns(group) for group in groups]), to_pixel)
        ends = np.cumsum([len(group) for group in groups]).tolist()
        layers = [(name, colour, [corners[i] for i in range(start, end) if visible[i]])
                  for name, colour, start, end in (("vehicles", RGB_VEHICLE, 0, ends[0]),
                                                   ("walkers", RGB_WALKER, ends[0], ends[1]),
                                                   ("hero", RGB_HERO, ends[1], ends[2]))]
        route = self._to_fixed(route_xy[:, 0] + 1j * route_xy[:, 1], to_pixel) if len(route_xy) > 1 else None
        if self.mode == "rgb":
            if route is not None:
                cv2.polylines(frame, [route], False, RGB_ROUTE, self._route_thickness_px, cv2.LINE_8, SHIFT_BITS)
            for _, colour, boxes in layers:
                for box in boxes:
                    cv2.fillConvexPoly(frame, box, colour, cv2.LINE_8, SHIFT_BITS)
            return frame
        plane = np.empty_like(frame)
        if route is not None:
            plane.fill(0)
            cv2.polylines(plane, [route], False, _MASK_BIT["route"], self._route_thickness_px, cv2.LINE_8,
                          SHIFT_BITS)
            np.bitwise_or(frame, plane, out=frame)
        for name, _, boxes in layers:
            plane.fill(0)
            for box in boxes:
                cv2.fillConvexPoly(plane, box, _MASK_BIT[name], cv2.LINE_8, SHIFT_BITS)
            np.bitwise_or(frame, plane, out=frame)
        return np.take(_MASK_EXPANSION, frame).view(np.uint8).reshape(self.size, self.size, len(MASK_CHANNELS))

    def render(self, hero: np.ndarray, vehicles: np.ndarray, walkers: np.ndarray,
               route_xy: np.ndarray) -> np.ndarray:
        """One frame: (size, size, 3) RGB or (size, size, len(MASK_CHANNELS)) masks, uint8."""
        to_pixel = self.world_to_pixel(hero)
        return self.draw(self.crop(to_pixel), to_pixel, hero, vehicles, walkers, route_xy)

    def _box_corners(self, boxes: np.ndarray, to_pixel: tuple[complex, complex]) -> tuple[np.ndarray, list[bool]]:
        """Fixed-point image corners (N, 4, 2) of boxes (rows of BOX_DTYPE's fields), and which to draw."""
        x, y, yaw_deg, offset_x, offset_y, extent_x, extent_y = boxes.T[:, :, None]
        half = np.maximum(np.concatenate((extent_x, extent_y), axis=1), self._min_half_m)
        local = (offset_x + 1j * offset_y) + half[:, :1] * _CORNER_FORWARD + half[:, 1:] * _CORNER_RIGHT
        centre = self._to_pixel(x + 1j * y, to_pixel)
        corners = centre + (to_pixel[0] * local) * np.exp(1j * np.radians(yaw_deg))
        offset = centre[:, 0] - complex(self._centre_px, self._centre_px)
        visible = ((np.abs(offset.real) < self._cull_px) & (np.abs(offset.imag) < self._cull_px)).tolist()
        return self._fixed(corners), visible

    @staticmethod
    def _to_pixel(points: np.ndarray, to_pixel: tuple[complex, complex]) -> np.ndarray:
        return to_pixel[0] * points + to_pixel[1]

    def _to_fixed(self, points: np.ndarray, to_pixel: tuple[complex, complex]) -> np.ndarray:
        return self._fixed(self._to_pixel(points, to_pixel))

    @staticmethod
    def _fixed(pixels: np.ndarray) -> np.ndarray:
        """Complex image points → OpenCV fixed-point (col, row) int32 pairs (last axis of size 2)."""
        pairs = np.ascontiguousarray(pixels).view(np.float64).reshape(*pixels.shape, 2)
        return np.rint(pairs * _FIXED_POINT_SCALE).astype(np.int32)
