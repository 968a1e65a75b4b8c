"""DQNExperiment on the embedded server: spaces, the original's endings and reward, the added switches."""
from __future__ import annotations

import pytest

from core_harness import run_script
from dqn_example.dqn_experiment import DQNExperiment, discrete_actions
from rllib_integration.errors import ConfigError

PRELUDE = """
import carla
from rllib_integration.carla_env import CarlaEnv
from dqn_example.dqn_experiment import DQNExperiment
COAST, FULL_STRAIGHT, FULL_RIGHT, MEDIUM_STRAIGHT = 0, 22, 23, 15
def make_env(**others):
    return CarlaEnv({"experiment": {"type": DQNExperiment, "town": "Town01",
                                    "hero": {"sensors": {"birdview": {"type": "sensor.birdview", "size": 32,
                                                                      "radius": 16.0}}},
                                    "others": {"framestack": 3, "max_time_episode": 40, **others}},
                     "carla": {"timeout": 10.0, "enable_rendering": False}})
def run(env, action, seed):
    env.reset(seed=seed)
    rewards = []
    while True:
        observation, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            return {"terminated": terminated, "truncated": truncated, "last_reward": reward, "steps": len(rewards),
                    "summary": info["summary"], "shape": list(observation.shape), "dtype": str(observation.dtype)}
"""


def test_the_action_table_is_the_originals():
    actions = discrete_actions()
    assert len(actions) == 29
    assert actions[0] == [0.0, 0.0, 0.0, False, False] and actions[1] == [0.0, 0.0, 1.0, False, False]
    assert actions[2][1] == 0.75 and actions[7][1] == -0.25
    assert actions[22] == [1.0, 0.0, 0.0, False, False] and actions[28] == [1.0, -0.25, 0.0, False, False]


def test_observations_are_uint8_frame_stacks():
    rgb = DQNExperiment({"hero": {"sensors": {"birdview": {"type": "sensor.birdview", "size": 32}}}})
    grey = DQNExperiment({"hero": {"sensors": {"birdview": {"type": "sensor.birdview", "size": 32}}},
                          "others": {"grayscale": True, "framestack": 2}})
    assert rgb.get_observation_space().shape == (32, 32, 12) and rgb.get_observation_space().dtype == "uint8"
    assert grey.get_observation_space().shape == (32, 32, 2)
    cropped = DQNExperiment({"hero": {"sensors": {"birdview": {"type": "sensor.birdview", "size": 48}}},
                             "others": {"grayscale": True, "framestack": 1, "crop_size": 32, "crop_ahead": 0.75}})
    assert cropped.get_observation_space().shape == (32, 32, 1)


def test_a_crop_outside_the_birdview_is_refused():
    with pytest.raises(ConfigError, match="crop_ahead must leave the crop inside the birdview: between 0.25 and 0.75"):
        DQNExperiment({"hero": {"sensors": {"birdview": {"type": "sensor.birdview", "size": 48}}},
                       "others": {"crop_size": 32, "crop_ahead": 0.9}})


def test_the_originals_endings_and_rewards(tmp_path):
    result = run_script(tmp_path, PRELUDE, """
    import warnings
    from gymnasium.utils.env_checker import check_env
    env = make_env(max_time_idle=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    emit({"warnings": [str(w.message) for w in caught],
          "idle": run(env, COAST, seed=1), "max_time": run(env, MEDIUM_STRAIGHT, seed=2)})
    env.close()
    """, timeout=120)
    assert result.returncode == 0, result.describe()
    outcome = result.last
    assert outcome["warnings"] == []
    idle, max_time = outcome["idle"], outcome["max_time"]
    assert idle["terminated"] and idle["summary"]["ending"] == "idle" and idle["last_reward"] < -99
    assert idle["steps"] == 12   # more than max_time_idle (10) idle steps, counted as the original does
    assert max_time["truncated"] and not max_time["terminated"] and max_time["steps"] == 40
    assert max_time["summary"]["ending"] == "max_time" and max_time["last_reward"] > 99
    assert max_time["shape"] == [32, 32, 9] and max_time["dtype"] == "uint8"
    assert max_time["summary"]["distance_m"] > 5


def test_collisions_and_leaving_the_road_end_the_episode_when_switched_on(tmp_path):
    result = run_script(tmp_path, PRELUDE, """
    env = make_env(reward="improved", progress="route", end_on_collision=True, end_on_off_road=True,
                   max_time_episode=200)
    off_road = run(env, FULL_RIGHT, seed=3)
    env.reset(seed=4)
    hero = env.core.hero.get_transform()
    ahead = carla.Transform(hero.location + 12.0 * hero.get_forward_vector() + carla.Location(z=0.3), hero.rotation)
    blueprint = env.core.world.get_blueprint_library().find("vehicle.tesla.model3")
    obstacle = env.core.world.spawn_actor(blueprint, ahead)
    steps = 0
    while True:
        observation, reward, terminated, truncated, info = env.step(FULL_STRAIGHT)
        steps += 1
        if terminated or truncated:
            break
    obstacle.destroy()
    emit({"off_road": off_road, "collision": {"terminated": terminated, "reward": reward, "steps": steps,
                                              "summary": info["summary"]}})
    env.close()
    """, timeout=120)
    assert result.returncode == 0, result.describe()
    off_road, collision = result.last["off_road"], result.last["collision"]
    assert off_road["terminated"] and off_road["summary"]["ending"] == "off_road" and off_road["last_reward"] < -40
    assert collision["terminated"] and collision["summary"]["ending"] == "collision"
    assert collision["summary"]["collisions"] == 1 and collision["reward"] < -40


def test_route_progress_follows_the_lane_and_the_improved_reward_caps_it_at_the_speed_limit(tmp_path):
    result = run_script(tmp_path, PRELUDE, """
    env = make_env(reward="improved", progress="route", max_time_episode=120, grayscale=True, speed_bars=True,
                   crop_size=16)
    env.reset(seed=5)
    rewards, speeds, limits = [], [], []
    for _ in range(120):
        observation, reward, terminated, truncated, info = env.step(MEDIUM_STRAIGHT)
        rewards.append(reward)
        speeds.append(env.experiment.get_speed(env.core.hero))
        limits.append(env.core.hero.get_speed_limit())
        if terminated or truncated:
            break
    bars = [int((observation[row, :, -1] == 255).sum()) for row in (0, 1)]
    emit({"rewards": rewards, "speeds": speeds, "limits": limits, "summary": info.get("summary"), "bars": bars,
          "shape": list(observation.shape)})
    env.close()
    """, timeout=120)
    assert result.returncode == 0, result.describe()
    outcome = result.last
    summary = outcome["summary"]
    assert summary is not None and summary["route_m"] > 0.8 * summary["distance_m"] > 0
    assert max(outcome["rewards"]) <= 1.0 + 1e-6
    assert 0 < summary["route_completion"] < 1
    # speed and limit bars on the top rows of the 16 px crop, full width at 80 km/h
    assert outcome["shape"] == [16, 16, 3]
    assert outcome["bars"] == [round(outcome["speeds"][-1] / 5), round(outcome["limits"][-1] / 5)]
