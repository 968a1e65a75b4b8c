"""End to end against moto and a real sshd: create-image runs the real aws/install/install.sh over SSH
and registers an AMI; run_aws.bash trains on an instance launched from it (surviving an SSH drop),
fetches the results and leaves the instance stopped, also when it is killed or cannot connect."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from aws_harness import (DLAMI_NAME, NEWEST_BASE_AMI, ROOT, RUN_AWS, AwsWorld, aws_world, free_port, start_background,
                         stop_group)

EXIT_USAGE = 2
IMAGE_NAME = "carla-rllib-test"
STAND_IN_TRAINING = '''"""Stand-in for dqn_train.py: same command line, a few quick iterations, then a checkpoint."""
import argparse, json, pathlib, time
parser = argparse.ArgumentParser()
parser.add_argument("config")
parser.add_argument("-d", "--directory", required=True)
parser.add_argument("-n", "--name", required=True)
parser.add_argument("--restore", action="store_true")
parser.add_argument("--overwrite", action="store_true")
parser.add_argument("--iterations", type=int, default=3)
args = parser.parse_args()
run = pathlib.Path(args.directory) / args.name
run.mkdir(parents=True, exist_ok=True)
for iteration in range(args.iterations):
    print(f"iteration {iteration}", flush=True)
    time.sleep(1)
(run / "checkpoint.json").write_text(json.dumps({"config": open(args.config).read(), "iterations": args.iterations}))
print("training done", flush=True)
'''


@pytest.fixture(scope="module")
def world() -> Iterator[AwsWorld]:
    yield from aws_world("r")


@pytest.fixture(scope="module")
def built(world: AwsWorld) -> tuple[str, subprocess.CompletedProcess]:
    """The AMI create-image made with the real install.sh, from the base image its name lookup found."""
    look_alike = world.moto.ec2().register_image(Name=DLAMI_NAME.format(date="20990101"), RootDeviceName="/dev/sda1",
                                                  Architecture="x86_64")  # newer, but not Amazon's: never picked
    assert look_alike["ImageId"]
    result = world.helper("create-image", "--name", IMAGE_NAME, "--ssh-cidr", "198.51.100.7/32", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1], result


@pytest.fixture
def training(tmp_path: Path) -> tuple[Path, Path]:
    script, config = tmp_path / "tiny_train.py", tmp_path / "tiny.yaml"
    script.write_text(STAND_IN_TRAINING)
    config.write_text("lr: 0.001\n")
    return script, config


def run_aws(world: AwsWorld, cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    return start_background([str(RUN_AWS), *args], world.env(**env), cwd)


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        stop_group(process)
    return output


def test_create_image_installs_carla_and_the_project_and_registers_an_ami(world: AwsWorld, built) -> None:
    image_id, result = built
    images = world.moto.ec2().describe_images(ImageIds=[image_id])["Images"]
    assert images[0]["Name"] == IMAGE_NAME and images[0]["State"] == "available"
    builders = [(i["ImageId"], i["State"]["Name"]) for i in world.moto.instances()
                if i["Tags"] == [{"Key": "Name", "Value": f"{IMAGE_NAME}-builder"}]]
    assert builders == [(NEWEST_BASE_AMI, "terminated")]
    assert result.stdout.strip() == image_id  # the install's output is progress, on stderr
    assert "server 0.9.16 answered" in result.stderr
    assert f"rllib_integration from {world.user.home}/carla-rllib/rllib_integration" in result.stderr
    assert (world.user.home / "CARLA_0.9.16" / "CarlaUE4.sh").exists()
    assert "CARLA_ROOT" in (world.user.home / ".carla-rllib" / "env.sh").read_text()
    assert not list((world.user.home / "carla-rllib").rglob("*.pem"))


def test_install_script_is_idempotent(world: AwsWorld, built) -> None:
    instance_id = world.launch("reinstall", built[0])
    again = world.helper("exec", "--instance-id", instance_id, "--script", str(ROOT / "aws/install/install.sh"),
                         "--script-args", "~/carla-rllib", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already installed" in again.stdout and "server 0.9.16 answered" in again.stdout
    assert world.helper("stop", "--instance-id", instance_id).returncode == 0


def test_failing_installation_script_terminates_the_builder_and_makes_no_ami(world: AwsWorld, tmp_path: Path) -> None:
    failing = tmp_path / "broken.sh"
    failing.write_text("#!/usr/bin/env bash\necho installing...\nexit 7\n")
    result = world.helper("create-image", "--name", "broken", "--base-ami-id", NEWEST_BASE_AMI,
                          "--ssh-cidr", "198.51.100.7/32", "--installation-scripts", str(failing))
    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1] == (f"aws_helper.py: error: installation script {failing} failed "
                                                      "(exit status 7): builder terminated, no AMI created")
    assert world.moto.ec2().describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["broken"]}])["Images"] == []
    assert world.running_instances() == []


def test_run_aws_trains_to_completion_through_an_ssh_drop_and_stops_the_instance(
        world: AwsWorld, built, training, tmp_path: Path) -> None:
    instance_id = world.launch("train", built[0])
    script, config = training
    process = run_aws(world, tmp_path, "-i", instance_id, "-s", str(script), "-c", str(config), "-n", "tiny", "-o",
                      "--", "--iterations", "8")
    dropped = drop_ssh_of_follower(process)
    output = finish(process)
    assert process.returncode == 0, output
    assert dropped and "SSH connection lost" in output, output
    assert ".run_aws/tiny_train.py .run_aws/tiny.yaml -d results -n tiny --overwrite --iterations 8" in output
    assert "training done" in output
    checkpoint = json.loads((tmp_path / "results" / "tiny" / "checkpoint.json").read_text())
    assert checkpoint == {"config": "lr: 0.001\n", "iterations": 8}
    assert "iteration 7" in (tmp_path / "results" / "tiny.log").read_text()
    assert world.moto.state(instance_id) == "stopped"


def drop_ssh_of_follower(process: subprocess.Popen, timeout_s: float = 60) -> bool:
    """Kills the ssh that streams the run's output, as a network drop would, once the run is going."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        listing = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--sid", str(process.pid)], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            pid, args = line.strip().split(" ", 1)
            if args.startswith("ssh ") and "remote_run.sh follow" in args:
                time.sleep(0.5)  # let a line through first
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except ProcessLookupError:
                    return False  # the run already ended: nothing left to drop
                return True
        time.sleep(0.2)
    return False


