"""CarlaCore against real server processes: world set-up, hero, sensors, NPCs, failures, relaunch."""
from __future__ import annotations

import numpy as np
import pytest

from core_harness import group_members, launches, make_carla_root, run_script
from rllib_integration.errors import ConfigError, SensorTimeoutError
from rllib_integration.helper import join_dicts, parse_transform, post_process_image
from rllib_integration.sensors.sensor_interface import SensorInterface

CORE_PRELUDE = """
from rllib_integration.carla_core import CarlaCore
from rllib_integration.base_experiment import BASE_EXPERIMENT_CONFIG
from rllib_integration.helper import join_dicts
import carla
def experiment(**overrides):
    return join_dicts(BASE_EXPERIMENT_CONFIG, join_dicts({"town": "Town01"}, overrides))
def as_text(t):
    return f"{t.location.x},{t.location.y},{t.location.z},{t.rotation.roll},{t.rotation.pitch},{t.rotation.yaw}"
"""


def test_world_hero_sensors_and_spectator_follow_the_config(tmp_path):
    result = run_script(tmp_path, CORE_PRELUDE, """
    core = CarlaCore({"timestep": 0.1, "timeout": 5.0})
    core.setup_experiment(experiment(weather="HardRainSunset"))
    points = core.map.get_spawn_points()
    chosen = [as_text(points[5]), as_text(points[17])]
    sensors = {"collision": {"type": "sensor.other.collision"},
               "lanes": {"type": "sensor.other.lane_invasion", "transform": "0,0,0"}}
    hero_config = {"blueprint": "vehicle.tesla.model3", "sensors": sensors, "spawn_points": chosen}
    core.reset_hero(hero_config)
    first_hero = core.hero.id
    settings = core.world.get_settings()
    weather = core.world.get_weather()
    start = core.hero.get_location()
    distances = [min(start.distance(points[i].location) for i in (5, 17))]
    lane_events, frames, shapes = [], [], set()
    for step in range(80):
        data = core.tick(carla.VehicleControl(throttle=0.6, steer=0.15 if step > 10 else 0.0))
        frames.append(core.world.get_snapshot().frame)
        shapes.update((name, type(item).__name__, len(item)) for name, item in data.items())
        if "lanes" in data:
            lane_events.append([data["lanes"][0], data["lanes"][1]["crossed_lane_markings"]])
    spectator = core.world.get_spectator().get_location().distance(core.hero.get_location())
    core.reset_hero(hero_config)
    heroes = [a.id for a in core.world.get_actors().filter("vehicle.*")]
    sensors_alive = len(core.world.get_actors().filter("sensor.*"))
    distances.append(min(core.hero.get_location().distance(points[i].location) for i in (5, 17)))
    emit({"map": core.map.name, "sync": settings.synchronous_mode, "dt": settings.fixed_delta_seconds,
          "precipitation": weather.precipitation, "expected": carla.WeatherParameters.HardRainSunset.precipitation,
          "role": core.hero.attributes["role_name"], "type": core.hero.type_id, "distances": distances,
          "lane_events": lane_events, "frames": frames, "shapes": sorted(shapes), "spectator": spectator,
          "heroes": heroes, "first_hero": first_hero, "sensors": sensors_alive,
          "pid": core._launcher.process.pid})
    core.close()
    """)
    out = result.last
    assert out["map"].endswith("Town01"), result.describe()
    assert out["sync"] is True and abs(out["dt"] - 0.1) < 1e-9
    assert out["precipitation"] == out["expected"]
    assert out["role"] == "hero" and out["type"] == "vehicle.tesla.model3"
    assert max(out["distances"]) < 0.5
    assert out["frames"] == list(range(out["frames"][0], out["frames"][0] + 80))
    assert out["lane_events"], "turning across the lane reported no lane invasion"
    assert all(frame in out["frames"] and markings for frame, markings in out["lane_events"])
    assert {name for name, _, _ in out["shapes"]} <= {"collision", "lanes"}
    assert all(kind == "tuple" and size == 2 for _, kind, size in out["shapes"])
    assert out["spectator"] < 12.0
    assert len(out["heroes"]) == 1 and out["heroes"][0] != out["first_hero"]
    assert out["sensors"] == 2
    assert group_members(out["pid"]) == []


