"""Contacts between vehicles and walkers: found on oriented boxes, resolved as rigid-body impacts.

Every vehicle and walker can touch every other, so the check runs once per tick over all of
them at once. A k-d tree on box centres keeps the pairs whose bounding circles meet; a
separating-axis test on their oriented footprints (plus a height check, so a bridge never
touches the road under it) confirms the contact and gives its normal. Of the four axes the
normal is the one along which the pair was still apart a step ago (where the relative motion
came from), so a car that drove deep into a pedestrian pushes it forward, not sideways.

Each contact is resolved as a short impact of two rigid bodies: the boxes are pushed apart
along the normal in inverse proportion to their masses, and momentum is exchanged along the
normal with a coefficient of restitution. Vehicles whose physics is off are kinematic
(infinite mass), and actors whose collisions are off (CARLA's AI walkers) take no part, as in
CARLA. A vehicle keeps as speed the part of its new velocity along
its heading (the bicycle model has no sideslip); what the impact adds across it, and the
whole push a walker gets, becomes a sliding velocity that friction brings to rest.
The normal impulse (N·s) of each contact is what the collision sensor reports.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .actors import ActorKind, ActorTable
from .blueprints import BlueprintDef

RESTITUTION = 0.2                  # low-speed car impacts (bumper tests) rebound with 0.1-0.3
GRAVITY_MPS2 = 9.81
SLIDE_FRICTION = 0.7               # sliding tyres, or a body, on dry asphalt
SLIDE_DECEL_MPS2 = SLIDE_FRICTION * GRAVITY_MPS2
WALKER_MASS_KG = {"adult": 70.0, "child": 30.0}
PARALLEL_EPS = 1e-12               # below this a relative displacement is no motion along an axis
VEHICLE, WALKER = int(ActorKind.VEHICLE), int(ActorKind.WALKER)   # plain ints: enum lookups are slow


@dataclass(frozen=True)
class Contacts:
    """One tick's contacts: table rows of both sides and the normal impulse each side got."""

    first: np.ndarray     # (k,) rows
    second: np.ndarray    # (k,) rows
    impulse: np.ndarray   # (k, 3) N·s received by `first`; `second` received its negative

    def __len__(self) -> int:
        return len(self.first)


NO_CONTACTS = Contacts(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))


def walker_mass(blueprint: BlueprintDef) -> float:
    """A pedestrian's mass from its blueprint's age (kg)."""
    age = blueprint.attribute("age")
    return WALKER_MASS_KG.get(age.default if age else "adult", WALKER_MASS_KG["adult"])


class CollisionSystem:
    """Per-world collision state: which rows collide (cached until actors change) and who slides."""

    def __init__(self) -> None:
        self._version = -1
        self._rows = np.zeros(0, np.int64)
        self._dynamic = np.zeros(0, bool)
        self._boxes: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.zeros((0, 3)),) * 2 + (np.zeros(0),)
        self._sliding = False

    def step(self, table: ActorTable, dt: float) -> Contacts:
        """Moves sliding bodies, then finds and resolves this tick's contacts."""
        if self._version != table.version:
            size = table.size
            kinds = table.kind[:size]
            self._rows = np.flatnonzero(table.alive[:size] & ~table.collisions_disabled[:size]
                                        & ((kinds == VEHICLE) | (kinds == WALKER)))
            # Walkers always yield to a push; vehicles only while their physics runs.
            self._dynamic = (table.kind[self._rows] == WALKER) | table.simulate_physics[self._rows]
            half = table.extent[self._rows]
            self._boxes = (half, table.box_center[self._rows], np.hypot(half[:, 0], half[:, 1]))
            self._version = table.version
        rows, dynamic = self._rows, self._dynamic
        if self._sliding:
            self._sliding = _slide(table, rows, dynamic, dt)
        if len(rows) < 2:
            return NO_CONTACTS
        first, second, normal, depth = _find(table, rows, *self._boxes, dt)
        if len(first) == 0:
            return NO_CONTACTS
        inverse_mass = np.zeros(table.size)
        inverse_mass[rows] = np.where(dynamic, 1.0 / np.maximum(table.mass[rows], 1.0), 0.0)
        movable = inverse_mass[first] + inverse_mass[second] > 0.0   # two kinematic bodies never hit
        first, second, normal, depth = first[movable], second[movable], normal[movable], depth[movable]
        if len(first) == 0:
            return NO_CONTACTS
        impulse = _resolve(table, first, second, normal, depth, inverse_mass, dt)
        self._sliding = True
        return Contacts(first, second, impulse)


def _slide(table: ActorTable, rows: np.ndarray, dynamic: np.ndarray, dt: float) -> bool:
    """Carries bodies along their sliding velocity and lets friction slow it; False once all rest.

    Only rows whose physics ran this tick had their velocity rebuilt, so only they get the
    slide added to it (others would accumulate it tick after tick).
    """
    table.slide_velocity[rows[~dynamic]] = 0.0
    slide = table.slide_velocity[rows]
    speed = np.linalg.norm(slide, axis=1)
    moving = speed > 0.0
    if not moving.any():
        return False
    rows, slide, speed = rows[moving], slide[moving], speed[moving]
    remaining = np.maximum(speed - SLIDE_DECEL_MPS2 * dt, 0.0)
    mean = slide * (0.5 * (speed + remaining) / speed)[:, None]
    table.location[rows] += mean * dt
    new_slide = slide * (remaining / speed)[:, None]
    table.slide_velocity[rows] = new_slide
    simulated = table.simulate_physics[rows]
    table.velocity[rows[simulated]] += new_slide[simulated]
    return True


