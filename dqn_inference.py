#!/usr/bin/env python
"""Drive a trained DQN agent greedily, without Ray: the plain torch policy saved in every checkpoint.

    python dqn_inference.py dqn_config.yaml ~/ray_results/carla_rllib/dqn_example/best --episodes 5 --video run.mp4

Prints each episode's return, distance, collisions and why it ended, then a summary.
"""
from __future__ import annotations

import sys

from dqn_example.dqn_inference_model import GreedyPolicy
from dqn_example.inference_cli import LoadedPolicy, main


def load_policy(checkpoint: str, device: str) -> LoadedPolicy:
    policy = GreedyPolicy.load(checkpoint, device)
    return LoadedPolicy(policy, policy.spec.observation_shape, policy.spec.num_actions)


if __name__ == "__main__":
    sys.exit(main(__doc__, load_policy))
