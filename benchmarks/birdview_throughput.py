"""Cost of one birdview frame (84 px, radius 15 m) with about 30 vehicles and 10 walkers around the hero.

Why: the birdview is drawn every step of every env runner, so it must stay small next to the
simulator step. Goal (issue): birdview alone <= 150 us per 84 px frame on a 2-core machine. The
report splits a frame into gathering boxes from the world snapshot (client API calls), the static
map crop (one warpAffine) and drawing route, vehicles, walkers and hero, and gives the full
BirdviewManager.render() time; all are medians over many frames of the same snapshot.

Starts its own embedded server (stopped on exit) unless --port names a running one.

Usage:  CARLA_MAPS_PATH=../shared/carla-maps .venv/bin/python benchmarks/birdview_throughput.py
        [--frames 3000] [--town Town01] [--spawn-point 112] [--vehicles 30] [--walkers 10] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

import carla  # noqa: E402

from rllib_integration.sensors.bird_view_cli import populate, start_embedded_server, stop_server  # noqa: E402
from rllib_integration.sensors.bird_view_manager import BirdviewManager  # noqa: E402

GOAL_US = 150.0
SIZE_PX = 84
RADIUS_M = 15.0
TIMESTEP_S = 0.05
SETTLE_TICKS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="timed frames per measurement (default 3000)")
    parser.add_argument("--town", default="Town01")
    parser.add_argument("--spawn-point", type=int, default=112, help="hero spawn point (default 112: near junctions)")
    parser.add_argument("--vehicles", type=int, default=30)
    parser.add_argument("--walkers", type=int, default=10)
    parser.add_argument("--port", type=int, default=None, help="RPC port of a running server (default: start one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    return parser.parse_args()


def median_us(work: Callable[[], object], frames: int) -> float:
    """Median wall time of one call, in microseconds."""
    samples = []
    for _ in range(frames):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def measure(world: carla.World, hero: carla.Actor, mode: str, frames: int, cache_dir: str) -> dict[str, float]:
    manager = BirdviewManager(world, SIZE_PX, RADIUS_M, mode, cache_dir)
    renderer = manager.renderer
    snapshot = world.get_snapshot()
    scene = manager.scene(snapshot, hero.id)
    route = manager.route(scene)
    to_pixel = renderer.world_to_pixel(scene.hero)
    crop = renderer.crop(to_pixel)  # drawing the same actors again onto it costs the same each time
    manager.render(hero, snapshot=snapshot)  # warm-up: actor shapes learnt, route traced
    return {
        "gather_us": median_us(lambda: manager.scene(snapshot, hero.id), frames),
        "route_us": median_us(lambda: manager.route(scene), frames),
        "crop_us": median_us(lambda: renderer.crop(to_pixel), frames),
        "draw_us": median_us(lambda: renderer.draw(crop, to_pixel, scene.hero, scene.vehicles, scene.walkers, route),
                             frames),
        "render_us": median_us(lambda: manager.render(hero, snapshot=snapshot), frames),
        "actors_drawn": len(scene.vehicles) + len(scene.walkers) + 1,
    }


def run(args: argparse.Namespace, port: int) -> dict[str, object]:
    client = carla.Client("127.0.0.1", port)
    client.set_timeout(20.0)
    world = client.get_world()
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, TIMESTEP_S
    world.apply_settings(settings)
    spawned: list[carla.Actor] = []
    try:
        hero, vehicles, walkers = populate(world, args.spawn_point, args.vehicles, args.walkers, random.Random(0),
                                           spawned)
        for _ in range(SETTLE_TICKS):
            world.tick()
        with tempfile.TemporaryDirectory() as cache_dir:
            results = {mode: measure(world, hero, mode, args.frames, cache_dir) for mode in ("rgb", "masks")}
    finally:
        client.apply_batch_sync([carla.command.DestroyActor(actor.id) for actor in spawned], False)
    return {"vehicles": vehicles, "walkers": walkers, "size_px": SIZE_PX, "radius_m": RADIUS_M,
            "goal_us": GOAL_US, **results}


def report(results: dict[str, object]) -> None:
    print(f"birdview {SIZE_PX} px, radius {RADIUS_M:g} m, hero + {results['vehicles']} vehicles "
          f"+ {results['walkers']} walkers (medians, us per frame)")
    print(f"{'mode':6} {'gather':>8} {'route':>8} {'crop':>8} {'draw':>8} {'render()':>9}")
    for mode in ("rgb", "masks"):
        row = results[mode]
        verdict = "ok" if row["render_us"] <= GOAL_US else "OVER GOAL"
        print(f"{mode:6} {row['gather_us']:8.1f} {row['route_us']:8.1f} {row['crop_us']:8.1f} {row['draw_us']:8.1f} "
              f"{row['render_us']:9.1f}  goal <= {GOAL_US:g}: {verdict}")
    print("gather: boxes from the world snapshot; crop: warpAffine of the map layer; "
          "draw: route, vehicles, walkers, hero (and mask expansion); render(): all of it")


def main() -> int:
    args = parse_args()
    process = None
    if args.port is None:
        process, _, port = start_embedded_server(args.town)
    else:
        port = args.port
    try:
        results = run(args, port)
    finally:
        if process is not None:
            stop_server(process)
    if args.json:
        print(json.dumps(results))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
