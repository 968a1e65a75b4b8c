"""The DQN network: the RLModule on uint8 stacks, its Ray-free export, and both giving the same actions."""
from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec

from dqn_example.dqn_inference_model import (POLICY_FILE, BirdviewQNetwork, ConvFilter, GreedyPolicy, PolicyFileError,
                                             QNetworkSpec, load_network, resolve_device, save_policy)
from dqn_example.dqn_rl_module import BirdviewDQNModule

from core_harness import REPO_ROOT

OBSERVATIONS = gym.spaces.Box(0, 255, (48, 48, 8), np.uint8)
ACTIONS = gym.spaces.Discrete(29)
ORIGINAL_FILTERS = [[16, 5, 4, "same"], [32, 5, 2, "same"], [32, 5, 2, "same"], [64, 5, 1, "same"],
                    [64, 5, 2, "same"], [128, 5, 2, "same"], [512, 5, 1, "valid"]]


def build_module(dueling: bool = True, inference_only: bool = False) -> BirdviewDQNModule:
    model_config = {"conv_filters": [[8, 4, 2, "same"], [16, 3, 2, "valid"]], "head_fcnet_hiddens": [32],
                    "dueling": dueling, "double_q": True, "num_atoms": 1, "epsilon": [[0, 1.0], [100, 0.1]]}
    return RLModuleSpec(module_class=BirdviewDQNModule, observation_space=OBSERVATIONS, action_space=ACTIONS,
                        model_config=model_config, inference_only=inference_only).build()


def observations(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *OBSERVATIONS.shape), dtype=np.uint8)


def test_same_padding_follows_ray1s_sizes_for_the_original_network():
    spec = QNetworkSpec((300, 300, 12), 29, tuple(ConvFilter.parse(f) for f in ORIGINAL_FILTERS), (256, 512))
    network = BirdviewQNetwork(spec)
    assert network.encoder(torch.zeros((1, 300, 300, 12), dtype=torch.uint8)).shape == (1, 512)   # 75,38,19,19,10,5,1
    assert network(torch.zeros((2, 300, 300, 12), dtype=torch.uint8)).shape == (2, 29)


@pytest.mark.parametrize("dueling", [True, False])
def test_the_module_takes_uint8_stacks_and_its_export_gives_the_same_q_values(tmp_path, dueling):
    module = build_module(dueling)
    batch = torch.from_numpy(observations(16))
    q_module = module.compute_q_values({Columns.OBS: batch})["qf_preds"]
    path = save_policy(tmp_path / POLICY_FILE, module.network_spec(), module.policy_state_dict())
    network = load_network(tmp_path)
    assert torch.allclose(network(batch), q_module, atol=1e-6)
    assert set(module.policy_state_dict()) == set(network.state_dict())
    assert path.stat().st_size < 2 ** 20


def test_the_module_explores_and_trains_on_uint8_without_casting_outside(tmp_path):
    module = build_module()
    module.make_target_networks()
    batch = {Columns.OBS: torch.from_numpy(observations(4)), Columns.NEXT_OBS: torch.from_numpy(observations(4, 1))}
    assert module.forward_exploration({Columns.OBS: batch[Columns.OBS]}, t=0)[Columns.ACTIONS].shape == (4,)
    out = module.forward_train(batch)
    assert out["qf_preds"].shape == out["qf_target_next_preds"].shape == (4, 29)


def test_rays_restore_and_the_plain_policy_act_the_same(tmp_path):
    module = build_module()
    module.save_to_path(tmp_path / "module")
    save_policy(tmp_path / POLICY_FILE, module.network_spec(), module.policy_state_dict())
    restored = RLModule.from_checkpoint(tmp_path / "module")
    policy = GreedyPolicy.load(tmp_path)
    for observation in observations(50, seed=3):
        ray_action = restored.forward_inference({Columns.OBS: torch.from_numpy(observation[None])})[Columns.ACTIONS]
        assert int(ray_action[0]) == policy(observation)


def test_a_folder_without_a_policy_is_not_a_checkpoint(tmp_path):
    with pytest.raises(PolicyFileError, match="is not a checkpoint: no policy.pt"):
        load_network(tmp_path)
    (tmp_path / POLICY_FILE).write_bytes(b"not torch")
    with pytest.raises(PolicyFileError, match="is not a policy file"):
        load_network(tmp_path)
    torch.save({"weights": 1}, tmp_path / POLICY_FILE)
    with pytest.raises(PolicyFileError, match="is not a carla-rllib/dqn-policy/1 policy file"):
        load_network(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("cpu") == "cpu"


def test_the_inference_script_imports_no_ray():
    code = "import sys, dqn_inference; assert 'ray' not in sys.modules, [m for m in sys.modules if 'ray' in m]"
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
