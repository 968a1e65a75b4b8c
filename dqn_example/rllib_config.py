"""The RLlib part of a DQN config file, as a Ray 2.60 DQNConfig.

Files written for the original (Ray 1.x) must keep working, and Ray 2.60 silently ignores many
of their keys (num_gpus_per_worker, exploration_config, buffer_size, hiddens, ...) or raises
deep inside. So each Ray 1 key is either mapped to its Ray 2.60 equivalent, with a one-line
notice, or refused with a message naming the replacement; a key that is neither a mapped one nor
a DQNConfig setting is refused, naming the closest valid key.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from ray.rllib.algorithms.dqn import DQN, DQNConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from rllib_integration.errors import ConfigError

from .config_file import ConfigFile, closest
from .dqn_experiment import DQNExperiment
from .dqn_inference_model import QNetworkSpec
from .dqn_rl_module import MODEL_DEFAULTS, BirdviewDQNModule

# Settings of this project's DQN that differ from DQNConfig's own defaults.
RLLIB_DEFAULTS: dict[str, Any] = {
    "framework": "torch",
    "num_env_runners": 0,          # sample in the training process (one simulator); more runners, more simulators
}
PRIORITIZED_BUFFER = "PrioritizedEpisodeReplayBuffer"
UNIFORM_BUFFER = "EpisodeReplayBuffer"
# Ray 1 name -> Ray 2.60 name, for keys whose value carries over unchanged.
RENAMED = {
    "num_workers": "num_env_runners",
    "num_envs_per_worker": "num_envs_per_env_runner",
    "num_cpus_per_worker": "num_cpus_per_env_runner",
    "num_gpus_per_worker": "num_gpus_per_env_runner",
    "custom_resources_per_worker": "custom_resources_per_env_runner",
    "num_cpus_for_driver": "num_cpus_for_main_process",
    "num_gpus": "num_gpus_per_learner",
    "timesteps_per_iteration": "min_sample_timesteps_per_iteration",
    "min_iter_time_s": "min_time_s_per_iteration",
    "learning_starts": "num_steps_sampled_before_learning_starts",
    "lr_schedule": "lr",
    "evaluation_num_workers": "evaluation_num_env_runners",
    "evaluation_num_episodes": "evaluation_duration",
    "metrics_smoothing_episodes": "metrics_num_episodes_for_smoothing",
    "min_time_s_per_reporting": "min_time_s_per_iteration",
    "min_sample_timesteps_per_reporting": "min_sample_timesteps_per_iteration",
    "min_train_timesteps_per_reporting": "min_train_timesteps_per_iteration",
    "collect_metrics_timeout": "metrics_episode_collection_timeout_s",
}
# Ray 1 replay settings -> key of replay_buffer_config.
REPLAY_KEYS = {"buffer_size": "capacity", "prioritized_replay_alpha": "alpha", "prioritized_replay_beta": "beta"}
# Keys with no Ray 2.60 equivalent here, and what to do instead.
REFUSED = {
    "horizon": "the episode length is env_config.experiment.others.max_time_episode (steps)",
    "soft_horizon": "episodes end in the experiment (env_config.experiment.others)",
    "no_done_at_end": "the experiment tells terminated from truncated itself",
    "env": "dqn_train.py sets the env (CarlaEnv with DQNExperiment); remove it",
    "callbacks": "dqn_train.py sets the callbacks (dqn_example.dqn_callbacks.DQNCallbacks); remove it",
    "prioritized_replay_eps": "Ray 2.60's PrioritizedEpisodeReplayBuffer has no eps; remove it",
    "worker_side_prioritization": "Ray 2.60's DQN keeps one replay buffer in the driver; remove it",
    "replay_sequence_length": "DQN here learns from single steps; remove it",
    "compress_observations": "observations stay uint8 end to end (no need to compress); remove it",
    "monitor": "record a video with dqn_inference.py --video out.mp4; remove it",
    "simple_optimizer": "Ray 2.60 has one optimizer path; remove it",
    "model_config_dict": "write the model settings under model_config",
    "replay_batch_size": "the batch sampled from the replay buffer is train_batch_size",
    "enable_rl_module_and_learner": "this project runs on Ray 2.60's new API stack only; remove it",
    "enable_env_runner_and_connector_v2": "this project runs on Ray 2.60's new API stack only; remove it",
}
# Ray 1 `model` keys -> model_config keys (value unchanged); other `model` keys are handled below.
MODEL_RENAMED = {"conv_activation": "conv_activation", "fcnet_activation": "head_fcnet_activation"}
MODEL_REFUSED = {
    "framestack": "stack frames with env_config.experiment.others.framestack",
    "grayscale": "use env_config.experiment.others.grayscale",
    "zero_mean": "pixels are scaled to [0, 1] inside the model",
    "custom_model": "the model is dqn_example.dqn_rl_module.BirdviewDQNModule",
    "fcnet_hiddens": "the DQN heads' layers are model_config.head_fcnet_hiddens (Ray 1: the top-level 'hiddens')",
    "use_lstm": "BirdviewDQNModule has no LSTM (stack frames instead)",
}
EXPLORATION_TYPES = ("EpsilonGreedy",)


def _model_to_model_config(model: dict[str, Any], birdview_size: int, notices: list[str]) -> dict[str, Any]:
    """Ray 1 `model` dict -> Ray 2.60 model_config for BirdviewDQNModule."""
    model_config: dict[str, Any] = {}
    for key, value in model.items():
        if key in MODEL_REFUSED:
            raise ConfigError(f"model.{key} has no Ray 2.60 equivalent here: {MODEL_REFUSED[key]}")
        if key == "dim":
            if value != birdview_size:
                raise ConfigError(f"model.dim is {value} but the birdview is {birdview_size} px: Ray 2.60 does not "
                                  "resize images; set env_config.experiment.hero.sensors.birdview.size instead")
            notices.append(f"model.dim -> dropped (Ray 2.60 does not resize; the birdview is already {value} px)")
        elif key == "conv_filters":
            # Ray 1's vision net padded every layer "same" but the last ("valid"); Ray 2.60 needs it written out.
            filters = [list(entry) for entry in value]
            for index, entry in enumerate(filters):
                if len(entry) == 3:
                    entry.append("valid" if index == len(filters) - 1 else "same")
            model_config["conv_filters"] = filters
            notices.append("model.conv_filters -> model_config.conv_filters, with Ray 1's padding written out "
                           "('same', the last one 'valid')")
        elif key in MODEL_RENAMED:
            model_config[MODEL_RENAMED[key]] = value
            notices.append(f"model.{key} -> model_config.{MODEL_RENAMED[key]}")
        else:
            raise ConfigError(f"unknown model setting 'model.{key}'"
                              f"{closest(key, ['dim', 'conv_filters', *MODEL_RENAMED, *MODEL_REFUSED])}")
    return model_config


def _epsilon_schedule(exploration: dict[str, Any]) -> list[list[float]]:
    """Ray 1 EpsilonGreedy exploration_config -> Ray 2.60 `epsilon` schedule."""
    kind = exploration.get("type", "EpsilonGreedy")
    if kind not in EXPLORATION_TYPES:
        raise ConfigError(f"exploration_config type '{kind}' has no Ray 2.60 equivalent (the new API stack explores "
                          "epsilon-greedily); replace exploration_config with epsilon: [[0, 1.0], [STEPS, 0.02]]")
    unknown = set(exploration) - {"type", "initial_epsilon", "final_epsilon", "epsilon_timesteps", "warmup_timesteps"}
    if unknown:
        raise ConfigError(f"exploration_config: unknown key(s) {', '.join(sorted(unknown))}")
    initial, final = float(exploration.get("initial_epsilon", 1.0)), float(exploration.get("final_epsilon", 0.02))
    start = int(exploration.get("warmup_timesteps", 0))
    end = start + int(exploration.get("epsilon_timesteps", 10_000))
    return [[0, initial], *([[start, initial]] if start else []), [end, final]]


def valid_keys() -> list[str]:
    """DQNConfig's settings, as they are written in a config file."""
    names = {name for name in vars(DQNConfig()) if not name.startswith("_")} - {"framework_str", "callbacks_class"}
    return sorted(names | {"framework", "model_config"})