def test_per_tick_sensors_and_the_birdview_arrive_for_every_ticked_frame(tmp_path):
    result = run_script(tmp_path, CORE_PRELUDE, """
    core = CarlaCore({"timeout": 5.0})
    core.setup_experiment(experiment())
    core.reset_hero({"blueprint": "vehicle.lincoln.mkz_2017", "spawn_points": [], "sensors": {
        "gnss": {"type": "sensor.other.gnss"}, "imu": {"type": "sensor.other.imu", "transform": "0,0,1"},
        "bev": {"type": "sensor.birdview", "size": 84, "radius": 20}}})
    ticks = []
    for _ in range(10):
        data = core.tick(carla.VehicleControl(throttle=0.5))
        ticks.append({"frame": core.world.get_snapshot().frame,
                      "data": {name: [frame, list(value.shape), str(value.dtype)] for name, (frame, value) in data.items()}})
    emit(ticks)
    core.close()
    """)
    for tick in result.last:
        frame = tick["frame"]
        assert tick["data"] == {"gnss": [frame, [3], "float64"], "imu": [frame, [7], "float32"],
                                "bev": [frame, [84, 84, 3], "uint8"]}, result.describe()


def test_attaching_uses_a_running_server_and_leaves_it_running_asynchronous(tmp_path, server):
    result = run_script(tmp_path, CORE_PRELUDE, f"""
    core = CarlaCore({{"attach": "{server.host}:{server.port}", "timeout": 5.0}})
    core.setup_experiment(experiment())
    core.reset_hero({{"blueprint": "vehicle.lincoln.mkz_2017", "sensors": {{}}, "spawn_points": []}})
    frames = [core.tick(None) == {{}} for _ in range(5)]
    core.close()
    client = carla.Client("{server.host}", {server.port}); client.set_timeout(5.0)
    world = client.get_world()
    emit({{"frames": frames, "sync": world.get_settings().synchronous_mode,
          "vehicles": len(world.get_actors().filter("vehicle.*"))}})
    """)
    assert result.last == {"frames": [True] * 5, "sync": False, "vehicles": 0}, result.describe()
    assert server.process.poll() is None


def test_hero_skips_an_occupied_spawn_point(tmp_path):
    result = run_script(tmp_path, CORE_PRELUDE, """
    core = CarlaCore({"timeout": 5.0})
    core.setup_experiment(experiment())
    points = core.map.get_spawn_points()
    blocker = core.world.spawn_actor(core.world.get_blueprint_library().find("vehicle.audi.tt"), points[3])
    config = {"blueprint": "vehicle.lincoln.mkz_2017", "sensors": {}, "spawn_points": [as_text(points[3]), as_text(points[9])]}
    distances = []
    for episode in range(6):
        core.reset_hero(config)
        distances.append(core.hero.get_location().distance(points[9].location))
    emit(distances)
    core.close()
    """)
    assert max(result.last) < 0.5, result.describe()


def test_background_vehicles_drive_and_walkers_spawn_or_say_why_not(tmp_path):
    result = run_script(tmp_path, CORE_PRELUDE, """
    logging.basicConfig(level=logging.WARNING)
    core = CarlaCore({"timeout": 5.0})
    core.setup_experiment(experiment(background_activity={"n_vehicles": 12, "n_walkers": 6, "seed": 4}))
    core.reset_hero({"blueprint": "vehicle.lincoln.mkz_2017", "sensors": {}, "spawn_points": []})
    npcs = [a for a in core.world.get_actors().filter("vehicle.*") if a.attributes["role_name"] == "autopilot"]
    start = {a.id: a.get_location() for a in npcs}
    for _ in range(60):
        core.tick(None)
    moved = sum(a.get_location().distance(start[a.id]) > 2.0 for a in npcs)
    walkers = len(core.world.get_actors().filter("walker.pedestrian.*"))
    emit({"vehicles": len(npcs), "moved": moved, "walkers": walkers, "tm": core.traffic_manager.get_port() == core.tm_port})
    core.close()
    """)
    out = result.last
    assert out["vehicles"] == 12 and out["tm"], result.describe()
    assert out["moved"] >= 6
    assert out["walkers"] == 6 or "no walkers spawned, the town has no walker navigation mesh" in result.stderr


