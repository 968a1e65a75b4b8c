"""BaseExperiment: what an RL task adds on top of the simulator (spaces, actions, reward, end).

An experiment never talks to the server itself: CarlaEnv hands it the sensor data of each tick
and the CarlaCore (for the hero, world and map), so one experiment runs on both backends.
Subclasses extend default_config() (highway-env style) and implement the methods that raise
NotImplementedError here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import carla
import gymnasium as gym

from .helper import join_dicts

if TYPE_CHECKING:
    from .carla_core import CarlaCore


class BaseExperiment:
    """One task: its config is default_config() with the user's experiment config merged on top."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = join_dicts(self.default_config(), config or {})
        # Set by CarlaEnv before the first reset: the hero's state (speed, pose) for observations.
        self.core: CarlaCore | None = None

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """Every key with its default; subclasses update the parent's dict."""
        return {
            "hero": {
                "blueprint": "vehicle.lincoln.mkz_2017",   # blueprint id of the agent's vehicle
                # {name: {"type": blueprint id, "transform": "x,y,z[,roll,pitch,yaw]" (m, deg, relative to the
                # hero), other keys: blueprint attributes}}; "sensor.birdview" takes size (px), radius (m), mode
                "sensors": {},
                # "x,y,z[,roll,pitch,yaw]" (m, deg) strings; one is drawn at random each episode (occupied ones are
                # skipped); empty: the map's own spawn points
                "spawn_points": [],
            },
            "background_activity": {
                "n_vehicles": 0,         # autopilot vehicles driven by the Traffic Manager
                "n_walkers": 0,          # walkers on the navigation mesh (none if the town has no mesh)
                "tm_hybrid_mode": True,  # Traffic Manager hybrid physics: full physics only near the hero
                "seed": None,            # seed of NPC choices and the Traffic Manager; None: from reset(seed=)
            },
            "town": "Town05_Opt",        # town name; "_Opt" towns load with map layers (see enable_map_assets)
            # town used instead, with a warning, when `town` is not on the server (a fresh install has no
            # CARLA maps but the embedded server's generated towns); None: that is an error
            "fallback_town": None,
            "weather": "ClearNoon",      # a carla.WeatherParameters preset name
        }

    def reset(self) -> None:
        """Clears per-episode state; called before the hero is respawned."""

    def get_actions(self) -> dict[int, list[float]]:
        """Discrete actions: {index: [throttle, steer, brake, reverse, hand_brake]}."""
        raise NotImplementedError(f"{type(self).__name__} must define get_actions(), or override "
                                  "get_action_space() and compute_action() for other kinds of actions")

    def get_action_space(self) -> gym.spaces.Space:
        return gym.spaces.Discrete(len(self.get_actions()))

    def compute_action(self, action: Any) -> carla.VehicleControl:
        """The hero's control for an action of the action space."""
        throttle, steer, brake, reverse, hand_brake = self.get_actions()[int(action)]
        return carla.VehicleControl(throttle=float(throttle), steer=float(steer), brake=float(brake),
                                    reverse=bool(reverse), hand_brake=bool(hand_brake))

    def get_observation_space(self) -> gym.spaces.Space:
        raise NotImplementedError(f"{type(self).__name__} must define get_observation_space()")

    def get_observation(self, sensor_data: dict[str, tuple[int, Any]]) -> tuple[Any, dict[str, Any]]:
        """(observation, info) from one tick's {sensor name: (frame, data)}; info holds facts worth logging."""
        raise NotImplementedError(f"{type(self).__name__} must define get_observation(sensor_data)")

    def get_done_status(self, observation: Any, core: CarlaCore) -> tuple[bool, bool]:
        """(terminated, truncated): terminated when the task ends (crash, goal), truncated when a limit
        outside the task cuts it (time). A plain bool is taken as terminated (the original's form)."""
        raise NotImplementedError(f"{type(self).__name__} must define get_done_status(observation, core)")

    def compute_reward(self, observation: Any, core: CarlaCore) -> float:
        raise NotImplementedError(f"{type(self).__name__} must define compute_reward(observation, core)")


BASE_EXPERIMENT_CONFIG: dict[str, Any] = BaseExperiment.default_config()
