#!/usr/bin/env python
"""The DQN learning target, measured: a checkpoint against the Traffic Manager's autopilot.

    python benchmarks/evaluate.py dqn_config.yaml ~/ray_results/carla_rllib/dqn_example/best

Drives --episodes greedy episodes (seeds from --first-seed: never used in training, whose seeds are
below 1,000,000, nor in its evaluations) on the config's town and on a held-out town, and the same
starts with the hero on Traffic Manager autopilot at the speed limit (0 % slower than the limit,
traffic lights and stop signs ignored: the agent does not see them). Then the agent once more on the training
town among --traffic background vehicles, for collisions per km. Prints each condition, the
learning curve of the run (its evaluations.jsonl) and the target figures with PASS / FAIL; --json
writes them all. Ray-free, like dqn_inference.py.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

from dqn_example.config_file import load_config_file
from dqn_example.dqn_inference_model import GreedyPolicy
from dqn_example.evaluation import EVALUATIONS_FILE, EpisodeResult, aggregate, describe, evaluate
from rllib_integration.carla_env import CarlaEnv

AUTOPILOT_SPEED_DIFFERENCE_PCT = 0.0   # Traffic Manager: 0 % below the speed limit (its default is 30 %)
TARGETS = {                            # the learning target, on the training town and on the held-out one
    "success_rate": (">=", 0.95),      # episodes run to the time limit without leaving the road or colliding
    "distance_vs_autopilot": (">=", 0.90),
    "speeding_fraction": ("<", 0.05),  # time above the speed limit by more than 10 %
    "mean_abs_offset_m": ("<=", 0.5),
}


def env_config_for(base: dict[str, Any], town: str, vehicles: int) -> dict[str, Any]:
    """The training env config on another town or with background traffic; episodes end on collision or
    leaving the road only if the config says so (the success rate counts both either way)."""
    config = copy.deepcopy(base)
    config["experiment"]["town"] = town
    config["experiment"]["background_activity"]["n_vehicles"] = vehicles
    return config


def autopilot_episode(env: CarlaEnv, seed: int) -> EpisodeResult:
    """The episode of `seed` (same start) with the hero on Traffic Manager autopilot: the env's own
    observation, ending and reward code runs, only the control comes from the Traffic Manager.
    The Traffic Manager is shut down at the end, as CarlaCore does with its own before the world is
    reloaded or the server stops (a client-side handle outliving its server crashes the client)."""
    env.reset(seed=seed)
    core, experiment = env.core, env.experiment
    traffic_manager = core.client.get_trafficmanager(core.tm_port)
    try:
        traffic_manager.set_synchronous_mode(True)
        core.hero.set_autopilot(True, core.tm_port)
        traffic_manager.vehicle_percentage_speed_difference(core.hero, AUTOPILOT_SPEED_DIFFERENCE_PCT)
        traffic_manager.ignore_lights_percentage(core.hero, 100.0)
        traffic_manager.ignore_signs_percentage(core.hero, 100.0)
        episode_return = 0.0
        while True:
            observation, info = experiment.get_observation(core.tick(None))
            terminated, truncated = experiment.get_done_status(observation, core)
            episode_return += experiment.compute_reward(observation, core)
            if terminated or truncated:
                return EpisodeResult(seed, episode_return, info["summary"])
    finally:
        traffic_manager.shut_down()


def run_condition(name: str, env_config: dict[str, Any], seeds: list[int], policy: GreedyPolicy | None) -> dict:
    """Figures of one condition (agent when `policy`, else autopilot), printed as it goes."""
    started = time.monotonic()
    env = CarlaEnv(env_config)
    try:
        if policy is not None:
            results = evaluate(env, policy, seeds)
        else:
            results = [autopilot_episode(env, seed) for seed in seeds]
    finally:
        env.close()
    figures = aggregate(results)
    print(f"{name:34s} {describe(figures)}  [{time.monotonic() - started:.0f} s]", flush=True)
    return figures


def check(name: str, value: float, comparison: str, threshold: float) -> bool:
    ok = {">=": value >= threshold, "<": value < threshold, "<=": value <= threshold}[comparison]
    print(f"  {'PASS' if ok else 'FAIL'}  {name:24s} {value:8.3f} {comparison} {threshold}")
    return ok


def learning_curve(checkpoint: Path) -> list[dict[str, Any]]:
    """The run's greedy evaluations (checkpoint is DIR/NAME/best or DIR/NAME/checkpoint_N)."""
    path = checkpoint.resolve().parent / EVALUATIONS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configuration_file")
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=2_000_000)
    parser.add_argument("--held-out-town", default="Town02", help="a town not used in training (default: Town02)")
    parser.add_argument("--traffic", type=int, default=20, help="background vehicles of the traffic run (0: none)")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()

    config = load_config_file(args.configuration_file).env_config
    policy = GreedyPolicy.load(args.checkpoint)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    towns = {"training": config["experiment"]["town"], "held-out": args.held_out_town}
    report: dict[str, Any] = {"checkpoint": args.checkpoint, "seeds": [seeds[0], seeds[-1]], "towns": towns}
    passed = True
    for role, town in towns.items():
        env_config = env_config_for(config, town, 0)
        agent = run_condition(f"agent     {town} ({role})", env_config, seeds, policy)
        autopilot = run_condition(f"autopilot {town} ({role})", env_config, seeds, None)
        agent["distance_vs_autopilot"] = agent["mean_distance_m"] / max(autopilot["mean_distance_m"], 1e-9)
        report[role] = {"town": town, "agent": agent, "autopilot": autopilot}
        print(f"target on {town} ({role}):")
        passed &= all([check(key, agent[key], *target) for key, target in TARGETS.items()])
    if args.traffic:
        traffic = run_condition(f"agent     {towns['training']} +{args.traffic} cars",
                                env_config_for(config, towns["training"], args.traffic), seeds, policy)
        report["traffic"] = {"vehicles": args.traffic, "agent": traffic}
        print(f"with {args.traffic} background vehicles: {traffic['collisions_per_km']:.2f} collisions per km, "
              f"success {100 * traffic['success_rate']:.0f}%")
    curve = learning_curve(Path(args.checkpoint))
    if curve:
        print("learning curve (greedy evaluations during training):")
        for point in curve:
            print(f"  {point['minutes']:5.1f} min  {point['env_steps']:8,d} env steps  success "
                  f"{100 * point['success_rate']:3.0f}%  route {100 * point['mean_route_completion']:3.0f}%  "
                  f"{point['mean_speed_kmh']:4.1f} km/h  off-centre {point['mean_abs_offset_m']:.2f} m"
                  f"{'  best' if point['best'] else ''}")
        report["learning_curve"] = curve
    print("TARGET MET" if passed else "TARGET NOT MET")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
