"""Bad input gets a clear error, and the server keeps serving every other client.

Three levels: the server's command line (exit status 2 and one line on stderr), the
official client (RuntimeError or ValueError, never an aborted client process), and raw
sockets, which can send what no client would (garbage, truncated or malformed requests).
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest

from harness import ServerProcess, run_client, start_server

ROOT = Path(__file__).resolve().parents[1]
EXIT_USAGE = 2
SOCKET_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 1 << 24

HEADER = '<?xml version="1.0"?>\n<OpenDRIVE><header revMajor="1" revMinor="4" name="test"/>'
STRAIGHT = '<geometry s="0" x="0" y="0" hdg="0" length="{length}"><line/></geometry>'
LANE = ('<lanes><laneSection s="0"><center><lane id="0" type="none"/></center><right>'
        '<lane id="-1" type="{lane_type}"><width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane>'
        '</right></laneSection></lanes>')


def road(length: str = "100", plan_view: str | None = None, lane_type: str = "driving") -> str:
    plan = STRAIGHT.format(length=100) if plan_view is None else plan_view
    return (HEADER + f'<road name="r" length="{length}" id="0" junction="-1"><planView>{plan}</planView>'
            + LANE.format(lane_type=lane_type) + "</road></OpenDRIVE>")


# name -> (file content, what the one-line error must say besides the file name)
BAD_TOWNS = {
    "SyntaxError": (HEADER + "<road name='r' length=", "malformed OpenDRIVE: unclosed token"),
    "ParserRejects": (road(length="abc"), "CARLA's OpenDRIVE parser failed: s <= road->GetLength()"),
    "NoDrivingLanes": (road(lane_type="sidewalk"), "no driving lanes"),
    "ParserCrashes": (road(plan_view=""), "CARLA's OpenDRIVE parser crashed"),  # a segfault in carla.Map
}
GOOD_TOWN = ("Straight", road())


@pytest.fixture(scope="module")
def maps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bad-maps")
    for name, (text, _) in BAD_TOWNS.items():
        (directory / f"{name}.xodr").write_text(text)
    (directory / f"{GOOD_TOWN[0]}.xodr").write_text(GOOD_TOWN[1])
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, maps_dir: Path) -> Iterator[ServerProcess]:
    """Town01, with the bad towns on its maps path (load_world can be asked for them)."""
    process = start_server(tmp_path_factory.mktemp("server"), f"--maps-path={maps_dir}", town="Town01")
    yield process
    assert process.process.poll() is None, "the server died during the tests"
    process.stop()


# --- the command line ----------------------------------------------------------------

def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs the server expecting it to refuse to start; kills it (and fails) if it serves."""
    process = subprocess.Popen([sys.executable, "-m", "rllib_integration.embedded", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"the server kept running with {args}: {stdout!r} {stderr!r}")
    assert process.poll() is not None   # no process left behind
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_one_line_usage_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""      # never announced itself ready
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_town_exits_2_listing_the_available_towns() -> None:
    line = assert_one_line_usage_error(run_cli("-carla-rpc-port=0", "-carla-streaming-port=0", "--town=NoSuchTown"),
                                       "NoSuchTown")
    available = line.split("available:")[1]
    for town in ("Town01", "Town02", "Town04", "Town06", "GridCity", "HighwayLoop"):
        assert town in available


@pytest.mark.parametrize("name", BAD_TOWNS)
def test_unusable_xodr_exits_2_naming_the_file_and_the_parser_message(name: str, maps_dir: Path) -> None:
    result = run_cli("-carla-rpc-port=0", "-carla-streaming-port=0", f"--maps-path={maps_dir}", f"--town={name}")
    assert_one_line_usage_error(result, str(maps_dir / f"{name}.xodr"), BAD_TOWNS[name][1])


def test_a_usable_xodr_of_ones_own_is_served(maps_dir: Path, tmp_path: Path) -> None:
    """The control case of the bad files above: same template, nothing wrong with it."""
    server = start_server(tmp_path, f"--maps-path={maps_dir}", town=GOOD_TOWN[0])
    try:
        assert run_client(server, "emit(connect().get_world().get_map().name)").endswith(GOOD_TOWN[0])
    finally:
        server.stop()


@pytest.mark.parametrize("flag", ["-carla-rpc-port", "-carla-streaming-port", "default streaming port"])
def test_port_already_in_use_exits_2_with_one_line_naming_the_flag(flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if flag == "-carla-rpc-port":
            args = [f"-carla-rpc-port={port}", "-carla-streaming-port=0"]
        elif flag == "-carla-streaming-port":
            args = ["-carla-rpc-port=0", f"-carla-streaming-port={port}"]
        else:   # CarlaUE4.sh's convention: streaming = RPC + 1
            args, flag = [f"-carla-rpc-port={port - 1}"], "-carla-streaming-port"
        result = run_cli(*args, "--town=GridCity")
    assert_one_line_usage_error(result, f"{flag}={port}", "already in use", "0: any free port")


def test_unusable_host_exits_2_with_one_line() -> None:
    result = run_cli("-carla-host=192.0.2.1", "-carla-rpc-port=0", "-carla-streaming-port=0", "--town=GridCity")
    assert_one_line_usage_error(result, "192.0.2.1", "-carla-host")


@pytest.mark.parametrize("value", ["70000", "-1", "abc"])
def test_invalid_port_exits_2(value: str) -> None:
    result = run_cli(f"-carla-rpc-port={value}", "--town=GridCity")
    assert result.returncode == EXIT_USAGE and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "-carla-rpc-port" in result.stderr.strip().splitlines()[-1]


# --- the official client ----------------------------------------------------------------

def test_load_world_of_unknown_or_broken_town_raises_and_server_keeps_serving(server: ServerProcess) -> None:
    result = run_client(server, """
    client = connect(30.0)
    def attempt(name):
        try:
            client.load_world(name)
            return None
        except RuntimeError as error:
            return str(error)
    before = client.get_world().id
    errors = {name: attempt(name) for name in ["NoSuchTown", "NoSuchTown", *BAD_TOWNS]}
    world = client.get_world()
    unchanged = [world.id == before, world.get_map().name]
    loaded = client.load_world("Town02").get_map().name
    back = client.load_world("Town01").get_map().name
    emit({"errors": errors, "unchanged": unchanged, "loaded": loaded, "back": back,
          "maps": client.get_available_maps()})
    """.replace("*BAD_TOWNS", ", ".join(repr(name) for name in BAD_TOWNS)))
    unknown = result["errors"]["NoSuchTown"]
    assert "unknown town 'NoSuchTown'" in unknown
    for town in ("Town01", "Town02", "GridCity", *BAD_TOWNS):
        assert town in unknown.split("available:")[1]
    for name, (_, message) in BAD_TOWNS.items():
        assert f"{name}.xodr" in result["errors"][name] and message in result["errors"][name]
    assert result["unchanged"][0] is True and result["unchanged"][1].endswith("Town01")
    assert result["loaded"].endswith("Town02") and result["back"].endswith("Town01")


def test_invalid_attribute_values_are_refused_by_the_client(server: ServerProcess) -> None:
    """The client validates set_attribute itself (ValueError) and find() (IndexError)."""
    result = run_client(server, """
    world = connect().get_world()
    library = world.get_blueprint_library()
    errors = {}
    for attribute, value in [("color", "not-a-color"), ("color", "300,0,0"), ("number_of_wheels", "3"),
                             ("sticky_control", "maybe")]:
        bp = library.find("vehicle.lincoln.mkz_2017")
        try:
            bp.set_attribute(attribute, value)
            errors[attribute + "=" + value] = None
        except Exception as error:
            errors[attribute + "=" + value] = [type(error).__name__, str(error)]
    try:
        library.find("vehicle.lincoln.mkz2017")
        missing = None
    except Exception as error:
        missing = [type(error).__name__, str(error)]
    bp = library.find("vehicle.lincoln.mkz_2017")
    bp.set_attribute("color", "10,20,30")
    car = world.spawn_actor(bp, world.get_map().get_spawn_points()[0])
    color = car.attributes["color"]
    car.destroy()
    emit({"errors": errors, "missing": missing, "color": color})
    """)
    errors = result["errors"]
    assert errors["color=not-a-color"][0] == "ValueError" and "color" in errors["color=not-a-color"][1]
    assert errors["color=300,0,0"][0] == "ValueError"
    assert errors["number_of_wheels=3"] == ["ValueError", "number_of_wheels: read-only attribute"]
    assert errors["sticky_control=maybe"][0] == "ValueError"
    assert result["missing"][0] == "IndexError"
    assert result["color"] == "10,20,30"


def test_non_positive_fixed_delta_seconds(server: ServerProcess) -> None:
    """The client turns fixed_delta_seconds <= 0 (and NaN) into None before sending, so the
    server runs a variable step; infinity reaches the server, which refuses it by name."""
    result = run_client(server, """
    world = connect().get_world()
    settings = world.get_settings()
    seen = {}
    for dt in (-0.05, 0.0, float("nan")):
        settings.fixed_delta_seconds = dt
        seen[repr(dt)] = [settings.fixed_delta_seconds]
        world.apply_settings(settings)
        seen[repr(dt)].append(world.get_settings().fixed_delta_seconds)
    settings.fixed_delta_seconds = float("inf")
    try:
        world.apply_settings(settings)
        infinite = None
    except RuntimeError as error:
        infinite = str(error)
    after = world.get_settings().fixed_delta_seconds
    settings.fixed_delta_seconds = None
    world.apply_settings(settings)
    emit({"seen": seen, "infinite": infinite, "after": after, "ticks": world.wait_for_tick().frame > 0})
    """)
    assert result["seen"] == {"-0.05": [None, None], "0.0": [None, None], "nan": [None, None]}
    assert "fixed_delta_seconds" in result["infinite"] and "positive" in result["infinite"]
    assert result["after"] is None and result["ticks"] is True


def test_using_a_destroyed_actor_neither_aborts_the_client_nor_hurts_the_server(server: ServerProcess) -> None:
    result = run_client(server, """
    client, world, settings = connect_sync()
    library = world.get_blueprint_library()
    points = world.get_map().get_spawn_points()
    car = world.spawn_actor(library.find("vehicle.tesla.model3"), points[0])
    other = carla.Client(HOST, PORT); other.set_timeout(10.0)
    stale = other.get_world().get_actor(car.id)     # a second client's handle, destroyed under it
    world.tick()
    destroyed = car.destroy()
    world.tick()
    calls = {
        "apply_control": lambda actor: actor.apply_control(carla.VehicleControl(throttle=1.0)),
        "set_transform": lambda actor: actor.set_transform(points[1]),
        "get_transform": lambda actor: actor.get_transform(),
        "get_velocity": lambda actor: actor.get_velocity(),
        "set_target_velocity": lambda actor: actor.set_target_velocity(carla.Vector3D(1.0, 0.0, 0.0)),
        "set_simulate_physics": lambda actor: actor.set_simulate_physics(False),
        "get_light_state": lambda actor: actor.get_light_state(),
        "bounding_box": lambda actor: actor.bounding_box,
        "destroy": lambda actor: actor.destroy(),
    }
    # (no set_autopilot: it involves a traffic manager; the box of a just-destroyed actor it may
    # ask about is covered by test_bounding_box_of_a_just_destroyed_actor_is_still_answered)
    outcomes = {}
    for owner, actor in (("own", car), ("stale", stale)):
        for name, call in calls.items():
            try:
                call(actor)
                outcomes[owner + "." + name] = "ignored"
            except RuntimeError as error:
                outcomes[owner + "." + name] = "RuntimeError: " + str(error)
    world.tick()
    batch = client.apply_batch_sync([carla.command.ApplyVehicleControl(car.id, carla.VehicleControl()),
                                     carla.command.ApplyTransform(car.id, points[1]),
                                     carla.command.DestroyActor(car.id)], True)
    again = world.spawn_actor(library.find("vehicle.tesla.model3"), points[0])   # the spot is free again
    world.tick()
    spawned_again = again.is_alive and again.get_transform().location.distance(points[0].location) < 1.0
    again.destroy()
    settings.synchronous_mode = False
    settings.fixed_delta_seconds = None
    world.apply_settings(settings)
    world.get_actor(car.id)   # the client may answer a cached handle, as with CARLA: only it must not abort
    emit({"destroyed": destroyed, "alive": car.is_alive, "listed": car.id in [a.id for a in world.get_actors()],
          "outcomes": outcomes, "batch": [r.error for r in batch], "id": car.id, "spawned_again": spawned_again})
    """)
    assert result["destroyed"] is True and result["alive"] is False and result["listed"] is False
    for name, outcome in result["outcomes"].items():
        assert outcome == "ignored" or outcome.startswith("RuntimeError"), (name, outcome)
    assert result["outcomes"]["own.apply_control"].startswith("RuntimeError: trying to operate on a destroyed actor")
    # the stale handle's calls reach the server, which names the actor (fire-and-forget ones are dropped)
    assert f"RuntimeError: actor {result['id']} not found" in result["outcomes"]["stale.set_simulate_physics"]
    assert len(result["batch"]) == 3 and all(str(result["id"]) in error for error in result["batch"])
    assert result["spawned_again"] is True


def test_a_killed_client_does_not_disturb_the_others(server: ServerProcess) -> None:
    """A client process that dies mid-session drops both its RPC and streaming connections."""
    script = """
import os, sys, time, carla
client = carla.Client(os.environ["CARLA_TEST_HOST"], int(os.environ["CARLA_TEST_PORT"]))
client.set_timeout(10.0)
world = client.get_world()
car = world.spawn_actor(world.get_blueprint_library().find("vehicle.audi.tt"), world.get_map().get_spawn_points()[2])
world.wait_for_tick()
print(car.id, flush=True)
while True:
    car.apply_control(carla.VehicleControl(throttle=0.5))
    world.wait_for_tick()
"""
    env = {"CARLA_TEST_HOST": server.host, "CARLA_TEST_PORT": str(server.port)}
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, **env))
    try:
        car_id = int(victim.stdout.readline())
        time.sleep(0.3)
    finally:
        victim.kill()
        victim.wait()
    result = run_client(server, f"""
    client = connect()
    world = client.get_world()
    first = world.wait_for_tick().frame
    later = world.wait_for_tick().frame
    car = world.get_actor({car_id})
    alive = car is not None
    if car is not None:
        car.destroy()
    emit({{"frames": later > first, "orphan_alive": alive}})
    """)
    assert result == {"frames": True, "orphan_alive": True}   # CARLA too keeps a dead client's actors


