"""Build a CARLA + RLlib training AMI, then launch and drive EC2 instances made from it.

Results (ids, field values, remote output) go to stdout, progress to stderr. Bad input or state
ends with one line on stderr and exit status 2; `exec` exits with the remote command's status.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from . import access, cluster, ec2 as instances, image, ssh
from .errors import UsageError
from .progress import say
from .signals import end_signals_as_interrupts, shielded

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "CARLA_RLLIB"
DEFAULT_INSTANCE_TYPE = "g5.xlarge"  # one NVIDIA A10G: CARLA needs a GPU with Vulkan
DEFAULT_VOLUME_SIZE_GB = 150  # CARLA 0.9.16 unpacked, its tarball while installing, results
DEFAULT_HEAD_INSTANCE_TYPE = "m5.2xlarge"    # a Ray cluster's driver and learner
DEFAULT_WORKER_INSTANCE_TYPE = "c5.4xlarge"  # env runners, one embedded server each
DEFAULT_MAX_WORKERS = 2
CLUSTER_TEMPLATE = PROJECT_DIR / "dqn_example" / "dqn_autoscaler.yaml"
DASHBOARD_PORTS = (6006, 8265)  # TensorBoard, Ray dashboard: reached through an SSH tunnel only
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _settings(args: argparse.Namespace) -> tuple[ssh.SshSettings, access.KeyStore]:
    return (ssh.SshSettings(host=args.ssh_host, port=args.ssh_port, user=args.ssh_user, timeout_s=args.ssh_timeout),
            access.KeyStore(Path(args.keys_dir)))


def _instance(args: argparse.Namespace) -> tuple[Any, instances.Instance]:
    ec2 = instances.client()
    return ec2, instances.describe(ec2, args.instance_id)


def _reachable(args: argparse.Namespace, instance: instances.Instance) -> ssh.Endpoint:
    """The instance's SSH endpoint once it answers, for commands that need a running instance."""
    instances.require_running(instance)
    settings, keys = _settings(args)
    target = ssh.endpoint(instance, settings, keys)
    ssh.wait_until_reachable(target)
    return target


def _reachable_or_stopped(args: argparse.Namespace, ec2: Any, instance: instances.Instance) -> ssh.Endpoint:
    """Like _reachable, but an instance that never answers is stopped rather than left running up costs."""
    try:
        target = _reachable(args, instance)
    except UsageError as error:
        with shielded():
            instances.stop(ec2, instances.describe(ec2, instance.id))
        raise UsageError(f"{error}; instance {instance.id} stopped") from None
    say(f"dashboards: {target.tunnel_command(DASHBOARD_PORTS)}\n"
        f"  then open http://localhost:{DASHBOARD_PORTS[0]} (TensorBoard) and http://localhost:{DASHBOARD_PORTS[1]} (Ray)")
    return target


def create_image(args: argparse.Namespace) -> int:
    cidr = access.ssh_cidr(args.ssh_cidr, args.allow_any_ip)
    settings, keys = _settings(args)
    request = image.ImageRequest(
        name=args.name, base_ami_id=args.base_ami_id, instance_type=args.instance_type,
        key_name=args.key_name or args.name, security_group_name=args.security_group_name or args.name,
        volume_size_gb=args.volume_size, user_data=args.user_data, ssh_cidr=cidr, project_dir=PROJECT_DIR,
        installation_scripts=tuple(Path(script) for script in args.installation_scripts))
    print(image.create_image(instances.client(), request, settings, keys))
    return 0


def _ami_id(args: argparse.Namespace, ec2: Any) -> str:
    """--ami-id, else the AMI create-image made under --name."""
    ami_id = args.ami_id or image.own_image_id(ec2, args.name)
    if not ami_id:
        raise UsageError(f"no AMI named {args.name} in region {instances.region(ec2)}: "
                         "run `aws_helper.py create-image` first or pass --ami-id")
    return ami_id


