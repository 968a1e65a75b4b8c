"""The simulated world: one episode of a town, its actors, settings, weather and the tick.

Everything here is plain data and numpy; the protocol layer turns requests into calls
on World and sends World.snapshot() bytes to the clients.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..maps.signals import signals_for
from ..maps.town import Town
from ..protocol import encoding
from . import collisions, geometry, vehicle_physics, walker_physics
from .actors import ActorInfo, ActorKind, ActorTable
from .autopilot import Autopilot
from .blueprints import BlueprintDef, find_blueprint, validate_attribute
from .errors import WorldError
from .sensors import SensorReading, SensorSystem
from .snapshot import SnapshotRecords
from .settings import CLEAR_NOON, EpisodeSettings
from .traffic_lights import TrafficLights

SPECTATOR_TYPE_ID = "spectator"
RENDERING_SENSOR_PREFIXES = ("sensor.camera.", "sensor.lidar.", "sensor.other.radar")
SPAWN_VERTICAL_CLEARANCE_M = 3.0   # boxes further apart than this in z never collide (bridges)
VARIABLE_STEP_BOUNDS_S = (0.001, 0.1)

KIND_BY_BLUEPRINT = {
    "vehicle": ActorKind.VEHICLE, "walker": ActorKind.WALKER, "sensor": ActorKind.SENSOR,
    "traffic": ActorKind.TRAFFIC, "controller": ActorKind.CONTROLLER, "spectator": ActorKind.SPECTATOR,
}
# CARLA 0.9.16 semantic tags (CityScapes palette numbering)
SEMANTIC_TAG_BY_BASE_TYPE = {"car": 14, "van": 14, "truck": 15, "bus": 16, "motorcycle": 18, "bicycle": 19}
PEDESTRIAN_TAG = 12


@dataclass(frozen=True)
class RowGroups:
    version: int
    live: np.ndarray
    vehicles: np.ndarray   # simulated vehicles
    walkers: np.ndarray    # simulated walkers
    attached: np.ndarray   # actors that follow a parent


class World:
    """Actors and time of the current episode of one town."""

    def __init__(self, town: Town, episode_id: int = 1, settings: EpisodeSettings | None = None,
                 seed: int = 0) -> None:
        self.town = town
        self.seed = seed
        self.rng = np.random.default_rng(seed)  # every random choice of the world draws from this
        self.episode_id = episode_id
        self.settings = settings or EpisodeSettings()
        self.weather = list(CLEAR_NOON)
        self.frame = 0
        self.elapsed_seconds = 0.0
        self.table = ActorTable()
        self.actors: dict[int, ActorInfo] = {}
        self._next_actor_id = 1
        self._last_tick_wall = time.monotonic()
        self._map_changed = True
        self.last_delta_seconds = 0.0
        self._groups: RowGroups | None = None
        self._snapshot_records = SnapshotRecords()
        self.sensors = SensorSystem(town.carla_map)
        self.collisions = collisions.CollisionSystem()
        self.contacts = collisions.NO_CONTACTS      # this tick's, for the collision sensors
        self.sensor_readings: list[SensorReading] = []   # this tick's, for the service to publish
        self.spectator = self._add_actor(find_blueprint(SPECTATOR_TYPE_ID), {}, ((0.0, 0.0, 50.0), (-90.0, 0.0, 0.0)))
        self.on_actor_destroyed: Callable[[ActorInfo], None] | None = None
        self.traffic_lights = TrafficLights(self, signals_for(town))   # the map's lights and signs
        self.autopilot = Autopilot(self)   # the server-side Traffic Manager's driver

    # --- actors -------------------------------------------------------------

    def actor(self, actor_id: int) -> ActorInfo:
        info = self.actors.get(actor_id)
        if info is None:
            raise WorldError(f"actor {actor_id} not found (destroyed or never spawned)")
        return info

    def spawn(self, type_id: str, attributes: list[tuple[str, int, str]],
              pose: tuple[tuple[float, float, float], tuple[float, float, float]],
              parent_id: int = 0) -> ActorInfo:
        """Spawns like CARLA: validated attributes, refused when its box would overlap another."""
        try:
            blueprint = find_blueprint(type_id)
        except KeyError as error:
            raise WorldError(str(error.args[0])) from None
        if not blueprint.in_library:
            raise WorldError(f"'{type_id}' actors belong to the map and cannot be spawned")
        if type_id.startswith(RENDERING_SENSOR_PREFIXES):
            raise WorldError(f"{type_id} needs a rendering simulator: use backend 'carla' (a real CARLA "
                             "server); the embedded server has collision, obstacle, GNSS, IMU, lane-invasion "
                             "sensors and the birdview")
        values = {attr.id: (int(attr.type), attr.default) for attr in blueprint.attributes}
        for attr_id, _, value in attributes:
            try:
                values[attr_id] = (values.get(attr_id, (4, ""))[0], validate_attribute(blueprint, attr_id, value))
            except ValueError as error:
                raise WorldError(f"{type_id}: {error}") from None
        if parent_id:
            parent = self.actor(parent_id)
        kind = KIND_BY_BLUEPRINT.get(blueprint.kind, ActorKind.OTHER)
        if kind in (ActorKind.VEHICLE, ActorKind.WALKER) and not parent_id and self._spawn_blocked(blueprint, pose):
            raise WorldError("Spawn failed because of collision at spawn position")
        info = self._add_actor(blueprint, values, pose)
        if parent_id:
            info.parent_id = parent_id
            self.table.parent_row[info.row] = parent.row
            self.table.version += 1
            self.table.relative_location[info.row] = pose[0]
            self.table.relative_rotation[info.row] = pose[1]
            parent.children.append(info.id)
            self._update_attached(np.array([info.row]))
        if kind == ActorKind.SENSOR:
            self.sensors.add(info)
        return info

    def _add_actor(self, blueprint: BlueprintDef, attributes: dict[str, tuple[int, str]],
                   pose: tuple[tuple[float, float, float], tuple[float, float, float]]) -> ActorInfo:
        actor_id = self._next_actor_id
        self._next_actor_id += 1
        kind = KIND_BY_BLUEPRINT.get(blueprint.kind, ActorKind.OTHER)
        row = self.table.allocate(actor_id, kind)
        self.table.location[row] = pose[0]
        self.table.rotation[row] = pose[1]
        self.table.extent[row] = blueprint.extent
        self.table.box_center[row] = blueprint.box_center
        info = ActorInfo(actor_id, row, kind, blueprint, attributes, semantic_tags=self._semantic_tags(blueprint, attributes))
        if blueprint.physics is not None:
            vehicle_physics.set_vehicle_parameters(self.table, row, blueprint.physics)
        if kind == ActorKind.WALKER:
            self.table.simulate_physics[row] = True
            self.table.mass[row] = collisions.walker_mass(blueprint)
        self.actors[actor_id] = info
        return info

    @staticmethod
    def _semantic_tags(blueprint: BlueprintDef, attributes: dict[str, tuple[int, str]]) -> bytes:
        if blueprint.kind == "vehicle":
            base_type = attributes.get("base_type", (4, "car"))[1]
            return bytes([SEMANTIC_TAG_BY_BASE_TYPE.get(base_type, 14)])
        if blueprint.kind == "walker":
            return bytes([PEDESTRIAN_TAG])
        return b""

    def _spawn_blocked(self, blueprint: BlueprintDef, pose) -> bool:
        rows = self.table.live_rows()
        kinds = self.table.kind[rows]
        rows = rows[(kinds == ActorKind.VEHICLE) | (kinds == ActorKind.WALKER)]
        if len(rows) == 0:
            return False
        location = np.asarray(pose[0], float)
        near = rows[np.abs(self.table.location[rows, 2] - location[2]) < SPAWN_VERTICAL_CLEARANCE_M]
        if len(near) == 0:
            return False
        new_center = self._box_centers(location[None, :], np.array([pose[1][1]]), np.asarray(blueprint.box_center)[None, :])
        new_box = geometry.box_corners_2d(new_center, np.array([pose[1][1]]), np.asarray(blueprint.extent)[None, :2])
        others = geometry.box_corners_2d(
            self._box_centers(self.table.location[near], self.table.rotation[near, 1], self.table.box_center[near]),
            self.table.rotation[near, 1], self.table.extent[near, :2])
        return bool(geometry.boxes_overlap_2d(np.repeat(new_box, len(near), 0), others).any())

    @staticmethod
    def _box_centers(location: np.ndarray, yaw_deg: np.ndarray, offset: np.ndarray) -> np.ndarray:
        yaw = np.radians(yaw_deg)
        return np.stack([location[:, 0] + offset[:, 0] * np.cos(yaw) - offset[:, 1] * np.sin(yaw),
                         location[:, 1] + offset[:, 0] * np.sin(yaw) + offset[:, 1] * np.cos(yaw)], axis=1)

    def destroy(self, actor_id: int) -> None:
        info = self.actor(actor_id)
        if info.kind == ActorKind.SPECTATOR:
            raise WorldError("the spectator cannot be destroyed")
        for child_id in info.children:
            child = self.actors.get(child_id)
            if child is not None:
                child.parent_id = 0
                self.table.parent_row[child.row] = -1
                self.table.version += 1
        if info.parent_id in self.actors:
            self.actors[info.parent_id].children.remove(actor_id)
        del self.actors[actor_id]
        self.sensors.discard(actor_id)
        self.table.release(info.row)
        if self.on_actor_destroyed is not None:
            self.on_actor_destroyed(info)

    def vehicle(self, actor_id: int) -> ActorInfo:
        return self._actor_of_kind(actor_id, ActorKind.VEHICLE, "a vehicle")

    def _actor_of_kind(self, actor_id: int, kind: ActorKind, what: str) -> ActorInfo:
        info = self.actor(actor_id)
        if info.kind != kind:
            raise WorldError(f"actor {actor_id} ({info.blueprint.id}) is not {what}")
        return info

    def apply_vehicle_control(self, actor_id: int, control: list) -> None:
        row = self.vehicle(actor_id).row
        throttle, steer, brake, hand_brake, reverse, manual, gear = control[:7]
        table = self.table
        table.throttle[row] = throttle
        table.steer[row] = steer
        table.brake[row] = brake
        table.hand_brake[row] = bool(hand_brake)
        table.reverse[row] = bool(reverse)
        table.manual_gear_shift[row] = bool(manual)
        table.gear[row] = int(gear)

    def walker(self, actor_id: int) -> ActorInfo:
        return self._actor_of_kind(actor_id, ActorKind.WALKER, "a walker")

    def apply_walker_control(self, actor_id: int, control: list) -> None:
        direction, speed, jump = control[:3]
        walker_physics.apply_walker_control(self.table, self.walker(actor_id).row, direction, speed, jump)

    def set_walker_states(self, rows: np.ndarray, locations: np.ndarray, rotations: np.ndarray,
                          speeds: np.ndarray) -> None:
        """What the client-side walker AI sends every tick, for many walkers at once: where each
        walker is and how fast it goes.

        The AI sends the point under the walker's feet on the navigation mesh; a walker's
        origin is its capsule's centre, half its height higher (as CARLA's server raises it).
        """
        table = self.table
        locations = locations.copy()
        locations[:, 2] += table.extent[rows, 2]
        table.location[rows] = locations
        table.rotation[rows] = rotations
        yaw = np.radians(rotations[:, 1])
        direction = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], axis=1)
        table.control_direction[rows] = direction
        table.walker_speed[rows] = speeds
        table.velocity[rows] = direction * speeds[:, None]

    def set_transform(self, actor_id: int, location, rotation=None) -> None:
        info = self.actor(actor_id)
        row = info.row
        if info.parent_id:
            self.table.relative_location[row] = location
            if rotation is not None:
                self.table.relative_rotation[row] = rotation
        else:
            self.table.location[row] = location
            if rotation is not None:
                self.table.rotation[row] = rotation
        self._update_attached(self._row_groups().attached)

    def set_target_velocity(self, actor_id: int, velocity) -> None:
        info = self.actor(actor_id)
        if info.kind == ActorKind.VEHICLE:
            vehicle_physics.set_velocity(self.table, info.row, np.asarray(velocity, float))
        else:
            self.table.velocity[info.row] = velocity

    def set_simulate_physics(self, actor_id: int, enabled: bool) -> None:
        info = self.actor(actor_id)
        self.table.simulate_physics[info.row] = bool(enabled)
        self.table.version += 1
        if not enabled:
            self.table.speed[info.row] = 0.0
            self.table.velocity[info.row] = 0.0
            self.table.angular_velocity[info.row] = 0.0
            self.table.acceleration[info.row] = 0.0

    def set_collisions(self, actor_id: int, enabled: bool) -> None:
        """An actor without collisions passes through others and sweeps miss it (CARLA's AI walkers)."""
        info = self.actor(actor_id)
        self.table.collisions_disabled[info.row] = not enabled
        self.table.version += 1

    # --- time ---------------------------------------------------------------

    def tick(self, dt: float | None = None) -> int:
        """Advances the simulation by one step and returns the new frame number."""
        now = time.monotonic()
        if dt is None:
            dt = self.settings.fixed_delta_seconds
        if dt is None:
            dt = float(np.clip(now - self._last_tick_wall, *VARIABLE_STEP_BOUNDS_S))
        self._last_tick_wall = now
        groups = self._row_groups()
        driven = self.autopilot.step(dt, groups.vehicles)   # autopilot controls; hybrid cars moved here
        vehicle_physics.step_vehicles(self.table, driven, dt, self.town.surface)
        walker_physics.step_walkers(self.table, groups.walkers, dt)
        self.contacts = self.collisions.step(self.table, dt)
        if len(groups.attached):
            self._update_attached(groups.attached)
        self.traffic_lights.step(dt)
        self.frame += 1
        self.elapsed_seconds += dt
        self.last_delta_seconds = dt
        self.sensor_readings = self.sensors.step(self)
        return self.frame

    def _row_groups(self) -> "RowGroups":
        """Rows by role, recomputed only when actors come, go or change role (not every tick)."""
        table = self.table
        if self._groups is None or self._groups.version != table.version:
            size = table.size
            alive, kind, physics = table.alive[:size], table.kind[:size], table.simulate_physics[:size]
            self._groups = RowGroups(
                version=table.version,
                live=np.flatnonzero(alive),
                vehicles=np.flatnonzero(alive & (kind == ActorKind.VEHICLE) & physics),
                walkers=np.flatnonzero(alive & (kind == ActorKind.WALKER) & physics),
                attached=np.flatnonzero(alive & (table.parent_row[:size] >= 0)))
        return self._groups

    def _update_attached(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        table = self.table
        parents = table.parent_row[rows]
        geometry.compose_rows(rows, parents, table.relative_location, table.relative_rotation, table.location,
                              table.rotation)
        table.kinematics[rows, 6:] = table.kinematics[parents, 6:]   # after the pose: velocities, acceleration

    # --- snapshot -----------------------------------------------------------

    def snapshot(self) -> bytes:
        """The episode-stream message for the current frame: header, then one record per actor."""
        records = self._snapshot_records.write(self.table, self._row_groups().live, self.traffic_lights)
        flags = encoding.MAP_CHANGED_FLAG if self._map_changed else 0
        self._map_changed = False
        return (encoding.sensor_header(encoding.EPISODE_STATE_SENSOR_TYPE, self.frame, self.elapsed_seconds)
                + encoding.episode_header(self.episode_id, time.monotonic(), self.last_delta_seconds, flags)
                + records.tobytes())
