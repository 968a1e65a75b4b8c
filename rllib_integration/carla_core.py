"""CarlaCore: one simulator server, its world, the hero and its sensors, and the tick.

The core always talks through the official carla.Client; the backend only decides which server
executable is launched (see server_launcher). When the server crashes or stops answering, the
core relaunches it and rebuilds the world and hero as they were (up to retries_on_error times),
so an episode is cut short instead of the training dying.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, TypeVar

import carla

from . import ports
from .background_activity import BackgroundActivity
from .errors import (ConfigError, EpisodeInterrupted, NoFreePortError, ServerStartError, ServerUnavailableError,
                     SimulatorFailure)
from .helper import join_dicts, parse_transform
from .sensors.factory import SensorFactory
from .sensors.sensor import CarlaSensor, PseudoSensor
from .sensors.sensor_interface import SensorInterface
from .server_launcher import LaunchSettings, ServerLauncher
from .watchdog import CallWatchdog

BASE_CORE_CONFIG: dict[str, Any] = {
    "host": "localhost",           # where the server is reached (a launched server runs on this machine)
    "timeout": 10.0,               # s, the client's RPC time-out; a tick or sensor taking longer is a failure
    "timestep": 0.05,              # s, simulated time per tick (synchronous mode's fixed_delta_seconds)
    "retries_on_error": 10,        # server relaunches after a crash / time-out before giving up
    "resolution_x": 600,           # px, the server's render width (-ResX)
    "resolution_y": 600,           # px, the server's render height (-ResY)
    "quality_level": "Low",        # "Low" or "Epic" (-quality-level)
    "enable_map_assets": False,    # True: load every map layer (buildings, props, ...); False: the minimal layout
    "enable_rendering": True,      # False: -nullrhi and no_rendering_mode (no camera images; faster)
    "show_display": False,         # True: the server opens its window (no -RenderOffScreen)
    "backend": "embedded",         # "embedded": python -m rllib_integration.embedded (CPU); "carla": CarlaUE4.sh
    "carla_root": None,            # backend "carla": the folder holding CarlaUE4.sh (None: $CARLA_ROOT)
    "server_path": None,           # backend "carla": the server executable itself, overriding carla_root
    "gpu": None,                   # -graphicsadapter index; None: the GPU Ray assigned to this worker, if any
    "rpc_port": None,              # the server's RPC port; None: a free one
    "streaming_port": None,        # the server's sensor streaming port; None: a free one
    "tm_port": None,               # the Traffic Manager's port; None: a free one
    "attach": None,                # "host:port" of a server already running: connect to it, launch nothing
    "startup_timeout": 60.0,       # s, how long a launched server may take to answer (CARLA needs 10-30 s)
}
EXIT_NOTICE_S = 0.5                # after a failed call, how long a dying server may take to be seen as dead
WATCHDOG_MARGIN_S = 5.0            # a tick may take `timeout` plus this before the watchdog gives up on it
SPECTATOR_BEHIND_M = 8.0           # the spectator camera follows the hero from behind ...
SPECTATOR_ABOVE_M = 4.0            # ... and above ...
SPECTATOR_PITCH_DEG = -20.0        # ... looking down at it
HERO_ROLE = "hero"
SEED_LIMIT = 2 ** 31               # background seeds drawn from the core's RNG are below this

logger = logging.getLogger(__name__)
T = TypeVar("T")


def core_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """BASE_CORE_CONFIG with the user's keys on top; unknown keys are refused (typos would be silent)."""
    config = config or {}
    unknown = sorted(set(config) - set(BASE_CORE_CONFIG))
    if unknown:
        raise ConfigError(f"unknown 'carla' setting(s) {', '.join(unknown)}; known: {', '.join(BASE_CORE_CONFIG)}")
    return join_dicts(BASE_CORE_CONFIG, config)


