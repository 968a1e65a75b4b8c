"""Test harness: a real embedded server process and the official client in a subprocess.

The carla client aborts its whole process on some failures (no Python exception), so
client code always runs in a child process; when it dies, the failure message carries
the tail of the server's RPC log so the last call before the crash is visible.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

READY_PATTERN = re.compile(r"rpc (\S+):(\d+) streaming (\d+) town (\S+)")
SERVER_START_TIMEOUT_S = 60.0
CLIENT_PRELUDE = """
import json, os, sys, time
import carla
HOST, PORT = os.environ["CARLA_TEST_HOST"], int(os.environ["CARLA_TEST_PORT"])
def connect(timeout=10.0):
    client = carla.Client(HOST, PORT)
    client.set_timeout(timeout)
    return client
def emit(value):
    print("RESULT " + json.dumps(value), flush=True)
def synchronous(world, delta=0.05):
    '''Switches the world to synchronous mode with fixed `delta` second steps; returns its settings.'''
    settings = world.get_settings()
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = delta
    world.apply_settings(settings)
    return settings
def connect_sync(timeout=10.0, delta=0.05):
    '''connect(), then synchronous(): returns (client, world, settings).'''
    client = connect(timeout)
    world = client.get_world()
    return client, world, synchronous(world, delta)
def destroy_vehicles(client, world):
    client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in world.get_actors().filter("vehicle.*")], True)
"""
# A synchronous world with no vehicles left from earlier tests, its blueprint library and spawn
# points, and cleanup() to remove the vehicles again.
SYNC_PRELUDE = """
client, world, settings = connect_sync()
library = world.get_blueprint_library()
spawn_points = world.get_map().get_spawn_points()
def cleanup():
    destroy_vehicles(client, world)
cleanup()
"""


@dataclass
class ServerProcess:
    process: subprocess.Popen
    host: str
    port: int
    streaming_port: int
    log_path: Path

    def rpc_log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no RPC log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp_path: Path, *extra: str, town: str = "Town01") -> ServerProcess:
    """Starts the server on free ports (port 0) and waits for its ready line."""
    log_path = tmp_path / f"rpc-{os.getpid()}-{len(list(tmp_path.glob('rpc-*')))}.log"
    command = [sys.executable, "-m", "rllib_integration.embedded", "-carla-rpc-port=0",
               "-carla-streaming-port=0", f"--town={town}", f"--log-rpc={log_path}", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    line = process.stdout.readline()
    match = READY_PATTERN.search(line)
    if not match:
        process.kill()
        _, err = process.communicate(timeout=10)
        raise RuntimeError(f"embedded server did not start: {line!r} {err}")
    return ServerProcess(process, match.group(1), int(match.group(2)), int(match.group(3)), log_path)


def run_client(server: ServerProcess, *code: str, timeout: float = 120.0) -> object:
    """Runs client code parts (with connect()/emit() predefined) and returns what it emitted."""
    env = dict(os.environ, CARLA_TEST_HOST=server.host, CARLA_TEST_PORT=str(server.port))
    script = CLIENT_PRELUDE + "".join(textwrap.dedent(part) for part in code)
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=timeout, env=env)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"client timed out after {timeout}s\nRPC log tail:\n{server.rpc_log_tail()}") from error
    emitted = [line[len("RESULT "):] for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not emitted:
        raise AssertionError(
            f"client exited with {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
            f"stderr:\n{result.stderr[-3000:]}\nRPC log tail:\n{server.rpc_log_tail()}")
    return json.loads(emitted[-1])
