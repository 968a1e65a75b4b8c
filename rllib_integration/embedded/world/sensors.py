"""Server-side sensors (collision, obstacle, GNSS, IMU): one tick's readings for all of them at once.

CARLA computes these inside the simulator and streams them; the client only decodes. World.tick
asks for readings after the poses of attached actors are updated, so a reading's frame, time
and pose are those of the snapshot that tick publishes. Sensors of one type live in parallel
arrays, and each type is computed with numpy over all its sensors that a client listens to
(CARLA's sensors skip their tick without listeners). Bodies are plain values (actors as
ActorInfo); the protocol layer encodes them.

Conventions are the 0.9.16 simulator's: a collision event names the sensor's parent and the
other actor, with the normal impulse (N·s) the parent received; an obstacle event names the
sensor itself, the nearest actor its sphere sweep hits and the sweep distance (m); GNSS is the
client map's own projection of the sensor's location; the IMU reports the acceleration of its
mount plus gravity (at rest +g on its z), the angular velocity (rad/s) in its own frame and
the compass angle from north (CARLA's -y) turning toward east (+x), in [0, 2π).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import carla
import numpy as np

from ..protocol import encoding
from . import geometry
from .actors import ActorInfo, ActorKind, ActorTable
from .blueprints import AttributeType

if TYPE_CHECKING:
    from .world import World

STANDARD_GRAVITY_MPS2 = 9.81
VEHICLE, WALKER, TRAFFIC = int(ActorKind.VEHICLE), int(ActorKind.WALKER), int(ActorKind.TRAFFIC)
TICK_TOLERANCE_S = 1e-6          # sums of float time steps may fall short of sensor_tick by rounding
SWEEP_PARALLEL_EPS = 1e-12       # direction components below this are parallel to a box face
EARTH_RADIUS_M = 6378137.0       # WGS84 equatorial radius
# The 0.9.16 client's Map.transform_to_geolocation is a spherical transverse Mercator on this
# radius scaled by 0.9996 whatever the geoReference's +k, with +y pointing north; only the
# origin (+lat_0, +lon_0, else 42 N 2 E) comes from the map, so it is read from the map itself.
CLIENT_PROJECTION_SCALE = 0.9996
PROJECTION_RADIUS_M = EARTH_RADIUS_M * CLIENT_PROJECTION_SCALE

SENSOR_TYPES = {
    "sensor.other.collision": encoding.COLLISION_SENSOR_TYPE,
    "sensor.other.obstacle": encoding.OBSTACLE_SENSOR_TYPE,
    "sensor.other.gnss": encoding.GNSS_SENSOR_TYPE,
    "sensor.other.imu": encoding.IMU_SENSOR_TYPE,
}
# Numeric attributes each type reads, in the column order its computation uses.
PARAMETERS: dict[int, tuple[str, ...]] = {
    encoding.COLLISION_SENSOR_TYPE: (),
    encoding.OBSTACLE_SENSOR_TYPE: ("distance", "hit_radius", "only_dynamics"),
    encoding.GNSS_SENSOR_TYPE: ("noise_lat_bias", "noise_lon_bias", "noise_alt_bias",
                                "noise_lat_stddev", "noise_lon_stddev", "noise_alt_stddev"),
    encoding.IMU_SENSOR_TYPE: ("noise_accel_stddev_x", "noise_accel_stddev_y", "noise_accel_stddev_z",
                               "noise_gyro_stddev_x", "noise_gyro_stddev_y", "noise_gyro_stddev_z",
                               "noise_gyro_bias_x", "noise_gyro_bias_y", "noise_gyro_bias_z"),
}


@dataclass(frozen=True)
class SensorReading:
    """One message of one sensor stream, before encoding."""

    sensor: ActorInfo
    sensor_type: int
    frame: int
    timestamp: float
    pose: list[float]    # sensor world transform: x, y, z, pitch, yaw, roll
    body: list[Any]      # msgpack values; ActorInfo entries become rpc Actors when encoded


class _Group:
    """Sensors of one type as parallel arrays, so one tick computes all of them at once."""

    def __init__(self, sensor_type: int) -> None:
        self.sensor_type = sensor_type
        self.parameters = PARAMETERS[sensor_type]
        self.infos: list[ActorInfo] = []
        self.rngs: list[np.random.Generator] = []
        self.rows = np.zeros(0, np.int64)
        self.interval = np.zeros(0)        # sensor_tick, s
        self.last = np.zeros(0)            # simulation time of the last reading, s
        self.values = np.zeros((0, len(self.parameters)))

    def add(self, info: ActorInfo) -> None:
        self.infos.append(info)
        self.rngs.append(np.random.default_rng(int(_number(info, "noise_seed"))))
        self.rows = np.append(self.rows, info.row)
        self.interval = np.append(self.interval, _number(info, "sensor_tick"))
        self.last = np.append(self.last, -np.inf)
        self.values = np.vstack([self.values, [[_number(info, name) for name in self.parameters]]])

    def discard(self, actor_id: int) -> None:
        index = next((k for k, info in enumerate(self.infos) if info.id == actor_id), None)
        if index is None:
            return
        del self.infos[index], self.rngs[index]
        self.rows, self.interval, self.last, self.values = (np.delete(column, index, axis=0) for column in
                                                            (self.rows, self.interval, self.last, self.values))

    def due(self, elapsed: float) -> np.ndarray:
        """Indexes of the sensors whose sensor_tick has passed since their last reading."""
        ready = elapsed - self.last >= self.interval - TICK_TOLERANCE_S
        self.last[ready] = elapsed
        return np.flatnonzero(ready)

    def noise(self, indexes: np.ndarray, stddev: np.ndarray) -> np.ndarray:
        """Zero-mean normal noise with per-sensor deviations (n, 3), each from its sensor's seed."""
        noise = np.zeros((len(indexes), 3))
        for k in np.flatnonzero(stddev.any(axis=1)):
            noise[k] = self.rngs[indexes[k]].standard_normal(3) * stddev[k]
        return noise