def weather_preset(name: str) -> carla.WeatherParameters:
    """A carla.WeatherParameters preset by attribute name ("ClearNoon", "HardRainSunset", ...)."""
    preset = getattr(carla.WeatherParameters, str(name), None)
    if not isinstance(preset, carla.WeatherParameters):
        presets = sorted(n for n in dir(carla.WeatherParameters)
                         if isinstance(getattr(carla.WeatherParameters, n), carla.WeatherParameters))
        raise ConfigError(f"weather '{name}' is not a carla.WeatherParameters preset; set 'weather' to one of: "
                          f"{', '.join(presets)}")
    return preset


def town_base_name(name: str) -> str:
    """'/Game/Carla/Maps/Town05_Opt' -> 'Town05' (layered "_Opt" towns are the same roads)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base[: -len("_Opt")] if base.endswith("_Opt") else base


def parse_attach(value: str) -> tuple[str, int]:
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"attach '{value}' is not 'host:port'; e.g. 'localhost:2000' (or None to launch a server)")
    return host, int(port)


def check_versions(client_version: str, server_version: str, server: str) -> bool:
    """Warns when client and server versions differ (their wire layouts may not match)."""
    if client_version == server_version:
        return True
    logger.warning("carla client %s and %s %s differ: the wire protocol may not match; install "
                   "carla==%s or run a %s server", client_version, server, server_version, server_version,
                   client_version)
    return False


class CarlaCore:
    """Server, world, hero and sensors of one environment.

    Attributes: client, world, map, hero (None before reset_hero), traffic_manager (None
    without background vehicles), sensor_interface.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = core_config(config)
        self.client: carla.Client | None = None
        self.world: carla.World | None = None
        self.map: carla.Map | None = None
        self.hero: carla.Vehicle | None = None
        self.traffic_manager: carla.TrafficManager | None = None
        self.sensor_interface = SensorInterface()
        self._sensors: list[CarlaSensor | PseudoSensor] = []
        self._background: BackgroundActivity | None = None
        self._blueprints: carla.BlueprintLibrary | None = None
        self._spectator: carla.Actor | None = None
        self._experiment_config: dict[str, Any] | None = None
        self._loaded_town: str | None = None
        self._hero_config: dict[str, Any] | None = None
        self._rng = random.Random()
        self._watchdog = CallWatchdog()
        self._closed = False
        if self.config["attach"]:
            self._launcher = None
            self._host, self._port = parse_attach(self.config["attach"])
        else:
            self._launcher = ServerLauncher(LaunchSettings.from_config(self.config))
            self._launcher.before_stop = self._release_traffic_manager
            self._host, self._port = self.config["host"], 0
        tm_port = self.config["tm_port"]
        self.tm_port = ports.claim_port(tm_port, "tm_port") if tm_port is not None else ports.claim_ports(1)[0]
        try:
            self._start_server()
        except BaseException:
            self.close()
            raise

    # --- server and client ------------------------------------------------------------------

    @property
    def server_description(self) -> str:
        return self._launcher.description if self._launcher else f"CARLA server at {self._host}:{self._port}"

    def _start_server(self) -> None:
        """Launches (or attaches) and connects; a failed start is retried retries_on_error times."""
        attempts = 1 + int(self.config["retries_on_error"])
        for attempt in range(1, attempts + 1):
            try:
                self._launch_and_connect()
                return
            except NoFreePortError:
                raise
            except (ServerStartError, RuntimeError) as error:
                logger.warning("%s: start %d of %d failed: %s", self.server_description, attempt, attempts, error)
                last_error = error
        raise ServerStartError(f"{self.server_description} did not start after {attempts} attempts "
                               f"(1 + 'retries_on_error'); last error: {last_error}")

    def _launch_and_connect(self) -> None:
        if self._launcher is not None:
            self._launcher.start()
            self._port = self._launcher.rpc_port
        self._connect()

    def _connect(self) -> None:
        client = carla.Client(self._host, self._port)
        client.set_timeout(float(self.config["timeout"]))
        try:
            server_version = client.get_server_version()
        except RuntimeError as error:
            setting = "attach" if self._launcher is None else "host"
            raise ServerStartError(f"no CARLA server answers at {self._host}:{self._port} ('{setting}' in the "
                                   f"'carla' config): {error}") from None
        check_versions(client.get_client_version(), server_version, self.server_description)
        self.client = client

    def _server_exit(self) -> str | None:
        return self._launcher.exit_status() if self._launcher is not None else None

    def _run(self, action: Callable[[], T]) -> T:
        """action(), with the server's death and carla's RuntimeErrors raised as SimulatorFailure."""
        exit_status = self._server_exit()
        if exit_status is not None:
            raise SimulatorFailure(f"the {self.server_description} {exit_status}")
        try:
            return action()
        except RuntimeError as error:
            if isinstance(error, SimulatorFailure):
                raise
            exit_status = self._launcher.wait_for_exit(EXIT_NOTICE_S) if self._launcher is not None else None
            cause = f"; the {self.server_description} {exit_status}" if exit_status is not None else ""
            raise SimulatorFailure(f"{error}{cause}") from error

    def _recover(self, failure: SimulatorFailure) -> None:
        """Relaunches the server and rebuilds world and hero as they were set up."""
        retries = int(self.config["retries_on_error"])
        logger.warning("simulator failure: %s; relaunching (up to %d times)", failure, retries)
        last_error: BaseException = failure
        for attempt in range(1, retries + 1):
            self._abandon_traffic_manager()
            self._forget_simulator_state()
            try:
                self._launch_and_connect()
                if self._experiment_config is not None:
                    self._run(self._build_world)
                if self._hero_config is not None:
                    self._run(self._spawn_hero)
                logger.warning("%s relaunched (attempt %d of %d)", self.server_description, attempt, retries)
                return
            except (ServerStartError, SimulatorFailure) as error:
                logger.warning("relaunch %d of %d failed: %s", attempt, retries, error)
                last_error = error
        raise ServerUnavailableError(
            f"the simulator failed ({failure}) and {retries} relaunches ('retries_on_error') did not help; "
            f"last error: {last_error}")

    def _forget_simulator_state(self) -> None:
        """Drops every handle on the simulator without RPCs (after a failure they would time out)."""
        for sensor in self._sensors:
            sensor.stop()
        self._sensors = []
        self.sensor_interface.unregister_all()
        self._watchdog.close()
        self.hero = self._background = self._spectator = self.traffic_manager = None
        self.client = self.world = self.map = self._loaded_town = None

    # --- experiment ----------------------------------------------------------------------

    def seed(self, seed: int | None) -> None:
        """Seeds the hero's spawn choice and, unless the experiment fixes theirs, the background's."""
        self._rng.seed(seed)

    def setup_experiment(self, experiment_config: dict[str, Any]) -> None:
        """Loads the town and builds its world: weather, synchronous mode, Traffic Manager, NPCs."""
        self._experiment_config = experiment_config
        self._hero_config = None
        try:
            self._run(self._build_world)
        except SimulatorFailure as failure:
            self._recover(failure)

    def _build_world(self) -> None:
        """The town is loaded once; later set-ups of the same town clear and respawn what this core
        spawned instead. Why: load_world while a Traffic Manager exists makes the carla client restart
        that TM's keep-alive thread, which stalls the next ticks and can crash the client."""
        config = self._experiment_config
        self._destroy_actors()
        fallback = config.get("fallback_town")
        if self._loaded_town not in {config["town"], fallback} - {None}:
            self._load_town(self._available_town(config["town"], fallback))
        else:
            self.world.reset_all_traffic_lights()
        self.world.set_weather(weather_preset(config["weather"]))
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = float(self.config["timestep"])
        settings.no_rendering_mode = not self.config["enable_rendering"]
        self.world.apply_settings(settings)
        self._spawn_background(config["background_activity"])

    def _load_town(self, town: str) -> None:
        weather_preset(self._experiment_config["weather"])   # a bad preset fails before the slow load
        self._shut_down_traffic_manager()   # load_world would restart it, stalling the next ticks
        layers = carla.MapLayer.All if self.config["enable_map_assets"] else carla.MapLayer.NONE
        self.world = self.client.load_world(town, False, layers)
        self._loaded_town = town
        self.map = self.world.get_map()
        self._blueprints = self.world.get_blueprint_library()
        self._spectator = self.world.get_spectator()

    def _available_town(self, town: str, fallback: str | None) -> str:
        """`town` if the server has it, else the experiment's fallback_town (with a warning)."""
        available = {town_base_name(path): path.rsplit("/", 1)[-1] for path in self.client.get_available_maps()}
        if town_base_name(town) in available:
            return town
        missing = f"town '{town}' (experiment setting 'town') is not available on the {self.server_description}"
        if fallback and town_base_name(fallback) in available:
            logger.warning("%s; using fallback_town '%s' instead (the embedded server finds .xodr towns in "
                           "CARLA_MAPS_PATH and $CARLA_ROOT)", missing, fallback)
            return fallback
        raise ConfigError(
            f"{missing}; available: {', '.join(sorted(available.values()))}. Set 'town' to one of them (the "
            "embedded server also finds .xodr towns in CARLA_MAPS_PATH and $CARLA_ROOT)")

    def _spawn_background(self, config: dict[str, Any]) -> None:
        seed = config["seed"] if config["seed"] is not None else self._rng.randrange(SEED_LIMIT)
        self._background = BackgroundActivity(self.client, self.world, self._blueprints, random.Random(seed))
        if config["n_vehicles"]:
            if self.traffic_manager is None:
                self.traffic_manager = self.client.get_trafficmanager(self.tm_port)
            self.traffic_manager.set_synchronous_mode(True)
            self.traffic_manager.set_hybrid_physics_mode(bool(config["tm_hybrid_mode"]))
            self.traffic_manager.set_random_device_seed(seed)
            self._background.spawn_vehicles(int(config["n_vehicles"]), self.tm_port)
        if config["n_walkers"]:
            self._background.spawn_walkers(int(config["n_walkers"]), seed)

    # --- hero --------------------------------------------------------------------------

    def reset_hero(self, hero_config: dict[str, Any]) -> None:
        """Respawns the hero at a random free spawn point, with its sensors."""
        if self.world is None:
            raise RuntimeError("CarlaCore.reset_hero() needs a world: call setup_experiment() first")
        self._hero_config = hero_config
        try:
            self._run(self._spawn_hero)
        except SimulatorFailure as failure:
            self._recover(failure)

    def _spawn_hero(self) -> None:
        config = self._hero_config
        self._destroy_hero()
        blueprint = self._hero_blueprint(config["blueprint"])
        spawn_points = [parse_transform(text, f"hero.spawn_points[{index}]")
                        for index, text in enumerate(config["spawn_points"])] or self.map.get_spawn_points()
        for transform in self._rng.sample(spawn_points, len(spawn_points)):
            self.hero = self.world.try_spawn_actor(blueprint, transform)
            if self.hero is not None:
                break
        else:
            source = "hero.spawn_points" if config["spawn_points"] else "the map"
            raise ConfigError(f"hero: all {len(spawn_points)} spawn points of {source} are occupied; add spawn "
                              "points to hero.spawn_points or lower background_activity.n_vehicles")
        for name, sensor_config in config["sensors"].items():
            self._sensors.append(SensorFactory.spawn(name, sensor_config, self.sensor_interface, self.hero,
                                                     self._blueprints))
        self.world.tick()
        self._follow_hero()

    def _hero_blueprint(self, blueprint_id: str) -> carla.ActorBlueprint:
        matches = [bp for bp in self._blueprints.filter("vehicle.*") if bp.id == blueprint_id]
        if not matches:
            vehicles = sorted(bp.id for bp in self._blueprints.filter("vehicle.*"))
            raise ConfigError(f"hero.blueprint '{blueprint_id}' is not a vehicle of this server; one of: "
                              f"{', '.join(vehicles)}")
        blueprint = matches[0]
        blueprint.set_attribute("role_name", HERO_ROLE)
        return blueprint

    def _follow_hero(self) -> None:
        """Keeps the spectator (the server window's camera) behind the hero while rendering."""
        if not self.config["enable_rendering"] or self.hero is None:
            return
        transform = self.hero.get_transform()
        location = transform.location - SPECTATOR_BEHIND_M * transform.get_forward_vector()
        location.z += SPECTATOR_ABOVE_M
        self._spectator.set_transform(carla.Transform(location, carla.Rotation(pitch=SPECTATOR_PITCH_DEG,
                                                                                yaw=transform.rotation.yaw)))

    # --- tick --------------------------------------------------------------------------

    def tick(self, control: carla.VehicleControl | None) -> dict[str, tuple[int, Any]]:
        """Applies the control, advances one timestep and returns {sensor name: (frame, data)}.

        Raises EpisodeInterrupted when the simulator failed and was relaunched (reset the episode),
        ServerUnavailableError when every relaunch failed.
        """
        if self.hero is None:
            raise RuntimeError("CarlaCore.tick() needs a hero: call reset_hero() first")
        try:
            return self._run(lambda: self._tick(control))
        except SimulatorFailure as failure:
            self._recover(failure)
            raise EpisodeInterrupted(f"{failure}; the simulator was relaunched and the world rebuilt: reset the "
                                     "episode") from failure

    def _tick(self, control: carla.VehicleControl | None) -> dict[str, tuple[int, Any]]:
        if control is not None:
            self.hero.apply_control(control)
        timeout_s = float(self.config["timeout"])
        frame = self._watchdog.run(lambda: self.world.tick(timeout_s), timeout_s + WATCHDOG_MARGIN_S,
                                   self._server_exit, "world.tick()")
        self._follow_hero()
        for sensor in self._sensors:
            sensor.tick(frame)
        return self.sensor_interface.get_data(frame, timeout_s)

    # --- clean-up ------------------------------------------------------------------------

    def _destroy_hero(self) -> None:
        for sensor in self._sensors:
            sensor.stop()
        ids = [sensor.actor.id for sensor in self._sensors if sensor.actor is not None]
        if self.hero is not None:
            ids.append(self.hero.id)
        if ids:
            self.client.apply_batch_sync([carla.command.DestroyActor(actor_id) for actor_id in ids], False)
        self._sensors = []
        self.sensor_interface.unregister_all()
        self.hero = None

    def _destroy_actors(self) -> None:
        self._destroy_hero()
        if self._background is not None:
            self._background.destroy()
            self._background = None

    def _abandon_traffic_manager(self) -> None:
        """After a failure: the carla client keeps one Traffic Manager per port for the whole process, and
        the one of the failed server would answer the next get_trafficmanager() of that port. A free port
        is taken instead; a port fixed in the config is shut down (costs the TM's 2 s RPC time-out)."""
        if self.traffic_manager is None:
            return
        if self.config["tm_port"] is None:
            ports.release_ports([self.tm_port])
            self.tm_port = ports.claim_ports(1)[0]
        else:
            try:
                self.traffic_manager.shut_down()
            except RuntimeError as error:
                logger.info("the failed server's Traffic Manager did not answer its shut-down: %s", error)
        self.traffic_manager = None

    def _shut_down_traffic_manager(self) -> None:
        if self.traffic_manager is not None:
            self.traffic_manager.shut_down()
            self.traffic_manager = None

    def _release_traffic_manager(self) -> None:
        """Before the server goes. CARLA's in-client Traffic Manager (real server) must be shut down first,
        or it ends the process when its server vanishes; the embedded server is itself the Traffic Manager
        and goes with it (shutting its remote down would wait ~1 s for the client's keep-alive thread)."""
        if self._launcher is not None and self._launcher.settings.is_embedded:
            self.traffic_manager = None
        self._shut_down_traffic_manager()

    def close(self) -> None:
        """Destroys what this core spawned and stops its server (an attached one is set back to
        asynchronous mode instead); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.client is not None and self._server_exit() is None:
            try:
                self._destroy_actors()
                self._release_traffic_manager()
                if self._launcher is None and self.world is not None:
                    settings = self.world.get_settings()
                    settings.synchronous_mode = False
                    settings.fixed_delta_seconds = None
                    self.world.apply_settings(settings)
            except RuntimeError as error:
                logger.warning("closing CarlaCore: %s", error)
        if self._launcher is not None:
            self._launcher.stop()
        self._forget_simulator_state()
        ports.release_ports([self.tm_port])