def translate(settings: dict[str, Any], birdview_size: int) -> tuple[dict[str, Any], list[str]]:
    """(Ray 2.60 settings, notices) from a file's RLlib settings (Ray 1 or Ray 2 names)."""
    settings, notices = copy.deepcopy(settings), []
    valid = valid_keys()
    result: dict[str, Any] = dict(RLLIB_DEFAULTS)
    replay: dict[str, Any] = {}
    model_config: dict[str, Any] = {}
    for key, value in settings.items():
        if key in REFUSED:
            raise ConfigError(f"'{key}' has no Ray 2.60 equivalent here: {REFUSED[key]}")
        if key in RENAMED:
            new = RENAMED[key]
            if new in settings:
                raise ConfigError(f"both '{key}' (Ray 1) and '{new}' (Ray 2.60) are set; keep only '{new}'")
            result[new] = value
            notices.append(f"{key} -> {new}")
        elif key in REPLAY_KEYS:
            replay[REPLAY_KEYS[key]] = value
            notices.append(f"{key} -> replay_buffer_config.{REPLAY_KEYS[key]}")
        elif key == "prioritized_replay":
            replay["type"] = PRIORITIZED_BUFFER if value else UNIFORM_BUFFER
            notices.append(f"prioritized_replay -> replay_buffer_config.type: {replay['type']}")
        elif key == "hiddens":
            model_config["head_fcnet_hiddens"] = value
            notices.append("hiddens -> model_config.head_fcnet_hiddens (Ray 2.60 ignores the top-level 'hiddens')")
        elif key == "model":
            model_config.update(_model_to_model_config(value or {}, birdview_size, notices))
        elif key == "exploration_config":
            if "epsilon" in settings:
                raise ConfigError("both 'exploration_config' (Ray 1) and 'epsilon' (Ray 2.60) are set; keep 'epsilon'")
            result["epsilon"] = _epsilon_schedule(value or {})
            notices.append(f"exploration_config -> epsilon: {result['epsilon']}")
        elif key == "model_config":
            model_config.update(value or {})
        elif key == "framework" and value != "torch":
            raise ConfigError(f"framework '{value}': Ray 2.60's new API stack and this project's model are torch only; "
                              "set framework: torch")
        elif key in valid:
            result[key] = value
        else:
            raise ConfigError(f"unknown RLlib setting '{key}'{closest(key, valid + list(RENAMED))}")
    if replay:
        result["replay_buffer_config"] = {**result.get("replay_buffer_config", DQNConfig().replay_buffer_config),
                                          **replay}
    unknown = set(model_config) - set(MODEL_DEFAULTS)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown model_config setting '{key}'{closest(key, list(MODEL_DEFAULTS))}; "
                          f"BirdviewDQNModule reads {', '.join(MODEL_DEFAULTS)}")
    result["model_config"] = {**MODEL_DEFAULTS, **model_config}
    return result, notices


