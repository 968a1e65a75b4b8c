"""CARLA sensor measurements as numpy arrays (or small dicts for events), one function per kind.

Why here and not in the experiments: the conversion runs on the client's streaming thread as
data arrives, so an experiment only ever sees plain arrays, the same on both backends.
"""
from __future__ import annotations

from typing import Any

import carla
import numpy as np

DEPTH_FAR_M = 1000.0                     # CARLA's depth camera encodes 0..1000 m in 24 bits
DEPTH_SCALE = 1.0 / (256.0 ** 3 - 1.0)
SEMANTIC_LIDAR_POINT = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos_inc_angle", "<f4"),
                                 ("object_idx", "<u4"), ("object_tag", "<u4")])
DVS_EVENT = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("pol", "?")])   # packed, as CARLA sends it


def _bgra(image: carla.Image) -> np.ndarray:
    return np.frombuffer(image.raw_data, np.uint8).reshape(image.height, image.width, 4)


def rgb_image(image: carla.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    return np.ascontiguousarray(_bgra(image)[:, :, 2::-1])


def depth_image(image: carla.Image) -> np.ndarray:
    """(H, W) float32 depth in metres."""
    bgra = _bgra(image).astype(np.float32)
    encoded = bgra[:, :, 2] + bgra[:, :, 1] * 256.0 + bgra[:, :, 0] * 65536.0
    return (encoded * (DEPTH_SCALE * DEPTH_FAR_M)).astype(np.float32)


def semantic_image(image: carla.Image) -> np.ndarray:
    """(H, W) uint8 semantic tags (CARLA stores the tag in the red channel)."""
    return np.ascontiguousarray(_bgra(image)[:, :, 2])


def dvs_events(events: carla.DVSEventArray) -> np.ndarray:
    """(N,) structured array of DVS events: x, y (px), t (ns), pol."""
    return np.frombuffer(events.raw_data, DVS_EVENT).copy()


def lidar_points(measurement: carla.LidarMeasurement) -> np.ndarray:
    """(N, 4) float32: x, y, z (m, sensor frame), intensity."""
    return np.frombuffer(measurement.raw_data, np.float32).reshape(-1, 4).copy()


def semantic_lidar_points(measurement: carla.SemanticLidarMeasurement) -> np.ndarray:
    """(N,) structured array: x, y, z, cos_inc_angle, object_idx, object_tag."""
    return np.frombuffer(measurement.raw_data, SEMANTIC_LIDAR_POINT).copy()


def radar_detections(measurement: carla.RadarMeasurement) -> np.ndarray:
    """(N, 4) float32: velocity (m/s), azimuth (rad), altitude (rad), depth (m)."""
    return np.frombuffer(measurement.raw_data, np.float32).reshape(-1, 4).copy()


def gnss_fix(measurement: carla.GnssMeasurement) -> np.ndarray:
    """(3,) float64: latitude, longitude (deg), altitude (m)."""
    return np.array([measurement.latitude, measurement.longitude, measurement.altitude], np.float64)


def imu_reading(measurement: carla.IMUMeasurement) -> np.ndarray:
    """(7,) float32: acceleration x, y, z (m/s²), angular velocity x, y, z (rad/s), compass (rad)."""
    acc, gyro = measurement.accelerometer, measurement.gyroscope
    return np.array([acc.x, acc.y, acc.z, gyro.x, gyro.y, gyro.z, measurement.compass], np.float32)


def collision_event(event: carla.CollisionEvent) -> dict[str, Any]:
    """The other actor and the normal impulse (N·s) the hero received."""
    impulse = event.normal_impulse
    return {"other_actor": event.other_actor.type_id, "other_actor_id": event.other_actor.id,
            "impulse": np.array([impulse.x, impulse.y, impulse.z], np.float32)}


def lane_invasion_event(event: carla.LaneInvasionEvent) -> dict[str, Any]:
    """The types of the lane markings crossed ("Solid", "Broken", ...)."""
    return {"crossed_lane_markings": [str(marking.type) for marking in event.crossed_lane_markings]}


def obstacle_event(event: carla.ObstacleDetectionEvent) -> dict[str, Any]:
    """The obstacle ahead and its distance (m)."""
    return {"other_actor": event.other_actor.type_id, "other_actor_id": event.other_actor.id,
            "distance": float(event.distance)}
