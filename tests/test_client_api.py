"""The official carla 0.9.16 client against the embedded server: world, map, settings, actors."""
from __future__ import annotations

from harness import SYNC_PRELUDE, run_client


def test_server_version_matches_client(server):
    assert run_client(server, "emit([connect().get_server_version(), connect().get_client_version()])") == ["0.9.16", "0.9.16"]


def test_map_has_name_opendrive_and_spawn_points_on_driving_lanes(server):
    result = run_client(server, """
    world = connect().get_world()
    town = world.get_map()
    points = town.get_spawn_points()
    on_lane = [town.get_waypoint(p.location, project_to_road=False, lane_type=carla.LaneType.Driving) is not None
               for p in points]
    emit({"name": town.name, "xodr": len(town.to_opendrive()), "points": len(points), "on_lane": sum(on_lane),
          "topology": len(town.get_topology())})
    """)
    assert result["name"].endswith("Town01")
    assert result["xodr"] > 100_000
    assert result["points"] > 100
    assert result["on_lane"] == result["points"]
    assert result["topology"] > 50


def test_settings_round_trip_and_synchronous_ticks_advance_one_frame_each(server):
    result = run_client(server, SYNC_PRELUDE, """
    applied = world.get_settings()
    first = world.tick()
    frames = [world.tick() for _ in range(5)]
    snapshot = world.get_snapshot()
    settings.synchronous_mode = False
    settings.fixed_delta_seconds = None
    world.apply_settings(settings)
    emit({"sync": applied.synchronous_mode, "dt": applied.fixed_delta_seconds, "first": first, "frames": frames,
          "snapshot_frame": snapshot.frame, "snapshot_dt": snapshot.timestamp.delta_seconds,
          "async_dt": world.get_settings().fixed_delta_seconds})
    """)
    assert result["sync"] is True and abs(result["dt"] - 0.05) < 1e-9
    assert result["frames"] == list(range(result["first"] + 1, result["first"] + 6))
    assert result["snapshot_frame"] == result["frames"][-1]
    assert abs(result["snapshot_dt"] - 0.05) < 1e-6
    assert result["async_dt"] is None


def test_asynchronous_mode_keeps_simulating_in_real_time(server):
    result = run_client(server, """
    world = connect().get_world()
    settings = world.get_settings(); settings.synchronous_mode = False; settings.fixed_delta_seconds = None
    world.apply_settings(settings)
    start = world.wait_for_tick().timestamp
    time.sleep(1.0)
    end = world.wait_for_tick().timestamp
    emit({"sim": end.elapsed_seconds - start.elapsed_seconds, "frames": end.frame - start.frame})
    """)
    assert 0.7 < result["sim"] < 1.5
    assert result["frames"] >= 10


def test_weather_set_and_get(server):
    result = run_client(server, """
    world = connect().get_world()
    world.set_weather(carla.WeatherParameters.HardRainSunset)
    weather = world.get_weather()
    world.set_weather(carla.WeatherParameters.ClearNoon)
    emit([weather.precipitation, weather.sun_altitude_angle, weather.cloudiness])
    """)
    expected = run_client(server, """
    w = carla.WeatherParameters.HardRainSunset
    emit([w.precipitation, w.sun_altitude_angle, w.cloudiness])
    """)
    assert result == expected


def test_blueprint_library_has_real_vehicles_with_attributes(server):
    result = run_client(server, """
    library = connect().get_world().get_blueprint_library()
    mkz = library.find("vehicle.lincoln.mkz_2017")
    emit({"vehicles": len(library.filter("vehicle.*")), "ids": sorted(b.id for b in library.filter("vehicle.*")),
          "generation": mkz.get_attribute("generation").as_int(),
          "wheels": mkz.get_attribute("number_of_wheels").as_int(),
          "base_type": mkz.get_attribute("base_type").as_str(),
          "colors": list(mkz.get_attribute("color").recommended_values),
          "role_modifiable": mkz.get_attribute("role_name").is_modifiable,
          "bikes": [b.id for b in library.filter("vehicle.*") if b.get_attribute("base_type").as_str() == "bicycle"]})
    """)
    assert result["vehicles"] >= 12
    assert {"vehicle.lincoln.mkz_2017", "vehicle.tesla.model3"} <= set(result["ids"])
    assert result["generation"] == 1 and result["wheels"] == 4 and result["base_type"] == "car"
    assert len(result["colors"]) > 1 and result["role_modifiable"]
    assert result["bikes"]


