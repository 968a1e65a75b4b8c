"""DQN config files: yaml over defaults, Ray 1 keys mapped or refused, unknown keys, resources."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from dqn_example.config_file import TRAINING_DEFAULTS, load_config_file
from dqn_example.dqn_callbacks import DQNCallbacks
from dqn_example.rllib_config import build_dqn_config, check_resources, translate
from rllib_integration.carla_env import CarlaEnv
from rllib_integration.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
ENV_CONFIG = """
env_config:
  experiment:
    town: Town01
    hero: {sensors: {birdview: {type: sensor.birdview, size: 300, radius: 15}}}
"""
# The original project's dqn_config.yaml (Ray 1.x names), shortened.
RAY1_FILE = """
framework: "torch"
num_workers: 1
num_gpus_per_worker: 1
num_cpus_per_worker: 11
rollout_fragment_length: 16
timesteps_per_iteration: 20000
train_batch_size: 64
learning_starts: 20000
buffer_size: 5000
lr: 0.0025
exploration_config: {type: "EpsilonGreedy", initial_epsilon: 1.0, final_epsilon: 0.02, epsilon_timesteps: 2000000}
hiddens: [256, 512]
model: {dim: 300, conv_filters: [[16, [5, 5], 4], [32, [5, 5], 2], [512, [5, 5], 1]]}
""" + ENV_CONFIG


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def build(path: Path):
    return build_dqn_config(load_config_file(path), DQNCallbacks, CarlaEnv)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.yaml")


def test_malformed_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, "lr: 0.001\ntrain_batch_size: [64\nn_step: 3\n")
    with pytest.raises(ConfigError, match=r"config.yaml:3: not valid YAML"):
        load_config_file(path)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config_file(write(tmp_path, "- lr\n- 0.001\n"))


def test_the_file_is_merged_over_the_defaults(tmp_path):
    config_file = load_config_file(write(tmp_path, "evaluation: {episodes: 2}\nstop: {training_iteration: 5}\n"
                                     + ENV_CONFIG))
    assert config_file.training["evaluation"] == {**TRAINING_DEFAULTS["evaluation"], "episodes": 2}
    assert config_file.training["stop"]["training_iteration"] == 5
    config, _ = build_dqn_config(config_file, DQNCallbacks, CarlaEnv)
    assert config.gamma == 0.99 and config.framework_str == "torch" and config.num_env_runners == 0


@pytest.mark.parametrize("text, message", [
    ("train_batch_sise: 64\n", "unknown RLlib setting 'train_batch_sise' (did you mean 'train_batch_size'?)"),
    ("evaluation: {episode: 3}\n", "unknown setting 'evaluation.episode' (did you mean 'episodes'?)"),
    ("env_config: {experiment: {others: {framestak: 2}}}\n",
     "unknown setting 'env_config.experiment.others.framestak' (did you mean 'framestack'?)"),
    ("env_config: {carla: {timout: 5}}\n", "unknown setting 'env_config.carla.timout' (did you mean 'timeout'?)"),
    ("model_config: {conv_filter: []}\n", "did you mean 'conv_filters'"),
    ("model: {fcnet_hidens: [1]}\n", "unknown model setting 'model.fcnet_hidens'"),
])
def test_unknown_keys_name_the_closest_valid_one(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(write(tmp_path, text))


def test_ray1_keys_are_mapped_with_a_notice_each(tmp_path):
    config, notices = build(write(tmp_path, RAY1_FILE))
    assert config.num_env_runners == 1
    assert config.num_gpus_per_env_runner == 1 and config.num_cpus_per_env_runner == 11
    assert config.min_sample_timesteps_per_iteration == 20000
    assert config.num_steps_sampled_before_learning_starts == 20000
    assert config.replay_buffer_config["capacity"] == 5000
    assert config.epsilon == [[0, 1.0], [2000000, 0.02]]
    model_config = config.rl_module_spec.model_config
    assert model_config["head_fcnet_hiddens"] == [256, 512]
    # Ray 1 padded "same" except the last layer
    assert model_config["conv_filters"] == [[16, [5, 5], 4, "same"], [32, [5, 5], 2, "same"], [512, [5, 5], 1, "valid"]]
    mapped = [notice.split(" ")[0] for notice in notices]
    assert mapped == ["num_workers", "num_gpus_per_worker", "num_cpus_per_worker", "timesteps_per_iteration",
                      "learning_starts", "buffer_size", "exploration_config", "hiddens", "model.dim",
                      "model.conv_filters"]


@pytest.mark.parametrize("text, message", [
    ("horizon: 1000\n", "max_time_episode"),
    ("exploration_config: {type: SoftQ, temperature: 1.0}\n", "epsilon"),
    ("num_workers: 1\nnum_env_runners: 2\n", "keep only 'num_env_runners'"),
    ("framework: tf2\n", "torch only"),
    ("model: {dim: 84}\n", "birdview is 300 px"),
    ("model: {framestack: true}\n", "others.framestack"),
    ("prioritized_replay_eps: 0.000001\n", "has no eps"),
])
def test_ray1_keys_without_an_equivalent_name_the_replacement(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        build(write(tmp_path, text + ENV_CONFIG))


def test_rllib_validation_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="rollout_fragment_length"):
        build(write(tmp_path, "n_step: 5\nrollout_fragment_length: 2\n" + ENV_CONFIG))


@pytest.mark.parametrize("filters, message", [
    ("[[16, 8]]", "a conv filter is"),
    ("[[16, 64, 64, valid], [32, 8, 1, valid]]", "cannot make a network for the (300, 300, 12) observations"),
])
def test_a_network_that_does_not_fit_is_refused_in_the_driver(tmp_path, filters, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(write(tmp_path, f"model_config: {{conv_filters: {filters}}}\n" + ENV_CONFIG))


def test_experiment_config_errors_surface_in_the_driver(tmp_path):
    with pytest.raises(ConfigError, match="others.reward"):
        load_config_file(write(tmp_path, ENV_CONFIG + "    others: {reward: best}\n"))


def test_asking_for_more_cpus_or_gpus_than_ray_sees_is_refused(tmp_path):
    config, _ = build(write(tmp_path, "num_env_runners: 3\nnum_cpus_per_env_runner: 2\n" + ENV_CONFIG))
    with pytest.raises(ConfigError, match="asks for 7 CPU"):
        check_resources(config, {"CPU": 2.0})
    check_resources(config, {"CPU": 8.0})
    config, _ = build(write(tmp_path, "num_gpus_per_env_runner: 1\nnum_env_runners: 1\n" + ENV_CONFIG))
    with pytest.raises(ConfigError, match="asks for 1 GPU"):
        check_resources(config, {"CPU": 8.0})


def test_the_shipped_configs_load():
    config, notices = build(REPO / "dqn_config.yaml")
    assert notices == [] and config.num_env_runners == 0
    carla_file = load_config_file(REPO / "dqn_example" / "dqn_config_carla.yaml")
    config, notices = build_dqn_config(carla_file, DQNCallbacks, CarlaEnv)
    assert notices == []
    assert (config.rollout_fragment_length, config.train_batch_size, config.lr) == (16, 64, 0.0025)
    experiment = carla_file.env_config["experiment"]
    assert experiment["town"] == "Town05_Opt"
    assert experiment["hero"]["sensors"]["birdview"] == {"type": "sensor.birdview", "size": 300, "radius": 15}
    assert carla_file.env_config["carla"]["backend"] == "carla"


def test_translate_keeps_ray2_names_as_they_are():
    settings, notices = translate({"lr": 0.001, "epsilon": [[0, 1.0], [10, 0.1]]}, birdview_size=64)
    assert settings["lr"] == 0.001 and settings["epsilon"] == [[0, 1.0], [10, 0.1]] and notices == []
