"""CARLA's RPC surface implemented over World: one method per RPC name the client sends.

Arguments arrive as decoded msgpack (lists, numbers, bytes); results are returned plain and
the dispatcher wraps them in CARLA's Response<T>. Calls that need a GPU simulator or
that this server does not model are answered with an error that says so.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from . import vehicle_surface
from .maps import navmesh
from .maps.town import Town, TownLoadError, load_town
from .maps.towns import InlineTownSource, UnknownTownError, available_towns, find_town
from .protocol import actor_encoding, encoding
from .protocol.encoding import DecodeError
from .protocol.rpc import Dispatcher, RpcError
from .protocol.streaming import EPISODE_STREAM_ID, StreamingServer
from .traffic_manager_service import TrafficManagerService
from .world.actors import ActorInfo, ActorKind
from .world.blueprints import LIBRARY_BLUEPRINTS, BlueprintDef
from .world.settings import EpisodeSettings, SettingsError, validate_weather
from .world.world import World, WorldError

CARLA_VERSION = "0.9.16"
ALL_MAP_LAYERS = 0xFFFF
STANDARD_GRAVITY_MPS2 = 9.81
DESTROYED_ACTORS_REMEMBERED = 4096
APPLY_WALKER_STATE = 7   # command variant index
ROAD_HIT_RADIUS_M = 8.0   # how far from a lane centre sample a downward ray still hits the road
ROADS_LABEL = 1           # carla.CityObjectLabel.Roads
OPENDRIVE_WORLD_NAME = "OpenDriveMap"   # the name generate_opendrive_world loads

REAL_CARLA_HINT = "use backend 'carla' (a real CARLA server) for it"
# RPCs of the 0.9.16 client this server does not model, by whether CARLA answers Response<void>.
UNSUPPORTED_RPCS: dict[str, bool] = {
    # physics beyond the bicycle model
    "add_actor_impulse": True, "add_actor_impulse_at_location": True, "add_actor_force": True,
    "add_actor_force_at_location": True, "add_actor_angular_impulse": True, "add_actor_torque": True,
    "enable_actor_constant_velocity": True, "disable_actor_constant_velocity": True,
    "apply_ackermann_control_to_vehicle": True, "get_ackermann_controller_settings": False,
    "apply_ackermann_controller_settings": True, "enable_carsim": True, "use_carsim_road": True,
    "enable_chrono_physics": True, "set_wheel_pitch_angle": True, "get_wheel_pitch_angle": False,
    # meshes, skeletons, textures: nothing is rendered here
    "get_actor_component_world_transform": False, "get_actor_component_relative_transform": False,
    "get_actor_component_names": False, "get_actor_bone_world_transforms": False,
    "get_actor_bone_relative_transforms": False, "get_actor_bone_names": False,
    "get_actor_socket_world_transforms": False, "get_actor_socket_relative_transforms": False,
    "get_actor_socket_names": False, "get_vehicle_bone_world_transforms": False,
    "get_bones_transform": False, "set_bones_transform": True, "blend_pose": True,
    "get_pose_from_animation": True, "apply_color_texture_to_objects": True,
    "apply_float_color_texture_to_objects": True, "cast_ray": False,
    # rendering sensors and their extras
    "enable_gbuffers": True, "are_gbuffers_enabled": False, "get_gbuffer_token": False,
    "enable_sensor_for_ros": True, "disable_sensor_for_ros": True, "is_sensor_enabled_for_ros": False,
    "set_ignored_vehicles": True, "send": True,
    # recorder and replayer
    "start_recorder": False, "stop_recorder": True, "show_recorder_file_info": False,
    "show_recorder_collisions": False, "show_recorder_actors_blocked": False, "replay_file": False,
    "stop_replayer": True, "set_replayer_time_factor": True, "set_replayer_ignore_hero": True,
    "set_replayer_ignore_spectator": True,
}

logger = logging.getLogger(__name__)

_RPC_METHODS: dict[str, tuple[str, bool, bool]] = {}


def rpc(name: str | None = None, *, void: bool = False, raw: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks a CarlaService method as the handler of an RPC (default: the method's name).

    void: CARLA answers Response<void>; raw: CARLA answers the bare value, no Response.
    """
    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        _RPC_METHODS[name or func.__name__] = (func.__name__, void, raw)
        return func
    return mark


