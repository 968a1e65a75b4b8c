"""Real servers for the AWS tests: a moto EC2 server, and an OpenSSH sshd on 127.0.0.1 that stands in
for every instance (aws_helper.py's SSH endpoint override points there), logging into a throwaway
user whose home folder plays the instance's disk.

Moto's instances run nothing, so the "instance" is this sshd; like cloud-init on a real one, a
watcher authorizes each key pair aws_helper.py saves. The user's environment (sshd SetEnv) is that
of a pre-provisioned, offline machine: the project's dependencies importable from a folder that
mirrors the test venv's site-packages minus the project itself, and CARLA's download pointed at a
tiny tarball whose CarlaUE4.sh starts the embedded server with the same flags.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[1]
AWS_HELPER = ROOT / "aws_helper.py"
RUN_AWS = ROOT / "run_aws.bash"
SSHD = Path("/usr/sbin/sshd")
REGION = "us-east-1"
START_TIMEOUT_S = 30.0
TEST_SSH_TIMEOUT_S = 20
# Stands in for checkip.amazonaws.com: nothing listens on port 1, so detection fails fast and
# never leaves this machine unless a test gives its own echo server.
UNREACHABLE_URL = "http://127.0.0.1:1/"
DLAMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) {date}"
# Moto's image catalogue for these tests: two Amazon deep-learning images, the newer must win (moto
# takes every catalogue image as Amazon's; tests register look-alikes under their own account).
BASE_AMIS = [
    {"ami_id": "ami-0dl0000000000old", "name": DLAMI_NAME.format(date="20250101"), "owner_id": "898082745236",
     "owner_alias": "amazon", "creation_date": "2025-01-01T00:00:00.000Z"},
    {"ami_id": "ami-0dl0000000000new", "name": DLAMI_NAME.format(date="20250601"), "owner_id": "898082745236",
     "owner_alias": "amazon", "creation_date": "2025-06-01T00:00:00.000Z"},
]
NEWEST_BASE_AMI = "ami-0dl0000000000new"
FAKE_CARLA_LAUNCHER = """#!/usr/bin/env bash
# Test stand-in for CARLA's CarlaUE4.sh: the embedded server takes the same flags.
exec python -m rllib_integration.embedded "$@"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} while starting")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S} s")


def stop_group(process: subprocess.Popen) -> None:
    """Ends a process started with start_new_session=True, and everything in its process group."""
    for signum, grace_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # leftovers of a group whose leader already exited
    except ProcessLookupError:
        pass


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()}


def shared_folder(prefix: str) -> Path:
    """A folder under /tmp the test login can read (pytest's tmp_path is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@dataclass
class MotoServer:
    process: subprocess.Popen
    url: str

    def ec2(self):
        return boto3.client("ec2", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def instances(self) -> list[dict]:
        return [instance for reservation in self.ec2().describe_instances()["Reservations"]
                for instance in reservation["Instances"]]

    def state(self, instance_id: str) -> str:
        return self.ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def start_moto(workdir: Path) -> MotoServer:
    amis = workdir / "amis.json"
    amis.write_text(json.dumps([dict(ami, state="available", public=True, architecture="x86_64",
                                     root_device_type="ebs", root_device_name="/dev/sda1",
                                     virtualization_type="hvm", hypervisor="xen") for ami in BASE_AMIS]))
    port = free_port()
    log = open(workdir / "moto.log", "w")
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env=dict(os.environ, MOTO_AMIS_PATH=str(amis)))
    log.close()
    try:
        wait_for_port(port, process, "moto_server")
    except RuntimeError:
        stop_group(process)
        raise
    return MotoServer(process, f"http://127.0.0.1:{port}")


def aws_env(moto: MotoServer, keys_dir: Path, **overrides: str) -> dict[str, str]:
    """This process's environment with AWS pointed at moto (no real credentials or config leak in)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "CARLA_RLLIB_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
               AWS_ENDPOINT_URL=moto.url, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               CARLA_RLLIB_KEYS_DIR=str(keys_dir), CARLA_RLLIB_CALLER_IP_URL=UNREACHABLE_URL, PYTHON=sys.executable)
    env.update(overrides)
    return env


def run_helper(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AWS_HELPER), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


class LoginUser:
    """A throwaway Unix user whose home folder is a temporary one: the instance's disk."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.home = shared_folder(f"{name}-home-")
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(self.home), "--shell", "/bin/bash",
                        "--password", "*", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        self.uid = entry.pw_uid
        os.chown(self.home, entry.pw_uid, entry.pw_gid)

    def pids(self) -> list[int]:
        """Its live processes (zombies are already dead: only their parent can clear them)."""
        listing = subprocess.run(["ps", "-o", "pid=,stat=", "-u", str(self.uid)], capture_output=True, text=True)
        return [int(pid) for pid, state in (line.split() for line in listing.stdout.splitlines()) if "Z" not in state]

    def kill_processes(self) -> None:
        """Ends what the tests started as this user on the 'instance' (detached runs, followers)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def delete(self) -> None:
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            self.kill_processes()
            time.sleep(0.1)
        subprocess.run(["userdel", "--force", self.name], capture_output=True)  # zombies count as users
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class SshServer:
    process: subprocess.Popen
    port: int
    authorized_keys: Path
    authorized: set[Path] = field(default_factory=set)

    def authorize(self, pem: Path) -> None:
        public = subprocess.run(["ssh-keygen", "-y", "-f", str(pem)], capture_output=True, text=True, check=True).stdout
        with open(self.authorized_keys, "a") as keys:
            keys.write(public)
        self.authorized.add(pem)