def build_dqn_config(config_file: ConfigFile, callbacks: type[RLlibCallback], env: Callable[..., Any],
                     ) -> tuple[DQNConfig, list[str]]:
    """(DQNConfig for config_file, notices about mapped Ray 1 keys); Ray's own validation runs here."""
    birdview_size = config_file.env_config["experiment"]["hero"]["sensors"]["birdview"]["size"]
    settings, notices = translate(config_file.rllib, birdview_size)
    model_config = settings.pop("model_config")
    config = DQNConfig()
    try:
        config.update_from_dict(settings)
        config.environment(env=env, env_config=config_file.env_config)
        config.callbacks(callbacks)
        config.rl_module(rl_module_spec=RLModuleSpec(module_class=BirdviewDQNModule, model_config=model_config))
        config.validate()
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"RLlib refused the settings: {error}") from None
    try:   # built here once, so a network that does not fit fails in the driver and not in an env runner
        network_spec(config, config_file)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConfigError(f"model_config cannot make a network for the "
                          f"{DQNExperiment(config_file.env_config['experiment']).get_observation_space().shape} "
                          f"observations: {str(error).splitlines()[0]}") from None
    return config, notices


def network_spec(config: DQNConfig, config_file: ConfigFile) -> QNetworkSpec:
    """The network this config trains, built without starting Ray (e.g. to check a checkpoint against it)."""
    experiment = DQNExperiment(config_file.env_config["experiment"])
    spaces = {DEFAULT_MODULE_ID: (experiment.get_observation_space(), experiment.get_action_space())}
    return config.get_rl_module_spec(spaces=spaces).build().network_spec()


def required_resources(config: DQNConfig) -> dict[str, float]:
    """CPUs and GPUs the algorithm reserves (driver, env runners, learners), as Ray computes them."""
    return DQN.default_resource_request(config).required_resources


def check_resources(config: DQNConfig, available: dict[str, float]) -> None:
    """Asking Ray for more than the cluster has makes it wait forever: refuse it up front."""
    for resource, amount in required_resources(config).items():
        if resource in ("CPU", "GPU") and amount > available.get(resource, 0.0) + 1e-9:
            raise ConfigError(
                f"the config asks for {amount:g} {resource}(s) (driver, num_env_runners x num_{resource.lower()}s_per_"
                f"env_runner, learners) but Ray sees {available.get(resource, 0.0):g}: lower num_env_runners, "
                f"num_{resource.lower()}s_per_env_runner or num_{resource.lower()}s_per_learner")
