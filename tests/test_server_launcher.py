"""The server launcher: commands, ports, readiness, clean-up of only our own process group.

The real-server path runs for real: a fake CARLA install whose CarlaUE4.sh records its
arguments and execs the embedded server (which takes CarlaUE4.sh's flags).
"""
from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest

from core_harness import alive, group_members, launches, make_carla_root, read_result, run_script, start_script
from rllib_integration import ports
from rllib_integration.carla_core import BASE_CORE_CONFIG, check_versions
from rllib_integration.errors import (ConfigError, NoFreePortError, ServerStartError, SimulatorFailure,
                                     TickTimeoutError)
from rllib_integration.server_launcher import LaunchSettings, ServerLauncher, server_arguments, server_executable
from rllib_integration.watchdog import CallWatchdog


def carla_config(**overrides) -> dict:
    return {**BASE_CORE_CONFIG, **overrides}


# --- ports ---------------------------------------------------------------------------------


def test_claimed_ports_are_free_distinct_and_never_handed_out_twice():
    first = ports.claim_ports(3)
    second = ports.claim_ports(3)
    try:
        assert len(set(first + second)) == 6
        assert all(ports.PORT_RANGE[0] <= port <= ports.PORT_RANGE[1] for port in first + second)
        assert all(ports.is_free(port) for port in first + second)
        with pytest.raises(NoFreePortError, match="'tm_port'"):
            ports.claim_port(first[0], "tm_port")
    finally:
        ports.release_ports(first + second)


def test_a_full_port_range_is_reported_with_the_settings_to_change():
    with ExitStack() as stack:
        taken = []
        for port in range(ports.PORT_RANGE[1] - 40, ports.PORT_RANGE[1] + 1):
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("", port))
                taken.append(port)
            except OSError:
                pass
        with pytest.raises(NoFreePortError, match="rpc_port / streaming_port / tm_port"):
            ports.claim_ports(1, (taken[0], taken[-1]))


def test_a_port_whose_server_just_stopped_is_free_again_but_a_listener_is_not():
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        assert not ports.is_free(port)
        accepted.close()   # the server side closes first: its end lingers in TIME_WAIT
        client.close()
    assert ports.is_free(port)


def test_a_busy_configured_port_names_its_setting():
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        with pytest.raises(NoFreePortError, match=r"port \d+ \('rpc_port'.*set 'rpc_port' to None"):
            ports.claim_port(busy.getsockname()[1], "rpc_port")


# --- command line --------------------------------------------------------------------------


def test_backend_carla_without_carla_root_names_the_settings(monkeypatch):
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    with pytest.raises(ConfigError, match="set 'carla_root'.*CARLA_ROOT.*backend 'embedded'"):
        server_executable(carla_config(backend="carla"))


def test_a_wrong_carla_root_names_the_missing_script(tmp_path, monkeypatch):
    monkeypatch.setenv("CARLA_ROOT", str(tmp_path))
    with pytest.raises(ConfigError, match=f"CARLA_ROOT '{tmp_path}'.*CarlaUE4.sh does not exist"):
        server_executable(carla_config(backend="carla"))
    script = tmp_path / "CarlaUE4.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(ConfigError, match="is not executable; run chmod"):
        server_executable(carla_config(backend="carla"))


def test_unknown_backend_lists_the_backends():
    with pytest.raises(ConfigError, match=r"backend 'unreal' is unknown.*\('embedded', 'carla'\)"):
        server_executable(carla_config(backend="unreal"))


def test_server_path_overrides_carla_root(tmp_path):
    root = make_carla_root(tmp_path)
    assert server_executable(carla_config(backend="carla", carla_root="/nowhere",
                                          server_path=str(root / "CarlaUE4.sh"))) == (str(root / "CarlaUE4.sh"),)


def test_arguments_follow_rendering_display_and_gpu_settings():
    def arguments(**overrides):
        return server_arguments(LaunchSettings.from_config(carla_config(**overrides)), 3000, 3001)

    assert arguments() == ["-carla-rpc-port=3000", "-carla-streaming-port=3001", "-quality-level=Low",
                           "-ResX=600", "-ResY=600", "-RenderOffScreen"]
    assert "-nullrhi" in arguments(enable_rendering=False)
    assert "-RenderOffScreen" not in arguments(enable_rendering=False)
    assert not {"-nullrhi", "-RenderOffScreen"} & set(arguments(show_display=True))
    assert arguments(gpu=2, quality_level="Epic")[2:] == ["-quality-level=Epic", "-ResX=600", "-ResY=600",
                                                          "-RenderOffScreen", "-graphicsadapter=2"]


