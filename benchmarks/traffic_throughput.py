"""Throughput of the embedded server as Traffic Manager: a generate-traffic workload and the
tick cost against the number of autopilot cars.

Why: with the server as the Traffic Manager, a client running background traffic sends one
RPC per tick (tick_cue); all driving happens in the server's tick. This script measures
 1. ticks/s of the official client ticking a synchronous world (0.05 s steps) with N cars
    on the server's autopilot (goal: >= 600 ticks/s with 50 cars on a 2-core machine);
 2. the cost of one tick against the car count, split into simulation (World.tick, with the
    autopilot's share), encoding (World.snapshot) and the rest of the round trip (RPC, streaming,
    the client), which is the end-to-end time minus the first two.
Simulation and encoding are timed in this process, as CPU time (steadier than wall time on a
shared machine), on the same code the server runs; the end-to-end time is wall time from a real
server and the official client in subprocesses. The load average is reported with the results:
other processes on the machine slow the end-to-end figure.

Usage:  .venv/bin/python benchmarks/traffic_throughput.py [--cars 50] [--ticks 2000]
        [--repeats 3] [--counts 10,25,50,100,200,400] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _processes import REPO_ROOT, emit_result, parse_result, start_child, stop_child, synchronous, wait_ready

sys.path.insert(0, str(REPO_ROOT))   # run from a checkout without installing

FIXED_DELTA_S = 0.05
TM_PORT = 8000
GOAL_TICKS_PER_S = 600.0
BLUEPRINTS = ("vehicle.tesla.model3", "vehicle.audi.tt", "vehicle.lincoln.mkz_2017", "vehicle.nissan.patrol")
WALKER_BLUEPRINTS = ("walker.pedestrian.0001", "walker.pedestrian.0002", "walker.pedestrian.0003")
WALKER_SEED = 7
WALKER_SPEED_MPS = 1.4
CLIENT_TIMEOUT_S = 900.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cars", type=int, default=50, help="autopilot cars of the traffic workload (default 50)")
    parser.add_argument("--walkers", type=int, default=50,
                        help="walkers with controller.ai.walker in the traffic workload (default 50)")
    parser.add_argument("--ticks", type=int, default=2000, help="timed ticks of the traffic workload (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed ticks first (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the traffic workload (default 3)")
    parser.add_argument("--town", default="Town01", help="town of the traffic workload (default Town01)")
    parser.add_argument("--counts", default="10,25,50,100,200,400", help="car counts of the cost split")
    parser.add_argument("--scale-town", default="GridCity", help="town of the cost split (room for 400 cars)")
    parser.add_argument("--scale-ticks", type=int, default=400, help="timed ticks per car count (default 400)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)   # internal: client subprocess
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


# --- client subprocess: the generate-traffic loop ---------------------------------------------------


def spawn_walkers(client: Any, world: Any, count: int) -> tuple[list[int], list[int]]:
    """generate_traffic.py's walkers: random navigation points, an AI controller each, sent walking."""
    import carla

    library = world.get_blueprint_library()
    world.set_pedestrians_seed(WALKER_SEED)
    places = [world.get_random_location_from_navigation() for _ in range(count)]
    places = [p for p in places if p is not None]
    walkers = [r.actor_id for r in client.apply_batch_sync(
        [carla.command.SpawnActor(library.find(WALKER_BLUEPRINTS[i % len(WALKER_BLUEPRINTS)]),
                                  carla.Transform(p + carla.Location(z=1.0))) for i, p in enumerate(places)], True)
        if not r.error]
    controller = library.find("controller.ai.walker")
    controllers = [r.actor_id for r in client.apply_batch_sync(
        [carla.command.SpawnActor(controller, carla.Transform(), w) for w in walkers], True) if not r.error]
    world.tick()
    for actor in world.get_actors(controllers):
        actor.start()
        actor.go_to_location(world.get_random_location_from_navigation())
        actor.set_max_speed(WALKER_SPEED_MPS)
    return walkers, controllers


def client_traffic(port: int, cars: int, walkers: int, ticks: int, warmup: int) -> dict[str, Any]:
    import carla

    client = carla.Client("127.0.0.1", port)
    client.set_timeout(60.0)
    world = client.get_world()
    synchronous(world, FIXED_DELTA_S)
    traffic_manager = client.get_trafficmanager(TM_PORT)
    traffic_manager.set_synchronous_mode(True)
    library = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()
    spawn = [carla.command.SpawnActor(library.find(BLUEPRINTS[i % len(BLUEPRINTS)]), points[i])
             .then(carla.command.SetAutopilot(carla.command.FutureActor, True, TM_PORT))
             for i in range(min(cars, len(points)))]
    spawned = [r.actor_id for r in client.apply_batch_sync(spawn, True) if not r.error]
    walker_ids, _ = spawn_walkers(client, world, walkers)
    for _ in range(warmup):
        world.tick()
    start = time.perf_counter()
    for _ in range(ticks):
        world.tick()
    elapsed = time.perf_counter() - start
    moving = sum(1 for actor in world.get_actors(spawned) if actor.get_velocity().length() > 0.5)
    return {"cars": len(spawned), "walkers": len(walker_ids), "ticks": ticks, "seconds": elapsed,
            "ticks_per_s": ticks / elapsed,
            "moving_at_end": moving}


# --- server and client processes -------------------------------------------------------------------