def read_until(process: subprocess.Popen, text: str, timeout_s: float = 60) -> str:
    """The output of `process` up to the first line holding `text`, or a failure after `timeout_s`."""
    lines, seen = [], threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if text in line:
                seen.set()
                return
    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(timeout_s), "".join(lines)
    return "".join(lines)


def test_killing_run_aws_mid_run_still_stops_the_instance(world: AwsWorld, built, training, tmp_path: Path) -> None:
    instance_id = world.launch("killed", built[0])
    script, config = training
    process = run_aws(world, tmp_path, "-i", instance_id, "-s", str(script), "-c", str(config), "-n", "long",
                      "--", "--iterations", "100")
    try:
        started = read_until(process, "iteration 1")
        process.send_signal(signal.SIGTERM)
        output = started + finish(process, timeout=60)
    finally:
        stop_group(process)  # also when the run never got going
    assert process.returncode == 143, output
    assert f"stopping {instance_id}" in output
    assert world.moto.state(instance_id) == "stopped"


def test_run_aws_stops_the_instance_when_ssh_never_answers(world: AwsWorld, built, training, tmp_path: Path) -> None:
    instance_id = world.launch("unanswered", built[0])
    script, config = training
    process = run_aws(world, tmp_path, "-i", instance_id, "-s", str(script), "-c", str(config),
                      CARLA_RLLIB_SSH_PORT=str(free_port()), CARLA_RLLIB_SSH_TIMEOUT_S="3")
    output = finish(process)
    assert process.returncode == EXIT_USAGE, output
    assert "aws_helper.py: error: cannot reach" in output
    assert world.moto.state(instance_id) == "stopped"


def test_run_aws_bad_input_gets_one_line_and_starts_nothing(world: AwsWorld, built, training, tmp_path: Path) -> None:
    script, config = training
    stopped = world.launch("idle", built[0])
    assert world.helper("stop", "--instance-id", stopped).returncode == 0
    gone = world.launch("gone", built[0])
    world.moto.ec2().terminate_instances(InstanceIds=[gone])
    cases = {
        (stopped, str(tmp_path / "missing.py"), str(config)): "training script not found",
        (stopped, str(script), str(tmp_path / "missing.yaml")): "config file not found",
        ("i-0123456789abcdef0", str(script), str(config)): "i-0123456789abcdef0 not found",
        (gone, str(script), str(config)): f"instance {gone} is terminated",
    }
    for (instance_id, script_path, config_path), message in cases.items():
        output = finish(run_aws(world, tmp_path, "-i", instance_id, "-s", script_path, "-c", config_path))
        lines = output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], output
    assert world.moto.state(stopped) == "stopped"


def test_shell_scripts_are_shellcheck_clean() -> None:
    if not shutil.which("shellcheck"):
        pytest.fail("needs shellcheck (`make system-deps`)")
    scripts = [RUN_AWS, ROOT / "aws/install/install.sh", ROOT / "aws/remote_run.sh"]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout

