"""Vectorised rigid-body geometry in CARLA's (Unreal's) left-handed frame.

x forward, y right, z up; yaw turns x toward y; angles in degrees on the wire.
"""
from __future__ import annotations

import numpy as np


def rotation_matrices(rot_deg: np.ndarray) -> np.ndarray:
    """(n, 3) [pitch, yaw, roll] in degrees -> (n, 3, 3) matrices mapping local to world axes."""
    pitch, yaw, roll = np.radians(rot_deg).T
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cr, sr = np.cos(roll), np.sin(roll)
    matrices = np.empty((len(rot_deg), 3, 3))
    matrices[:, 0, 0] = cp * cy
    matrices[:, 0, 1] = cy * sp * sr - sy * cr
    matrices[:, 0, 2] = -cy * sp * cr - sy * sr
    matrices[:, 1, 0] = cp * sy
    matrices[:, 1, 1] = sy * sp * sr + cy * cr
    matrices[:, 1, 2] = -sy * sp * cr + cy * sr
    matrices[:, 2, 0] = sp
    matrices[:, 2, 1] = -cp * sr
    matrices[:, 2, 2] = cp * cr
    return matrices


def compose(parent_loc: np.ndarray, parent_rot: np.ndarray,
            child_loc: np.ndarray, child_rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World pose of children given their parents' world poses and their relative poses."""
    parent_m = rotation_matrices(parent_rot)
    world_loc = parent_loc + np.einsum("nij,nj->ni", parent_m, child_loc)
    world_m = parent_m @ rotation_matrices(child_rot)
    pitch = np.degrees(np.arcsin(np.clip(world_m[:, 2, 0], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(world_m[:, 1, 0], world_m[:, 0, 0]))
    roll = np.degrees(np.arctan2(-world_m[:, 2, 1], world_m[:, 2, 2]))
    return world_loc, np.stack([pitch, yaw, roll], axis=1)


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
