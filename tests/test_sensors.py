"""Server-side sensors and collisions through the official 0.9.16 client.

One embedded server on the generated HighwayLoop town (cheap to load, a non-zero geographic
origin, straight three-lane carriageways with broken and solid lines, stop signs as static map
actors) serves every test.
"""
from __future__ import annotations

import math
from typing import Iterator

import pytest

from harness import ServerProcess, run_client, start_server
from rllib_integration.embedded.world.blueprints import TRAFFIC_SIGN_EXTENT_M

DT_S = 0.05

PRELUDE = """
import math
client, world, settings = connect_sync()
library = world.get_blueprint_library()
town = world.get_map()
client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in world.get_actors()
                         if a.type_id.startswith(("vehicle.", "walker.", "sensor."))], True)

def straight_start(length=80.0, lane_id=None):
    '''A lane centre from which the lane runs straight and level for `length` metres.'''
    for point in town.get_spawn_points():
        here = town.get_waypoint(point.location)
        if lane_id is not None and here.lane_id != lane_id:
            continue
        forward, origin = here.transform.get_forward_vector(), here.transform.location
        ahead = [here.next(d) for d in range(10, int(length) + 1, 10)]
        if all(a and abs((a[0].transform.rotation.yaw - here.transform.rotation.yaw + 180) % 360 - 180) < 0.2
               and abs((a[0].transform.location - origin).cross(forward).z) < 0.05
               and abs(a[0].transform.location.z - origin.z) < 0.05 for a in ahead):
            return here
    raise RuntimeError("no straight lane")

def pose_ahead(waypoint, metres, lift=0.3):
    t = waypoint.next(metres)[0].transform if metres else waypoint.transform
    return carla.Transform(t.location + carla.Location(z=lift), t.rotation)

def attach(type_id, parent, location=carla.Location(), **attributes):
    blueprint = library.find(type_id)
    for name, value in attributes.items():
        blueprint.set_attribute(name, str(value))
    sensor = world.spawn_actor(blueprint, carla.Transform(location), attach_to=parent)
    data = []
    sensor.listen(data.append)
    return sensor, data

def settle():
    time.sleep(0.5)   # the client opens sensor streams, and the last messages arrive, asynchronously

def along(vector, forward):
    return vector.x * forward.x + vector.y * forward.y

def finish(*sensors):
    '''Stops and destroys sensors: a client that exits while listening sometimes aborts in its teardown.'''
    for sensor in sensors:
        sensor.stop()
    for sensor in sensors:
        sensor.destroy()
    world.tick()
"""


@pytest.fixture(scope="module")
def highway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(tmp_path_factory.mktemp("highway"), town="HighwayLoop")
    yield process
    process.stop()


def test_rear_end_collision_reports_each_side_once_and_exchanges_momentum(highway):
    result = run_client(highway, PRELUDE, """
    start = straight_start()
    forward = start.transform.get_forward_vector()
    hero = world.spawn_actor(library.find("vehicle.lincoln.mkz_2017"), pose_ahead(start, 0))
    target = world.spawn_actor(library.find("vehicle.tesla.model3"), pose_ahead(start, 20))
    hero_sensor, hero_events = attach("sensor.other.collision", hero)
    target_sensor, target_events = attach("sensor.other.collision", target)
    for _ in range(5): world.tick()
    settle()
    hero.set_target_velocity(10.0 * forward)
    frames, gaps, target_speed = [], [], []
    hb, tb = hero.bounding_box, target.bounding_box
    for _ in range(60):
        frames.append(world.tick())
        front = along(hero.get_location(), forward) + hb.location.x + hb.extent.x
        rear = along(target.get_location(), forward) + tb.location.x - tb.extent.x
        gaps.append(rear - front)
        target_speed.append(along(target.get_velocity(), forward))
    settle()
    finish(hero_sensor, target_sensor)
    emit({"hero": [(e.frame, e.actor.id, e.other_actor.id, [e.normal_impulse.x, e.normal_impulse.y, e.normal_impulse.z])
                   for e in hero_events],
          "target": [(e.frame, e.actor.id, e.other_actor.id, [e.normal_impulse.x, e.normal_impulse.y])
                     for e in target_events],
          "ids": [hero.id, target.id], "frames": frames, "gaps": gaps, "target_speed": target_speed,
          "masses": [hero.get_physics_control().mass, target.get_physics_control().mass],
          "forward": [forward.x, forward.y], "hero_speed": along(hero.get_velocity(), forward)})
    """)
    hero_id, target_id = result["ids"]
    assert len(result["hero"]) == 1 and len(result["target"]) == 1, result
    frame, actor, other, impulse = result["hero"][0]
    assert (actor, other) == (hero_id, target_id)
    assert result["target"][0][:3] == [frame, target_id, hero_id]
    assert frame in result["frames"]
    forward = result["forward"]
    on_hero = impulse[0] * forward[0] + impulse[1] * forward[1]
    on_target = result["target"][0][3][0] * forward[0] + result["target"][0][3][1] * forward[1]
    assert on_hero < 0 < on_target and abs(on_hero + on_target) < 1e-3 * on_target
    # Momentum: the stopped car gained what the impulse gave it; at 10 m/s the reduced mass of
    # two ~1.8 t cars gives (1 + e) * mu * v, a few thousand N·s.
    index = result["frames"].index(frame)
    hero_mass, target_mass = result["masses"]
    gained = target_mass * result["target_speed"][index]
    assert abs(on_target - gained) < 0.02 * gained
    reduced_mass = hero_mass * target_mass / (hero_mass + target_mass)
    assert reduced_mass * 10.0 < on_target < 1.5 * reduced_mass * 10.0
    # Resolved physically: never interpenetrating in any snapshot, both moving the same way after.
    assert min(result["gaps"]) > -0.01
    assert result["gaps"][index - 1] > 0 and result["gaps"][-1] > 0.5
    assert 0 < result["hero_speed"] < result["target_speed"][-1] < 10.0


