"""The DQN command lines end to end: train, checkpoint, restore, both inference scripts, Ctrl-C, bad input.

Every command runs with a marker in its environment, which the processes it starts inherit
(Ray's services and workers, simulator servers, TensorBoard): after it exits, no process in
/proc may carry the marker.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from core_harness import REPO_ROOT
from dqn_example.dqn_inference_model import POLICY_FILE, ConvFilter, QNetworkSpec, BirdviewQNetwork, save_policy

MARK = "CARLA_RLLIB_TEST_MARK"
CLI_CYCLE_BUDGET_S = 180.0
TINY_CONFIG = """
num_env_runners: 0
rollout_fragment_length: 4
train_batch_size: 16
num_steps_sampled_before_learning_starts: 50
min_sample_timesteps_per_iteration: 100
replay_buffer_config: {{type: PrioritizedEpisodeReplayBuffer, capacity: 2000, alpha: 0.6, beta: 0.4}}
epsilon: [[0, 1.0], [500, 0.1]]
model_config: {{conv_filters: [[8, 8, 8, valid]], head_fcnet_hiddens: [16]}}
stop: {{training_iteration: {iterations}}}
checkpoint_freq: 1
evaluation: {{interval: 2, episodes: 1}}
env_config:
  carla: {{timeout: 10.0, enable_rendering: false}}
  experiment:
    town: Town01
    hero: {{sensors: {{birdview: {{type: sensor.birdview, size: 32, radius: 16.0}}}}}}
    others: {{framestack: 2, grayscale: true, max_time_episode: 60, reward: improved, progress: route,
             end_on_collision: true, end_on_off_road: true}}
"""
# Runs dqn_inference.py as a script and fails if anything imported Ray.
NO_RAY_RUNNER = """
import runpy, sys
sys.argv = ["dqn_inference.py", *sys.argv[1:]]
code = 0
try:
    runpy.run_path("dqn_inference.py", run_name="__main__")
except SystemExit as exit:
    code = exit.code
assert "ray" not in sys.modules, "dqn_inference.py imported ray"
sys.exit(code)
"""


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries the marker."""
    found = []
    needle = f"{MARK}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def assert_nothing_left(marker: str) -> None:
    deadline = time.monotonic() + 10.0
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = marked_processes(marker)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for pid in left]
    assert not left, f"processes left behind: {commands}"


@pytest.fixture
def marker() -> str:
    value = uuid.uuid4().hex
    yield value
    for pid in marked_processes(value):   # a failed test must not leave its processes to the next ones
        os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command_env(marker: str) -> dict[str, str]:
    return dict(os.environ, **{MARK: marker, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"})


def run(marker: str, *args: str, timeout: float = 150.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=command_env(marker), capture_output=True,
                          text=True, timeout=timeout)


def tiny_config(tmp_path: Path, iterations: int) -> Path:
    path = tmp_path / f"tiny_{iterations}.yaml"
    path.write_text(TINY_CONFIG.format(iterations=iterations))
    return path


def episode_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("seed ")]


def test_train_restore_and_both_inference_scripts_from_the_checkpoint(tmp_path, marker):
    started = time.monotonic()
    runs = tmp_path / "runs"
    trained = run(marker, "dqn_train.py", str(tiny_config(tmp_path, 2)), "-d", str(runs), "-n", "tiny")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert re.search(r"TensorBoard: http://127\.0\.0\.1:\d+/", trained.stdout)
    assert "iter    2 | env steps       200" in trained.stdout
    assert (runs / "tiny" / "checkpoint_000002" / POLICY_FILE).is_file()
    assert (runs / "tiny" / "best" / POLICY_FILE).is_file()
    assert_nothing_left(marker)

    restored = run(marker, "dqn_train.py", str(tiny_config(tmp_path, 3)), "-d", str(runs), "-n", "tiny", "--restore",
                   "--tboff")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored" in restored.stdout and "iter    3 | env steps       300" in restored.stdout
    assert (runs / "tiny" / "checkpoint_000003" / POLICY_FILE).is_file()

    checkpoint = str(runs / "tiny" / "checkpoint_000003")
    video = tmp_path / "drive.mp4"
    plain = run(marker, "-c", NO_RAY_RUNNER, str(tiny_config(tmp_path, 3)), checkpoint, "--seed", "7",
                "--video", str(video))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert video.stat().st_size > 1000
    through_ray = run(marker, "dqn_inference_ray.py", str(tiny_config(tmp_path, 3)), checkpoint, "--seed", "7")
    assert through_ray.returncode == 0, through_ray.stdout + through_ray.stderr
    assert len(episode_lines(plain.stdout)) == 1 and "ended:" in plain.stdout
    assert episode_lines(plain.stdout) == episode_lines(through_ray.stdout)   # the same actions, the same episode
    assert_nothing_left(marker)
    assert time.monotonic() - started < CLI_CYCLE_BUDGET_S

    other_shape = tiny_config(tmp_path, 4)
    other_shape.write_text(other_shape.read_text().replace("framestack: 2", "framestack: 3"))
    one_line_error(run(marker, "dqn_train.py", str(other_shape), "-d", str(runs), "-n", "tiny", "--restore"),
                   r"holds a network for observations \(32, 32, 2\).*builds \(32, 32, 3\)")


def test_ctrl_c_stops_after_the_iteration_with_a_final_checkpoint(tmp_path, marker):
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "dqn_train.py", str(tiny_config(tmp_path, 1000)), "-d", str(runs),
                                "-n", "interrupted"], cwd=REPO_ROOT, env=command_env(marker), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if line.startswith("iter    1 "):
                os.killpg(process.pid, signal.SIGINT)   # as a terminal does: the whole foreground group
                break
        output.append(process.communicate(timeout=120)[0])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = "".join(output)
    assert process.returncode == 0, text
    assert "stopped (Ctrl-C)" in text
    final = sorted((runs / "interrupted").glob("checkpoint_*"))[-1]
    assert (final / POLICY_FILE).is_file()
    assert_nothing_left(marker)