def test_gpu_lookup_does_not_import_ray(tmp_path):
    result = run_script(tmp_path, """
    from rllib_integration.carla_env import CarlaEnv
    from rllib_integration.server_launcher import assigned_gpu
    emit({"gpu": assigned_gpu(None), "ray": "ray" in sys.modules})
    """)
    assert result.last == {"gpu": None, "ray": False}, result.describe()


def test_version_mismatch_warns_naming_both_versions(caplog):
    with caplog.at_level(logging.WARNING):
        assert not check_versions("0.9.16", "0.9.15", "CARLA server /opt/carla/CarlaUE4.sh")
        assert check_versions("0.9.16", "0.9.16", "embedded CARLA server")
    assert len(caplog.records) == 1
    assert "client 0.9.16" in caplog.text and "CarlaUE4.sh 0.9.15" in caplog.text


# --- watchdog ------------------------------------------------------------------------------


def test_watchdog_gives_up_on_a_call_that_never_returns():
    watchdog = CallWatchdog()
    started = time.monotonic()
    with pytest.raises(TickTimeoutError, match="world.tick\\(\\) did not return within 0.3 s"):
        watchdog.run(lambda: time.sleep(30), 0.3, lambda: None, "world.tick()")
    assert time.monotonic() - started < 2.0
    assert watchdog.run(lambda: 42, 1.0, lambda: None, "a call") == 42   # a fresh worker serves the next call
    watchdog.close()


def test_watchdog_reports_a_server_that_died_during_the_call():
    watchdog = CallWatchdog()
    with pytest.raises(SimulatorFailure, match="the server was killed by SIGKILL during world.tick"):
        watchdog.run(lambda: time.sleep(30), 60.0, lambda: "was killed by SIGKILL", "world.tick()")
    watchdog.close()


# --- the real-server path, with a fake CARLA install ------------------------------------------

TWO_CORES = """
from rllib_integration.carla_core import CarlaCore
config = {{"backend": "carla", "carla_root": {root!r}, "gpu": 1, "timeout": 5.0, "retries_on_error": 0}}
cores = [CarlaCore(config), CarlaCore(config)]
experiment = {{"town": "Town01", "weather": "ClearNoon", "background_activity": {{"n_vehicles": 0, "n_walkers": 0,
              "tm_hybrid_mode": True, "seed": None}}}}
frames = []
for core in cores:
    core.setup_experiment(experiment)
    core.reset_hero({{"blueprint": "vehicle.lincoln.mkz_2017", "sensors": {{}}, "spawn_points": []}})
    frames.append([core.tick(None) == {{}} for _ in range(3)])
emit({{"ports": [[c._launcher.rpc_port, c._launcher.streaming_port, c.tm_port] for c in cores],
      "pids": [c._launcher.process.pid for c in cores], "frames": frames}})
for core in cores:
    core.close()
emit({{"closed": [c._launcher.process is None for c in cores]}})
"""


def test_two_real_backend_cores_launch_with_carla_flags_on_distinct_ports(tmp_path):
    root = make_carla_root(tmp_path)
    result = run_script(tmp_path, TWO_CORES.format(root=str(root)))
    assert result.returncode == 0, result.describe()
    opened, closed = result.results
    assert closed == {"closed": [True, True]}
    assert opened["frames"] == [[True] * 3, [True] * 3]
    all_ports = [port for core_ports in opened["ports"] for port in core_ports]
    assert len(set(all_ports)) == 6
    records = launches(root)
    assert [record["pgid"] for record in records] == opened["pids"]   # the group each launcher leads
    for record, (rpc, streaming, _) in zip(records, opened["ports"]):
        assert record["args"] == [f"-carla-rpc-port={rpc}", f"-carla-streaming-port={streaming}",
                                  "-quality-level=Low", "-ResX=600", "-ResY=600", "-RenderOffScreen",
                                  "-graphicsadapter=1", "-carla-primary-port=0"]
        assert not alive(record["pid"]) and group_members(record["pgid"]) == []
    assert all(ports.is_free(port) for port in all_ports)


