"""Building the training AMI: a builder instance from a deep-learning base image, the project and its
installation scripts run on it over SSH, an image taken of it, and the builder terminated whatever happens."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from . import access, ec2 as instances, ssh
from .errors import UsageError
from .progress import say
from .signals import shielded

# Current Ubuntu deep-learning GPU base image (NVIDIA driver, CUDA, no framework): CARLA 0.9.16 runs on
# Ubuntu 22.04. Only Amazon's own images are considered, so a look-alike name cannot be slipped in.
BASE_AMI_NAME_PATTERN = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
BASE_AMI_OWNER = "amazon"
IMAGE_TIMEOUT_S = 3600.0  # snapshotting a 150 GB volume takes tens of minutes
REMOTE_PROJECT_DIR = "carla-rllib"  # where the project lives on instances (run_aws.bash uses the same name)


@dataclass(frozen=True)
class ImageRequest:
    name: str
    base_ami_id: str | None
    instance_type: str
    key_name: str
    security_group_name: str
    volume_size_gb: int
    user_data: str
    installation_scripts: tuple[Path, ...]
    ssh_cidr: str
    project_dir: Path


def find_base_ami(ec2: Any) -> str:
    """The newest available x86_64 image matching BASE_AMI_NAME_PATTERN published by Amazon."""
    images = ec2.describe_images(Owners=[BASE_AMI_OWNER], Filters=[
        {"Name": "name", "Values": [BASE_AMI_NAME_PATTERN]},
        {"Name": "state", "Values": ["available"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
    if not images:
        raise UsageError(f"no image named {BASE_AMI_NAME_PATTERN!r} from {BASE_AMI_OWNER} in region "
                         f"{instances.region(ec2)}: pass --base-ami-id")
    newest = max(images, key=lambda image: image["CreationDate"])
    say(f"base image: {newest['ImageId']} ({newest['Name']})")
    return newest["ImageId"]


def own_image_id(ec2: Any, name: str) -> str | None:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    return images[0]["ImageId"] if images else None


def create_image(ec2: Any, request: ImageRequest, settings: ssh.SshSettings, keys: access.KeyStore) -> str:
    """Builds the AMI and returns its id; the builder instance never outlives this call."""
    for script in request.installation_scripts:
        if not script.is_file():
            raise UsageError(f"installation script not found: {script}")
    existing = own_image_id(ec2, request.name)
    if existing:
        raise UsageError(f"an AMI named {request.name} already exists ({existing}): pass another --name "
                         "or deregister it first")
    base_ami_id = request.base_ami_id or find_base_ami(ec2)
    group_id = access.admit(ec2, request.key_name, request.security_group_name, request.ssh_cidr, keys)
    builder_id = instances.run_instance(
        ec2, name=f"{request.name}-builder", ami_id=base_ami_id, instance_type=request.instance_type,
        key_name=request.key_name, security_group_id=group_id, volume_size_gb=request.volume_size_gb,
        user_data=request.user_data)
    try:
        target = ssh.endpoint(instances.wait_running(ec2, builder_id), settings, keys)
        ssh.wait_until_reachable(target)
        _install(target, request)
        return _snapshot(ec2, builder_id, request.name)
    finally:
        with shielded():
            say(f"terminating builder {builder_id}")
            instances.terminate(ec2, builder_id)


def _install(target: ssh.Endpoint, request: ImageRequest) -> None:
    sent = ssh.transfer(target, f"{request.project_dir}/", REMOTE_PROJECT_DIR, upload=True,
                        excludes=ssh.DEFAULT_EXCLUDES)
    say(f"uploaded the project to ~/{REMOTE_PROJECT_DIR} ({sent} files)")
    for script in request.installation_scripts:
        say(f"running {script.name} on {target.instance_id}")
        # Scripts get the project folder; their output is progress, so it goes to stderr (stdout: the AMI id).
        status = ssh.run_script(target, script, f"~/{REMOTE_PROJECT_DIR}", stdout=sys.stderr)
        if status != 0:
            raise UsageError(f"installation script {script} failed (exit status {status}): "
                             "builder terminated, no AMI created")


def _snapshot(ec2: Any, builder_id: str, name: str) -> str:
    image_id = ec2.create_image(InstanceId=builder_id, Name=name, Description="carla-rllib training image",
                                TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "Name", "Value": name}]}]
                                )["ImageId"]
    try:
        instances.wait(ec2, "image_available", f"AMI {image_id}", IMAGE_TIMEOUT_S, ImageIds=[image_id])
    except BaseException:
        with shielded():
            try:
                ec2.deregister_image(ImageId=image_id)
            except ClientError:
                pass  # never registered far enough to deregister: nothing is left behind either way
        raise
    return image_id