class CarlaService:
    """The main RPC port's handlers. Owns the world and swaps it on load_new_episode."""

    def __init__(self, world: World, streaming: StreamingServer, maps_dirs: list[str]) -> None:
        self.world = world
        self.streaming = streaming
        self.maps_dirs = maps_dirs
        self.traffic_manager = TrafficManagerService(lambda: self.world)   # serves every TM port asked for
        self.imu_gravity = STANDARD_GRAVITY_MPS2
        self.custom_towns: dict[str, Town] = {}
        self._destroyed: OrderedDict[int, ActorInfo] = OrderedDict()   # recently destroyed, oldest first
        self._definitions = [self._definition(uid, bp) for uid, bp in enumerate(LIBRARY_BLUEPRINTS, start=1)]
        self._configure_sensors()

    def _configure_sensors(self) -> None:
        """Like CARLA's sensors, the world's skip their work while no client listens; IMU gravity is ours."""
        self.world.sensors.listening = self.streaming.has_subscribers
        self.world.sensors.imu_gravity_mps2 = self.imu_gravity

    def bind(self, dispatcher: Dispatcher) -> None:
        for rpc_name, (attr, void, raw) in _RPC_METHODS.items():
            dispatcher.register(rpc_name, self._guarded(getattr(self, attr)), void=void, raw=raw)

    @staticmethod
    def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
        """World and settings refusals and malformed arguments become RPC errors carrying their
        message; anything else is a bug, which the dispatcher logs with its traceback."""
        def call(*args: Any) -> Any:
            try:
                return func(*args)
            except (WorldError, SettingsError, DecodeError) as error:
                raise RpcError(str(error)) from None
        return call

    # --- publishing ---------------------------------------------------------

    def publish_snapshot(self) -> None:
        self.streaming.publish(EPISODE_STREAM_ID, self.world.snapshot(), keep=True)

    def publish_sensor_data(self) -> None:
        """Sends this tick's sensor readings (the world made them only for streams with listeners)."""
        for reading in self.world.sensor_readings:
            self.streaming.publish(reading.sensor.stream_id, actor_encoding.sensor_message(reading, self._serialize))

    def tick(self) -> int:
        frame = self.world.tick()
        self.publish_snapshot()
        self.publish_sensor_data()
        return frame

    # --- server, episode, settings ----------------------------------------------

    @rpc()
    def version(self) -> str:
        return CARLA_VERSION

    @rpc()
    def tick_cue(self) -> int:
        return self.tick()

    @rpc()
    def get_episode_info(self) -> list[Any]:
        return [self.world.episode_id, [self.streaming.token(EPISODE_STREAM_ID)]]

    @rpc()
    def get_episode_settings(self) -> list[Any]:
        return self.world.settings.to_wire()

    @rpc()
    def set_episode_settings(self, values: list[Any]) -> int:
        self.world.settings = EpisodeSettings.from_wire(values)
        self.publish_snapshot()
        return self.world.frame

    @rpc()
    def get_available_maps(self) -> list[str]:
        return [f"/Game/Carla/Maps/{name}" for name in sorted(available_towns(self.maps_dirs))]

    @rpc(void=True)
    def load_new_episode(self, map_name: str, reset_settings: bool = True, map_layers: int = ALL_MAP_LAYERS) -> None:
        """load_world(name) or reload_world() (empty name): a new episode, a new episode id."""
        try:
            if not map_name:
                town = self.world.town
            elif map_name in self.custom_towns:
                town = self.custom_towns[map_name]
            else:
                town = load_town(find_town(map_name, self.maps_dirs))
        except (UnknownTownError, TownLoadError) as error:
            raise RpcError(str(error.args[0])) from None
        settings = EpisodeSettings() if reset_settings else self.world.settings
        self.world = World(town, episode_id=self.world.episode_id + 1, settings=settings, seed=self.world.seed)
        self._destroyed.clear()
        self._configure_sensors()
        self.publish_snapshot()

    @rpc(void=True)
    def copy_opendrive_to_file(self, xodr: str, parameters: list[Any]) -> None:
        """First half of client.generate_opendrive_world(); load_new_episode('OpenDriveMap') follows."""
        town = load_town(InlineTownSource(OPENDRIVE_WORLD_NAME, xodr))
        self.custom_towns[OPENDRIVE_WORLD_NAME] = town

    @rpc(void=True)
    def load_map_layer(self, map_layers: int) -> None:
        """Map layers only change what a renderer draws; roads are always present."""

    @rpc(void=True)
    def unload_map_layer(self, map_layers: int) -> None:
        """See load_map_layer."""

    @rpc()
    def get_weather_parameters(self) -> list[float]:
        return self.world.weather

    @rpc(void=True)
    def set_weather_parameters(self, values: list[Any]) -> None:
        self.world.weather = validate_weather(values)

    @rpc()
    def get_imui_gravity(self) -> float:
        return self.imu_gravity

    # --- map -----------------------------------------------------------------

    @rpc()
    def get_map_info(self) -> list[Any]:
        town = self.world.town
        return [town.map_path, [encoding.transform(loc, rot) for loc, rot in town.spawn_points]]

    @rpc()
    def get_map_data(self) -> str:
        return self.world.town.xodr

    @rpc()
    def get_required_files(self, folder: str = "") -> list[str]:
        """Folder 'Nav' lists the town's navigation mesh, which the client's walker AI loads."""
        if folder.strip("/\\") != navmesh.NAV_FOLDER:
            return []
        nav = navmesh.navigation_file(self.world.town)
        return [nav.name] if nav is not None else []

    @rpc()
    def request_file(self, name: str) -> bytes:
        nav = navmesh.navigation_file(self.world.town)
        if nav is not None and name == nav.name:
            return nav.data
        raise RpcError(f"file '{name}' not found on the embedded server")

    @rpc()
    def get_navigation_mesh(self) -> bytes:
        return b""

    # --- traffic manager registry: this server is the Traffic Manager of every port ------------

    @rpc()
    def is_traffic_manager_running(self, port: int) -> bool:
        """Always: the client then uses this server's Traffic Manager instead of starting its own."""
        return True

    @rpc()
    def get_traffic_manager_running(self, port: int) -> list[Any]:
        return self.traffic_manager.address(int(port))

    @rpc()
    def add_traffic_manager_running(self, info: list[Any]) -> bool:
        """Refused: this server already serves every Traffic Manager port."""
        return False

    @rpc()
    def destroy_traffic_manager(self, port: int) -> bool:
        self.world.autopilot.unregister_port(int(port))
        return True

    # --- blueprints and actors -------------------------------------------------

    @staticmethod
    def _definition(uid: int, blueprint: BlueprintDef) -> list[Any]:
        attributes = [[a.id, int(a.type), a.default, list(a.recommended), a.modifiable, a.restrict_to_recommended]
                      for a in blueprint.attributes]
        return [uid, blueprint.id, ",".join(blueprint.tags), attributes]

    @rpc()
    def get_actor_definitions(self) -> list[Any]:
        return self._definitions

    def _serialize(self, info: ActorInfo) -> list[Any]:
        token = self.streaming.token(info.stream_id) if info.stream_id else b""
        return actor_encoding.serialize_actor(info, token)

    @rpc()
    def get_spectator(self) -> list[Any]:
        return self._serialize(self.world.spectator)

    @rpc()
    def get_actors_by_id(self, ids: list[int]) -> list[Any]:
        return [self._serialize(self.world.actors[i]) for i in ids if i in self.world.actors]

    def _spawn(self, description: list[Any], transform: Any, parent_id: int = 0) -> ActorInfo:
        _, type_id, attributes = description[:3]
        pose = encoding.decode_transform(transform)
        info = self.world.spawn(type_id, [tuple(a[:3]) for a in attributes], pose, parent_id)
        if info.kind == ActorKind.SENSOR:
            info.stream_id = self.streaming.new_stream_id()
        return info

    @rpc()
    def spawn_actor(self, description: list[Any], transform: Any) -> list[Any]:
        return self._serialize(self._spawn(description, transform))

    @rpc()
    def spawn_actor_with_parent(self, description: list[Any], transform: Any, parent_id: int,
                                attachment_type: int = 0, socket_name: str = "") -> list[Any]:
        return self._serialize(self._spawn(description, transform, parent_id))

    @rpc()
    def destroy_actor(self, actor_id: int) -> bool:
        info = self.world.actor(actor_id)
        self.world.destroy(actor_id)
        self._destroyed[actor_id] = info
        while len(self._destroyed) > DESTROYED_ACTORS_REMEMBERED:
            self._destroyed.popitem(last=False)
        if info.stream_id:
            self.streaming.close_stream(info.stream_id)
        return True

    @rpc()
    def get_sensor_token(self, stream_id: int) -> list[bytes]:
        return [self.streaming.token(stream_id)]

    @rpc()
    def get_actor_bounding_box(self, actor_id: int) -> list[Any]:
        """Also answered for recently destroyed actors: a client thread (traffic manager, lane
        invasion) may ask about an actor it saw in the last snapshot, and an error there
        aborts the whole client process."""
        info = self.world.actors.get(actor_id) or self._destroyed.get(actor_id)
        if info is None:
            raise RpcError(f"actor {actor_id} not found (destroyed or never spawned)")
        return encoding.bounding_box(info.blueprint.box_center, info.blueprint.extent, actor_id)

    @rpc(void=True)
    def set_actor_location(self, actor_id: int, location: Any) -> None:
        self.world.set_transform(actor_id, encoding.decode_vector(location))

    @rpc(void=True)
    def set_actor_transform(self, actor_id: int, transform: Any) -> None:
        self.world.set_transform(actor_id, *encoding.decode_transform(transform))

    @rpc(void=True)
    def set_actor_target_velocity(self, actor_id: int, velocity: Any) -> None:
        self.world.set_target_velocity(actor_id, encoding.decode_vector(velocity))

    @rpc(void=True)
    def set_actor_target_angular_velocity(self, actor_id: int, velocity: Any) -> None:
        self.world.actor(actor_id)
        self.world.table.angular_velocity[self.world.actor(actor_id).row] = encoding.decode_vector(velocity)

    @rpc(void=True)
    def set_actor_simulate_physics(self, actor_id: int, enabled: bool) -> None:
        self.world.set_simulate_physics(actor_id, enabled)

    @rpc(void=True)
    def set_actor_enable_gravity(self, actor_id: int, enabled: bool) -> None:
        self.world.actor(actor_id)

    @rpc(void=True)
    def set_actor_collisions(self, actor_id: int, enabled: bool) -> None:
        self.world.set_collisions(actor_id, enabled)

    @rpc(void=True)
    def set_actor_autopilot(self, actor_id: int, enabled: bool) -> None:
        self.world.vehicle(actor_id)

    @rpc(void=True)
    def set_actor_dead(self, actor_id: int) -> None:
        self.world.actor(actor_id)

    # --- vehicles --------------------------------------------------------------

    @rpc(void=True)
    def apply_control_to_vehicle(self, actor_id: int, control: list[Any]) -> None:
        self.world.apply_vehicle_control(actor_id, control)

    @rpc()
    def get_vehicle_light_state(self, actor_id: int) -> list[int]:
        return [self.world.vehicle(actor_id).light_state]

    @rpc()
    def get_vehicle_light_states(self) -> list[Any]:
        return [[info.id, info.light_state] for info in self.world.actors.values() if info.kind == ActorKind.VEHICLE]

    @rpc(void=True)
    def set_vehicle_light_state(self, actor_id: int, state: Any) -> None:
        self.world.vehicle(actor_id).light_state = int(state[0] if isinstance(state, list) else state)

    @rpc()
    def get_physics_control(self, actor_id: int) -> list[Any]:
        info = self.world.vehicle(actor_id)
        return vehicle_surface.physics_control(info, self.world.table)

    @rpc(void=True)
    def apply_physics_control(self, actor_id: int, control: list[Any]) -> None:
        vehicle_surface.apply_physics_control(self.world.vehicle(actor_id), self.world.table, control)

    @rpc()
    def get_wheel_steer_angle(self, actor_id: int, wheel: int) -> float:
        info = self.world.vehicle(actor_id)
        return vehicle_surface.wheel_steer_angle(info, self.world.table, wheel)

    @rpc()
    def get_telemetry_data(self, actor_id: int) -> list[Any]:
        return vehicle_surface.telemetry(self.world.vehicle(actor_id), self.world.table)

    @rpc(void=True)
    def open_vehicle_door(self, actor_id: int, door: int) -> None:
        """Doors are visual only; accepted for vehicles."""
        self.world.vehicle(actor_id)

    @rpc(void=True)
    def close_vehicle_door(self, actor_id: int, door: int) -> None:
        self.world.vehicle(actor_id)

    @rpc(void=True)
    def set_wheel_steer_direction(self, actor_id: int, wheel: int, degrees: float) -> None:
        """Wheel animation only (the physics steers from the control); accepted for vehicles."""
        self.world.vehicle(actor_id)

    @rpc(void=True)
    def show_vehicle_debug_telemetry(self, actor_id: int, enabled: bool) -> None:
        """Nothing is drawn here; accepted for vehicles."""
        self.world.vehicle(actor_id)

    @rpc(void=True)
    def restore_physx_physics(self, actor_id: int) -> None:
        """The bicycle model is the only physics here, so restoring it is a no-op."""
        self.world.vehicle(actor_id)

    # --- walkers -----------------------------------------------------------------------

    @rpc(void=True)
    def apply_control_to_walker(self, actor_id: int, control: list[Any]) -> None:
        direction, speed, jump = control[:3]
        self.world.apply_walker_control(actor_id, [encoding.decode_vector(direction), float(speed), bool(jump)])

    # --- queries against the road surface -------------------------------------------

    @rpc()
    def project_point(self, location: Any, direction: Any, search_distance: float) -> list[Any]:
        """Straight-down projections land on the road surface; other directions hit nothing."""
        loc = encoding.decode_vector(location)
        down = encoding.decode_vector(direction)
        if down[0] or down[1] or down[2] >= 0:
            return [False, [[0.0, 0.0, 0.0], 0]]
        ground_z, _, _, horizontal = self.world.town.surface.query(np.array([loc]))
        hit = horizontal[0] < ROAD_HIT_RADIUS_M and 0.0 <= loc[2] - ground_z[0] <= search_distance
        return [bool(hit), [[loc[0], loc[1], float(ground_z[0])], ROADS_LABEL if hit else 0]]

    @rpc()
    def get_all_level_BBs(self, label: int) -> list[Any]:
        """No level geometry (buildings, poles) exists besides the roads."""
        return []

    @rpc()
    def get_environment_objects(self, label: int) -> list[Any]:
        return []

    @rpc(void=True)
    def enable_environment_objects(self, ids: list[int], enable: bool) -> None:
        """There are no environment objects to toggle."""

    @rpc()
    def get_names_of_all_objects(self) -> list[str]:
        return []

    # --- drawing and rendering knobs that have nothing to draw -----------------------

    @rpc(void=True)
    def draw_debug_shape(self, shape: Any) -> None:
        """Nothing is rendered; debug shapes are accepted and dropped."""

    @rpc(void=True)
    def clear_debug_shape(self) -> None:
        """See draw_debug_shape."""

    @rpc(void=True)
    def clear_debug_string(self) -> None:
        """See draw_debug_shape."""

    @rpc(void=True)
    def set_annotations_traverse_translucency(self, enabled: bool) -> None:
        """Rendering option; nothing is rendered."""

    @rpc(void=True)
    def update_day_night_cycle(self, client: str, active: bool) -> None:
        """No street lights are simulated."""

    @rpc(void=True)
    def set_imui_gravity(self, gravity: float) -> None:
        self.imu_gravity = float(gravity)
        self.world.sensors.imu_gravity_mps2 = self.imu_gravity

    # --- traffic lights (world/traffic_lights.py) --------------------------------------

    @rpc()
    def get_group_traffic_lights(self, actor_id: int) -> list[int]:
        return self.world.traffic_lights.group_ids(self.world.actor(actor_id).id)

    @rpc()
    def get_light_boxes(self, actor_id: int) -> list[Any]:
        return self.world.traffic_lights.light_boxes(self.world.actor(actor_id).id)

    @rpc(void=True)
    def set_traffic_light_state(self, actor_id: int, state: int) -> None:
        self.world.traffic_lights.set_state(self.world.actor(actor_id).id, int(state))

    @rpc(void=True)
    def set_traffic_light_green_time(self, actor_id: int, seconds: float) -> None:
        self.world.traffic_lights.set_time(self.world.actor(actor_id).id, encoding.TRAFFIC_LIGHT_GREEN, float(seconds))

    @rpc(void=True)
    def set_traffic_light_yellow_time(self, actor_id: int, seconds: float) -> None:
        self.world.traffic_lights.set_time(self.world.actor(actor_id).id, encoding.TRAFFIC_LIGHT_YELLOW, float(seconds))

    @rpc(void=True)
    def set_traffic_light_red_time(self, actor_id: int, seconds: float) -> None:
        self.world.traffic_lights.set_time(self.world.actor(actor_id).id, encoding.TRAFFIC_LIGHT_RED, float(seconds))

    @rpc(void=True)
    def freeze_traffic_light(self, actor_id: int, frozen: bool) -> None:
        """Lights here have one clock: freezing one freezes all (the Python API sends
        freeze_all_traffic_lights for TrafficLight.freeze anyway)."""
        self.world.traffic_lights.light(self.world.actor(actor_id).id)
        self.world.traffic_lights.frozen = bool(frozen)

    @rpc(void=True)
    def reset_traffic_light_group(self, actor_id: int) -> None:
        self.world.traffic_lights.reset_group(self.world.actor(actor_id).id)

    @rpc(void=True)
    def freeze_all_traffic_lights(self, frozen: bool) -> None:
        self.world.traffic_lights.frozen = bool(frozen)

    @rpc(void=True)
    def reset_all_traffic_lights(self) -> None:
        self.world.traffic_lights.reset_all()

    # --- lights of the town (street lights) -------------------------------------

    @rpc()
    def query_lights_state(self, client: str) -> list[Any]:
        return []

    @rpc(void=True)
    def update_lights_state(self, client: str, lights: list[Any], discard_client: bool = False) -> None:
        """No street lights are simulated; accepted so the client's light manager works."""

    # --- batches ----------------------------------------------------------------

    @rpc(raw=True)
    def apply_batch(self, commands: list[Any], do_tick_cue: bool = False) -> list[Any]:
        if commands and all(_command_index(command) == APPLY_WALKER_STATE for command in commands):
            responses = self._walker_states(commands)   # the walker AI's batch, every tick
        else:
            responses = [self._run_command(command) for command in commands]
        if do_tick_cue:
            self.tick()
        return responses

    def _walker_states(self, commands: list[Any]) -> list[Any]:
        """ApplyWalkerState for many walkers in one numpy update; bad entries get their own error.

        The walker AI sends one per walker every tick, so the common case (all well formed) is
        checked as one array conversion; only a batch that fails it is decoded entry by entry."""
        actors = self.world.actors
        try:
            fields = [command[0][1] for command in commands]
            infos = [actors.get(field[0]) for field in fields]
            if any(info is None or info.kind != ActorKind.WALKER for info in infos):
                raise ValueError("a command names an actor that is not a walker")
            poses = np.array([field[1] for field in fields], dtype=float).reshape(len(fields), 6)
            speeds = np.array([field[2] for field in fields], dtype=float)
        except (ValueError, TypeError, IndexError, KeyError):
            return self._walker_states_one_by_one(commands)
        self.world.set_walker_states(np.array([info.row for info in infos]), poses[:, :3], poses[:, 3:], speeds)
        return [encoding.value_response(field[0]) for field in fields]

    def _walker_states_one_by_one(self, commands: list[Any]) -> list[Any]:
        responses: list[Any] = []
        rows, poses, speeds = [], [], []
        for command in commands:
            try:
                actor_id, transform, speed = command[0][1][:3]
                rows.append(self.world.walker(actor_id).row)
                poses.append(encoding.decode_transform(transform))
                speeds.append(float(speed))
                responses.append(encoding.value_response(actor_id))
            except (WorldError, DecodeError, TypeError, IndexError) as error:
                responses.append(encoding.value_error(str(error)))
        if rows:
            pose = np.array(poses, dtype=float).reshape(len(rows), 6)
            self.world.set_walker_states(np.array(rows), pose[:, :3], pose[:, 3:], np.array(speeds))
        return responses

    def _run_command(self, command: Any) -> list[Any]:
        try:
            index, payload = encoding.decode_command(command)
            handler = _COMMANDS.get(index)
            if handler is None:
                raise WorldError(f"command type {index} is not supported by the embedded CARLA server")
            return encoding.value_response(handler(self, payload))
        except (WorldError, SettingsError, DecodeError, TypeError, IndexError, KeyError) as error:
            # a malformed or refused command fails alone; the rest of the batch is applied
            return encoding.value_error(str(error))

    def _command_spawn(self, payload: list[Any]) -> int:
        description, transform, parent = payload[0], payload[1], encoding.decode_optional(payload[2])
        do_after = payload[-1] if isinstance(payload[-1], list) else []
        info = self._spawn(description, transform, parent or 0)
        for follow_up in do_after:
            index, follow_payload = follow_up[0]
            follow_payload = [info.id] + list(follow_payload[1:])
            self._run_command([[index, follow_payload]])
        return info.id

    def _command_destroy(self, payload: list[Any]) -> int:
        self.destroy_actor(payload[0])
        return payload[0]

    def _command_vehicle_control(self, payload: list[Any]) -> int:
        self.world.apply_vehicle_control(payload[0], payload[1])
        return payload[0]

    def _command_transform(self, payload: list[Any]) -> int:
        self.world.set_transform(payload[0], *encoding.decode_transform(payload[1]))
        return payload[0]

    def _command_target_velocity(self, payload: list[Any]) -> int:
        self.world.set_target_velocity(payload[0], encoding.decode_vector(payload[1]))
        return payload[0]

    def _command_simulate_physics(self, payload: list[Any]) -> int:
        self.world.set_simulate_physics(payload[0], payload[1])
        return payload[0]

    def _command_walker_control(self, payload: list[Any]) -> int:
        self.apply_control_to_walker(payload[0], payload[1])
        return payload[0]

    def _command_walker_state(self, payload: list[Any]) -> int:
        location, rotation = encoding.decode_transform(payload[1])
        row = self.world.walker(payload[0]).row
        self.world.set_walker_states(np.array([row]), np.array([location]), np.array([rotation]),
                                     np.array([float(payload[2])]))
        return payload[0]

    def _command_accept_for_actor(self, payload: list[Any]) -> int:
        self.world.actor(payload[0])
        return payload[0]

    def _command_autopilot(self, payload: list[Any]) -> int:
        self.world.vehicle(payload[0])
        return payload[0]


def _command_index(command: Any) -> Any:
    try:
        return command[0][0]
    except (TypeError, IndexError, KeyError):
        return None


# Command variant index -> handler (0.9.16 order).
_COMMANDS: dict[int, Callable[[CarlaService, list[Any]], int]] = {
    0: CarlaService._command_spawn,
    1: CarlaService._command_destroy,
    2: CarlaService._command_vehicle_control,
    4: CarlaService._command_walker_control,
    6: CarlaService._command_transform,
    7: CarlaService._command_walker_state,
    8: CarlaService._command_target_velocity,
    14: CarlaService._command_simulate_physics,
    15: CarlaService._command_accept_for_actor,
    16: CarlaService._command_autopilot,
    18: CarlaService._command_accept_for_actor,
}
