"""The command line shared by dqn_inference.py (plain torch) and dqn_inference_ray.py (Ray's restore).

Both drive greedily for --episodes episodes from seeds --seed, --seed + 1, ..., print each
episode and a summary, and optionally write the birdview to an mp4. Ray-free: what loads the
policy is passed in, so dqn_inference.py never imports Ray.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from rllib_integration.carla_env import CarlaEnv
from rllib_integration.errors import ConfigError

from .config_file import load_config_file
from .dqn_experiment import DQNExperiment
from .dqn_inference_model import PolicyFileError
from .evaluation import Policy, aggregate, describe, run_episode
from .video import BirdviewVideo

DEFAULT_FIRST_SEED = 2_000_000   # neither training (< 1,000,000) nor its evaluation (1,000,000 + i) uses these
EXIT_USAGE = 2


@dataclass
class LoadedPolicy:
    act: Policy
    observation_shape: tuple[int, ...]
    num_actions: int


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("configuration_file", help="the config the checkpoint was trained with (*.yaml)")
    parser.add_argument("checkpoint", help="a checkpoint folder written by dqn_train.py (e.g. DIR/NAME/best)")
    parser.add_argument("-d", "--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to drive (default: 1)")
    parser.add_argument("--seed", type=int, default=DEFAULT_FIRST_SEED,
                        help=f"seed of the first episode, then +1 each (default: {DEFAULT_FIRST_SEED})")
    parser.add_argument("--video", metavar="OUT.mp4", help="write the birdview the agent sees to this mp4 file")
    return parser


def main(description: str, load_policy: Callable[[str, str], LoadedPolicy],
         argv: Sequence[str] | None = None) -> int:
    """Runs the episodes; bad input (config, checkpoint, device) is one line on stderr and exit 2."""
    args = argument_parser(description).parse_args(argv)
    try:
        if args.episodes < 1:
            raise ConfigError(f"--episodes must be at least 1 (got {args.episodes})")
        config = load_config_file(args.configuration_file)
        experiment = DQNExperiment(config.env_config["experiment"])
        policy = load_policy(args.checkpoint, args.device)
        shape, actions = experiment.get_observation_space().shape, experiment.get_action_space().n
        if tuple(policy.observation_shape) != tuple(shape) or policy.num_actions != actions:
            raise PolicyFileError(
                f"the checkpoint's network takes observations of shape {tuple(policy.observation_shape)} and "
                f"{policy.num_actions} actions, but {args.configuration_file} gives {tuple(shape)} and {actions}: use "
                "the config the checkpoint was trained with (birdview size, framestack, grayscale)")
    except (ConfigError, PolicyFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    channels = 1 if experiment.config["others"]["grayscale"] else 3
    video = BirdviewVideo(args.video, channels) if args.video else None
    env = None
    results = []
    try:
        env = CarlaEnv(config.env_config)
        for episode in range(args.episodes):
            results.append(run_episode(env, policy.act, args.seed + episode, video.add if video else None))
            print(results[-1].describe(), flush=True)
    except ConfigError as error:   # what only the simulator can tell: town, blueprint, sensors
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if env is not None:
            env.close()
        if video is not None:
            video.close()
    if results:
        print(describe(aggregate(results)))
    if video is not None:
        print(f"video: {args.video}")
    return 0