def test_a_server_that_never_answers_fails_within_startup_timeout_and_is_stopped(tmp_path):
    root = make_carla_root(tmp_path, mode="silent")
    started = time.monotonic()
    result = run_script(tmp_path, f"""
    from rllib_integration.carla_core import CarlaCore
    try:
        CarlaCore({{"backend": "carla", "carla_root": {str(root)!r}, "startup_timeout": 1.5, "retries_on_error": 1}})
    except Exception as error:
        emit({{"type": type(error).__name__, "message": str(error)}})
    """)
    elapsed = time.monotonic() - started
    assert result.last["type"] == "ServerStartError", result.describe()
    assert "did not start after 2 attempts" in result.last["message"]
    assert "did not answer on localhost:" in result.last["message"]
    assert "raise 'startup_timeout'" in result.last["message"]
    records = launches(root)
    assert len(records) == 2
    assert not any(alive(record["pid"]) for record in records)
    assert elapsed < 20.0


WAIT_WITH_A_CORE = """
from rllib_integration.carla_core import CarlaCore
core = CarlaCore({{"backend": "carla", "carla_root": {root!r}, "timeout": 5.0}})
emit({{"pid": core._launcher.process.pid, "ports": [core._launcher.rpc_port, core._launcher.streaming_port]}})
{then}
"""


@pytest.fixture
def foreign_carla(tmp_path):
    """Somebody else's process named like CARLA, which our clean-up must leave alone."""
    other = tmp_path / "someone-else"
    other.mkdir()
    script = other / "CarlaUE4.sh"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    script.chmod(0o755)
    process = subprocess.Popen([str(script)], start_new_session=True)
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_our_server_and_leaves_a_foreign_carla_running(tmp_path, foreign_carla, signum):
    root = make_carla_root(tmp_path)
    script = start_script(tmp_path, WAIT_WITH_A_CORE.format(root=str(root), then="time.sleep(120)"))
    try:
        server = read_result(script)
        assert alive(server["pid"])
        script.send_signal(signum)
        script.wait(timeout=30)
    finally:
        script.kill()
        script.wait()
    assert script.returncode != 0
    assert group_members(server["pid"]) == []
    assert all(ports.is_free(port) for port in server["ports"])
    assert alive(foreign_carla.pid)


def test_a_killed_training_process_leaves_no_server_behind(tmp_path, foreign_carla):
    root = make_carla_root(tmp_path)
    script = start_script(tmp_path, WAIT_WITH_A_CORE.format(root=str(root), then="time.sleep(120)"))
    try:
        server = read_result(script)
        script.kill()   # SIGKILL: no atexit, no signal handler
        script.wait(timeout=10)
        deadline = time.monotonic() + 10.0
        while group_members(server["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        script.kill()
        script.wait()
    assert group_members(server["pid"]) == []
    assert not alive(launches(root)[0]["pid"])
    assert alive(foreign_carla.pid)


def test_interpreter_exit_without_close_stops_the_server_on_configured_ports(tmp_path, foreign_carla):
    root = make_carla_root(tmp_path)
    rpc, streaming, tm = ports.claim_ports(3)
    ports.release_ports([rpc, streaming, tm])
    code = WAIT_WITH_A_CORE.format(root=str(root), then="sys.exit(0)").replace(
        '"timeout": 5.0', f'"timeout": 5.0, "rpc_port": {rpc}, "streaming_port": {streaming}, "tm_port": {tm}')
    result = run_script(tmp_path, code)
    assert result.returncode == 0, result.describe()
    assert result.last["ports"] == [rpc, streaming]
    assert launches(root)[0]["args"][:2] == [f"-carla-rpc-port={rpc}", f"-carla-streaming-port={streaming}"]
    assert group_members(result.last["pid"]) == []
    assert all(ports.is_free(port) for port in (rpc, streaming, tm))
    assert alive(foreign_carla.pid)


def test_a_server_that_cannot_be_run_is_reported_and_its_ports_given_back(tmp_path):
    script = tmp_path / "CarlaUE4.sh"
    script.write_text("not a program\n")
    script.chmod(0o755)
    launcher = ServerLauncher(LaunchSettings.from_config(carla_config(backend="carla", server_path=str(script))))
    with pytest.raises(ServerStartError, match=f"(?s)exited with code 127 before answering.*cannot run {script}: "
                                               ".*Exec format error"):
        launcher.start()
    assert launcher.process is None and launcher._ports == []
