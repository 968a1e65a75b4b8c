"""CARLA 0.9.16 wire layouts: msgpack shapes of rpc types and binary stream records.

One source of truth for every layout the official client decodes. The server and
the tests that pin the layouts both import from here.
"""
from __future__ import annotations

import socket
import struct
from typing import Any, Sequence

import numpy as np

# --- msgpack shapes ---------------------------------------------------------

Vector3 = tuple[float, float, float]


def location(values: Sequence[float]) -> list[float]:
    """Location / Vector3D: [x, y, z] in metres."""
    return [float(values[0]), float(values[1]), float(values[2])]


def transform(loc: Sequence[float], rot: Sequence[float]) -> list[list[float]]:
    """Transform: [[x, y, z], [pitch, yaw, roll]] (degrees)."""
    return [location(loc), location(rot)]


class DecodeError(ValueError):
    """An argument that does not have the shape of the CARLA type it stands for."""


def decode_transform(value: Any) -> tuple[Vector3, Vector3]:
    """Inverse of transform(); raises DecodeError on a malformed value."""
    try:
        loc, rot = value
        return (float(loc[0]), float(loc[1]), float(loc[2])), (float(rot[0]), float(rot[1]), float(rot[2]))
    except (TypeError, ValueError, IndexError) as error:
        raise DecodeError(f"malformed transform {value!r}") from error


def decode_command(value: Any) -> tuple[Any, list[Any]]:
    """A batch command (a one-entry variant: [[index, payload]]) as (index, payload)."""
    try:
        index, payload = value[0]
    except (TypeError, ValueError, IndexError, KeyError) as error:
        raise DecodeError(f"malformed command {value!r:.80}") from error
    if not isinstance(payload, list):
        raise DecodeError(f"malformed command {value!r:.80}")
    return index, payload


def decode_vector(value: Any) -> Vector3:
    try:
        return float(value[0]), float(value[1]), float(value[2])
    except (TypeError, ValueError, IndexError) as error:
        raise DecodeError(f"malformed vector {value!r}") from error


def bounding_box(center: Sequence[float], extent: Sequence[float], actor_id: int = 0) -> list[Any]:
    """BoundingBox: [location, extent, rotation, actor_id]."""
    return [location(center), location(extent), [0.0, 0.0, 0.0], int(actor_id)]


def optional(value: Any) -> list[Any]:
    """boost::optional: [False] when empty, [True, value] otherwise."""
    return [False] if value is None else [True, value]


def decode_optional(value: Any) -> Any:
    if not value or not value[0]:
        return None
    return value[1]


def value_response(value: Any) -> list[Any]:
    """Response<T> on success: a variant [index 1, value] inside the response array."""
    return [[1, value]]


def value_error(message: str) -> list[Any]:
    """Response<T> carrying a ResponseError: the client raises RuntimeError(message)."""
    return [[0, [message]]]


VOID_OK: list[Any] = [[False]]


def void_error(message: str) -> list[Any]:
    """Response<void> carrying a ResponseError."""
    return [[True, [message]]]


# --- streaming tokens -------------------------------------------------------

TOKEN_STRUCT = struct.Struct("<IHBB16s")
TCP_PROTOCOL = 1
IPV4_ADDRESS = 1


def stream_token(stream_id: int, port: int, host: str = "127.0.0.1") -> bytes:
    """streaming::Token: u32 stream id, u16 port, u8 protocol, u8 address type, 16-byte address."""
    address = socket.inet_aton(host).ljust(16, b"\0")
    return TOKEN_STRUCT.pack(stream_id, port, TCP_PROTOCOL, IPV4_ADDRESS, address)


# --- binary stream records (little-endian, packed) --------------------------

SENSOR_HEADER = np.dtype([
    ("sensor_type", "<u8"),
    ("frame", "<u8"),
    ("timestamp", "<f8"),
    ("transform", "<f4", (6,)),  # x, y, z, pitch, yaw, roll
])

EPISODE_HEADER = np.dtype([
    ("episode_id", "<u8"),
    ("platform_timestamp", "<f8"),
    ("delta_seconds", "<f4"),
    ("map_origin", "<i4", (3,)),
    ("flags", "<i4"),
])
MAP_CHANGED_FLAG = 1

