"""Child processes of the benchmarks: servers and clients in their own process groups.

The carla client can abort its whole process, so every benchmark runs its clients in
subprocesses, each of which prints its result as one `RESULT <json>` line on stdout; servers
run in their own process group, so one signal stops a server with all it started. The
benchmark scripts import this module from their own folder (run them as
`python benchmarks/<name>.py`).
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_PATTERN = re.compile(r"rpc (\S+):(\d+) streaming (\d+) town (\S+)")
RESULT_PREFIX = "RESULT "
SERVER_START_TIMEOUT_S = 120.0

CHILDREN: list[subprocess.Popen] = []


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def start_child(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """Starts a child in the repository root, in a process group of its own, and keeps it in CHILDREN."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=child_env(), start_new_session=True, **kwargs)
    CHILDREN.append(process)
    return process


def stop_child(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the child's process group, SIGKILL if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    if process in CHILDREN:
        CHILDREN.remove(process)


def stop_all_children() -> None:
    for process in list(CHILDREN):
        stop_child(process, grace_s=3.0)


def wait_ready(process: subprocess.Popen,
               timeout_s: float = SERVER_START_TIMEOUT_S) -> tuple[re.Match[str] | None, str]:
    """Reads a server's first stdout line (its ready line: RPC host and port, streaming port, town)
    for at most timeout_s; returns its match of READY_PATTERN (None when it did not start) and the line."""
    deadline = time.monotonic() + timeout_s
    line: str | bytes = ""
    while time.monotonic() < deadline and process.poll() is None:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            break
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    return READY_PATTERN.search(text), text


def emit_result(value: Any) -> None:
    """A child's result, for parse_result in the parent."""
    print(RESULT_PREFIX + json.dumps(value), flush=True)


def parse_result(stdout: str | bytes) -> Any:
    """The value of the last RESULT line in a child's stdout, or None when it printed none."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    results = [line[len(RESULT_PREFIX):] for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(results[-1]) if results else None


def synchronous(world: Any, delta_s: float) -> Any:
    """Puts a carla.World in synchronous mode with fixed delta_s steps (client side); returns its settings."""
    settings = world.get_settings()
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = delta_s
    world.apply_settings(settings)
    return settings
