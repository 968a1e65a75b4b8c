"""The torch RLModule that RLlib's DQN trains on uint8 birdview stacks.

Why a custom module: RLlib's default CNN encoder takes float images (uint8 observations fail
in its first conv), and casting in a connector would make the replay buffer hold float32
pixels, four times the memory and the copying. Here the observations stay uint8 everywhere and
are scaled inside the network. The layers are those of BirdviewQNetwork (dqn_inference_model.py),
so the weights export to a Ray-free policy file as they are. Everything else (epsilon-greedy
exploration, double Q, target networks) is RLlib's DefaultDQNTorchRLModule.
"""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import DefaultDQNTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

from .dqn_inference_model import BirdviewQNetwork, ConvFilter, QNetworkSpec, dueling_q

POLICY_PREFIXES = ("encoder.", "af.", "vf.")   # the online network's weights; the rest are target networks

# model_config keys this module reads, with their defaults (RLlib's DefaultModelConfig names).
MODEL_DEFAULTS: dict[str, Any] = {
    "conv_filters": [[16, 8, 4, "valid"], [32, 4, 2, "valid"], [64, 3, 2, "valid"]],  # [out, kernel, stride, pad]
    "conv_activation": "relu",
    "head_fcnet_hiddens": [256],          # dense layers of the advantage and of the value head
    "head_fcnet_activation": "relu",
}


class BirdviewDQNModule(DefaultDQNTorchRLModule):
    """DQN's default torch module with BirdviewQNetwork's layers (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Skips DefaultDQNTorchRLModule.__init__, which would build a DQNCatalog for the default
        # encoder (and warn that it cannot take these conv_filters); the layers are built in setup().
        TorchRLModule.__init__(self, *args, **kwargs)

    def setup(self) -> None:
        self.uses_dueling = bool(self.model_config["dueling"])
        self.uses_double_q = bool(self.model_config["double_q"])
        self.num_atoms = int(self.model_config["num_atoms"])
        if self.num_atoms != 1 or self.model_config.get("noisy"):
            raise ValueError("BirdviewDQNModule learns expected Q-values: set num_atoms: 1 and noisy: false")
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=self.model_config["epsilon"], framework="torch")
        network = BirdviewQNetwork(self.network_spec())
        self.encoder: nn.Module = network.encoder
        self.af: nn.Module = network.af
        if self.uses_dueling:
            self.vf: nn.Module = network.vf

    def network_spec(self) -> QNetworkSpec:
        """The architecture, as plain data (what the policy file stores)."""
        config = {**MODEL_DEFAULTS, **{k: v for k, v in self.model_config.items() if v is not None}}
        return QNetworkSpec(
            observation_shape=tuple(int(n) for n in self.observation_space.shape),
            num_actions=int(self.action_space.n),
            conv_filters=tuple(ConvFilter.parse(entry) for entry in config["conv_filters"]),
            hiddens=tuple(int(n) for n in config["head_fcnet_hiddens"]),
            conv_activation=config["conv_activation"],
            head_activation=config["head_fcnet_activation"],
            dueling=self.uses_dueling,
        )

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """The online network's weights, keyed as BirdviewQNetwork's."""
        return {key: value for key, value in self.state_dict().items() if key.startswith(POLICY_PREFIXES)}

    def _qf_forward_helper(self, batch: dict[str, Any], encoder: nn.Module,
                           head: nn.Module | dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """Called by the parent for the online and for the target network alike."""
        advantage, value = (head["af"], head["vf"]) if self.uses_dueling else (head, None)
        return {QF_PREDS: dueling_q(encoder(batch[Columns.OBS]), advantage, value)}
