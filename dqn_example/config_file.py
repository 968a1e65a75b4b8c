"""Reading a DQN config file (dqn_config.yaml's layout) without Ray.

The file has three kinds of top-level keys: RLlib settings (mapped and checked by rllib_config.py,
which needs Ray), dqn_train.py's own settings (TRAINING_DEFAULTS) and `env_config` (the CarlaEnv
config: {carla: ..., experiment: ...}). Inference only needs the env_config, so this module stays
Ray-free: dqn_inference.py imports it and must run where Ray is not installed.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from rllib_integration.carla_core import BASE_CORE_CONFIG
from rllib_integration.errors import ConfigError
from rllib_integration.helper import join_dicts

from .dqn_experiment import DQNExperiment

# dqn_train.py's own settings, with their defaults (the file's values are merged on top).
TRAINING_DEFAULTS: dict[str, Any] = {
    # Training ends at the first criterion met; None: not used. Counted over --restore runs too.
    "stop": {
        "training_iteration": None,               # RLlib training iterations
        "num_env_steps_sampled_lifetime": None,   # env steps sampled
        "time_total_s": None,                     # s of wall time spent training (evaluations included)
    },
    "checkpoint_freq": 10,        # iterations between checkpoints (0: only the final one)
    "checkpoints_to_keep": 3,     # periodic checkpoints kept on disk; "best" and the final one are kept too
    # Greedy (no exploration) episodes on held-out seeds, judging which checkpoint is "best".
    "evaluation": {
        "interval": 10,           # iterations between evaluations (0: none)
        "episodes": 5,            # episodes per evaluation, seeds first_seed, first_seed + 1, ...
        "first_seed": 1_000_000,  # training episodes use seeds below this (see README)
    },
    "torch_threads": 1,           # torch threads of the training process (1: fastest on 2 cores, simulator included)
}


def closest(key: str, candidates: list[str]) -> str:
    """' (did you mean ...?)' for the nearest candidate, '' when none is near."""
    matches = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def read_yaml(path: Path | str) -> dict[str, Any]:
    """The file's top-level mapping; errors name the file and, for syntax errors, the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file '{path}' cannot be read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        if context is not None and getattr(error, "context", None) and (mark is None or context.line != mark.line):
            problem = f"{error.context} (line {context.line + 1}): {problem}"
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must be a YAML mapping of settings (got {type(data).__name__})")
    return data


def check_keys(given: Mapping[str, Any], defaults: Mapping[str, Any], where: str,
               free_form: tuple[str, ...] = ()) -> None:
    """Refuses keys the defaults do not have, naming the closest; nested dicts are checked too,
    except under the `free_form` paths (e.g. sensor names, which the user chooses)."""
    for key, value in given.items():
        path = f"{where}.{key}" if where else key
        if key not in defaults:
            raise ConfigError(f"unknown setting '{path}'{closest(key, list(defaults))}")
        if isinstance(value, Mapping) and isinstance(defaults[key], Mapping) and path not in free_form:
            check_keys(value, defaults[key], path, free_form)


@dataclass
class ConfigFile:
    """A config file split by who reads it."""

    path: Path
    rllib: dict[str, Any]                 # RLlib settings as written (Ray 1 names not mapped yet)
    training: dict[str, Any]              # TRAINING_DEFAULTS with the file's values
    env_config: dict[str, Any]            # {"carla": as written, "experiment": merged over DQNExperiment's defaults}


def load_config_file(path: Path | str) -> ConfigFile:
    """Reads and checks the file; the experiment and core configs are validated here, in the
    driver, so a mistake is reported as such (in a Ray env runner it surfaces as an unrelated error)."""
    data = read_yaml(path)
    env_config = data.pop("env_config", None) or {}
    if not isinstance(env_config, dict):
        raise ConfigError(f"{path}: env_config must be a mapping with 'carla' and 'experiment'")
    check_keys(env_config, {"carla": BASE_CORE_CONFIG, "experiment": DQNExperiment.default_config()}, "env_config",
               free_form=("env_config.experiment.hero.sensors",))
    training_given = {key: data.pop(key) for key in list(data) if key in TRAINING_DEFAULTS}
    check_keys(training_given, TRAINING_DEFAULTS, "")
    experiment = dict(env_config.get("experiment") or {})
    experiment["type"] = DQNExperiment
    try:
        experiment = DQNExperiment(experiment).config   # the defaults with the file's values on top
    except ConfigError as error:
        raise ConfigError(f"env_config.experiment: {error}") from None
    env = {"carla": dict(env_config.get("carla") or {}), "experiment": experiment}
    return ConfigFile(Path(path), data, join_dicts(TRAINING_DEFAULTS, training_given), env)