def launch(args: argparse.Namespace) -> int:
    cidr = access.ssh_cidr(args.ssh_cidr, args.allow_any_ip)
    _, keys = _settings(args)
    ec2 = instances.client()
    ami_id = _ami_id(args, ec2)
    key_name = args.key_name or args.name
    group_id = access.admit(ec2, key_name, args.security_group_name or args.name, cidr, keys)
    instance_id = instances.run_instance(
        ec2, name=args.name, ami_id=ami_id, instance_type=args.instance_type, key_name=key_name,
        security_group_id=group_id, volume_size_gb=args.volume_size, user_data=args.user_data)
    _reachable_or_stopped(args, ec2, instances.wait_running(ec2, instance_id))
    print(instance_id)
    return 0


def cluster_config(args: argparse.Namespace) -> int:
    if args.max_workers < 0:
        raise UsageError(f"--max-workers must be 0 or more, got {args.max_workers}")
    cidr = access.ssh_cidr(args.ssh_cidr, args.allow_any_ip)
    _, keys = _settings(args)
    ec2 = instances.client()
    ami_id = _ami_id(args, ec2)
    root_device = instances.root_device_name(ec2, ami_id)
    key_name = args.key_name or args.name
    access.ensure_key_pair(ec2, key_name, keys)
    group_id = access.ensure_security_group(ec2, args.security_group_name or f"{args.name}-ray-cluster", cidr,
                                            cluster=True)
    request = cluster.ClusterRequest(
        region=instances.region(ec2), ami_id=ami_id, root_device_name=root_device, key_name=key_name,
        private_key=keys.pem(key_name), ssh_user=args.ssh_user, security_group_id=group_id, head_instance_type=args.head_instance_type,
        worker_instance_type=args.worker_instance_type, max_workers=args.max_workers, project_dir=PROJECT_DIR)
    text = cluster.cluster_yaml(cluster.cluster_config(CLUSTER_TEMPLATE, request))
    if args.output:
        cluster.write_file(Path(args.output), text)
        target = args.output
    else:
        sys.stdout.write(text)
        target = "CLUSTER.yaml"
    say(f"next: .venv/bin/ray up {target}, then .venv/bin/ray exec {target} '. ~/.carla-rllib/env.sh && "
        f"cd ~/carla-rllib && python dqn_train.py dqn_config.yaml --auto'; .venv/bin/ray down {target} ends it")
    return 0


def start(args: argparse.Namespace) -> int:
    ec2, instance = _instance(args)
    _reachable_or_stopped(args, ec2, instances.start(ec2, instance))
    return 0


def stop(args: argparse.Namespace) -> int:
    ec2, instance = _instance(args)
    instances.stop(ec2, instance)
    return 0


SSH_FIELDS = ("ssh_command", "tunnel_command")
INFO_FIELDS = ("id", "name", "state", "public_ip", "private_ip", "instance_type", "ami_id", "key_name",
               "pem_file", "security_groups", "launch_time", *SSH_FIELDS)


def _fields(args: argparse.Namespace, instance: instances.Instance, with_ssh: bool) -> dict[str, str]:
    """INFO_FIELDS' values; the ssh ones need an address and the private key, so only on request."""
    settings, keys = _settings(args)
    values = {"id": instance.id, "name": instance.name or "", "state": instance.state,
              "public_ip": instance.public_ip or "", "private_ip": instance.private_ip or "",
              "instance_type": instance.instance_type, "ami_id": instance.ami_id, "key_name": instance.key_name or "",
              "pem_file": str(keys.pem(instance.key_name)) if instance.key_name else "",
              "security_groups": ",".join(instance.security_groups), "launch_time": instance.launch_time}
    if with_ssh:
        target = ssh.endpoint(instance, settings, keys)
        values.update(ssh_command=target.ssh_command(), tunnel_command=target.tunnel_command(DASHBOARD_PORTS))
    return values


