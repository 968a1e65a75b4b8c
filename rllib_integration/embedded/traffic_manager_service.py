"""The embedded server as CARLA's remote Traffic Manager: one plain msgpack-rpc listener per
Traffic Manager port a client asks for, answering every call of CARLA's TrafficManagerClient.

Why: when the main port says a Traffic Manager already runs on a port, the official client
builds a remote one and sends its registrations and settings here, instead of running its
own TM thread (which deadlocks in synchronous mode and costs RPCs every tick). The vehicles
are then driven by world/autopilot.py on each tick. Calls are plain rpclib (no CARLA
metadata, no Response wrapping); every call is answered, since a failed call on the
client's TM thread ends the client process.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Callable

from .protocol.rpc import Dispatcher, RpcConnection, RpcLog
from .world.autopilot import Autopilot
from .world.autopilot_state import PortSettings
from .world.world import World

KMH_TO_MPS = 1.0 / 3.6
LOOPBACK = "127.0.0.1"
LISTEN_BACKLOG = 64

logger = logging.getLogger(__name__)


def _actor_id(actor: Any) -> int:
    """rpc Actor ([id, parent, description, box, tags, token]) or a bare id -> id."""
    return int(actor[0]) if isinstance(actor, (list, tuple)) else int(actor)


def _location(value: Any) -> tuple[float, float, float]:
    return float(value[0]), float(value[1]), float(value[2])


class TrafficManagerPort:
    """The calls of one Traffic Manager port (CARLA's TrafficManagerServer bindings)."""

    def __init__(self, port: int, world: Callable[[], World], settings: PortSettings) -> None:
        self.port = port
        self._world = world
        self.settings = settings

    @property
    def autopilot(self) -> Autopilot:
        autopilot = self._world().autopilot
        autopilot.ports[self.port] = self.settings   # a new episode's autopilot learns this port's settings
        return autopilot

    def _per_vehicle(self, name: str, convert: Callable[[Any], Any] = float) -> Callable[[Any, Any], None]:
        def setter(actor: Any, value: Any) -> None:
            self.autopilot.set_vehicle(_actor_id(actor), name, convert(value))
        return setter

    def _global(self, name: str, convert: Callable[[Any], Any] = float) -> Callable[[Any], None]:
        def setter(value: Any) -> None:
            setattr(self.settings, name, convert(value))
        return setter

    def methods(self) -> dict[str, Callable[..., Any]]:
        vehicle, port = self._per_vehicle, self._global
        return {
            "health_check_remote_TM": lambda: None,
            "register_vehicle": lambda actors: self.autopilot.register(map(_actor_id, actors), self.port),
            "unregister_vehicle": lambda actors: self.autopilot.unregister(map(_actor_id, actors)),
            "set_percentage_speed_difference": vehicle("speed_difference_pct"),
            "set_global_percentage_speed_difference": port("speed_difference_pct"),
            "set_desired_speed": vehicle("desired_speed", lambda kmh: float(kmh) * KMH_TO_MPS),
            "set_lane_offset": vehicle("lane_offset"),
            "set_global_lane_offset": port("lane_offset_m"),
            "set_distance_to_leading_vehicle": vehicle("distance_to_leader"),
            "set_global_distance_to_leading_vehicle": port("distance_to_leader_m"),
            "set_auto_lane_change": vehicle("auto_lane_change", bool),
            "set_force_lane_change": vehicle("force_lane_change", lambda left: 1 if left else -1),
            "set_percentage_ignore_walkers": vehicle("ignore_walkers_pct"),
            "set_percentage_ignore_vehicles": vehicle("ignore_vehicles_pct"),
            "set_percentage_running_light": vehicle("ignore_lights_pct"),
            "set_percentage_running_sign": vehicle("ignore_signs_pct"),
            # the client's spellings, and the official server's, of three setters (docs §8)
            "keep_slow_lane_rule_percentage": vehicle("keep_right_pct"),
            "set_percentage_keep_slow_lane_rule": vehicle("keep_right_pct"),
            "random_left_lanechange_percentage": vehicle("random_left_pct"),
            "set_percentage_random_left_lanechange": vehicle("random_left_pct"),
            "random_right_lanechange_percentage": vehicle("random_right_pct"),
            "set_percentage_random_right_lanechange": vehicle("random_right_pct"),
            "update_vehicle_lights": vehicle("update_lights", bool),
            "set_collision_detection": lambda reference, other, detect: self.autopilot.ignore_collisions(
                _actor_id(reference), _actor_id(other), bool(detect)),
            "set_synchronous_mode": port("synchronous", bool),
            "set_synchronous_mode_timeout_in_milisecond": port("synchronous_timeout_ms"),
            "synchronous_tick": lambda: True,   # the server steps the autopilot on every world tick
            "set_hybrid_physics_mode": port("hybrid_physics", bool),
            "set_hybrid_physics_radius": port("hybrid_radius_m"),
            "set_random_device_seed": lambda seed: self.autopilot.seed(int(seed)),
            "set_osm_mode": port("osm_mode", bool),
            "set_respawn_dormant_vehicles": port("respawn_dormant", bool),
            "set_boundaries_respawn_dormant_vehicles": lambda lower, upper: setattr(
                self.settings, "respawn_bounds_m", (float(lower), float(upper))),
            "set_max_boundaries": lambda lower, upper: setattr(self.settings, "max_bounds_m",
                                                               (float(lower), float(upper))),
            "set_path": lambda actor, path, empty: self.autopilot.set_path(
                _actor_id(actor), [_location(p) for p in path], bool(empty)),
            "update_custom_path": lambda actor_id, path: self.autopilot.set_path(
                _actor_id(actor_id), [_location(p) for p in path], True),
            "remove_custom_path": lambda actor_id, remove: self.autopilot.forget_plan(_actor_id(actor_id)),
            "set_imported_route": lambda actor, route, empty: self.autopilot.set_route(
                _actor_id(actor), bytes(route), bool(empty)),
            "update_imported_route": lambda actor_id, route: self.autopilot.set_route(
                _actor_id(actor_id), bytes(route), True),
            "remove_imported_route": lambda actor_id, remove: self.autopilot.forget_plan(_actor_id(actor_id)),
            "get_next_action": lambda actor_id: None,    # the client ignores the reply (docs §8)
            "get_all_actions": lambda actor_id: None,
            "shut_down": lambda: self.autopilot.unregister_port(self.port),
        }


class TrafficManagerService:
    """Starts a listener the first time a client asks for a Traffic Manager port."""

    def __init__(self, world: Callable[[], World], host: str = LOOPBACK) -> None:
        self._world = world
        self.host = host
        self.ports: dict[int, tuple[int, asyncio.base_events.Server | None]] = {}   # TM port -> (rpc port, server)
        self.log: RpcLog | None = None
        self._pending: set[asyncio.Task] = set()

    def address(self, tm_port: int) -> list[Any]:
        """[host, port] of the listener serving a Traffic Manager port, started on first use."""
        if tm_port not in self.ports:
            self.ports[tm_port] = (self._listen(tm_port), None)
        advertised = LOOPBACK if self.host in ("", "0.0.0.0") else self.host
        return [advertised, self.ports[tm_port][0]]

    def _listen(self, tm_port: int) -> int:
        """Binds and listens right away (connections queue until the loop accepts them), so the
        client may connect as soon as it has the address."""
        dispatcher = Dispatcher(carla_metadata=False, wrap_responses=False)
        dispatcher.log = self.log
        settings = PortSettings()
        for name, method in TrafficManagerPort(tm_port, self._world, settings).methods().items():
            dispatcher.register(name, method, void=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host or LOOPBACK, 0))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        rpc_port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_server(lambda: RpcConnection(dispatcher), sock=sock))
        self._pending.add(task)
        task.add_done_callback(lambda done: self._started(tm_port, rpc_port, done))
        logger.info("Traffic Manager port %d served on %s:%d", tm_port, self.host, rpc_port)
        return rpc_port

    def _started(self, tm_port: int, rpc_port: int, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is None:
            self.ports[tm_port] = (rpc_port, task.result())

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        servers = [server for _, server in self.ports.values() if server is not None]
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