def test_car_hitting_a_walker_reports_it_and_pushes_the_walker(highway):
    result = run_client(highway, PRELUDE, """
    start = straight_start()
    forward = start.transform.get_forward_vector()
    hero = world.spawn_actor(library.find("vehicle.audi.tt"), pose_ahead(start, 0))
    walker = world.spawn_actor(library.find("walker.pedestrian.0001"), pose_ahead(start, 15, lift=1.0))
    sensor, events = attach("sensor.other.collision", hero)
    walker_sensor, walker_events = attach("sensor.other.collision", walker)
    for _ in range(3): world.tick()
    settle()
    start_walker = along(walker.get_location(), forward)
    hero.set_target_velocity(8.0 * forward)
    gaps = []
    hb, wb = hero.bounding_box, walker.bounding_box
    for _ in range(50):
        world.tick()
        gaps.append(along(walker.get_location(), forward) - wb.extent.x
                    - along(hero.get_location(), forward) - hb.location.x - hb.extent.x)
    settle()
    finish(sensor, walker_sensor)
    emit({"events": [(e.other_actor.id, e.other_actor.type_id, e.normal_impulse.length()) for e in events],
          "walker_events": [e.other_actor.id for e in walker_events], "ids": [hero.id, walker.id],
          "pushed": along(walker.get_location(), forward) - start_walker, "gaps": gaps})
    """)
    hero_id, walker_id = result["ids"]
    assert result["events"] and all(other == walker_id for other, _, _ in result["events"])
    assert result["events"][0][1] == "walker.pedestrian.0001"
    # A 70 kg pedestrian hit at 8 m/s: about (1 + e) * 70 kg * 8 m/s
    assert 500.0 < result["events"][0][2] < 800.0
    assert result["walker_events"] and set(result["walker_events"]) == {hero_id}
    assert result["pushed"] > 3.0
    assert min(result["gaps"]) > -0.01


def test_obstacle_sensor_reports_the_car_ahead_at_the_sweep_distance(highway):
    result = run_client(highway, PRELUDE, """
    start = straight_start()
    forward = start.transform.get_forward_vector()
    hero = world.spawn_actor(library.find("vehicle.lincoln.mkz_2017"), pose_ahead(start, 0))
    target = world.spawn_actor(library.find("vehicle.nissan.patrol"), pose_ahead(start, 18))
    mount = carla.Location(x=2.5, z=1.0)
    sensor, events = attach("sensor.other.obstacle", hero, mount, distance=30, hit_radius=0.5)
    dynamic_sensor, dynamic_events = attach("sensor.other.obstacle", hero, mount, distance=30, hit_radius=0.5,
                                            only_dynamics=True)
    short_sensor, short_events = attach("sensor.other.obstacle", hero, mount, distance=5, hit_radius=0.5)
    world.tick(); settle()
    frame = world.tick()
    settle()
    tb = target.bounding_box
    expected = (along(target.get_location(), forward) + tb.location.x - tb.extent.x
                - along(sensor.get_location(), forward) - 0.5)
    finish(sensor, dynamic_sensor, short_sensor)
    emit({"events": [(e.frame, e.actor.id, e.other_actor.id, e.distance) for e in events if e.frame == frame],
          "dynamic": [(e.other_actor.id, e.distance) for e in dynamic_events if e.frame == frame],
          "short": len(short_events), "expected": expected, "ids": [sensor.id, target.id]})
    """)
    sensor_id, target_id = result["ids"]
    assert len(result["events"]) == 1
    _, actor, other, distance = result["events"][0]
    assert (actor, other) == (sensor_id, target_id)   # CARLA names the sensor itself as the event's actor
    assert abs(distance - result["expected"]) < 0.02
    assert result["dynamic"] == [[target_id, distance]]
    assert result["short"] == 0


