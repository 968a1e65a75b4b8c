"""Vectorised (numpy) and compiled (per-row) rigid-body geometry in CARLA's (Unreal's) left-handed frame.

x forward, y right, z up; yaw turns x toward y; angles in degrees on the wire.
"""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _rotation_matrix(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """The matrix mapping local to world axes of one rotation (degrees)."""
    pitch, yaw, roll = math.radians(pitch_deg), math.radians(yaw_deg), math.radians(roll_deg)
    cp, sp, cy, sy, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw), math.cos(roll), math.sin(roll)
    return np.array([[cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
                     [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
                     [sp, -cp * sr, cp * cr]])


@numba.njit(cache=True)
def rotation_matrices(rot_deg: np.ndarray) -> np.ndarray:
    """(n, 3) [pitch, yaw, roll] in degrees -> (n, 3, 3) matrices mapping local to world axes."""
    matrices = np.empty((len(rot_deg), 3, 3))
    for k in range(len(rot_deg)):
        matrices[k] = _rotation_matrix(rot_deg[k, 0], rot_deg[k, 1], rot_deg[k, 2])
    return matrices


@numba.njit(cache=True)
def compose_rows(rows, parent_rows, relative_location, relative_rotation, location, rotation):
    """World pose of each row from its parent's world pose and its pose relative to the parent
    (rotations [pitch, yaw, roll] in degrees), written into location and rotation."""
    for k in range(len(rows)):
        r, p = rows[k], parent_rows[k]
        parent = _rotation_matrix(rotation[p, 0], rotation[p, 1], rotation[p, 2])
        for i in range(3):
            location[r, i] = location[p, i] + (parent[i, 0] * relative_location[r, 0]
                                               + parent[i, 1] * relative_location[r, 1]
                                               + parent[i, 2] * relative_location[r, 2])
        child = _rotation_matrix(relative_rotation[r, 0], relative_rotation[r, 1], relative_rotation[r, 2])
        world = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                world[i, j] = parent[i, 0] * child[0, j] + parent[i, 1] * child[1, j] + parent[i, 2] * child[2, j]
        rotation[r, 0] = math.degrees(math.asin(min(max(world[2, 0], -1.0), 1.0)))
        rotation[r, 1] = math.degrees(math.atan2(world[1, 0], world[0, 0]))
        rotation[r, 2] = math.degrees(math.atan2(-world[2, 1], world[2, 2]))


def wrap_degrees(angle: np.ndarray) -> np.ndarray:
    """Angles to (-180, 180]."""
    return (angle + 180.0) % 360.0 - 180.0


def box_corners_2d(center_xy: np.ndarray, yaw_deg: np.ndarray, half_extent_xy: np.ndarray) -> np.ndarray:
    """(n, 4, 2) footprint corners of oriented boxes."""
    yaw = np.radians(yaw_deg)
    forward = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    right = np.stack([-np.sin(yaw), np.cos(yaw)], axis=1)
    fx = forward * half_extent_xy[:, :1]
    ry = right * half_extent_xy[:, 1:2]
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=float)
    return center_xy[:, None, :] + signs[None, :, :1] * fx[:, None, :] + signs[None, :, 1:] * ry[:, None, :]


def boxes_overlap_2d(corners_a: np.ndarray, corners_b: np.ndarray) -> np.ndarray:
    """Separating-axis test between footprint pairs: (n, 4, 2) x (n, 4, 2) -> (n,) bool."""
    overlap = np.ones(len(corners_a), dtype=bool)
    for corners in (corners_a, corners_b):
        for edge in (1, 2):
            axis = corners[:, edge] - corners[:, edge - 1]
            axis = axis / np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)
            proj_a = np.einsum("nkj,nj->nk", corners_a, axis)
            proj_b = np.einsum("nkj,nj->nk", corners_b, axis)
            separated = (proj_a.max(1) < proj_b.min(1)) | (proj_b.max(1) < proj_a.min(1))
            overlap &= ~separated
    return overlap
