"""Harness for CarlaCore / CarlaEnv scenarios: each runs as a script in a subprocess.

The carla client can abort its whole process, so scenario code never runs inside pytest; it
prints `RESULT {json}` lines that the test reads. A fake CARLA install (a CarlaUE4.sh that
records its arguments and execs the embedded server, which takes the same flags) lets the
real-server path run for real here. Process checks look at /proc, never at process names.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT_PRELUDE = """
import json, logging, os, signal, sys, time
import numpy as np
sys.path.insert(0, {tests_dir!r})
def emit(value):
    print("RESULT " + json.dumps(value, default=str), flush=True)
"""
CARLA_ONLY_FLAGS = ("-carla-primary-port=",)   # flags of CarlaUE4.sh the embedded server does not take
FAKE_SERVER = """#!{python}
import json, os, sys, time
record = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launches.jsonl")
with open(record, "a") as out:
    out.write(json.dumps({{"pid": os.getpid(), "pgid": os.getpgrp(), "args": sys.argv[1:]}}) + "\\n")
MODE = {mode!r}
if MODE == "silent":    # a server that starts but never answers
    time.sleep(3600)
arguments = [a for a in sys.argv[1:] if not a.startswith({carla_only!r})]
os.execv(sys.executable, [sys.executable, "-m", "rllib_integration.embedded", *arguments])
"""


@dataclass
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str
    results: list

    @property
    def last(self) -> object:
        assert self.results, f"no RESULT line\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-5000:]}"
        return self.results[-1]

    def describe(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-5000:]}"


def script_text(*parts: str) -> str:
    """The prelude and the parts, each dedented on its own."""
    return SCRIPT_PRELUDE.format(tests_dir=str(REPO_ROOT / "tests")) + "".join(map(textwrap.dedent, parts))


def run_script(tmp_path: Path, *parts: str, timeout: float = 60.0, env: dict | None = None) -> ScriptResult:
    """Runs scenario code parts (emit() predefined) in a fresh interpreter and collects its RESULT lines."""
    path = tmp_path / f"scenario_{len(list(tmp_path.glob('scenario_*.py')))}.py"
    path.write_text(script_text(*parts))
    completed = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout,
                               env=dict(os.environ, **(env or {})), cwd=REPO_ROOT)
    results = [json.loads(line[len("RESULT "):]) for line in completed.stdout.splitlines()
               if line.startswith("RESULT ")]
    return ScriptResult(completed.returncode, completed.stdout, completed.stderr, results)


def start_script(tmp_path: Path, code: str, env: dict | None = None) -> subprocess.Popen:
    """Starts scenario code without waiting (for signal tests); stdout is a pipe of RESULT lines."""
    path = tmp_path / f"scenario_{len(list(tmp_path.glob('scenario_*.py')))}.py"
    path.write_text(script_text(code))
    return subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})), cwd=REPO_ROOT, start_new_session=True)


def read_result(process: subprocess.Popen) -> object:
    """The next RESULT line of a started script."""
    for line in process.stdout:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"script ended without a RESULT line: {process.stderr.read()[-5000:]}")


def make_carla_root(tmp_path: Path, mode: str = "exec", name: str = "carla") -> Path:
    """A fake CARLA install whose CarlaUE4.sh records each launch in launches.jsonl."""
    root = tmp_path / name
    root.mkdir()
    script = root / "CarlaUE4.sh"
    script.write_text(FAKE_SERVER.format(python=sys.executable, mode=mode, carla_only=CARLA_ONLY_FLAGS))
    script.chmod(0o755)
    return root


def launches(root: Path) -> list[dict]:
    record = root / "launches.jsonl"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (read from /proc, not by name)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