# --- raw sockets: what no well-behaved client sends ------------------------------------------

class RawRpc:
    """A bare msgpack-rpc connection to the RPC port."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=SOCKET_TIMEOUT_S)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_MESSAGE_BYTES)
        self.msgid = 0

    def call(self, method: Any, *args: Any, fire_and_forget: bool = False) -> list[Any]:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [[fire_and_forget], *args]], use_bin_type=True))
        response = self.read()
        assert response[:2] == [1, self.msgid], response
        return response

    def read(self) -> Any:
        while True:
            for message in self.unpacker:
                return message
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.unpacker.feed(data)

    def closed_by_server(self) -> bool:
        """True once the server has closed this connection (EOF or reset)."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def error_message(response: list[Any]) -> str | None:
    """The error a response carries: rpclib's error field or CARLA's wrapped Response error."""
    _, _, error, result = response
    if error is not None:
        return str(error)
    if isinstance(result, list) and len(result) == 1 and isinstance(result[0], list):
        tag, payload = result[0][0], result[0][1:]
        if (tag is True or (type(tag) is int and tag == 0)) and payload:   # value error [0, [msg]]; void [True, [msg]]
            return str(payload[0][0])
    return None


def assert_serving(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        assert rpc.call("version")[3] == [[1, "0.9.16"]]
    finally:
        rpc.close()
    assert server.process.poll() is None


def test_unknown_method_gets_an_answer(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        assert "no_such_method" in error_message(rpc.call("no_such_method", 1, "x"))
        assert error_message(rpc.call(12345)) is not None
        assert rpc.call("version")[3] == [[1, "0.9.16"]]     # same connection, still answered
    finally:
        rpc.close()


IDENTITY = [[0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]
MKZ = [0, "vehicle.lincoln.mkz_2017", []]
MALFORMED_CALLS = [
    ("spawn_actor", []),
    ("spawn_actor", [1, 2]),
    ("spawn_actor", [None, None]),
    ("spawn_actor", [{"a": 1}, IDENTITY]),
    ("spawn_actor", [MKZ, "not a transform"]),
    ("spawn_actor", [MKZ, [[0.0, 0.0], [0.0, 0.0, 0.0]]]),
    ("spawn_actor", [[0, 5, []], IDENTITY]),
    ("spawn_actor", [[0, "vehicle.lincoln.mkz_2017", "attributes"], IDENTITY]),
    ("spawn_actor", [[0, "vehicle.lincoln.mkz_2017", [[1, 2, 3]]], IDENTITY]),
    ("spawn_actor_with_parent", [MKZ, IDENTITY, 999999, 0, ""]),
    ("set_episode_settings", ["settings"]),
    ("set_episode_settings", [[True]]),
    ("set_weather_parameters", [[1.0, 2.0]]),
    ("set_weather_parameters", [["a"] * 14]),
    ("apply_control_to_vehicle", ["one", [1.0]]),
    ("set_actor_transform", [1, "garbage"]),
    ("tick_cue", [1, 2, 3]),
    ("load_new_episode", [5]),
    ("get_actors_by_id", [5]),
    ("destroy_actor", [[1]]),
]


@pytest.mark.parametrize("method, args", MALFORMED_CALLS, ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_arguments_get_an_error_response(server: ServerProcess, method: str, args: list[Any]) -> None:
    rpc = RawRpc(server)
    try:
        message = error_message(rpc.call(method, *args))
        assert message, f"{method}{args!r} was accepted"
        assert "Traceback" not in message
    finally:
        rpc.close()
    assert_serving(server)


def test_apply_batch_with_malformed_commands_answers_each(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        response = rpc.call("apply_batch", [[[2, [999999, [1.0, 0.0, 0.0, False, False, False, 0]]]], "junk", [[99, []]]],
                            False)
    finally:
        rpc.close()
    answers = response[3]
    assert len(answers) == 3
    assert all(answer[0][0] == 0 for answer in answers)     # three value errors
    assert "999999" in answers[0][0][1][0] and "99" in answers[2][0][1][0]


def test_unknown_blueprint_id_suggests_close_matches(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        message = error_message(rpc.call("spawn_actor", [0, "vehicle.lincoln.mkz2017", []], IDENTITY))
        unrelated = error_message(rpc.call("spawn_actor", [0, "zzzz", []], IDENTITY))
    finally:
        rpc.close()
    assert "vehicle.lincoln.mkz2017" in message and "did you mean" in message
    assert "'vehicle.lincoln.mkz_2017'" in message
    assert "zzzz" in unrelated and "did you mean" not in unrelated


@pytest.mark.parametrize("attribute, value, expected", [
    ("number_of_wheels", "3", "read-only"),
    ("color", "not-a-color", "'color'"),
    ("sticky_control", "maybe", "Bool"),
    ("no_such_attribute", "1", "valid attributes: base_type, color"),
])
def test_attribute_values_the_client_would_refuse_are_refused_by_the_server(
        server: ServerProcess, attribute: str, value: str, expected: str) -> None:
    rpc = RawRpc(server)
    try:
        message = error_message(rpc.call("spawn_actor", [0, "vehicle.lincoln.mkz_2017", [[attribute, 4, value]]],
                                         IDENTITY))
    finally:
        rpc.close()
    assert message and attribute in message and expected in message


def test_non_positive_fixed_delta_seconds_on_the_wire(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        before = rpc.call("get_episode_settings")[3]
        settings = list(before[0][1])
        messages = {}
        for dt in (-0.05, 0.0, float("nan"), float("-inf"), "0.05"):
            settings[2] = [True, dt]
            messages[repr(dt)] = error_message(rpc.call("set_episode_settings", settings))
        after = rpc.call("get_episode_settings")[3]
    finally:
        rpc.close()
    for dt, message in messages.items():
        assert message and "fixed_delta_seconds" in message, (dt, message)
    assert after == before


def test_destroyed_actor_ids_on_the_wire(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        spawned = rpc.call("spawn_actor", MKZ, [[300.0, 300.0, 0.3], [0.0, 0.0, 0.0]])[3]
        actor_id = spawned[0][1][0]
        assert rpc.call("destroy_actor", actor_id)[3] == [[1, True]]
        control = [1.0, 0.0, 0.0, False, False, False, 0]
        messages = [error_message(rpc.call(method, *args, fire_and_forget=forget)) for method, args, forget in [
            ("destroy_actor", [actor_id], False),
            ("apply_control_to_vehicle", [actor_id, control], True),
            ("set_actor_transform", [actor_id, IDENTITY], True),
            ("set_actor_target_velocity", [actor_id, [1.0, 0.0, 0.0]], True),
            ("spawn_actor_with_parent", [[0, "sensor.other.collision", []], IDENTITY, actor_id, 0, ""], False),
        ]]
    finally:
        rpc.close()
    for message in messages:
        assert message and str(actor_id) in message and "destroyed" in message
    assert_serving(server)


def test_bounding_box_of_a_just_destroyed_actor_is_still_answered(server: ServerProcess) -> None:
    rpc = RawRpc(server)
    try:
        spawned = rpc.call("spawn_actor", MKZ, [[310.0, 310.0, 0.3], [0.0, 0.0, 0.0]])[3]
        actor_id = spawned[0][1][0]
        live_box = rpc.call("get_actor_bounding_box", actor_id)[3]
        rpc.call("destroy_actor", actor_id)
        dead_box = rpc.call("get_actor_bounding_box", actor_id)[3]
    finally:
        rpc.close()
    assert dead_box == live_box


TICKING_CLIENT = """
client = connect()
world = client.get_world()
library = world.get_blueprint_library()
car = world.spawn_actor(library.find("vehicle.tesla.model3"), world.get_map().get_spawn_points()[4])
start = world.wait_for_tick().frame
deadline = time.time() + 2.5
calls = 0
while time.time() < deadline:
    car.apply_control(carla.VehicleControl(throttle=0.3))
    car.get_transform()
    client.get_server_version()
    calls += 1
end = world.wait_for_tick().frame
car.destroy()
emit({"calls": calls, "frames": end - start})
"""


def test_garbage_on_the_rpc_port_closes_only_that_connection(server: ServerProcess) -> None:
    bystander = RawRpc(server)
    with ThreadPoolExecutor(1) as pool:
        concurrent = pool.submit(run_client, server, TICKING_CLIENT)
        time.sleep(0.8)
        closed = {}
        for name, garbage in {
            "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "reserved byte": b"\xc1\xc1\xc1\xc1",
            "not a request": msgpack.packb([7, "x"]),
            "a response": msgpack.packb([1, 1, None, None]),
            "bad request arity": msgpack.packb([0, 1, "version"]),
        }.items():
            rpc = RawRpc(server)
            rpc.sock.sendall(garbage)
            closed[name] = rpc.closed_by_server()
            rpc.close()
        noise = RawRpc(server)       # random bytes may also parse as the start of a long message
        noise.sock.sendall(random.Random(1).randbytes(100))
        noise.close()
        assert bystander.call("version")[3] == [[1, "0.9.16"]]
        result = concurrent.result()
    bystander.close()
    assert closed == dict.fromkeys(closed, True)
    assert result["calls"] > 20 and result["frames"] > 10
    assert_serving(server)


def test_truncated_request_then_dropped_connection(server: ServerProcess) -> None:
    request = msgpack.packb([0, 1, "version", [[False]]], use_bin_type=True)
    dropped = RawRpc(server)
    dropped.sock.sendall(request[:5])
    dropped.close()
    slow = RawRpc(server)
    slow.sock.sendall(request[:5])
    time.sleep(0.2)
    assert_serving(server)          # a half-sent request blocks nobody
    slow.sock.sendall(request[5:])
    assert slow.read() == [1, 1, None, [[1, "0.9.16"]]]
    slow.close()
    batch = RawRpc(server)          # two requests in one packet, the second split
    second = msgpack.packb([0, 2, "get_imui_gravity", [[False]]], use_bin_type=True)
    batch.sock.sendall(request + second[:3])
    assert batch.read()[1] == 1
    batch.sock.sendall(second[3:])
    assert batch.read()[:3] == [1, 2, None]
    batch.close()


def test_garbage_and_dropped_connections_on_the_streaming_port(server: ServerProcess) -> None:
    def streaming_connection() -> socket.socket:
        return socket.create_connection((server.host, server.streaming_port), timeout=SOCKET_TIMEOUT_S)

    with streaming_connection() as partial:
        partial.sendall(b"\x01\x00")                           # 2 bytes of a stream id, then gone
    with streaming_connection() as noise:
        noise.sendall(random.Random(2).randbytes(100))
    with streaming_connection() as episode:
        episode.sendall((1).to_bytes(4, "little") + b"junk after the id")  # subscribes, then leaves
    lingering = streaming_connection()                          # subscribed but never reads
    lingering.sendall((1).to_bytes(4, "little"))
    try:
        result = run_client(server, """
        client, world, settings = connect_sync()
        frames = [world.tick() for _ in range(20)]
        snapshot = world.get_snapshot().frame
        settings.synchronous_mode = False
        settings.fixed_delta_seconds = None
        world.apply_settings(settings)
        emit({"consecutive": frames == list(range(frames[0], frames[0] + 20)), "snapshot": snapshot == frames[-1]})
        """)
    finally:
        lingering.close()
    assert result == {"consecutive": True, "snapshot": True}
    assert_serving(server)


MAX_DRAINED_BYTES = 32 << 20     # far above kernel socket buffers, far below the backlog of 900 ticks
STALLED_CLIENT = """
import os, sys, time, carla
client = carla.Client(os.environ["CARLA_TEST_HOST"], int(os.environ["CARLA_TEST_PORT"]))
client.set_timeout(10.0)
world = client.get_world()
print(world.get_snapshot().frame, flush=True)
target = int(sys.stdin.readline())          # read once resumed
frame, errors = 0, []
deadline = time.monotonic() + 30.0   # first come the snapshots the kernel buffered before the drop
while time.monotonic() < deadline:
    try:
        frame = world.wait_for_tick(1.0).frame
    except RuntimeError as error:
        errors.append(str(error))
        continue
    if frame >= target:
        break
print(frame, errors[-3:], flush=True)
"""


def test_a_subscriber_that_stops_reading_is_dropped_and_a_real_client_recovers(server: ServerProcess) -> None:
    """A suspended client process (or a vanished host whose connection never closed) stops
    reading its episode stream; the server drops it at MAX_BACKLOG_BYTES instead of
    buffering a snapshot per tick forever, and CARLA's client reconnects once it runs again."""
    stalled = subprocess.Popen([sys.executable, "-c", STALLED_CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=dict(os.environ, CARLA_TEST_HOST=server.host,
                                                   CARLA_TEST_PORT=str(server.port)))
    stuck = socket.create_connection((server.host, server.streaming_port), timeout=SOCKET_TIMEOUT_S)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    stuck.sendall((1).to_bytes(4, "little"))
    try:
        int(stalled.stdout.readline())
        stalled.send_signal(signal.SIGSTOP)
        result = run_client(server, """
        client, world, settings = connect_sync(30.0)
        bp = world.get_blueprint_library().find("vehicle.audi.tt")
        SpawnActor, SetSimulatePhysics = carla.command.SpawnActor, carla.command.SetSimulatePhysics
        batch = client.apply_batch_sync([   # three floors of parked cars: big snapshots, cheap ticks
            SpawnActor(bp, carla.Transform(p.location + carla.Location(z=10.0 * floor), p.rotation)).then(
                SetSimulatePhysics(carla.command.FutureActor, False))
            for p in world.get_map().get_spawn_points() for floor in range(3)], True)
        ids = [r.actor_id for r in batch if not r.error]
        frames = [world.tick() for _ in range(900)]   # ~135 kB snapshots: > 100 MB for a reader that stalls
        settings.synchronous_mode = False                # the world goes on ticking by itself
        settings.fixed_delta_seconds = None
        world.apply_settings(settings)
        emit({"cars": len(ids), "last": frames[-1]})
        """)
        stalled.send_signal(signal.SIGCONT)
        stalled.stdin.write(f"{result['last'] + 3}\n")
        stalled.stdin.flush()
        seen, errors = stalled.communicate(timeout=60)[0].strip().split(" ", 1)
        run_client(server, """
        client = connect()
        world = client.get_world()
        destroy_vehicles(client, world)
        emit(len(world.get_actors().filter("vehicle.*")))
        """)
        received, dropped, deadline = 0, False, time.monotonic() + 10.0
        try:   # what the kernel buffered before the drop, then the reset; or, unbounded, the backlog
            while received < MAX_DRAINED_BYTES and time.monotonic() < deadline:
                data = stuck.recv(1 << 20)
                if not data:
                    dropped = True
                    break
                received += len(data)
        except (ConnectionResetError, socket.timeout) as error:
            dropped = isinstance(error, ConnectionResetError)
    finally:
        stuck.close()
        if stalled.poll() is None:
            stalled.send_signal(signal.SIGCONT)
            stalled.kill()
            stalled.wait()
    assert result["cars"] > 900
    assert dropped and received < MAX_DRAINED_BYTES, (dropped, received)
    assert int(seen) >= result["last"] + 3, f"the resumed client saw no new snapshot: {errors}"
