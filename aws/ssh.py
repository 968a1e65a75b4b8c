"""SSH and rsync to an instance through the OpenSSH client, so ~/.ssh/config, bastions
(ProxyJump) and port forwards keep working as they do for the user's own ssh.

Host keys are pinned per instance (keys/known_hosts/<instance-id>, HostKeyAlias=<instance-id>):
the first contact records the key, every later one must match it, whatever the IP became.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .access import KeyStore
from .ec2 import Instance
from .errors import UsageError
from .progress import step

log = logging.getLogger(__name__)

DEFAULT_USER = "ubuntu"  # the login of Ubuntu AMIs, deep-learning ones included
DEFAULT_TIMEOUT_S = 300.0  # a fresh instance takes a minute or two before sshd answers
CONNECT_TIMEOUT_S = 10
RETRY_DELAY_S = 2.0
# Files that never leave this machine, whatever --exclude says: private keys and key folders.
ALWAYS_EXCLUDED = ("*.pem", "keys/")
DEFAULT_EXCLUDES = (".git/", "__pycache__/", ".venv/", "*.egg-info/", ".pytest_cache/", "map_cache/")
REMOTE_EXEC_DIR = ".carla-rllib/exec"


@dataclass(frozen=True)
class SshSettings:
    """How to reach instances; host/port override the instance's address (bastion, port forward)."""

    host: str | None = None
    port: int | None = None
    user: str = DEFAULT_USER
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Endpoint:
    """One instance as seen by ssh: address, login, private key and its pinned host key."""

    instance_id: str
    host: str
    port: int | None
    user: str
    key_file: Path
    known_hosts: Path
    timeout_s: float

    def options(self) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["-i", str(self.key_file), *port,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f'UserKnownHostsFile="{self.known_hosts}"', "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=accept-new", "-o", f"HostKeyAlias={self.instance_id}",
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def ssh(self, command: str) -> list[str]:
        return ["ssh", *self.options(), self.destination, command]

    def ssh_command(self) -> str:
        return shlex.join(["ssh", *self.options(), self.destination])

    def tunnel_command(self, ports: tuple[int, ...]) -> str:
        """An ssh command forwarding local `ports` to the instance's loopback: how dashboards are reached."""
        forwards = [arg for port in ports for arg in ("-L", f"{port}:localhost:{port}")]
        return shlex.join(["ssh", "-N", *forwards, *self.options(), self.destination])


def endpoint(instance: Instance, settings: SshSettings, keys: KeyStore) -> Endpoint:
    missing = [tool for tool in ("ssh", "rsync") if not shutil.which(tool)]
    if missing:
        raise UsageError(f"{' and '.join(missing)} not found: install the OpenSSH client and rsync")
    host = settings.host or instance.public_ip or instance.private_ip
    if not host:
        raise UsageError(f"instance {instance.id} has no IP address (state {instance.state})")
    if not instance.key_name:
        raise UsageError(f"instance {instance.id} was launched without a key pair: it cannot be reached over SSH")
    key_file = keys.pem(instance.key_name)
    if not key_file.exists():
        raise UsageError(f"private key {key_file} of key pair {instance.key_name} is missing: "
                         "copy it there (mode 0400) or pass --keys-dir")
    return Endpoint(instance.id, host, settings.port, settings.user, key_file,
                    keys.known_hosts(instance.id), settings.timeout_s)


def _probe(target: Endpoint) -> str | None:
    """None when a command runs over SSH, else why not (ssh's last line of complaint)."""
    probe = subprocess.run(target.ssh("true"), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if probe.returncode == 0:
        return None
    if "Host key verification failed" in probe.stderr or "REMOTE HOST IDENTIFICATION" in probe.stderr:
        raise UsageError(f"the SSH host key of {target.instance_id} is not the one pinned in {target.known_hosts}: "
                         "refusing to connect (delete that file only if the instance was rebuilt)")
    return (probe.stderr.strip().splitlines() or [f"ssh exit status {probe.returncode}"])[-1]


def wait_until_reachable(target: Endpoint) -> None:
    """Retries until a command runs over SSH (silently when it does at once); a changed host key
    stops at once, it is never retried."""
    why = _probe(target)
    if why is None:
        return
    deadline = time.monotonic() + target.timeout_s
    with step(f"waiting for SSH on {target.instance_id} ({target.destination})", target.timeout_s):
        while why is not None:
            if time.monotonic() + RETRY_DELAY_S > deadline:
                port = f":{target.port}" if target.port else ""
                raise UsageError(f"cannot reach {target.instance_id} over SSH at {target.destination}{port} "
                                 f"within {target.timeout_s:.0f} s: {why}")
            time.sleep(RETRY_DELAY_S)
            why = _probe(target)


def run(target: Endpoint, command: str, stdout: TextIO | None = None) -> int:
    """Runs `command` in the remote login shell, streaming its output (to `stdout`, default ours);
    returns its exit status."""
    log.debug("ssh %s: %s", target.destination, command)
    return subprocess.run(target.ssh(command), stdin=subprocess.DEVNULL, stdout=stdout).returncode


def run_script(target: Endpoint, script: Path, arguments: str, stdout: TextIO | None = None) -> int:
    """Uploads a local script and runs it with `arguments` (parsed by the remote shell) from the home folder."""
    if not script.is_file():
        raise UsageError(f"script not found: {script}")
    transfer(target, str(script), REMOTE_EXEC_DIR, upload=True)
    remote = f"{REMOTE_EXEC_DIR}/{script.name}"
    return run(target, f"chmod u+x {shlex.quote(remote)} && ./{shlex.quote(remote)} {arguments}", stdout)


def transfer(target: Endpoint, source: str, target_dir: str, *, upload: bool, excludes: tuple[str, ...] = ()) -> int:
    """rsync `source` into the folder `target_dir` on the other side; returns how many files were sent.

    rsync sends only what changed (size and modification time), so a second identical put sends
    nothing. As with rsync, a source folder ending in "/" sends its contents, otherwise the folder.
    """
    if upload and not os.path.exists(source):
        raise UsageError(f"--source {source} does not exist")
    remote = f"{target.destination}:"
    endpoints = [source, remote + target_dir.rstrip("/") + "/"] if upload else [remote + source, target_dir.rstrip("/") + "/"]
    command = ["rsync", "--archive", "--compress", "--mkpath", "--itemize-changes",
               "--rsh", shlex.join(["ssh", *target.options()]),
               *[f"--exclude={pattern}" for pattern in (*ALWAYS_EXCLUDED, *excludes)], *endpoints]
    log.debug("%s", shlex.join(command))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or [""])[0]
        raise UsageError(f"{'put' if upload else 'get'} {source} -> {target_dir} failed (rsync exit status "
                         f"{result.returncode}): {why}")
    arrow = "<" if upload else ">"
    sent = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith(arrow + "f")]
    for path in sent:
        log.debug("sent %s", path)
    return len(sent)