def start_sshd(workdir: Path, user: LoginUser, environment: dict[str, str]) -> SshServer:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key")], check=True)
    authorized_keys = workdir / "authorized_keys"
    authorized_keys.touch()
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {workdir / 'host_key'}", f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", f"AllowUsers {user.name}", "MaxStartups 50",
        "SetEnv " + " ".join(f'{key}="{value}"' for key, value in environment.items()), ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder (made by its service)
    log = open(workdir / "sshd.log", "w")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    try:
        wait_for_port(port, process, "sshd")
    except RuntimeError:
        stop_group(process)
        raise
    return SshServer(process, port, authorized_keys)


class KeyAuthorizer(threading.Thread):
    """Plays cloud-init: every private key aws_helper.py saves gets its public half authorized."""

    def __init__(self, keys_dir: Path, sshd: SshServer) -> None:
        super().__init__(daemon=True)
        self.keys_dir, self.sshd, self.done = keys_dir, sshd, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for pem in self.keys_dir.glob("*.pem"):
                if pem not in self.sshd.authorized:
                    self.sshd.authorize(pem)


def provisioned_site(folder: Path) -> Path:
    """The test venv's installed packages without carla-rllib itself (which install.sh must install)."""
    site = folder / "site-packages"
    site.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("__editable__", "carla_rllib", "__pycache__")):
            (site / entry.name).symlink_to(entry)
    return site


def fake_carla_tarball(folder: Path) -> Path:
    launcher = folder / "CarlaUE4.sh"
    launcher.write_text(FAKE_CARLA_LAUNCHER)
    launcher.chmod(0o755)
    tarball = folder / "CARLA_0.9.16.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(launcher, arcname="CarlaUE4.sh")
    return tarball


def system_python() -> str:
    """A python of the test venv's version that a non-root login can run (the venv's may sit under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if not found:
        pytest.fail(f"needs a system {version} for the test login (the instance's python)")
    return found


def require_tools() -> None:
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync", "useradd") if not shutil.which(tool)]
    if missing or not SSHD.exists() or os.geteuid() != 0:
        pytest.fail(f"needs root, sshd and {', '.join(missing) or 'ssh tools'} (`make system-deps`)")


@dataclass
class AwsWorld:
    """Everything a test needs to run aws_helper.py / run_aws.bash against moto and the local sshd."""

    moto: MotoServer
    sshd: SshServer
    user: LoginUser
    keys_dir: Path

    def env(self, **overrides: str) -> dict[str, str]:
        ssh = dict(CARLA_RLLIB_SSH_HOST="127.0.0.1", CARLA_RLLIB_SSH_PORT=str(self.sshd.port),
                   CARLA_RLLIB_SSH_USER=self.user.name, CARLA_RLLIB_SSH_TIMEOUT_S=str(TEST_SSH_TIMEOUT_S))
        return aws_env(self.moto, self.keys_dir, **{**ssh, **overrides})

    def helper(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_helper(*args, env=env or self.env(), timeout=timeout)

    def launch(self, name: str, ami_id: str = NEWEST_BASE_AMI, *extra: str) -> str:
        result = self.helper("launch", "--name", name, "--ami-id", ami_id, "--ssh-cidr", "198.51.100.7/32", *extra)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def running_instances(self) -> list[str]:
        return [instance["InstanceId"] for instance in self.moto.instances()
                if instance["State"]["Name"] in ("pending", "running")]


def aws_world(prefix: str) -> Iterator[AwsWorld]:
    """Starts moto, a login user and sshd; tears them all down and asserts no instance was left running."""
    require_tools()
    python = system_python()
    shared = shared_folder(f"carla-rllib-{prefix}-")
    user = moto = sshd = authorizer = None
    try:
        moto = start_moto(shared)
        user = LoginUser(f"crl{prefix}{os.getpid()}")
        environment = {"PYTHON": python, "PYTHONPATH": str(provisioned_site(shared)),
                       "CARLA_TARBALL_URL": f"file://{fake_carla_tarball(shared)}",
                       "CARLA_SYSTEM_PACKAGES": "rsync", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}
        sshd_dir = shared / "sshd"
        sshd_dir.mkdir()
        sshd = start_sshd(sshd_dir, user, environment)
        keys_dir = shared / "keys"
        keys_dir.mkdir(mode=0o700)
        authorizer = KeyAuthorizer(keys_dir, sshd)
        authorizer.start()
        world = AwsWorld(moto, sshd, user, keys_dir)
        yield world
        assert world.running_instances() == [], "instances left running in moto"
    finally:
        if authorizer:
            authorizer.done.set()
            authorizer.join()
        if sshd:
            stop_group(sshd.process)
        if user:
            user.delete()
        if moto:
            stop_group(moto.process)
        shutil.rmtree(shared, ignore_errors=True)


def start_background(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """A command in its own process group (so a test can kill it and all it spawned), output merged."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                            start_new_session=True)


def echo_server(text: str) -> tuple[str, Callable[[], None]]:
    """A local HTTP server answering `text` (stands in for the public-IP echo service); returns (url, stop)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()
    return f"http://127.0.0.1:{server.server_address[1]}/", stop