def test_bad_settings_are_reported_with_the_setting_and_the_fix(tmp_path):
    result = run_script(tmp_path, CORE_PRELUDE, """
    from rllib_integration.errors import ConfigError
    errors = {}
    def attempt(name, action):
        try:
            action()
            errors[name] = None
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}"
    attempt("unknown key", lambda: CarlaCore({"time_out": 3}))
    attempt("attach", lambda: CarlaCore({"attach": "localhost:1", "timeout": 0.5, "retries_on_error": 0}))
    core = CarlaCore({"timeout": 5.0})
    hero = {"blueprint": "vehicle.lincoln.mkz_2017", "sensors": {}, "spawn_points": []}
    attempt("town", lambda: core.setup_experiment(experiment(town="Town05_Opt")))
    attempt("fallback town", lambda: core.setup_experiment(experiment(town="Town05_Opt", fallback_town="Town99")))
    core.setup_experiment(experiment(town="Town05_Opt", fallback_town="GridCity"))
    fell_back_to = core.map.name
    attempt("weather", lambda: core.setup_experiment(experiment(weather="Sunny")))
    core.setup_experiment(experiment())
    attempt("spawn point", lambda: core.reset_hero(dict(hero, spawn_points=["1,2"])))
    attempt("blueprint", lambda: core.reset_hero(dict(hero, blueprint="vehicle.batmobile")))
    attempt("sensor type", lambda: core.reset_hero(dict(hero, sensors={"eye": {"type": "sensor.camera.fisheye"}})))
    attempt("sensor attribute", lambda: core.reset_hero(dict(hero, sensors={"c": {"type": "sensor.other.collision", "range": 3}})))
    attempt("camera", lambda: core.reset_hero(dict(hero, sensors={"front": {"type": "sensor.camera.rgb"}})))
    core.reset_hero(hero)
    emit({"errors": errors, "ticks": len([core.tick(None) for _ in range(3)]), "pid": core._launcher.process.pid,
          "fell_back_to": fell_back_to})
    core.close()
    """)
    out = result.last
    errors = out["errors"]
    assert "ConfigError: unknown 'carla' setting(s) time_out; known: host, timeout" in errors["unknown key"], result.describe()
    assert "ServerStartError" in errors["attach"] and "('attach' in the 'carla' config)" in errors["attach"]
    assert "town 'Town05_Opt' (experiment setting 'town') is not available" in errors["town"]
    assert "available: GridCity, HighwayLoop, Town01" in errors["town"]
    assert "town 'Town05_Opt' (experiment setting 'town') is not available" in errors["fallback town"]
    assert out["fell_back_to"].endswith("GridCity")
    assert "(experiment setting 'town') is not available on the embedded" in result.stderr
    assert "; using fallback_town 'GridCity' instead" in result.stderr
    assert "weather 'Sunny' is not a carla.WeatherParameters preset" in errors["weather"]
    assert "ClearNoon" in errors["weather"]
    assert "hero.spawn_points[0]: '1,2' is not a transform; write x,y,z[,roll,pitch,yaw]" in errors["spawn point"]
    assert "hero.blueprint 'vehicle.batmobile' is not a vehicle" in errors["blueprint"]
    assert "hero.sensors.eye: unknown sensor type 'sensor.camera.fisheye'" in errors["sensor type"]
    assert "sensor.birdview" in errors["sensor type"]
    assert "sensor.other.collision has no attribute 'range'" in errors["sensor attribute"]
    assert "hero.sensors.front: the simulator refused sensor.camera.rgb" in errors["camera"]
    assert "use backend 'carla'" in errors["camera"]
    assert out["ticks"] == 3
    assert group_members(out["pid"]) == []


KILL_MID_EPISODE = """
from rllib_integration.carla_env import CarlaEnv
env = CarlaEnv({{"experiment": {{"type": "rllib_integration.cruise_experiment.CruiseExperiment", "town": "Town01",
                               "others": {{"max_time_episode": 2.0}}}},
                "carla": {{"backend": "carla", "carla_root": {root!r}, "timeout": {timeout}, "retries_on_error": 2}}}})
env.reset(seed=3)
pids, interruptions, episodes, steps = [env.core._launcher.process.pid], [], 0, 0
for step in range(120):
    if step == 30:
        os.killpg(pids[0], signal.{signal})
    observation, reward, terminated, truncated, info = env.step(np.array([0.3, 0.0], np.float32))
    steps += 1
    if "episode_interrupted" in info:
        interruptions.append([step, info["episode_interrupted"], bool(truncated), bool(terminated)])
    if terminated or truncated:
        episodes += 1
        env.reset()
pids.append(env.core._launcher.process.pid)
emit({{"pids": pids, "interruptions": interruptions, "episodes": episodes, "steps": steps}})
env.close()
"""


