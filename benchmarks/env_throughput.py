"""CarlaEnv.step throughput on the embedded backend, with an 84 px birdview and a 4-frame stack.

Why: an RLlib env runner is bound by how many env steps per second one CarlaEnv gives. This
measures exactly what training runs (experiment, sensors, birdview, tick, observation) in two
settings, the hero alone (goal >= 1,000 steps/s) and with 50 autopilot cars + 50 walkers
(goal >= 300 steps/s), and says where the time goes:
  server     CPU time of the server process (simulation, Traffic Manager, RPC, streaming)
  tick wait  wall time inside world.tick() (server work + round trip, as the client sees it)
  birdview   wall time rendering the birdview in the client
  client     CPU time of the client process (experiment, carla client, walker AI, birdview)
Each scenario runs in its own subprocess (the carla client can abort its whole process), and
every server is stopped when the scenario ends.

Usage:  CARLA_MAPS_PATH=../shared/carla-maps .venv/bin/python benchmarks/env_throughput.py
        [--steps 2000] [--warmup 100] [--town Town01] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from _processes import REPO_ROOT, emit_result, parse_result

sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

import carla  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from rllib_integration.base_experiment import BaseExperiment  # noqa: E402

BIRDVIEW_SIZE_PX = 84
BIRDVIEW_RADIUS_M = 15.0
FRAMESTACK = 4
EPISODE_STEPS = 500                  # the hero is respawned this often, so it keeps driving on roads
SCENARIOS = {                        # name -> (background vehicles, walkers, goal in steps/s)
    "hero alone": (0, 0, 1000.0),
    "50 cars + 50 walkers": (50, 50, 300.0),
}
SCENARIO_TIMEOUT_S = 900.0
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class BirdviewStackExperiment(BaseExperiment):
    """The DQN example's observation (birdview, frame stack) with three plain actions."""

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        config = super().default_config()
        config["hero"]["sensors"] = {"birdview": {"type": "sensor.birdview", "size": BIRDVIEW_SIZE_PX,
                                                  "radius": BIRDVIEW_RADIUS_M}}
        return config

    def reset(self) -> None:
        self._frames: deque[np.ndarray] = deque(maxlen=FRAMESTACK)
        self._steps = 0

    def get_actions(self) -> dict[int, list[float]]:
        return {0: [0.5, 0.0, 0.0, False, False], 1: [0.4, -0.2, 0.0, False, False], 2: [0.4, 0.2, 0.0, False, False]}

    def get_observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(0, 255, (BIRDVIEW_SIZE_PX, BIRDVIEW_SIZE_PX, 3 * FRAMESTACK), np.uint8)

    def get_observation(self, sensor_data: dict[str, tuple[int, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        image = sensor_data["birdview"][1]
        while len(self._frames) < FRAMESTACK - 1:
            self._frames.append(image)
        self._frames.append(image)
        return np.concatenate(self._frames, axis=2), {}

    def get_done_status(self, observation: np.ndarray, core: Any) -> tuple[bool, bool]:
        self._steps += 1
        return False, self._steps >= EPISODE_STEPS

    def compute_reward(self, observation: np.ndarray, core: Any) -> float:
        return 0.0


class Stopwatch:
    """Accumulated wall time of calls to one function."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def group_cpu_seconds(pgid: int) -> float:
    """CPU time used so far by the processes of a group (the server and its guard)."""
    total = 0
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else None
        except OSError:
            continue
        if fields and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])   # utime + stime
    return total / CLOCK_TICKS_PER_S


def run_scenario(name: str, town: str, steps: int, warmup: int) -> dict[str, Any]:
    """The measured loop (runs in a subprocess: `--scenario NAME`)."""
    from rllib_integration.carla_env import CarlaEnv
    from rllib_integration.sensors.bird_view_manager import BirdviewManager

    vehicles, walkers, goal = SCENARIOS[name]
    tick_wait, birdview = Stopwatch(), Stopwatch()
    tick_wait.wrap(carla.World, "tick")
    birdview.wrap(BirdviewManager, "render")
    env = CarlaEnv({"experiment": {"type": BirdviewStackExperiment, "town": town,
                                   "background_activity": {"n_vehicles": vehicles, "n_walkers": walkers, "seed": 0}},
                    "carla": {"enable_rendering": False}})
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(warmup + steps)]
        npcs = {"vehicles": len(env.core.world.get_actors().filter("vehicle.*")) - 1,
                "walkers": len(env.core.world.get_actors().filter("walker.*"))}
        for action in actions[:warmup]:
            step(env, action)
        server_group = env.core._launcher.process.pid
        tick_wait.seconds = birdview.seconds = 0.0
        server_cpu, client_cpu, start = group_cpu_seconds(server_group), time.process_time(), time.perf_counter()
        for action in actions[warmup:]:
            step(env, action)
        wall = time.perf_counter() - start
        per_step_ms = {"server": group_cpu_seconds(server_group) - server_cpu, "tick wait": tick_wait.seconds,
                       "birdview": birdview.seconds, "client": time.process_time() - client_cpu}
    finally:
        env.close()
    return {"scenario": name, "town": town, "steps_per_s": steps / wall, "goal": goal, "npcs": npcs,
            "ms_per_step": {key: 1000.0 * value / steps for key, value in per_step_ms.items()},
            "wall_ms_per_step": 1000.0 * wall / steps}


def step(env: Any, action: Any) -> None:
    _, _, terminated, truncated, _ = env.step(action)
    if terminated or truncated:
        env.reset()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per scenario (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps first (default 100)")
    parser.add_argument("--town", default="Town01", help="town (default Town01; GridCity needs no CARLA_MAPS_PATH)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument("--scenario", choices=list(SCENARIOS), help=argparse.SUPPRESS)   # internal: the subprocess
    return parser.parse_args()


def measure(args: argparse.Namespace, name: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--scenario", name, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--town", args.town]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    result = parse_result(completed.stdout)
    if result is not None:
        return result
    raise RuntimeError(f"scenario '{name}' failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")


def report(results: list[dict[str, Any]]) -> None:
    print(f"CarlaEnv.step, embedded backend, {BIRDVIEW_SIZE_PX} px birdview, framestack {FRAMESTACK}, "
          f"town {results[0]['town']}, {os.cpu_count()} CPUs")
    for result in results:
        verdict = "meets" if result["steps_per_s"] >= result["goal"] else "MISSES"
        parts = ", ".join(f"{key} {value:.2f}" for key, value in result["ms_per_step"].items())
        print(f"  {result['scenario']:22s} {result['steps_per_s']:7.0f} steps/s ({verdict} goal {result['goal']:.0f}); "
              f"{result['npcs']['vehicles']} cars, {result['npcs']['walkers']} walkers")
        print(f"  {'':22s} ms per step: wall {result['wall_ms_per_step']:.2f}; {parts}")


def main() -> int:
    args = parse_args()
    if args.scenario:
        emit_result(run_scenario(args.scenario, args.town, args.steps, args.warmup))
        return 0
    results = [measure(args, name) for name in SCENARIOS]
    if args.json:
        print(json.dumps(results))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
