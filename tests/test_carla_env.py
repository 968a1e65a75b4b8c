"""CarlaEnv: gymnasium's contract, seeds, terminated vs truncated, clean close."""
from __future__ import annotations

import pytest

from core_harness import group_members, run_script
from rllib_integration import ports
from rllib_integration.carla_env import CarlaEnv
from rllib_integration.errors import ConfigError

ENV_PRELUDE = """
from rllib_integration.carla_env import CarlaEnv
from rllib_integration.cruise_experiment import CruiseExperiment
def make_env(**experiment):
    return CarlaEnv({"experiment": {"type": CruiseExperiment, "town": "Town01", **experiment},
                     "carla": {"timeout": 5.0}})
"""


def test_env_passes_gymnasium_env_checker(tmp_path):
    result = run_script(tmp_path, ENV_PRELUDE, """
    import warnings
    from gymnasium.utils.env_checker import check_env
    env = make_env()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    emit({"warnings": [str(w.message) for w in caught]})
    env.close()
    """)
    assert result.returncode == 0, result.describe()
    assert result.last == {"warnings": []}


def test_the_same_seed_replays_the_episode_and_another_seed_differs(tmp_path):
    result = run_script(tmp_path, ENV_PRELUDE, """
    env = make_env(background_activity={"n_vehicles": 8})
    def episode(seed):
        observation, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        spawn = env.core.hero.get_location()
        trace = [observation.tolist()]
        for _ in range(40):
            observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
            trace.append(observation.tolist() + [reward, terminated, truncated])
        npcs = sorted((round(a.get_location().x, 4), round(a.get_location().y, 4))
                      for a in env.core.world.get_actors().filter("vehicle.*") if a.id != env.core.hero.id)
        return {"spawn": [spawn.x, spawn.y], "trace": trace, "npcs": npcs}
    emit([episode(7), episode(7), episode(8)])
    env.close()
    """)
    first, again, other = result.last
    assert first == again, result.describe()
    assert first["spawn"] != other["spawn"]
    assert len(first["npcs"]) == 8


def test_the_time_limit_truncates_and_leaving_the_road_terminates(tmp_path):
    result = run_script(tmp_path, ENV_PRELUDE, """
    env = make_env(others={"max_time_episode": 1.0})
    env.reset(seed=1)
    endings = []
    for action, time_limit in (([0.2, 0.0], 1.0), ([1.0, 1.0], 60.0)):
        env.experiment.config["others"]["max_time_episode"] = time_limit
        env.reset()
        for step in range(400):
            observation, reward, terminated, truncated, info = env.step(np.array(action, np.float32))
            if terminated or truncated:
                endings.append({"step": step, "terminated": terminated, "truncated": truncated, "info": info,
                                "reward": reward})
                break
    emit(endings)
    env.close()
    """)
    timed_out, off_road = result.last
    assert timed_out["truncated"] and not timed_out["terminated"], result.describe()
    assert timed_out["step"] == 18   # 20 ticks of 0.05 s, the reset's first tick included
    assert off_road["terminated"] and not off_road["truncated"]
    assert off_road["info"]["off_road"] and off_road["reward"] < 0


def test_close_leaves_no_server_port_or_thread(tmp_path):
    result = run_script(tmp_path, ENV_PRELUDE, """
    import threading
    def threads():
        return len(os.listdir("/proc/self/task"))
    before = threads()
    env = make_env()
    env.reset(seed=0)
    for _ in range(10):
        env.step(env.action_space.sample())
    launcher = env.core._launcher
    opened = {"pid": launcher.process.pid, "ports": [launcher.rpc_port, launcher.streaming_port, env.core.tm_port],
              "threads": threads()}
    env.close()
    import gc; gc.collect()
    emit(dict(opened, before=before, after=threads(), python_threads=[t.name for t in threading.enumerate()]))
    """)
    out = result.last
    assert group_members(out["pid"]) == [], result.describe()
    assert all(ports.is_free(port) for port in out["ports"])
    assert out["python_threads"] == ["MainThread"]
    assert out["threads"] > out["before"] and out["after"] <= out["before"] + 1


def test_an_unknown_experiment_type_is_reported_before_any_server_starts():
    with pytest.raises(ConfigError, match="experiment.type 'nowhere.Experiment' cannot be imported"):
        CarlaEnv({"experiment": {"type": "nowhere.Experiment"}, "carla": {}})
    with pytest.raises(ConfigError, match="experiment.type None is not a BaseExperiment subclass"):
        CarlaEnv({"experiment": {}, "carla": {}})
    with pytest.raises(ConfigError, match="experiment.type <class 'dict'> is not a BaseExperiment subclass"):
        CarlaEnv({"experiment": {"type": dict}, "carla": {}})