ACTOR_DATA_BYTES = 54
VEHICLE_DATA = np.dtype({
    "names": ["throttle", "steer", "brake", "hand_brake", "reverse", "manual_gear_shift", "gear",
              "speed_limit", "traffic_light_state", "has_traffic_light", "traffic_light_id", "failure_state"],
    "formats": ["<f4", "<f4", "<f4", "u1", "u1", "u1", "<i4", "<f4", "u1", "u1", "<u4", "u1"],
    "offsets": [0, 4, 8, 12, 13, 14, 15, 19, 23, 24, 25, 29],
    "itemsize": ACTOR_DATA_BYTES,
})

WALKER_DATA = np.dtype({
    "names": ["direction", "speed", "jump"],
    "formats": [("<f4", (3,)), "<f4", "u1"],
    "offsets": [0, 12, 16],
    "itemsize": ACTOR_DATA_BYTES,
})

# Traffic lights; traffic signs use only sign_id (their block is char[32] sign_id).
SIGN_ID_BYTES = 32
TRAFFIC_LIGHT_DATA = np.dtype({
    "names": ["sign_id", "green_time", "yellow_time", "red_time", "elapsed_time", "pole_index",
              "time_is_frozen", "state"],
    "formats": [f"S{SIGN_ID_BYTES}", "<f4", "<f4", "<f4", "<f4", "<u4", "u1", "u1"],
    "offsets": [0, 32, 36, 40, 44, 48, 52, 53],
    "itemsize": ACTOR_DATA_BYTES,
})
TRAFFIC_LIGHT_RED, TRAFFIC_LIGHT_YELLOW, TRAFFIC_LIGHT_GREEN = 0, 1, 2   # carla.TrafficLightState

ACTOR_RECORD = np.dtype([
    ("id", "<u4"),
    ("state", "u1"),
    ("transform", "<f4", (6,)),
    ("velocity", "<f4", (3,)),
    ("angular_velocity", "<f4", (3,)),
    ("acceleration", "<f4", (3,)),
    ("vehicle", VEHICLE_DATA),
])
ACTOR_STATE_ACTIVE = 1


def record_view(block: np.dtype) -> np.dtype:
    """ACTOR_RECORD seen with one actor type's data block lifted to the top level: the 15
    kinematic floats (transform, velocity, angular velocity, acceleration) as `kinematics`,
    then the block's own fields. Compiled snapshot writers take such views of one record
    array, one per actor type, and set each field in place."""
    base = ACTOR_RECORD.fields["vehicle"][1]
    names = list(block.names)
    return np.dtype({
        "names": ["kinematics"] + names,
        "formats": [("<f4", (15,))] + [block.fields[name][0] for name in names],
        "offsets": [ACTOR_RECORD.fields["transform"][1]] + [base + block.fields[name][1] for name in names],
        "itemsize": ACTOR_RECORD.itemsize,
    })


VEHICLE_RECORD = record_view(VEHICLE_DATA)
WALKER_RECORD = record_view(WALKER_DATA)
TRAFFIC_LIGHT_RECORD = record_view(TRAFFIC_LIGHT_DATA)

# Sensor type indexes as this wheel's registry numbers them.
EPISODE_STATE_SENSOR_TYPE = 17
COLLISION_SENSOR_TYPE = 0
GNSS_SENSOR_TYPE = 4
IMU_SENSOR_TYPE = 5
OBSTACLE_SENSOR_TYPE = 7

assert SENSOR_HEADER.itemsize == 48
assert EPISODE_HEADER.itemsize == 36
assert ACTOR_RECORD.itemsize == 119


_SENSOR_HEADER_STRUCT = struct.Struct("<QQd6f")
_EPISODE_HEADER_STRUCT = struct.Struct("<Qdf3ii")
assert _SENSOR_HEADER_STRUCT.size == SENSOR_HEADER.itemsize and _EPISODE_HEADER_STRUCT.size == EPISODE_HEADER.itemsize


def sensor_header(sensor_type: int, frame: int, timestamp: float,
                  pose: Sequence[float] = (0.0,) * 6) -> bytes:
    """The 48-byte header of every stream message (layout: SENSOR_HEADER)."""
    return _SENSOR_HEADER_STRUCT.pack(sensor_type, frame, timestamp, *pose)


def episode_header(episode_id: int, platform_timestamp: float, delta_seconds: float, flags: int) -> bytes:
    """The 36 bytes after the sensor header of a snapshot (layout: EPISODE_HEADER); map origin 0."""
    return _EPISODE_HEADER_STRUCT.pack(episode_id, platform_timestamp, delta_seconds, 0, 0, 0, flags)


def frame_message(payload: bytes) -> bytes:
    """Streaming frame: u32 little-endian size, then the payload."""
    return struct.pack("<I", len(payload)) + payload