def test_gnss_matches_the_client_map_and_its_noise_has_the_configured_spread(highway):
    result = run_client(highway, PRELUDE, """
    start = straight_start()
    hero = world.spawn_actor(library.find("vehicle.tesla.model3"), pose_ahead(start, 0))
    exact_sensor, exact = attach("sensor.other.gnss", hero, carla.Location(x=1.0, y=-0.5, z=2.0))
    noisy = dict(noise_lat_stddev=2e-5, noise_lon_stddev=1e-5, noise_alt_bias=3.0, noise_seed=11)
    noisy_sensor, noisy_data = attach("sensor.other.gnss", hero, **noisy)
    twin_sensor, twin_data = attach("sensor.other.gnss", hero, **noisy)
    slow_sensor, slow_data = attach("sensor.other.gnss", hero, sensor_tick=0.5)
    world.tick(); settle()
    hero.set_target_velocity(5.0 * start.transform.get_forward_vector())
    frames = [world.tick() for _ in range(200)]
    settle()
    sensor_location = exact_sensor.get_location()
    finish(exact_sensor, noisy_sensor, twin_sensor, slow_sensor)
    def truth(data):
        g = town.transform_to_geolocation(data.transform.location)
        return [g.latitude, g.longitude, g.altitude]
    emit({"exact": [[d.latitude, d.longitude, d.altitude] + truth(d) for d in exact],
          "pose_error": exact[-1].transform.location.distance(sensor_location),
          "noisy": [[d.frame, d.latitude, d.longitude, d.altitude] + truth(d) for d in noisy_data],
          "twin": [[d.frame, d.latitude, d.longitude, d.altitude] + truth(d) for d in twin_data],
          "slow": [d.frame for d in slow_data if d.frame >= frames[0]], "frames": frames})
    """)
    assert len(result["exact"]) >= 200
    for lat, lon, alt, true_lat, true_lon, true_alt in result["exact"]:
        assert abs(lat - true_lat) < 1e-7 and abs(lon - true_lon) < 1e-7 and abs(alt - true_alt) < 1e-3
    assert result["pose_error"] < 1e-3
    noisy = [row for row in result["noisy"] if row[0] in result["frames"]]
    assert len(noisy) == 200
    lat_error = [row[1] - row[4] for row in noisy]
    lon_error = [row[2] - row[5] for row in noisy]
    alt_error = [row[3] - row[6] for row in noisy]
    assert abs(_stddev(lat_error) - 2e-5) < 0.15 * 2e-5 and abs(_mean(lat_error)) < 4e-6
    assert abs(_stddev(lon_error) - 1e-5) < 0.15 * 1e-5
    assert abs(_mean(alt_error) - 3.0) < 1e-3 and _stddev(alt_error) < 1e-3
    # Same noise_seed, same noise: reading by reading (a sensor draws only while a client listens,
    # and the two streams may have opened a tick apart).
    errors = [[[m - t for m, t in zip(row[1:4], row[4:7])] for row in result[name]] for name in ("noisy", "twin")]
    assert all(abs(a - b) < 1e-9 for first, second in zip(*errors) for a, b in zip(first, second))
    slow = result["slow"]
    assert len(slow) == 20 and all(b - a == 10 for a, b in zip(slow, slow[1:]))