def start_server(town: str) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "rllib_integration.embedded", "-carla-rpc-port=0", "-carla-streaming-port=0",
               f"--town={town}"]
    process = start_child(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    match, line = wait_ready(process)
    if not match:
        stop_child(process)
        raise RuntimeError(f"embedded server did not start: {line!r}")
    return process, int(match.group(2))


def measure_traffic(town: str, cars: int, walkers: int, ticks: int, warmup: int) -> dict[str, Any]:
    """A fresh server and one client running the traffic loop."""
    server, port = start_server(town)
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--client", "--port", str(port),
                   "--cars", str(cars), "--walkers", str(walkers), "--ticks", str(ticks), "--warmup", str(warmup)]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        traffic = parse_result(result.stdout)
        if result.returncode != 0 or traffic is None:
            raise RuntimeError(f"traffic client failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return traffic
    finally:
        stop_child(server, grace_s=20.0)


# --- in-process split: simulation and encoding -----------------------------------------------------


def measure_server_side(town_name: str, cars: int, ticks: int, warmup: int) -> dict[str, float]:
    """Seconds per tick of World.tick (and of its autopilot step) and of World.snapshot."""
    from rllib_integration.embedded.maps.town import load_town
    from rllib_integration.embedded.maps.towns import find_town
    from rllib_integration.embedded.world.settings import EpisodeSettings
    from rllib_integration.embedded.world.world import World

    town = load_town(find_town(town_name))
    world = World(town, settings=EpisodeSettings(synchronous_mode=True, fixed_delta_seconds=FIXED_DELTA_S))
    ids = [world.spawn(BLUEPRINTS[i % len(BLUEPRINTS)], [], town.spawn_points[i]).id
           for i in range(min(cars, len(town.spawn_points)))]
    world.autopilot.register(ids, TM_PORT)
    for _ in range(warmup):
        world.tick()
        world.snapshot()
    autopilot_seconds = 0.0
    step = world.autopilot.step

    def timed_step(*args: Any) -> Any:
        nonlocal autopilot_seconds
        begin = time.process_time()
        result = step(*args)
        autopilot_seconds += time.process_time() - begin
        return result

    world.autopilot.step = timed_step
    tick_seconds = snapshot_seconds = 0.0
    for _ in range(ticks):
        begin = time.process_time()
        world.tick()
        middle = time.process_time()
        world.snapshot()
        tick_seconds += middle - begin
        snapshot_seconds += time.process_time() - middle
    return {"simulation_s": tick_seconds / ticks, "autopilot_s": autopilot_seconds / ticks,
            "encoding_s": snapshot_seconds / ticks, "cars": len(ids)}


# --- report ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for repeat in range(args.repeats):
        result = measure_traffic(args.town, args.cars, args.walkers, args.ticks, args.warmup)
        runs.append(result)
        print(f"traffic run {repeat + 1}/{args.repeats}: {result['ticks_per_s']:.0f} ticks/s "
              f"({result['cars']} cars, {result['moving_at_end']} moving at the end, {result['walkers']} walkers)",
              file=sys.stderr, flush=True)
    median = statistics.median(r["ticks_per_s"] for r in runs)
    split = []
    for count in (int(c) for c in args.counts.split(",")):
        server_side = measure_server_side(args.scale_town, count, args.scale_ticks, args.warmup)
        end_to_end = measure_traffic(args.scale_town, count, 0, args.scale_ticks, args.warmup)
        total = 1.0 / end_to_end["ticks_per_s"]
        row = {"cars": server_side["cars"], "end_to_end_ms": 1e3 * total,
               "simulation_ms": 1e3 * server_side["simulation_s"], "autopilot_ms": 1e3 * server_side["autopilot_s"],
               "encoding_ms": 1e3 * server_side["encoding_s"],
               "rpc_and_client_ms": 1e3 * max(total - server_side["simulation_s"] - server_side["encoding_s"], 0.0)}
        split.append(row)
        print(f"{count} cars: {row['end_to_end_ms']:.2f} ms/tick", file=sys.stderr, flush=True)
    return {"machine": {"cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
            "town": args.town, "cars": args.cars, "walkers": runs[-1]["walkers"], "ticks": args.ticks,
            "ticks_per_s": [r["ticks_per_s"] for r in runs], "median_ticks_per_s": median,
            "goal_ticks_per_s": GOAL_TICKS_PER_S, "pass": median >= GOAL_TICKS_PER_S,
            "scale_town": args.scale_town, "cost_split": split}


def print_report(report: dict[str, Any]) -> None:
    print(f"\nGenerate-traffic workload: {report['cars']} server-side autopilot cars and {report['walkers']} AI walkers "
          f"on {report['town']}, synchronous, "
          f"dt {FIXED_DELTA_S} s, {report['ticks']} timed ticks, {report['machine']['cpus']} CPUs, "
          f"load average {report['machine']['load_average_1min']:.1f} at the end")
    print(f"  ticks/s: median {report['median_ticks_per_s']:.0f} (runs "
          f"{', '.join(f'{v:.0f}' for v in report['ticks_per_s'])}); goal >= {GOAL_TICKS_PER_S:.0f}: "
          f"{'PASS' if report['pass'] else 'FAIL'}")
    print(f"\nTick cost against autopilot cars ({report['scale_town']}), ms per tick (total: wall time, "
          "simulation and encoding: CPU time, rpc+client: the difference):")
    print(f"  {'cars':>5} {'total':>7} {'simulation':>11} {'(autopilot)':>12} {'encoding':>9} {'rpc+client':>11}")
    for row in report["cost_split"]:
        print(f"  {row['cars']:5d} {row['end_to_end_ms']:7.2f} {row['simulation_ms']:11.2f} "
              f"{row['autopilot_ms']:12.2f} "
              f"{row['encoding_ms']:9.2f} {row['rpc_and_client_ms']:11.2f}")


def main() -> None:
    args = parse_args()
    if args.client:
        emit_result(client_traffic(args.port, args.cars, args.walkers, args.ticks, args.warmup))
        return
    os.environ.setdefault("CARLA_MAPS_PATH", str(REPO_ROOT.parent / "shared" / "carla-maps"))
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