def test_a_killed_real_backend_server_is_relaunched_and_stepping_goes_on(tmp_path):
    root = make_carla_root(tmp_path)
    result = run_script(tmp_path, KILL_MID_EPISODE.format(root=str(root), timeout=5.0, signal="SIGKILL"))
    out = result.last
    assert len(out["interruptions"]) == 1, result.describe()
    step, message, truncated, terminated = out["interruptions"][0]
    assert step == 30 and truncated and not terminated
    assert "was killed by SIGKILL" in message and "relaunched" in message
    assert out["steps"] == 120 and out["episodes"] >= 3
    assert [record["pgid"] for record in launches(root)] == out["pids"]
    assert not any(group_members(pgid) for pgid in out["pids"])


def test_a_hung_server_is_stopped_and_relaunched_after_the_client_timeout(tmp_path):
    root = make_carla_root(tmp_path)
    result = run_script(tmp_path, KILL_MID_EPISODE.format(root=str(root), timeout=1.0, signal="SIGSTOP"))
    out = result.last
    assert len(out["interruptions"]) == 1, result.describe()
    assert "time-out of 1000ms" in out["interruptions"][0][1]
    assert len(launches(root)) == 2
    assert not any(group_members(pgid) for pgid in out["pids"])


def test_when_relaunches_run_out_the_error_says_so(tmp_path):
    result = run_script(tmp_path, CORE_PRELUDE, """
    core = CarlaCore({"timeout": 5.0, "retries_on_error": 0})
    core.setup_experiment(experiment())
    core.reset_hero({"blueprint": "vehicle.lincoln.mkz_2017", "sensors": {}, "spawn_points": []})
    pid = core._launcher.process.pid
    os.killpg(pid, signal.SIGKILL)
    try:
        core.tick(None)
    except Exception as error:
        emit({"error": f"{type(error).__name__}: {error}", "pid": pid})
    core.close()
    """)
    assert result.last["error"].startswith("ServerUnavailableError: the simulator failed"), result.describe()
    assert "0 relaunches ('retries_on_error')" in result.last["error"]
    assert group_members(result.last["pid"]) == []


# --- in-process pieces: sensor interface and helpers ------------------------------------------


def test_sensor_interface_matches_frames_and_names_a_late_sensor():
    interface = SensorInterface()
    interface.register("gnss", "sensor.other.gnss", is_event=False)
    interface.register("collision", "sensor.other.collision", is_event=True)
    interface.put("gnss", 4, "old")
    interface.put("gnss", 5, "fix")
    interface.put("collision", 5, "first hit")
    interface.put("collision", 5, "second hit")
    assert interface.get_data(5, 1.0) == {"gnss": (5, "fix"), "collision": (5, "second hit")}
    interface.put("gnss", 6, "fix")
    assert interface.get_data(6, 1.0) == {"gnss": (6, "fix")}   # no event this frame
    with pytest.raises(SensorTimeoutError, match=r"sensor 'gnss' \(sensor.other.gnss\) sent no data for frame 7 "
                                                 r"within 0.2 s \(the 'timeout' setting\)"):
        interface.get_data(7, 0.2)


def test_join_dicts_merges_nested_keys_without_touching_its_inputs():
    base = {"hero": {"blueprint": "a", "sensors": {}}, "town": "T"}
    update = {"hero": {"sensors": {"x": {"type": "s"}}}, "others": {"framestack": 4}}
    merged = join_dicts(base, update)
    assert merged == {"hero": {"blueprint": "a", "sensors": {"x": {"type": "s"}}}, "town": "T",
                      "others": {"framestack": 4}}
    merged["hero"]["sensors"]["x"]["type"] = "changed"
    assert base["hero"]["sensors"] == {} and update["hero"]["sensors"]["x"]["type"] == "s"


def test_transforms_parse_with_optional_rotation_and_reject_other_shapes():
    transform = parse_transform("1.5,-2,0.5,10,20,90", "hero.spawn_points[0]")
    assert (transform.location.x, transform.location.y, transform.location.z) == (1.5, -2.0, 0.5)
    assert (transform.rotation.roll, transform.rotation.pitch, transform.rotation.yaw) == (10.0, 20.0, 90.0)
    assert parse_transform("1,2,3", "s").rotation.yaw == 0.0
    for text in ("1,2", "1,2,3,4", "a,b,c"):
        with pytest.raises(ConfigError, match=f"s: '{text}' is not a transform"):
            parse_transform(text, "s")


def test_post_process_image_makes_network_inputs():
    image = np.full((4, 6, 3), 255, np.uint8)
    gray = post_process_image(image)
    assert gray.shape == (4, 6, 1) and gray.dtype == np.float32
    assert np.allclose(gray, (255 - 128) / 128)
    assert post_process_image(image, normalized=False, grayscale=False).dtype == np.uint8