def info(args: argparse.Namespace) -> int:
    _, instance = _instance(args)
    if args.field:
        print(_fields(args, instance, with_ssh=args.field in SSH_FIELDS)[args.field])
        return 0
    try:
        values = _fields(args, instance, with_ssh=True)
    except UsageError:  # no address (stopped) or no private key here: no ssh fields to show
        values = _fields(args, instance, with_ssh=False)
    print("\n".join(f"{name}: {value}" for name, value in values.items()))
    return 0


def get(args: argparse.Namespace) -> int:
    _, instance = _instance(args)
    sent = ssh.transfer(_reachable(args, instance), args.source, args.target, upload=False,
                        excludes=tuple(args.exclude))
    say(f"get: {sent} files received")
    return 0


def put(args: argparse.Namespace) -> int:
    _, instance = _instance(args)
    sent = ssh.transfer(_reachable(args, instance), args.source, args.target, upload=True,
                        excludes=ssh.DEFAULT_EXCLUDES + tuple(args.exclude))
    say(f"put: {sent} files sent")
    return 0


def execute(args: argparse.Namespace) -> int:
    _, instance = _instance(args)
    return ssh.run_script(_reachable(args, instance), Path(args.script), args.script_args)


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes; the SSH ones also read CARLA_RLLIB_* variables (bastions, tests)."""
    common = argparse.ArgumentParser(add_help=False)
    env = os.environ.get
    common.add_argument("--debug", action="store_true", help="log every ssh/rsync command (never key material)")
    common.add_argument("--ssh-host", default=env("CARLA_RLLIB_SSH_HOST"),
                        help="connect here instead of the instance's IP: a port forward or a ~/.ssh/config "
                             "host alias with ProxyJump (env CARLA_RLLIB_SSH_HOST)")
    common.add_argument("--ssh-port", type=int, default=env("CARLA_RLLIB_SSH_PORT"),
                        help="SSH port (default 22; env CARLA_RLLIB_SSH_PORT)")
    common.add_argument("--ssh-user", default=env("CARLA_RLLIB_SSH_USER", ssh.DEFAULT_USER),
                        help=f"login on the instance (default {ssh.DEFAULT_USER}; env CARLA_RLLIB_SSH_USER)")
    common.add_argument("--ssh-timeout", type=float, default=env("CARLA_RLLIB_SSH_TIMEOUT_S", ssh.DEFAULT_TIMEOUT_S),
                        help="seconds to wait for SSH to answer (default %(default)s; env CARLA_RLLIB_SSH_TIMEOUT_S)")
    common.add_argument("--keys-dir", default=env("CARLA_RLLIB_KEYS_DIR", str(PROJECT_DIR / "keys")),
                        help="private keys and pinned host keys (default: keys/ in the project; "
                             "env CARLA_RLLIB_KEYS_DIR)")
    return common


def _machine_options(parser: argparse.ArgumentParser) -> None:
    """What create-image and launch share: naming, size, and who may connect."""
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="name of the AMI / instance, and default key pair and security group name "
                             "(default %(default)s)")
    parser.add_argument("--security-group-name", help="security group (default: --name)")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, help="default %(default)s")
    parser.add_argument("--volume-size", type=int, default=DEFAULT_VOLUME_SIZE_GB,
                        help="encrypted root volume, GB (default %(default)s)")
    parser.add_argument("--user-data", default="", help="user data (cloud-init) passed to the instance")
    _access_options(parser)


def _access_options(parser: argparse.ArgumentParser) -> None:
    """Who may connect: the key pair and the address range SSH admits."""
    parser.add_argument("--key-name", help="EC2 key pair (default: --name); created and saved to keys/ if new")
    parser.add_argument("--ssh-cidr", help="address range admitted to SSH (default: your public IP /32)")
    parser.add_argument("--allow-any-ip", action="store_true",
                        help="allow --ssh-cidr 0.0.0.0/0 (SSH open to the whole internet)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aws_helper.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def with_instance(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--instance-id", required=True, help="EC2 instance id (i-...)")
        return sub

    create = command("create-image", create_image, "build the training AMI and print its id")
    _machine_options(create)
    create.add_argument("--base-ami-id", help=f"base image (default: newest {image.BASE_AMI_NAME_PATTERN!r})")
    create.add_argument("--installation-scripts", nargs="+", default=[str(PROJECT_DIR / "aws/install/install.sh")],
                        help="scripts run in order on the builder, each given the project folder as "
                             "argument (default: aws/install/install.sh)")
    run = command("launch", launch, "launch an instance from the AMI and print its id")
    _machine_options(run)
    run.add_argument("--ami-id", help="AMI to launch (default: your AMI named --name)")
    ray_cluster = command("cluster-config", cluster_config,
                          "write a Ray cluster configuration (ray up) for EC2 from dqn_example/dqn_autoscaler.yaml")
    ray_cluster.add_argument("--name", default=DEFAULT_NAME,
                             help="name of the AMI and default key pair; the security group defaults to "
                                  "NAME-ray-cluster (default %(default)s)")
    ray_cluster.add_argument("--security-group-name",
                             help="security group of every node (default: NAME-ray-cluster)")
    ray_cluster.add_argument("--ami-id", help="AMI of every node (default: your AMI named --name)")
    ray_cluster.add_argument("--head-instance-type", default=DEFAULT_HEAD_INSTANCE_TYPE, help="default %(default)s")
    ray_cluster.add_argument("--worker-instance-type", default=DEFAULT_WORKER_INSTANCE_TYPE,
                             help="default %(default)s")
    ray_cluster.add_argument("--max-workers", type=int, default=DEFAULT_MAX_WORKERS,
                             help="worker nodes at most (default %(default)s)")
    _access_options(ray_cluster)
    ray_cluster.add_argument("--output", help="write the configuration here (default: stdout)")
    with_instance(command("start", start, "start an instance and wait until SSH answers"))
    with_instance(command("stop", stop, "stop an instance and wait until it is stopped"))
    with_instance(command("info", info, "print an instance's fields")).add_argument(
        "--field", choices=INFO_FIELDS, help="print only this field")
    for name, handler, help_text in (("get", get, "copy files from the instance (only what changed)"),
                                     ("put", put, "copy files to the instance (only what changed)")):
        transfer = with_instance(command(name, handler, help_text))
        transfer.add_argument("--source", default=".",
                              help="file or folder (remote paths relative to the home folder); a trailing / "
                                   "copies a folder's contents")
        transfer.add_argument("--target", default=".", help="destination folder")
        transfer.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                              help="rsync patterns to skip; put always skips "
                                   f"{' '.join(ssh.ALWAYS_EXCLUDED + ssh.DEFAULT_EXCLUDES)}")
    remote = with_instance(command("exec", execute, "run a local script on the instance; exits with its status"))
    remote.add_argument("--script", required=True, help="local script, uploaded and run from the home folder")
    remote.add_argument("--script-args", default="", help="its arguments, as one string for the remote shell")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = logging.getLogger("aws")
    log.addHandler(logging.StreamHandler(sys.stderr))
    log.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    end_signals_as_interrupts()
    try:
        return args.handler(args)
    except UsageError as error:
        message = str(error)
    except NoRegionError:
        message = "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) or run `aws configure`"
    except NoCredentialsError:
        message = ("no AWS credentials found (environment, ~/.aws, SSO or instance role): "
                   "run `aws configure` or set AWS_PROFILE")
    except ClientError as error:
        message = f"AWS refused {error.operation_name}: {error.response['Error'].get('Message', error)}"
    except BotoCoreError as error:
        message = f"AWS: {error}"
    except KeyboardInterrupt:
        print("aws_helper.py: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"aws_helper.py: error: {message}", file=sys.stderr)
    return EXIT_USAGE
