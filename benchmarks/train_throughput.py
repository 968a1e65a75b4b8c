#!/usr/bin/env python
"""Where DQN training time goes: env steps/s sampled and trained, split by stage.

    python benchmarks/train_throughput.py dqn_config.yaml [--iterations 5]

Builds the algorithm of the config (num_env_runners 0: everything but the simulator runs in this
process), fills the replay buffer up to the start of learning, then profiles --iterations training
iterations and splits their wall time into: the simulator tick (client waiting on the server),
the birdview drawing, the rest of the env step (experiment, sensors), the RLModule's action
choice, RLlib's sampling overhead (connectors, episodes), replay buffer add and sample, the
learner update and the rest. Also the simulator server's own CPU time over the same window.
"""
from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import torch

from dqn_example.config_file import load_config_file
from dqn_example.dqn_callbacks import DQNCallbacks
from dqn_example.rllib_config import build_dqn_config
from rllib_integration.carla_env import CarlaEnv

EMBEDDED_SERVER_MODULE = b"rllib_integration.embedded"
# stage -> (file suffix, function name) whose cumulative time is the stage's
STAGES = {
    "simulator tick (waiting on the server)": ("rllib_integration/watchdog.py", "run"),
    "birdview drawing": ("sensors/bird_view_manager.py", "render"),
    "env step, all of it": ("rllib_integration/carla_env.py", "step"),
    "RLModule action choice": ("rl_module/torch/torch_rl_module.py", "forward_exploration"),
    "sampling, all of it": ("env/single_agent_env_runner.py", "sample"),
    "replay buffer add": ("replay_buffers/prioritized_episode_buffer.py", "add"),
    "replay buffer sample": ("replay_buffers/prioritized_episode_buffer.py", "sample"),
    "learner update": ("core/learner/learner_group.py", "update"),
}


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    return sum(row[3] for (path, _, function), row in stats.stats.items()
               if function == name and path.endswith(suffix))


def server_cpu_s() -> float:
    """utime + stime of the embedded servers this process launched (descendants running the module)."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                processes[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])),
                                              (entry / "cmdline").read_bytes())
            except (FileNotFoundError, ProcessLookupError):
                continue
    descendants, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, (parent, _, _) in processes.items() if parent in frontier} - descendants
        descendants |= frontier
    ticks = sum(processes[pid][1] for pid in descendants if EMBEDDED_SERVER_MODULE in processes[pid][2])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configuration_file")
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    config_file = load_config_file(args.configuration_file)
    config, _ = build_dqn_config(config_file, DQNCallbacks, CarlaEnv)
    config.env_runners(num_env_runners=0)
    torch.set_num_threads(config_file.training["torch_threads"])
    ray.init(include_dashboard=False, logging_level=logging.ERROR, object_store_memory=200 * 1024 ** 2)
    try:
        algo = config.build_algo()
        while algo.train()["num_env_steps_sampled_lifetime"] < config.num_steps_sampled_before_learning_starts:
            pass
        first = algo.train()
        steps_before, trained_before = first["num_env_steps_sampled_lifetime"], trained(first)
        server_before, started = server_cpu_s(), time.monotonic()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.iterations):
            result = algo.train()
        profile.disable()
        wall = time.monotonic() - started
        server = server_cpu_s() - server_before
        sampled = result["num_env_steps_sampled_lifetime"] - steps_before
        print(f"{sampled} env steps in {wall:.1f} s: {sampled / wall:.0f} env steps/s sampled, "
              f"{(trained(result) - trained_before) / wall:.0f} steps/s trained (replayed), "
              f"server CPU {server / wall:.0%} of one core")
        stats = pstats.Stats(profile)
        times = {stage: cumulative(stats, *where) for stage, where in STAGES.items()}
        env_other = times["env step, all of it"] - times["simulator tick (waiting on the server)"] \
            - times["birdview drawing"]
        sampling_other = times["sampling, all of it"] - times["env step, all of it"] - times["RLModule action choice"]
        rows = [("simulator tick (waiting on the server)", times["simulator tick (waiting on the server)"]),
                ("birdview drawing", times["birdview drawing"]),
                ("rest of the env step (experiment, sensors)", env_other),
                ("RLModule action choice", times["RLModule action choice"]),
                ("RLlib sampling overhead (connectors, episodes)", sampling_other),
                ("replay buffer add", times["replay buffer add"]),
                ("replay buffer sample", times["replay buffer sample"]),
                ("learner update", times["learner update"])]
        rows.append(("other (metrics, weight sync, ...)", wall - sum(value for _, value in rows)))
        for stage, seconds in rows:
            print(f"  {stage:48s} {seconds:6.1f} s  {seconds / wall:5.1%}  {1000 * seconds / sampled:6.2f} ms/step")
        algo.stop()
    finally:
        ray.shutdown()


def trained(result: dict) -> float:
    return result["learners"]["default_policy"]["num_module_steps_trained_lifetime"]


if __name__ == "__main__":
    main()