def test_spawned_vehicle_drives_forward_under_throttle_and_stops_with_brake(server):
    result = run_client(server, SYNC_PRELUDE, """
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), spawn_points[0])
    world.tick()
    start = car.get_transform()
    car.apply_control(carla.VehicleControl(throttle=1.0))
    for _ in range(60): world.tick()
    moving = car.get_velocity().length()
    car.apply_control(carla.VehicleControl(brake=1.0))
    for _ in range(80): world.tick()
    end = car.get_transform()
    forward = start.get_forward_vector()
    delta = end.location - start.location
    control = car.get_control()
    emit({"moving": moving, "stopped": car.get_velocity().length(), "along": delta.dot(forward),
          "across": abs(delta.cross(forward).z), "brake": control.brake, "type": car.type_id,
          "alive_actors": [a.id for a in world.get_actors().filter("vehicle.*")], "id": car.id})
    cleanup()
    """)
    assert result["moving"] > 10.0
    assert result["stopped"] < 0.01
    assert result["along"] > 20.0 and result["across"] < 0.5
    assert result["brake"] == 1.0
    assert result["alive_actors"] == [result["id"]]


def test_spawning_into_an_occupied_spot_fails_like_carla(server):
    result = run_client(server, SYNC_PRELUDE, """
    bp = library.find("vehicle.lincoln.mkz_2017")
    first = world.spawn_actor(bp, spawn_points[1])
    second = world.try_spawn_actor(bp, spawn_points[1])
    try:
        world.spawn_actor(bp, spawn_points[1]); error = None
    except RuntimeError as e:
        error = str(e)
    elsewhere = world.try_spawn_actor(bp, spawn_points[2])
    emit({"second": second is None, "error": error, "elsewhere": elsewhere is not None})
    cleanup()
    """)
    assert result["second"] is True
    assert "collision at spawn position" in result["error"]
    assert result["elsewhere"] is True


def test_set_transform_target_velocity_and_physics_off(server):
    result = run_client(server, SYNC_PRELUDE, """
    car = world.spawn_actor(library.find("vehicle.audi.tt"), spawn_points[3])
    world.tick()
    target = carla.Transform(spawn_points[4].location + carla.Location(z=-0.3), spawn_points[4].rotation)
    car.set_transform(target)
    world.tick()
    placed = car.get_location().distance(target.location)
    car.set_target_velocity(10.0 * target.get_forward_vector())
    world.tick()
    speed = car.get_velocity().length()
    car.set_simulate_physics(False)
    before = car.get_location()
    car.apply_control(carla.VehicleControl(throttle=1.0))
    for _ in range(20): world.tick()
    frozen = car.get_location().distance(before)
    emit({"placed": placed, "speed": speed, "frozen": frozen})
    cleanup()
    """)
    assert result["placed"] < 0.6
    assert 9.0 < result["speed"] < 10.5
    assert result["frozen"] < 1e-6


def test_batch_spawn_with_then_and_destroy(server):
    result = run_client(server, SYNC_PRELUDE, """
    bp = library.find("vehicle.mini.cooper_s")
    SpawnActor, SetSimulatePhysics, FutureActor = carla.command.SpawnActor, carla.command.SetSimulatePhysics, carla.command.FutureActor
    commands = [SpawnActor(bp, spawn_points[i]).then(SetSimulatePhysics(FutureActor, False)) for i in range(10, 20)]
    commands.append(SpawnActor(library.find("vehicle.mini.cooper_s"), spawn_points[10]))  # occupied: fails
    responses = client.apply_batch_sync(commands, True)
    ids = [r.actor_id for r in responses if not r.error]
    errors = [r.error for r in responses if r.error]
    alive = sorted(a.id for a in world.get_actors(ids))
    controls = client.apply_batch_sync([carla.command.ApplyVehicleControl(i, carla.VehicleControl(throttle=1.0)) for i in ids] +
                                       [carla.command.ApplyVehicleControl(999999, carla.VehicleControl())], True)
    destroyed = client.apply_batch_sync([carla.command.DestroyActor(i) for i in ids], True)
    emit({"ids": ids, "errors": errors, "alive": alive, "control_errors": [r.error for r in controls if r.error],
          "destroy_errors": [r.error for r in destroyed if r.error],
          "left": [a.id for a in world.get_actors().filter("vehicle.*")]})
    """)
    assert len(result["ids"]) == 10
    assert len(result["errors"]) == 1 and "collision" in result["errors"][0]
    assert result["alive"] == sorted(result["ids"])
    assert len(result["control_errors"]) == 1 and "999999" in result["control_errors"][0]
    assert result["destroy_errors"] == []
    assert result["left"] == []


def test_spectator_and_get_actors(server):
    result = run_client(server, SYNC_PRELUDE, """
    spectator = world.get_spectator()
    spectator.set_transform(carla.Transform(carla.Location(10, 20, 30), carla.Rotation(pitch=-45)))
    world.tick()
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), spawn_points[5])
    world.tick()
    actors = world.get_actors()
    found = world.get_actor(car.id).type_id
    destroyed = car.destroy()
    world.tick()
    emit({"spectator": spectator.type_id, "location": [spectator.get_location().x, spectator.get_location().z],
          "types": sorted({a.type_id for a in actors}), "found": found, "destroyed": destroyed,
          "after": car.id not in [a.id for a in world.get_actors()] and not car.is_alive})
    """)
    assert result["spectator"] == "spectator"
    assert result["location"] == [10.0, 30.0]
    assert "vehicle.tesla.model3" in result["types"] and "spectator" in result["types"]
    assert result["found"] == "vehicle.tesla.model3"
    assert result["destroyed"] is True and result["after"] is True


