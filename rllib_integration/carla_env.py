"""CarlaEnv: a gymnasium.Env made of one experiment and one CarlaCore.

config = {"experiment": {"type": ExperimentClass or "module.Class", ...its config},
          "carla": {...BASE_CORE_CONFIG keys}}.
The experiment decides spaces, observations, reward and the end of an episode; the core owns
the simulator. reset(seed=) rebuilds the world from the seed, so on the embedded backend the
same seed and actions give the same episode.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

import gymnasium as gym

from .base_experiment import BaseExperiment
from .carla_core import SEED_LIMIT, CarlaCore
from .errors import ConfigError, EpisodeInterrupted

logger = logging.getLogger(__name__)


def experiment_class(spec: Any) -> type[BaseExperiment]:
    """The experiment class named by config["experiment"]["type"]: a class or "package.module.Class"."""
    if isinstance(spec, str) and "." in spec:
        module_name, _, class_name = spec.rpartition(".")
        try:
            spec = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"experiment.type '{spec}' cannot be imported ({error}); give an importable "
                              "'package.module.Class' or the class itself") from None
    if not (isinstance(spec, type) and issubclass(spec, BaseExperiment)):
        raise ConfigError(f"experiment.type {spec!r} is not a BaseExperiment subclass; set it to one, as a class "
                          "or as 'package.module.Class'")
    return spec


class CarlaEnv(gym.Env):
    """One hero in one simulator; see the module docstring for the config."""

    metadata = {"render_modes": []}

    def __init__(self, config: dict[str, Any]) -> None:
        experiment_config = dict(config.get("experiment") or {})
        self.experiment = experiment_class(experiment_config.get("type"))(experiment_config)
        self.action_space = self.experiment.get_action_space()
        self.observation_space = self.experiment.get_observation_space()
        self.core = CarlaCore(config.get("carla"))
        self.experiment.core = self.core
        self._world_ready = False
        self._last_observation: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """A new episode. With a seed (and at the first reset) the world is rebuilt from it: weather,
        traffic lights, background traffic, then the hero; without one, only the hero is respawned."""
        super().reset(seed=seed)
        if seed is not None or not self._world_ready:
            self.core.seed(int(self.np_random.integers(SEED_LIMIT)))
            self.core.setup_experiment(self.experiment.config)
            self._world_ready = True
        self.experiment.reset()
        self.core.reset_hero(self.experiment.config["hero"])
        sensor_data = self._first_tick()
        observation, info = self.experiment.get_observation(sensor_data)
        self._last_observation = observation
        return observation, info

    def _first_tick(self) -> dict[str, tuple[int, Any]]:
        """A failed first tick leaves a relaunched server and a respawned hero: tick again."""
        for _ in range(int(self.core.config["retries_on_error"])):
            try:
                return self.core.tick(None)
            except EpisodeInterrupted as interruption:
                logger.warning("reset: %s", interruption)
        return self.core.tick(None)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """One timestep. A simulator failure mid-episode ends the episode as truncated, with
        info["episode_interrupted"] saying why; the next reset() runs on the relaunched server."""
        control = self.experiment.compute_action(action)
        try:
            sensor_data = self.core.tick(control)
        except EpisodeInterrupted as interruption:
            logger.warning("step: %s", interruption)
            return self._last_observation, 0.0, False, True, {"episode_interrupted": str(interruption)}
        observation, info = self.experiment.get_observation(sensor_data)
        done = self.experiment.get_done_status(observation, self.core)
        terminated, truncated = done if isinstance(done, tuple) else (done, False)
        reward = self.experiment.compute_reward(observation, self.core)
        self._last_observation = observation
        return observation, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        """Stops the server and frees its ports; the env cannot be used afterwards."""
        self.core.close()
