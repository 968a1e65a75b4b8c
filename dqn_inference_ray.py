#!/usr/bin/env python
"""Drive a trained DQN agent greedily through Ray's own checkpoint restore (RLModule.from_checkpoint).

    python dqn_inference_ray.py dqn_config.yaml ~/ray_results/carla_rllib/dqn_example/best --episodes 5

The same episodes as dqn_inference.py, which needs no Ray: both give the same actions.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule

from dqn_example.dqn_inference_model import PolicyFileError, resolve_device
from dqn_example.inference_cli import LoadedPolicy, main
from dqn_example.training import RLLIB_MODULE_DIR


def load_policy(checkpoint: str, device: str) -> LoadedPolicy:
    path = Path(checkpoint).expanduser() / RLLIB_MODULE_DIR
    if not path.is_dir():
        raise PolicyFileError(f"'{checkpoint}' is not an RLlib checkpoint written by dqn_train.py "
                              f"(no {RLLIB_MODULE_DIR} in it); give a checkpoint folder such as DIR/NAME/best")
    device = resolve_device(device)
    module = RLModule.from_checkpoint(str(path)).to(device).eval()

    @torch.no_grad()
    def act(observation):
        batch = {Columns.OBS: torch.as_tensor(observation[None], device=device)}
        return int(module.forward_inference(batch)[Columns.ACTIONS][0])

    return LoadedPolicy(act, tuple(module.observation_space.shape), int(module.action_space.n))


if __name__ == "__main__":
    sys.exit(main(__doc__, load_policy))