def one_line_error(completed: subprocess.CompletedProcess, pattern: str) -> None:
    output = (completed.stdout + completed.stderr).strip()
    assert completed.returncode == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), output
    assert "Traceback" not in output


@pytest.mark.parametrize("text, pattern", [
    (None, "does not exist"),
    ("lr: 0.001\ntrain_batch_size: [64\n", r"\.yaml:3: not valid YAML: while parsing a flow sequence \(line 2\)"),
    ("env_config: {experiment: {others: {framestak: 2}}}\n", "did you mean 'framestack'"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, marker, text, pattern):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    one_line_error(run(marker, "dqn_train.py", str(path), "-d", str(tmp_path)), pattern)
    one_line_error(run(marker, "dqn_inference.py", str(path), str(tmp_path)), pattern)
    assert_nothing_left(marker)


def test_a_town_the_simulator_does_not_have_is_a_one_line_error(tmp_path, marker):
    config = tiny_config(tmp_path, 1)
    config.write_text(config.read_text().replace("town: Town01", "town: Town99"))
    pattern = r"town 'Town99' .*is not available"
    one_line_error(run(marker, "dqn_train.py", str(config), "-d", str(tmp_path), "--tboff"), pattern)
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    spec = QNetworkSpec((32, 32, 2), 29, (ConvFilter.parse([8, 8, 8, "valid"]),), (16,))
    save_policy(policy_dir / POLICY_FILE, spec, BirdviewQNetwork(spec).state_dict())
    one_line_error(run(marker, "dqn_inference.py", str(config), str(policy_dir)), pattern)
    assert_nothing_left(marker)


def test_unknown_rllib_settings_are_refused_before_ray_starts(tmp_path, marker):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_start: 100\n")
    one_line_error(run(marker, "dqn_train.py", str(path), "-d", str(tmp_path)), "did you mean 'learning_starts'")


def test_restore_with_nothing_to_restore_is_refused(tmp_path, marker):
    one_line_error(run(marker, "dqn_train.py", str(tiny_config(tmp_path, 1)), "-d", str(tmp_path), "-n", "empty",
                       "--restore"), "no checkpoint to restore")


def test_more_cpus_than_ray_sees_is_refused_before_training(tmp_path, marker):
    config = tiny_config(tmp_path, 1)
    config.write_text(config.read_text().replace("num_env_runners: 0", f"num_env_runners: {4 * os.cpu_count()}"))
    one_line_error(run(marker, "dqn_train.py", str(config), "-d", str(tmp_path), "--tboff"), r"asks for \d+ CPU")
    assert_nothing_left(marker)


def test_checkpoints_that_do_not_fit_are_refused(tmp_path, marker):
    config = str(tiny_config(tmp_path, 1))
    one_line_error(run(marker, "dqn_inference.py", config, str(tmp_path)), "is not a checkpoint")
    one_line_error(run(marker, "dqn_inference_ray.py", config, str(tmp_path)), "is not an RLlib checkpoint")
    other_shape = QNetworkSpec((64, 64, 4), 29, (ConvFilter.parse([8, 8, 8, "valid"]),), (16,))
    save_policy(tmp_path / POLICY_FILE, other_shape, BirdviewQNetwork(other_shape).state_dict())
    one_line_error(run(marker, "dqn_inference.py", config, str(tmp_path)),
                   r"observations of shape \(64, 64, 4\).*gives \(32, 32, 2\)")
    if not torch.cuda.is_available():
        one_line_error(run(marker, "dqn_inference.py", config, str(tmp_path), "-d", "cuda"), "no CUDA GPU")
    assert_nothing_left(marker)


def test_auto_connects_to_a_running_cluster_and_leaves_it_running(tmp_path, marker):
    head_marker = uuid.uuid4().hex
    port = free_port()
    temp_dir = Path(f"/tmp/rt-{head_marker[:8]}")   # short: Ray's socket paths must stay under 108 bytes
    # A loopback-only test cluster; without this, a ray.init() elsewhere on the machine may rotate the
    # shared token in ~/.ray between the head's start and the driver's connection.
    no_token = {"RAY_AUTH_MODE": "disabled"}
    head = subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
                           "--node-ip-address=127.0.0.1",
                           "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                           f"--temp-dir={temp_dir}"], env=dict(command_env(head_marker), **no_token),
                          capture_output=True, text=True, timeout=120)
    try:
        assert head.returncode == 0, head.stdout + head.stderr
        env = dict(command_env(marker), RAY_ADDRESS=f"127.0.0.1:{port}", **no_token)
        trained = subprocess.run([sys.executable, "dqn_train.py", str(tiny_config(tmp_path, 1)), "-d",
                                  str(tmp_path / "runs"), "--auto", "--tboff"], cwd=REPO_ROOT, env=env,
                                 capture_output=True, text=True, timeout=150)
        assert trained.returncode == 0, trained.stdout + trained.stderr
        assert "iter    1 |" in trained.stdout
        assert_nothing_left(marker)
        assert marked_processes(head_marker), "dqn_train.py --auto stopped the cluster it connected to"
    finally:
        for pid in marked_processes(head_marker):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while marked_processes(head_marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in marked_processes(head_marker):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