def _number(info: ActorInfo, attr_id: str) -> float:
    """A numeric or Bool attribute as spawned (absent: 0)."""
    attr_type, text = info.attributes.get(attr_id, (3, "0"))
    if attr_type == AttributeType.Bool:
        return 1.0 if text == "true" else 0.0
    return float(text)


class SensorSystem:
    """The server-side sensors of one world."""

    def __init__(self, carla_map: carla.Map) -> None:
        origin = carla_map.transform_to_geolocation(carla.Location(0.0, 0.0, 0.0))
        self.geo_origin_deg = (origin.latitude, origin.longitude)
        self.imu_gravity_mps2 = STANDARD_GRAVITY_MPS2    # client.set_imui_sensor_gravity changes it
        # Whether a stream id has listeners: CARLA's sensors skip their work (noise draws included)
        # while nobody listens, though their sensor_tick clock runs on. Without a server, all listen.
        self.listening: Callable[[int], bool] = lambda stream_id: True
        self._groups = {sensor_type: _Group(sensor_type) for sensor_type in PARAMETERS}
        self._candidates_version = -1
        self._candidates: tuple[np.ndarray, ...] = ()

    def add(self, info: ActorInfo) -> None:
        sensor_type = SENSOR_TYPES.get(info.blueprint.id)
        if sensor_type is not None:
            self._groups[sensor_type].add(info)

    def discard(self, actor_id: int) -> None:
        for group in self._groups.values():
            group.discard(actor_id)

    def step(self, world: World) -> list[SensorReading]:
        """This tick's readings; call once per tick, after attached poses and the frame advance."""
        if not any(group.infos for group in self._groups.values()):
            return []
        readings = self._collisions(world)
        for sensor_type, compute in ((encoding.OBSTACLE_SENSOR_TYPE, self._obstacles),
                                     (encoding.GNSS_SENSOR_TYPE, self._gnss),
                                     (encoding.IMU_SENSOR_TYPE, self._imu)):
            group = self._groups[sensor_type]
            if group.infos:
                indexes = [k for k in group.due(world.elapsed_seconds) if self.listening(group.infos[k].stream_id)]
                if indexes:
                    readings += compute(world, group, np.array(indexes, np.int64))
        return readings

    @staticmethod
    def _readings(world: World, group: _Group, indexes: np.ndarray, bodies: list[list[Any]]) -> list[SensorReading]:
        """Readings of the sensors at `indexes` (into the group), each posed where its sensor is now."""
        rows = group.rows[indexes]
        poses = np.hstack([world.table.location[rows], world.table.rotation[rows]]).tolist()
        return [SensorReading(group.infos[index], group.sensor_type, world.frame, world.elapsed_seconds, pose, body)
                for index, pose, body in zip(indexes, poses, bodies)]

    def _collisions(self, world: World) -> list[SensorReading]:
        """One event per contact of the parent this tick (contacts are unique per pair and tick)."""
        group, contacts = self._groups[encoding.COLLISION_SENSOR_TYPE], world.contacts
        if not group.infos or not len(contacts):
            return []
        table = world.table
        indexes, bodies = [], []
        for index, parent in enumerate(table.parent_row[group.rows]):
            if parent < 0 or not self.listening(group.infos[index].stream_id):
                continue
            for contact in np.flatnonzero((contacts.first == parent) | (contacts.second == parent)):
                is_first = contacts.first[contact] == parent
                other = contacts.second[contact] if is_first else contacts.first[contact]
                impulse = contacts.impulse[contact] if is_first else -contacts.impulse[contact]
                indexes.append(index)
                bodies.append([world.actors[group.infos[index].parent_id], world.actors[int(table.ids[other])],
                               impulse.tolist()])
        return self._readings(world, group, np.array(indexes, np.int64), bodies)

    def _obstacles(self, world: World, group: _Group, indexes: np.ndarray) -> list[SensorReading]:
        """A sphere of hit_radius swept along each sensor's forward axis for `distance`.

        The sweep hits a box where the ray of its centre enters the box grown by the radius;
        the reported distance is how far the centre travelled. Vehicles and walkers are
        dynamic; traffic lights and signs are static and ignored with only_dynamics. Only
        boxes whose bounding sphere the sweep can reach are tested.
        """
        table = world.table
        candidates, static, half, offset, box_reach = self._obstacle_candidates(table)
        rows = group.rows[indexes]
        sweep, radius, only_dynamics = group.values[indexes].T
        start = table.location[rows]
        pitch, yaw = np.radians(table.rotation[rows, 0]), np.radians(table.rotation[rows, 1])
        forward = np.column_stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
        box_yaw = np.radians(table.rotation[candidates, 1])
        cos, sin = np.cos(box_yaw), np.sin(box_yaw)
        centre = table.location[candidates] + np.column_stack(
            [cos * offset[:, 0] - sin * offset[:, 1], sin * offset[:, 0] + cos * offset[:, 1], offset[:, 2]])
        to_centre = centre[None, :, :] - start[:, None, :]                                 # (S, C, 3)
        reachable = (np.einsum("sck,sck->sc", to_centre, to_centre)
                     < (sweep[:, None] + radius[:, None] + box_reach[None, :]) ** 2)
        reachable &= candidates[None, :] != table.parent_row[rows][:, None]
        reachable &= ~(static[None, :] & (only_dynamics[:, None] > 0.5))
        s, c = np.nonzero(reachable)
        if len(s) == 0:
            return []
        # The sweep in each box's frame: a slab test against the box grown by the radius.
        relative, direction = -to_centre[s, c], forward[s]
        position = np.column_stack([cos[c] * relative[:, 0] + sin[c] * relative[:, 1],
                                    -sin[c] * relative[:, 0] + cos[c] * relative[:, 1], relative[:, 2]])
        direction = np.column_stack([cos[c] * direction[:, 0] + sin[c] * direction[:, 1],
                                     -sin[c] * direction[:, 0] + cos[c] * direction[:, 1], direction[:, 2]])
        direction = np.where(np.abs(direction) < SWEEP_PARALLEL_EPS, SWEEP_PARALLEL_EPS, direction)
        grown = half[c] + radius[s, None]
        near_face, far_face = (-grown - position) / direction, (grown - position) / direction
        enter = np.minimum(near_face, far_face).max(axis=1)
        leave = np.maximum(near_face, far_face).min(axis=1)
        hit = (enter <= leave) & (leave >= 0.0) & (enter <= sweep[s])
        distance = np.full(reachable.shape, np.inf)
        distance[s[hit], c[hit]] = np.maximum(enter[hit], 0.0)
        nearest = np.argmin(distance, axis=1)
        travelled = distance[np.arange(len(rows)), nearest]
        found = np.flatnonzero(np.isfinite(travelled))
        bodies = [[group.infos[indexes[k]], world.actors[int(table.ids[candidates[nearest[k]]])], float(travelled[k])]
                  for k in found]
        return self._readings(world, group, indexes[found], bodies)

    def _obstacle_candidates(self, table: ActorTable) -> tuple[np.ndarray, ...]:
        """Rows an obstacle sweep can hit, whether each is static, its box and bounding radius;
        cached until actors come, go or change role."""
        if self._candidates_version != table.version:
            size = table.size
            kinds = table.kind[:size]
            rows = np.flatnonzero(table.alive[:size] & ~table.collisions_disabled[:size]
                                  & table.extent[:size].any(axis=1)
                                  & ((kinds == VEHICLE) | (kinds == WALKER) | (kinds == TRAFFIC)))
            half = table.extent[rows]
            self._candidates = (rows, table.kind[rows] == TRAFFIC, half, table.box_center[rows],
                                np.linalg.norm(half, axis=1))
            self._candidates_version = table.version
        return self._candidates

    def _gnss(self, world: World, group: _Group, indexes: np.ndarray) -> list[SensorReading]:
        location = world.table.location[group.rows[indexes]]
        values = group.values[indexes]
        fix = geolocation(location, *self.geo_origin_deg) + values[:, :3] + group.noise(indexes, values[:, 3:])
        return self._readings(world, group, indexes, fix.tolist())

    def _imu(self, world: World, group: _Group, indexes: np.ndarray) -> list[SensorReading]:
        """Acceleration of the mount point (the parent's plus the centripetal part of the lever arm)
        and gravity, and the angular velocity, both turned into the sensor's frame."""
        table = world.table
        rows = group.rows[indexes]
        to_world = geometry.rotation_matrices(table.rotation[rows])
        omega = np.radians(table.angular_velocity[rows])         # attached rows carry the parent's
        parents = table.parent_row[rows]
        arm = np.where((parents >= 0)[:, None], table.location[rows] - table.location[np.maximum(parents, 0)], 0.0)
        centripetal = (omega * np.einsum("nj,nj->n", omega, arm)[:, None]
                       - arm * np.einsum("nj,nj->n", omega, omega)[:, None])
        accel_world = table.acceleration[rows] + centripetal
        accel_world[:, 2] += self.imu_gravity_mps2
        values = group.values[indexes]
        accel = np.einsum("nji,nj->ni", to_world, accel_world) + group.noise(indexes, values[:, :3])
        gyro = np.einsum("nji,nj->ni", to_world, omega) + values[:, 6:9] + group.noise(indexes, values[:, 3:6])
        forward = to_world[:, :, 0]
        compass = np.mod(np.arctan2(forward[:, 0], -forward[:, 1]), 2.0 * math.pi)
        return self._readings(world, group, indexes, [[a, g, c] for a, g, c in zip(accel.tolist(), gyro.tolist(),
                                                                                    compass.tolist())])


def geolocation(location: np.ndarray, lat0_deg: float, lon0_deg: float) -> np.ndarray:
    """(n, 3) CARLA locations -> (n, 3) latitude, longitude (degrees), altitude (m), as the client maps them."""
    x = location[:, 0] / PROJECTION_RADIUS_M
    d = location[:, 1] / PROJECTION_RADIUS_M + math.radians(lat0_deg)
    latitude = np.degrees(np.arcsin(np.sin(d) / np.cosh(x)))
    longitude = lon0_deg + np.degrees(np.arctan2(np.sinh(x), np.cos(d)))
    return np.stack([latitude, longitude, location[:, 2]], axis=1)