def test_several_clients_at_once_see_the_same_world(server):
    result = run_client(server, SYNC_PRELUDE, """
    other = carla.Client(HOST, PORT); other.set_timeout(10.0)
    other_world = other.get_world()
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), spawn_points[6])
    world.tick()
    seen = other_world.get_actor(car.id)
    frame = world.tick()
    emit({"seen": seen.type_id if seen else None, "same_frame": other_world.get_snapshot().frame >= frame - 1})
    cleanup()
    """)
    assert result == {"seen": "vehicle.tesla.model3", "same_frame": True}


def test_load_world_switches_town_and_episode(tmp_path):
    from harness import start_server
    server = start_server(tmp_path, town="Town01")
    try:
        result = run_client(server, """
        client = connect(30.0)
        before = client.get_world().id
        maps = client.get_available_maps()
        world = client.load_world("Town02_Opt")
        loaded = world.get_map().name
        again = client.reload_world()
        generated = client.load_world("GridCity").get_map().name
        emit({"maps": maps, "before": before, "after": world.id, "again": again.id, "loaded": loaded,
              "generated": generated})
        """)
    finally:
        server.stop()
    assert {"/Game/Carla/Maps/Town01", "/Game/Carla/Maps/Town02", "/Game/Carla/Maps/GridCity"} <= set(result["maps"])
    assert result["loaded"].endswith("Town02")
    assert result["generated"].endswith("GridCity")
    assert result["before"] != result["after"] != result["again"]


def test_walker_moves_with_walker_control(server):
    result = run_client(server, SYNC_PRELUDE, """
    walker = world.spawn_actor(library.find("walker.pedestrian.0001"), carla.Transform(carla.Location(150, 50, 1.0)))
    world.tick()
    walker.apply_control(carla.WalkerControl(direction=carla.Vector3D(0, 1, 0), speed=1.4))
    for _ in range(20): world.tick()
    moved = walker.get_location().y - 50
    control = walker.get_control()
    emit({"moved": moved, "speed": control.speed, "direction": control.direction.y, "yaw": walker.get_transform().rotation.yaw})
    walker.destroy()
    """)
    assert abs(result["moved"] - 1.4) < 0.05
    assert abs(result["speed"] - 1.4) < 1e-6 and result["direction"] == 1.0
    assert abs(result["yaw"] - 90.0) < 1e-3


def test_rendering_sensors_are_refused_naming_the_real_backend(server):
    result = run_client(server, SYNC_PRELUDE, """
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), spawn_points[7])
    errors = {}
    for sensor in ("sensor.camera.rgb", "sensor.lidar.ray_cast", "sensor.other.radar"):
        try:
            world.spawn_actor(library.find(sensor), carla.Transform(), attach_to=car)
        except RuntimeError as error:
            errors[sensor] = str(error)
    gnss = world.spawn_actor(library.find("sensor.other.gnss"), carla.Transform(carla.Location(z=2)), attach_to=car)
    world.tick()
    emit({"errors": errors, "gnss_parent": gnss.parent.id == car.id,
          "gnss_z": gnss.get_location().z - car.get_location().z})
    gnss.destroy(); cleanup()
    """)
    assert set(result["errors"]) == {"sensor.camera.rgb", "sensor.lidar.ray_cast", "sensor.other.radar"}
    assert all("backend 'carla'" in message for message in result["errors"].values())
    assert result["gnss_parent"] is True
    assert abs(result["gnss_z"] - 2.0) < 1e-3


def test_unsupported_calls_answer_errors_and_the_client_survives(server):
    result = run_client(server, SYNC_PRELUDE, """
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), spawn_points[8])
    outcomes = {}
    for name, call in {"recorder": lambda: client.start_recorder("x.log"),
                       "cast_ray": lambda: world.cast_ray(carla.Location(0, 0, 10), carla.Location(0, 0, -10)),
                       "bones": lambda: car.get_bone_names()}.items():
        try:
            call(); outcomes[name] = "no error"
        except RuntimeError as error:
            outcomes[name] = str(error)
    car.add_impulse(carla.Vector3D(1000, 0, 0))   # fire-and-forget: ignored by the client
    physics = car.get_physics_control()
    world.debug.draw_point(carla.Location(0, 0, 1))
    ground = world.ground_projection(spawn_points[8].location + carla.Location(z=5), 20.0)
    world.tick()
    emit({"outcomes": outcomes, "mass": physics.mass, "steer": physics.wheels[0].max_steer_angle,
          "ground": ground.location.z if ground else None, "alive": car.is_alive})
    cleanup()
    """)
    assert all("not supported by the embedded CARLA server" in text for text in result["outcomes"].values()), result
    assert result["mass"] > 1000 and result["steer"] == 70.0
    assert result["ground"] is not None and abs(result["ground"]) < 0.5
    assert result["alive"] is True
