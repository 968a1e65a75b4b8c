"""`python -m rllib_integration.sensors.bird_view_manager`: render one birdview frame to a PNG.

Without --port it starts an embedded server on free ports and runs the client part in a child
process: the carla client can abort its whole process, and the server must be stopped (by its
process id) even then. With --host/--port it attaches to a running server and leaves it as found.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import carla
import cv2
import numpy as np

from .bird_view_manager import BirdviewManager, validate_attributes
from .bird_view_render import MODES

EXIT_ERROR = 2
DEFAULT_TOWN = "Town01"
SERVER_READY_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 20.0
TIMESTEP_S = 0.05             # synchronous-mode step while the scene settles
SETTLE_TICKS = 5              # ticks between spawning and rendering
WALKER_SEARCH_STEP_M = 4.0    # spacing of the sidewalk spots walkers are spawned on
WALKER_SPAWN_HEIGHT_M = 1.0   # walkers are spawned this far above the sidewalk and fall onto it
SERVER_READY = re.compile(r"rpc (\S+):(\d+) streaming (\d+) town (\S+)")


class CliError(Exception):
    """A problem the user can fix; main() prints it as one line and exits with EXIT_ERROR."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rllib_integration.sensors.bird_view_manager",
        description="Render one birdview frame of a town with a hero, vehicles and walkers to a PNG.")
    parser.add_argument("--town", default=None,
                        help=f"town to render (default {DEFAULT_TOWN}; with --port: the server's current town)")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--size", type=int, default=300, help="image width and height in pixels (default 300)")
    parser.add_argument("--radius", type=float, default=30.0,
                        help="metres from the hero to the image edge (default 30)")
    parser.add_argument("--mode", choices=MODES, default="rgb",
                        help="rgb image, or masks (channels side by side in one grey image); default rgb")
    parser.add_argument("--vehicles", type=int, default=30, help="vehicles besides the hero (default 30)")
    parser.add_argument("--walkers", type=int, default=10, help="walkers on nearby sidewalks (default 10)")
    parser.add_argument("--spawn-point", type=int, default=0, help="index of the hero's spawn point (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the blueprint choice (default 0)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="map layer cache (default $XDG_CACHE_HOME or ~/.cache, then carla-rllib/birdview)")
    parser.add_argument("--host", default="127.0.0.1", help="server to attach to, with --port")
    parser.add_argument("--port", type=int, default=None,
                        help="RPC port of a running server (default: start an embedded server on free ports)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.port is None:
            return _render_with_embedded_server(args)
        _render_attached(args)
    except (CliError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _render_with_embedded_server(args: argparse.Namespace) -> int:
    """Starts a server, renders from a child process attached to it, and always stops the server."""
    town = args.town or DEFAULT_TOWN
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    process, host, port = start_embedded_server(town)
    print(f"started embedded server pid {process.pid} at {host}:{port} ({town})", flush=True)
    try:
        command = [sys.executable, "-m", "rllib_integration.sensors.bird_view_manager", "--out", str(args.out),
                   "--size", str(args.size), "--radius", str(args.radius), "--mode", args.mode,
                   "--vehicles", str(args.vehicles), "--walkers", str(args.walkers), "--seed", str(args.seed),
                   "--spawn-point", str(args.spawn_point),
                   "--host", host, "--port", str(port)]
        if args.cache_dir is not None:
            command += ["--cache-dir", str(args.cache_dir)]
        returncode = subprocess.run(command).returncode
        if returncode < 0:
            raise CliError(f"the client process died from signal {signal.Signals(-returncode).name}")
        return returncode
    finally:
        stop_server(process)
        print(f"stopped embedded server pid {process.pid}", flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turns SIGTERM into SystemExit so the `finally` that stops the server still runs."""
    raise SystemExit(128 + signum)


def start_embedded_server(town: str) -> tuple[subprocess.Popen, str, int]:
    """Launches `python -m rllib_integration.embedded` on free ports in its own process group."""
    command = [sys.executable, "-m", "rllib_integration.embedded", "-carla-rpc-port=0",
               "-carla-streaming-port=0", f"--town={town}"]
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   start_new_session=True)
        line = _read_line(process, SERVER_READY_TIMEOUT_S)
        ready = SERVER_READY.search(line)
        if ready is None:
            stop_server(process)
            errors.seek(0)
            detail = errors.read().strip().splitlines() or [line.strip() or "no output"]
            raise CliError(f"the embedded server did not start: {detail[-1].removeprefix('error: ')}")
    return process, ready.group(1), int(ready.group(2))


def _read_line(process: subprocess.Popen, timeout_s: float) -> str:
    """The server's first stdout line, or "" when it exits or stays silent past the timeout."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return process.stdout.readline()


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (its id is the server's pid), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _render_attached(args: argparse.Namespace) -> None:
    """Populates the server's world, renders one frame, then removes what it spawned."""
    validate_attributes(args.size, args.radius, args.mode)
    client = carla.Client(args.host, args.port)
    client.set_timeout(CLIENT_TIMEOUT_S)
    world = client.get_world()
    if args.town and Path(world.get_map().name).name != args.town:
        world = client.load_world(args.town)
    original_settings = world.get_settings()
    spawned: list[carla.Actor] = []
    try:
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = TIMESTEP_S
        world.apply_settings(settings)
        hero, vehicles, walkers = populate(world, args.spawn_point, args.vehicles, args.walkers,
                                            random.Random(args.seed), spawned)
        for _ in range(SETTLE_TICKS):
            world.tick()
        manager = BirdviewManager(world, args.size, args.radius, args.mode, args.cache_dir)
        _write_png(args.out, manager.render(hero), args.mode)
    finally:
        client.apply_batch_sync([carla.command.DestroyActor(actor.id) for actor in spawned], False)
        world.apply_settings(original_settings)
    print(f"wrote {args.out} ({args.size}x{args.size} {args.mode}, hero + {vehicles} vehicles, {walkers} walkers)")


def populate(world: carla.World, spawn_point: int, vehicle_count: int, walker_count: int, rng: random.Random,
             spawned: list[carla.Actor]) -> tuple[carla.Actor, int, int]:
    """Hero at the given spawn point, vehicles at the spawn points nearest to it, walkers on sidewalks.

    Returns the hero and how many vehicles and walkers could be placed; `spawned` collects every
    actor as soon as it exists, so the caller can remove them even after an error.
    """
    town = world.get_map()
    library = world.get_blueprint_library()
    vehicle_blueprints = sorted(library.filter("vehicle.*"), key=lambda blueprint: blueprint.id)
    walker_blueprints = sorted(library.filter("walker.pedestrian.*"), key=lambda blueprint: blueprint.id)
    points = town.get_spawn_points()
    if not 0 <= spawn_point < len(points):
        raise CliError(f"--spawn-point must be between 0 and {len(points) - 1} in {town.name} (got {spawn_point})")
    points.insert(0, points.pop(spawn_point))
    hero_blueprint = rng.choice(vehicle_blueprints)
    hero_blueprint.set_attribute("role_name", "hero")
    hero = world.spawn_actor(hero_blueprint, points[0])
    spawned.append(hero)
    centre = points[0].location
    vehicles = 0
    for point in sorted(points[1:], key=lambda point: point.location.distance(centre)):
        if vehicles == vehicle_count:
            break
        actor = world.try_spawn_actor(rng.choice(vehicle_blueprints), point)
        if actor is not None:
            spawned.append(actor)
            vehicles += 1
    walkers = 0
    for spot in _sidewalk_spots(town, centre)[:walker_count]:
        actor = world.try_spawn_actor(rng.choice(walker_blueprints), carla.Transform(spot))
        if actor is not None:
            spawned.append(actor)
            walkers += 1
    return hero, vehicles, walkers


def _sidewalk_spots(town: carla.Map, centre: carla.Location) -> list[carla.Location]:
    """Sidewalk locations nearest to `centre` first, a few metres apart."""
    spots = []
    for waypoint in town.generate_waypoints(WALKER_SEARCH_STEP_M):
        side = waypoint.get_right_lane()
        while side is not None and side.lane_type not in (carla.LaneType.Sidewalk, carla.LaneType.Driving):
            side = side.get_right_lane()
        if side is not None and side.lane_type == carla.LaneType.Sidewalk:
            location = side.transform.location
            spots.append(carla.Location(location.x, location.y, location.z + WALKER_SPAWN_HEIGHT_M))
    return sorted(spots, key=lambda spot: spot.distance(centre))


def _write_png(path: Path, frame: np.ndarray, mode: str) -> None:
    """RGB frames as colour PNGs; masks as one grey PNG with the channels side by side."""
    image = frame[..., ::-1] if mode == "rgb" else np.hstack(np.moveaxis(frame, 2, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
        raise CliError(f"could not write {path} (use a .png file name in a writable directory)")


if __name__ == "__main__":
    sys.exit(main())