def test_imu_follows_the_motion_in_the_sensor_frame(highway):
    result = run_client(highway, PRELUDE, """
    start = straight_start()
    hero = world.spawn_actor(library.find("vehicle.lincoln.mkz_2017"), pose_ahead(start, 0))
    sensor, data = attach("sensor.other.imu", hero, carla.Location(z=1.5))
    world.tick(); settle()
    samples = []
    def run(control, ticks):
        hero.apply_control(control)
        for _ in range(ticks):
            frame = world.tick()
            samples.append([frame, world.get_snapshot().timestamp.elapsed_seconds, along(hero.get_velocity(),
                            hero.get_transform().get_forward_vector()), hero.get_transform().rotation.yaw])
    run(carla.VehicleControl(), 3)
    run(carla.VehicleControl(throttle=1.0), 20)
    run(carla.VehicleControl(throttle=0.3, steer=0.3), 20)
    world.set_imui_sensor_gravity(9.0)
    run(carla.VehicleControl(brake=1.0), 60)
    world.set_imui_sensor_gravity(9.81)
    settle()
    finish(sensor)
    by_frame = {d.frame: [d.timestamp, [d.accelerometer.x, d.accelerometer.y, d.accelerometer.z],
                          [d.gyroscope.x, d.gyroscope.y, d.gyroscope.z], d.compass] for d in data}
    emit({"samples": samples, "imu": {str(k): v for k, v in by_frame.items()}})
    """)
    samples, imu = result["samples"], result["imu"]
    # one reading per tick, on the snapshot's frame and time
    for frame, elapsed, _, _ in samples:
        assert str(frame) in imu and abs(imu[str(frame)][0] - elapsed) < 1e-9
    at_rest = imu[str(samples[0][0])]
    assert max(abs(a - b) for a, b in zip(at_rest[1], [0.0, 0.0, 9.81])) < 1e-4 and at_rest[2] == [0.0, 0.0, 0.0]
    for (_, _, speed0, yaw0), (frame, _, speed1, yaw1) in zip(samples, samples[1:]):
        _, accel, gyro, compass = imu[str(frame)]
        north_error = (compass - math.radians(yaw1 + 90.0) + math.pi) % (2 * math.pi) - math.pi
        assert 0.0 <= compass < 2 * math.pi and abs(north_error) < 1e-4   # 0 = north (-y), east (+x) = pi/2
        if frame <= samples[22][0]:     # throttle, straight: forward acceleration = dv/dt
            assert abs(accel[0] - (speed1 - speed0) / DT_S) < 0.05
    accelerating = [imu[str(row[0])][1][0] for row in samples[4:23]]
    assert min(accelerating) > 2.0
    turning = samples[24:43]
    for (_, _, _, yaw0), (frame, _, speed, yaw1) in zip(turning, turning[1:]):
        _, accel, gyro, _ = imu[str(frame)]
        yaw_rate = math.radians((yaw1 - yaw0 + 180.0) % 360.0 - 180.0) / DT_S
        assert gyro[2] > 0.0 and abs(gyro[2] - yaw_rate) < 2e-3     # steering right turns yaw up: +z
        assert accel[1] > 0.0                                        # centripetal, toward the right (+y)
    stopped = imu[str(samples[-1][0])]
    assert abs(stopped[1][2] - 9.0) < 1e-4                         # set_imui_sensor_gravity


def test_lane_invasion_reports_broken_then_solid_markings(highway):
    result = run_client(highway, PRELUDE, """
    start = straight_start(lane_id=-3)
    right = town.get_waypoint(start.transform.location).get_right_lane()
    pose = pose_ahead(start, 0)
    pose.rotation.yaw += 15.0      # heading across the lanes to the right
    hero = world.spawn_actor(library.find("vehicle.tesla.model3"), pose)
    sensor, events = attach("sensor.other.lane_invasion", hero)
    world.tick(); settle()
    hero.set_target_velocity(8.0 * pose.get_forward_vector())
    for _ in range(52): world.tick()
    settle()
    finish(sensor)
    emit({"events": [[str(m.type) for m in e.crossed_lane_markings] for e in events],
          "marks": [str(start.right_lane_marking.type), str(right.right_lane_marking.type)],
          "lanes": [start.lane_id, right.lane_id, str(right.lane_type)]})
    """)
    assert result["marks"] == ["Broken", "Solid"], result
    crossed = [mark for event in result["events"] for mark in event]
    assert crossed and all(event for event in result["events"])
    assert [m for i, m in enumerate(crossed) if i == 0 or crossed[i - 1] != m] == ["Broken", "Solid"]


def test_obstacle_only_dynamics_ignores_static_map_actors(highway):
    result = run_client(highway, PRELUDE, """
    sign = world.get_actors().filter("traffic.stop")[0]
    facing = sign.get_transform().get_forward_vector()
    pose = carla.Transform(sign.get_location() - 12.0 * facing + carla.Location(z=0.3), sign.get_transform().rotation)
    hero = world.spawn_actor(library.find("vehicle.audi.tt"), pose)
    everything, everything_events = attach("sensor.other.obstacle", hero, carla.Location(z=1.0), distance=20)
    dynamic, dynamic_events = attach("sensor.other.obstacle", hero, carla.Location(z=1.0), distance=20,
                                     only_dynamics=True)
    world.tick(); settle()
    frame = world.tick()
    settle()
    to_sign = along(sign.get_location() - everything.get_location(), facing)
    finish(everything, dynamic)
    emit({"everything": [(e.other_actor.id, e.distance) for e in everything_events if e.frame == frame],
          "dynamic": len(dynamic_events), "sign": sign.id, "to_sign": to_sign})
    """)
    assert len(result["everything"]) == 1 and result["everything"][0][0] == result["sign"]
    # A sign's rpc bounding box is its trigger volume; the sweep hits its plate (half depth from the blueprint).
    expected = result["to_sign"] - TRAFFIC_SIGN_EXTENT_M[0] - 0.5
    assert abs(result["everything"][0][1] - expected) < 0.02
    assert result["dynamic"] == 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _stddev(values: list[float]) -> float:
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
