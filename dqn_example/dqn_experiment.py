"""DQNExperiment: drive along the roads from a birdview, with 29 discrete controls.

The original experiment (CARLA's rllib-integration DQN example) is kept as reward "original":
Δdistance + 0.05·Δspeed below 20 km/h, −0.5 off a driving/parking lane or against the lane
direction, −0.05 for steering away from the lane when far off its heading, −40 falling,
−100 idle, +100 reaching the episode's time. Added, each switchable under `others`:
  - ending the episode on a collision or on leaving the road (the original drove on);
  - progress measured along the road instead of as straight-line distance (route_progress.py);
  - reward "improved": progress up to the map's speed limit, a penalty for speeding and for
    being away from the lane centre (agents trained on the original sat ~1.6 m off-centre and
    sped wherever the road allowed), penalties for collisions and leaving the road.
Every step's info is empty except the last one's "summary" (distance, collisions, ending, ...),
which the callbacks log and the evaluation reports; infos stay small in the replay buffer.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

import carla
import gymnasium as gym
import numpy as np

from rllib_integration.base_experiment import BaseExperiment
from rllib_integration.carla_core import CarlaCore
from rllib_integration.errors import ConfigError
from rllib_integration.helper import post_process_image

from .route_progress import RouteProgress

KMH_PER_MPS = 3.6
# The original's 29 controls: coast, brake, then throttle {0, 0.3, 0.6, 1.0} × steer {0, ±0.25, ±0.5, ±0.75}.
THROTTLES = (0.0, 0.3, 0.6, 1.0)
STEERS = (0.75, 0.5, 0.25, -0.75, -0.5, -0.25)
# Original reward constants.
IDLE_SPEED_KMH = 1.0              # below this the hero counts as idle
FALLING_Z_M = -0.5                # below this height the hero has fallen off the world
SPEED_BONUS_BELOW_KMH = 20.0      # the original rewards accelerating below this speed ...
SPEED_BONUS_PER_KMH = 0.05        # ... by this much per km/h gained
LANE_PENALTY = 0.5                # off a driving/parking lane, or driving against the lane
STEER_PENALTY = 0.05              # steering away from the lane heading when far off it
STEER_PENALTY_SIN = 0.4           # "far off": |sin(heading error)| above this
FALLING_REWARD = -40.0
IDLE_REWARD = -100.0
MAX_TIME_REWARD = 100.0
DEFAULT_SPEED_LIMIT_KMH = 30.0    # when the simulator reports none (0), CARLA's urban default
SPEED_BAR_FULL_KMH = 80.0         # speed bars (others.speed_bars) span the image width at this speed
SPEEDING_TOLERANCE = 1.1         # statistics: "speeding" is driving above the limit by more than 10 %
ROAD_LANE_TYPES = (carla.LaneType.Driving, carla.LaneType.Parking)   # the original's allowed lane types
ENDINGS = ("collision", "off_road", "idle", "falling", "max_time")
INTERRUPTED = "interrupted"   # not an ending of the experiment: the simulator failed and CarlaEnv cut the episode


def discrete_actions() -> dict[int, list[float]]:
    """{index: [throttle, steer, brake, reverse, hand_brake]} in the original's order."""
    actions = [[0.0, 0.0, 0.0, False, False], [0.0, 0.0, 1.0, False, False]]
    actions += [[0.0, steer, 0.0, False, False] for steer in STEERS]
    for throttle in THROTTLES[1:]:
        actions.append([throttle, 0.0, 0.0, False, False])
        actions += [[throttle, steer, 0.0, False, False] for steer in STEERS]
    return dict(enumerate(actions))


def heading_error(hero_forward: carla.Vector3D, lane_forward: carla.Vector3D) -> float:
    """Signed angle (rad) from the hero's heading to the lane's, in the ground plane."""
    cross = hero_forward.x * lane_forward.y - hero_forward.y * lane_forward.x
    dot = hero_forward.x * lane_forward.x + hero_forward.y * lane_forward.y
    return -math.atan2(cross, dot)