def _find(table: ActorTable, rows: np.ndarray, half: np.ndarray, offset: np.ndarray, reach: np.ndarray,
          dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping pairs (rows), their unit normals from first to second (k, 2) and depths (m).

    half, offset: box half extents and box centres relative to the actor origins (n, 3);
    reach: half diagonals of the footprints (n,).
    """
    yaw = np.radians(table.rotation[rows, 1])
    forward = np.column_stack([np.cos(yaw), np.sin(yaw)])
    right = np.column_stack([-forward[:, 1], forward[:, 0]])
    location = table.location[rows]
    centre = location[:, :2] + forward * offset[:, :1] + right * offset[:, 1:2]
    centre_z = location[:, 2] + offset[:, 2]
    pairs = cKDTree(centre).query_pairs(2.0 * float(reach.max()), output_type="ndarray")
    if len(pairs) == 0:
        return _no_pairs()
    i, j = pairs[:, 0], pairs[:, 1]
    d = centre[j] - centre[i]
    near = ((np.hypot(d[:, 0], d[:, 1]) < reach[i] + reach[j])
            & (np.abs(centre_z[j] - centre_z[i]) < half[i, 2] + half[j, 2]))
    i, j, d = i[near], j[near], d[near]
    if len(i) == 0:
        return _no_pairs()
    axes = np.stack([forward[i], right[i], forward[j], right[j]], axis=1)          # (k, 4, 2)
    radius = (_projected_radius(axes, forward[i], right[i], half[i])
              + _projected_radius(axes, forward[j], right[j], half[j]))
    along = np.einsum("kaj,kj->ka", axes, d)
    overlap = radius - np.abs(along)
    touching = (overlap > 0.0).all(axis=1)
    i, j, axes, radius, along, overlap = i[touching], j[touching], axes[touching], radius[touching], \
        along[touching], overlap[touching]
    if len(i) == 0:
        return _no_pairs()
    # Where was each axis a step ago? The last axis to start overlapping is the contact normal.
    velocity = table.velocity[rows, :2]
    before = np.einsum("kaj,kj->ka", axes, d[touching] - (velocity[j] - velocity[i]) * dt)
    overlap_before = radius - np.abs(before)
    was_apart = overlap_before <= 0.0
    entry = np.where(was_apart, overlap_before / np.minimum(overlap_before - overlap, -PARALLEL_EPS), -np.inf)
    axis = np.where(was_apart.any(axis=1), np.argmax(entry, axis=1), np.argmin(overlap, axis=1))
    k = np.arange(len(i))
    sign = np.where(along[k, axis] >= 0.0, 1.0, -1.0)
    normal = axes[k, axis] * sign[:, None]
    return rows[i], rows[j], normal, overlap[k, axis]


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)


def _projected_radius(axes: np.ndarray, forward: np.ndarray, right: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Half width of each footprint seen along each axis: (k, 4)."""
    return (half[:, None, 0] * np.abs(np.einsum("kaj,kj->ka", axes, forward))
            + half[:, None, 1] * np.abs(np.einsum("kaj,kj->ka", axes, right)))


def _resolve(table: ActorTable, first: np.ndarray, second: np.ndarray, normal: np.ndarray, depth: np.ndarray,
             inverse_mass: np.ndarray, dt: float) -> np.ndarray:
    """Separates the pairs and exchanges momentum along their normals; returns impulses on `first`."""
    inv_first, inv_second = inverse_mass[first], inverse_mass[second]
    total = inv_first + inv_second
    push = np.zeros((table.size, 2))
    np.add.at(push, first, -normal * (depth * inv_first / total)[:, None])
    np.add.at(push, second, normal * (depth * inv_second / total)[:, None])
    closing = np.einsum("kj,kj->k", table.velocity[second, :2] - table.velocity[first, :2], normal)
    impulse = np.where(closing < 0.0, -(1.0 + RESTITUTION) * closing / total, 0.0)     # N·s along normal
    change = np.zeros((table.size, 2))
    np.add.at(change, first, -normal * (impulse * inv_first)[:, None])
    np.add.at(change, second, normal * (impulse * inv_second)[:, None])
    involved = np.unique(np.concatenate([first, second]))
    table.location[involved, :2] += push[involved]
    _change_velocity(table, involved, change[involved], dt)
    on_first = np.zeros((len(first), 3))
    on_first[:, :2] = -normal * impulse[:, None]
    return on_first


def _change_velocity(table: ActorTable, rows: np.ndarray, change: np.ndarray, dt: float) -> None:
    """Adds impact velocity changes: a vehicle's part along its heading becomes speed, the rest slides."""
    change3 = np.zeros((len(rows), 3))
    change3[:, :2] = change
    vehicles = table.kind[rows] == VEHICLE
    yaw = np.radians(table.rotation[rows, 1])
    pitch = np.radians(table.rotation[rows, 0])
    heading = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], axis=1)
    along = np.where(vehicles, np.einsum("kj,kj->k", change3, heading), 0.0)
    across = change3 - heading * along[:, None]
    across[:, 2] = 0.0   # the road holds a vehicle up
    table.speed[rows] += along
    table.slide_velocity[rows] += across
    simulated = rows[table.simulate_physics[rows]]   # the others' velocity is not rebuilt each tick
    table.velocity[simulated] += change3[table.simulate_physics[rows]]
    table.acceleration[simulated] += change3[table.simulate_physics[rows]] / dt