class DQNExperiment(BaseExperiment):
    """See the module docstring; config under `others` documented in default_config()."""

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        config = super().default_config()
        config["hero"]["sensors"] = {
            "birdview": {"type": "sensor.birdview", "size": 300, "radius": 15.0},   # px, m (the original's)
            "collision": {"type": "sensor.other.collision"},
            "lane_invasion": {"type": "sensor.other.lane_invasion"},
        }
        config["others"] = {
            "framestack": 4,              # birdview frames stacked along the channels, oldest first
            "grayscale": False,           # True: one grey channel per frame instead of RGB (3x less to learn from)
            "max_time_idle": 600,         # steps below 1 km/h in a row before the episode ends
            "max_time_episode": 6400,     # steps before the episode is cut (truncated)
            "reward": "original",         # "original" (CARLA's example) or "improved" (see the module docstring)
            "progress": "distance",       # "distance": straight-line Δdistance (original); "route": along the road
            "end_on_collision": False,    # True: a collision ends the episode (terminated)
            "end_on_off_road": False,     # True: leaving the driving lanes ends the episode (terminated)
            "speed_bars": False,          # True: each frame's top two rows show the speed and the speed limit as bars
            "crop_size": None,            # px: observe a square of this size cut from the birdview; None: all of it
            "crop_ahead": 0.75,           # fraction of the crop's height in front of the hero (the birdview centres it)
            # reward "improved" only:
            "speeding_penalty": 2.0,      # per step, times the fraction above the speed limit
            "centering_penalty": 0.5,     # per step and metre away from the lane centre
            "collision_penalty": 50.0,    # once, on a collision
            "off_road_penalty": 50.0,     # once, on leaving the road
            "wrong_way_penalty": 0.5,     # per step against the lane direction
        }
        return config

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        others = self.config["others"]
        for key, allowed in (("reward", ("original", "improved")), ("progress", ("distance", "route"))):
            if others[key] not in allowed:
                raise ConfigError(f"others.{key} is {others[key]!r}; set it to one of {', '.join(map(repr, allowed))}")
        birdview = self.config["hero"]["sensors"].get("birdview") or {}
        if birdview.get("type") != "sensor.birdview" or not isinstance(birdview.get("size"), int):
            raise ConfigError("hero.sensors.birdview must be {type: sensor.birdview, size: PIXELS, radius: METRES}: "
                              "DQNExperiment observes the birdview")
        if birdview.get("mode", "rgb") != "rgb":
            raise ConfigError("hero.sensors.birdview.mode must be 'rgb' (set others.grayscale for one channel)")
        if not isinstance(others["framestack"], int) or others["framestack"] < 1:
            raise ConfigError(f"others.framestack must be a whole number ≥ 1 (got {others['framestack']!r})")
        self.frame_stack = others["framestack"]
        self.max_time_idle = others["max_time_idle"]
        self.max_time_episode = others["max_time_episode"]
        self._channels = 1 if others["grayscale"] else 3
        self._size, self._crop = self._crop_window(birdview["size"], others["crop_size"], others["crop_ahead"])
        self.last_heading_deviation = 0.0
        self.last_action: carla.VehicleControl | None = None

    @staticmethod
    def _crop_window(birdview_size: int, crop_size: int | None, ahead: float) -> tuple[int, tuple[slice, slice]]:
        """(observed size, (rows, columns) of the birdview observed); the birdview has the hero at its centre."""
        if crop_size is None:
            return birdview_size, (slice(None), slice(None))
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or not 0 < crop_size <= birdview_size:
            raise ConfigError(f"others.crop_size must be a whole number of pixels up to the birdview's size "
                              f"({birdview_size}), or None (got {crop_size!r})")
        top = round(birdview_size / 2 - ahead * crop_size)
        if not 0 <= top <= birdview_size - crop_size:
            half_spare = (birdview_size / crop_size - 1) / 2
            raise ConfigError(f"others.crop_ahead must leave the crop inside the birdview: between "
                              f"{0.5 - half_spare:.2f} and {0.5 + half_spare:.2f} (got {ahead!r})")
        left = (birdview_size - crop_size) // 2
        return crop_size, (slice(top, top + crop_size), slice(left, left + crop_size))

    def reset(self) -> None:
        self.time_idle = 0
        self.time_episode = 0
        self.done_time_idle = self.done_falling = self.done_time_episode = False
        self.done_collision = self.done_off_road = self.off_road = False
        self.last_location: carla.Location | None = None
        self.last_velocity = 0.0
        self.last_heading_deviation = 0.0
        self.last_action = None
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self._route: RouteProgress | None = None
        self._collided_with: int | None = None
        self._new_collision = False
        self._info: dict[str, Any] = {}
        self._stats = {"steps": 0, "distance_m": 0.0, "route_m": 0.0, "collisions": 0, "lane_invasions": 0,
                       "speeding_steps": 0, "abs_offset_sum_m": 0.0, "heading_deviation_sum": 0.0,
                       "heading_deviation_steps": 0, "speed_sum_kmh": 0.0, "limit_distance_m": 0.0,
                       "off_road_steps": 0}

    # --- spaces and actions ------------------------------------------------------------

    def get_actions(self) -> dict[int, list[float]]:
        return discrete_actions()

    def get_observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(0, 255, (self._size, self._size, self._channels * self.frame_stack), np.uint8)

    def compute_action(self, action: Any) -> carla.VehicleControl:
        self.last_action = super().compute_action(action)
        return self.last_action

    # --- observation ---------------------------------------------------------------------

    def get_observation(self, sensor_data: dict[str, tuple[int, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        birdview = np.ascontiguousarray(sensor_data["birdview"][1][self._crop])
        image = post_process_image(birdview, normalized=False, grayscale=self._channels == 1)
        if self.config["others"]["speed_bars"]:
            self._draw_speed_bars(image)
        if not self._frames:
            self._frames.extend([image] * self.frame_stack)
        self._frames.append(image)
        self._note_events(sensor_data)
        self._info = {}   # compute_reward() adds the summary at the end (CarlaEnv returns this very dict)
        return np.concatenate(self._frames, axis=2), self._info

    def _draw_speed_bars(self, image: np.ndarray) -> None:
        """Row 0: the hero's speed, row 1: the speed limit, as white bars on black, full width at
        SPEED_BAR_FULL_KMH. Why: from a birdview, speed shows only as motion between frames, invisible
        when starting off (a car pressing the throttle and one standing still look the same for
        several steps), and the speed limit does not show at all."""
        hero = self.core.hero
        width = image.shape[1]
        for row, kmh in enumerate((self.get_speed(hero), hero.get_speed_limit() or DEFAULT_SPEED_LIMIT_KMH)):
            filled = min(int(round(kmh / SPEED_BAR_FULL_KMH * width)), width)
            image[row, :filled] = 255
            image[row, filled:] = 0

    def _note_events(self, sensor_data: dict[str, tuple[int, Any]]) -> None:
        """Counts collisions (a new one: after a collision-free tick, or with another actor) and lane invasions."""
        collision = sensor_data.get("collision")
        other = collision[1]["other_actor_id"] if collision else None
        self._new_collision = other is not None and other != self._collided_with
        self._collided_with = other
        self._stats["collisions"] += self._new_collision
        self._stats["lane_invasions"] += "lane_invasion" in sensor_data
        self.done_collision = other is not None and self.config["others"]["end_on_collision"]

    # --- end of episode -----------------------------------------------------------------

    @staticmethod
    def get_speed(hero: carla.Vehicle) -> float:
        """km/h."""
        return KMH_PER_MPS * hero.get_velocity().length()

    def get_done_status(self, observation: np.ndarray, core: CarlaCore) -> tuple[bool, bool]:
        hero = core.hero
        self.done_time_idle = self.max_time_idle < self.time_idle
        self.time_idle = 0 if self.get_speed(hero) > IDLE_SPEED_KMH else self.time_idle + 1
        self.time_episode += 1
        self.done_time_episode = self.time_episode >= self.max_time_episode
        self.done_falling = hero.get_location().z < FALLING_Z_M
        self.off_road = core.map.get_waypoint(hero.get_location(), project_to_road=False,
                                              lane_type=carla.LaneType.Driving) is None
        self.done_off_road = self.off_road and self.config["others"]["end_on_off_road"]
        terminated = self.done_collision or self.done_off_road or self.done_time_idle or self.done_falling
        return terminated, self.done_time_episode and not terminated

    @property
    def ending(self) -> str | None:
        """Why the episode ended (one of ENDINGS), None while it goes on."""
        flags = (self.done_collision, self.done_off_road, self.done_time_idle, self.done_falling,
                 self.done_time_episode)
        return next((name for name, flag in zip(ENDINGS, flags) if flag), None)

    # --- reward ----------------------------------------------------------------------

    def compute_reward(self, observation: np.ndarray, core: CarlaCore) -> float:
        hero, town = core.hero, core.map
        transform = hero.get_transform()
        location = transform.location
        speed = self.get_speed(hero)
        if self.last_location is None:
            self.last_location = location
            self._route = RouteProgress(town)
            self._route.reset(location)
        distance = math.hypot(location.x - self.last_location.x, location.y - self.last_location.y)
        route = self._route.advance(location)
        progress = route if self.config["others"]["progress"] == "route" else distance
        lane = town.get_waypoint(location, project_to_road=False, lane_type=carla.LaneType.Any)
        centre = town.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Driving)
        offset = (location - centre.transform.location).dot(centre.transform.get_right_vector())
        speed_limit = hero.get_speed_limit() or DEFAULT_SPEED_LIMIT_KMH
        if self.config["others"]["reward"] == "original":
            reward = self._original_reward(progress, speed, transform, lane)
        else:
            reward = self._improved_reward(progress, speed, speed_limit, offset, transform, lane,
                                           float(core.config["timestep"]))
        self._record(distance, route, speed, speed_limit, offset, float(core.config["timestep"]))
        self.last_location = location
        self.last_velocity = speed
        return reward

    def _record(self, distance: float, route: float, speed: float, speed_limit: float, offset: float,
                timestep: float) -> None:
        """Adds this step to the episode's statistics; at the end, puts their summary in the step's info."""
        stats = self._stats
        stats["steps"] += 1
        stats["distance_m"] += distance
        stats["route_m"] += route
        stats["speed_sum_kmh"] += speed
        stats["limit_distance_m"] += speed_limit / KMH_PER_MPS * timestep
        stats["speeding_steps"] += speed > SPEEDING_TOLERANCE * speed_limit
        stats["off_road_steps"] += self.off_road
        stats["abs_offset_sum_m"] += abs(offset)
        if self.last_heading_deviation > 0:
            stats["heading_deviation_sum"] += self.last_heading_deviation
            stats["heading_deviation_steps"] += 1
        ending = self.ending
        if ending is not None:
            self._info["summary"] = self.summary(ending)

    def summary(self, ending: str) -> dict[str, Any]:
        """The episode in numbers; "route_completion" is the route progress over what driving at the speed
        limit for the whole max_time_episode would cover."""
        stats, steps = self._stats, max(self._stats["steps"], 1)
        limit_route_m = stats["limit_distance_m"] / steps * self.max_time_episode
        return {
            "ending": ending,
            "steps": stats["steps"],
            "distance_m": stats["distance_m"],
            "route_m": stats["route_m"],
            "route_completion": min(max(stats["route_m"], 0.0) / limit_route_m, 1.0) if limit_route_m else 0.0,
            "collisions": stats["collisions"],
            "lane_invasions": stats["lane_invasions"],
            "off_road_steps": stats["off_road_steps"],
            "speeding_fraction": stats["speeding_steps"] / steps,
            "mean_speed_kmh": stats["speed_sum_kmh"] / steps,
            "mean_abs_offset_m": stats["abs_offset_sum_m"] / steps,
            "heading_deviation": stats["heading_deviation_sum"] / max(stats["heading_deviation_steps"], 1),
        }

    def _original_reward(self, progress: float, speed: float, transform: carla.Transform,
                         lane: carla.Waypoint | None) -> float:
        reward = progress
        if speed < SPEED_BONUS_BELOW_KMH:
            reward += SPEED_BONUS_PER_KMH * (speed - self.last_velocity)
        if lane is None or lane.lane_type not in ROAD_LANE_TYPES:
            reward -= LANE_PENALTY
            self.last_heading_deviation = math.pi
        elif lane.is_junction:
            self.last_heading_deviation = 0.0
        else:
            angle = heading_error(transform.get_forward_vector(), lane.transform.get_forward_vector())
            self.last_heading_deviation = abs(angle)
            if math.cos(angle) < 0:
                reward -= LANE_PENALTY
            elif abs(math.sin(angle)) > STEER_PENALTY_SIN:
                steer = self.last_action.steer if self.last_action is not None else 0.0
                if steer * math.sin(angle) >= 0:
                    reward -= STEER_PENALTY
        if self.done_falling:
            reward += FALLING_REWARD
        if self.done_time_idle:
            reward += IDLE_REWARD
        if self.done_time_episode:
            reward += MAX_TIME_REWARD
        return reward

    def _improved_reward(self, progress: float, speed: float, speed_limit: float, offset: float,
                         transform: carla.Transform, lane: carla.Waypoint | None, timestep: float) -> float:
        """Progress in units of "a step at the speed limit" (1.0 at most), minus the penalties."""
        others = self.config["others"]
        limit_step_m = speed_limit / KMH_PER_MPS * timestep
        reward = min(progress / limit_step_m, 1.0)
        reward -= others["speeding_penalty"] * max(speed / speed_limit - 1.0, 0.0)
        reward -= others["centering_penalty"] * abs(offset)
        if lane is None or lane.lane_type not in ROAD_LANE_TYPES:
            self.last_heading_deviation = math.pi
        elif not lane.is_junction:
            angle = heading_error(transform.get_forward_vector(), lane.transform.get_forward_vector())
            self.last_heading_deviation = abs(angle)
            if math.cos(angle) < 0:
                reward -= others["wrong_way_penalty"]
        else:
            self.last_heading_deviation = 0.0
        if self._new_collision:
            reward -= others["collision_penalty"]
        if self.done_off_road:
            reward -= others["off_road_penalty"]
        if self.done_falling:
            reward += FALLING_REWARD
        if self.done_time_idle:
            reward += IDLE_REWARD
        return reward
