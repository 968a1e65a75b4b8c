"""EC2 instance lifecycle: look up, launch, start, stop and terminate, each waited for with a timeout."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError

from .errors import UsageError
from .progress import say, step

INSTANCE_STATE_TIMEOUT_S = 600.0
WAITER_DELAY_S = 5
# Instance metadata only through session tokens (IMDSv2), reachable from the instance itself, not
# from containers or forwarded requests one hop further: blocks SSRF-style credential theft.
METADATA_OPTIONS = {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1}
ROOT_VOLUME_TYPE = "gp3"
GONE_STATES = ("shutting-down", "terminated")
NOT_FOUND_CODES = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")


@dataclass(frozen=True)
class Instance:
    """The facts about an instance the tools use, read from one DescribeInstances answer."""

    id: str
    state: str
    instance_type: str
    ami_id: str
    key_name: str | None
    public_ip: str | None
    private_ip: str | None
    name: str | None
    security_groups: tuple[str, ...]
    launch_time: str

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> "Instance":
        tags = {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}
        return cls(
            id=described["InstanceId"], state=described["State"]["Name"],
            instance_type=described["InstanceType"], ami_id=described["ImageId"],
            key_name=described.get("KeyName"), public_ip=described.get("PublicIpAddress"),
            private_ip=described.get("PrivateIpAddress"), name=tags.get("Name"),
            security_groups=tuple(group["GroupName"] for group in described.get("SecurityGroups", [])),
            launch_time=described["LaunchTime"].isoformat())


def client() -> Any:
    """An EC2 client; region, credentials and endpoint come from the standard AWS chain."""
    return boto3.client("ec2")


def region(ec2: Any) -> str:
    return ec2.meta.region_name


def describe(ec2: Any, instance_id: str) -> Instance:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as error:
        if error.response["Error"]["Code"] in NOT_FOUND_CODES:
            raise UsageError(f"instance {instance_id} not found in region {region(ec2)}") from None
        raise
    return Instance.from_description(reservations[0]["Instances"][0])


def require_running(instance: Instance) -> None:
    """SSH work needs a running instance; say how to get one instead of timing out."""
    if instance.state in GONE_STATES:
        raise UsageError(f"instance {instance.id} is {instance.state}")
    if instance.state != "running":
        raise UsageError(f"instance {instance.id} is {instance.state}: "
                         f"run `aws_helper.py start --instance-id {instance.id}` first")


def wait(ec2: Any, waiter_name: str, description: str, timeout_s: float, **request: Any) -> None:
    """Runs a boto3 waiter with a time limit, turning its failure into a one-line error."""
    config = {"Delay": WAITER_DELAY_S, "MaxAttempts": max(1, math.ceil(timeout_s / WAITER_DELAY_S))}
    with step(f"waiting for {description}", timeout_s):
        try:
            ec2.get_waiter(waiter_name).wait(WaiterConfig=config, **request)
        except WaiterError as error:
            raise UsageError(f"gave up waiting for {description}: {error.kwargs.get('reason', error)}") from None


def root_device_name(ec2: Any, ami_id: str) -> str:
    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ClientError as error:
        if error.response["Error"]["Code"].startswith("InvalidAMIID"):
            images = []
        else:
            raise
    if not images:
        raise UsageError(f"AMI {ami_id} not found in region {region(ec2)}")
    return images[0]["RootDeviceName"]


def run_instance(ec2: Any, *, name: str, ami_id: str, instance_type: str, key_name: str,
                 security_group_id: str, volume_size_gb: int, user_data: str) -> str:
    """Requests one instance (IMDSv2 only, encrypted root volume) and returns its id at once.

    Returning before it runs lets callers put their clean-up around the wait.
    """
    request: dict[str, Any] = dict(
        ImageId=ami_id, InstanceType=instance_type, MinCount=1, MaxCount=1, KeyName=key_name,
        SecurityGroupIds=[security_group_id], MetadataOptions=METADATA_OPTIONS,
        BlockDeviceMappings=[{"DeviceName": root_device_name(ec2, ami_id),
                              "Ebs": {"VolumeSize": volume_size_gb, "VolumeType": ROOT_VOLUME_TYPE,
                                      "Encrypted": True, "DeleteOnTermination": True}}],
        TagSpecifications=[{"ResourceType": kind, "Tags": [{"Key": "Name", "Value": name}]}
                           for kind in ("instance", "volume")])
    if user_data:
        request["UserData"] = user_data
    instance_id = ec2.run_instances(**request)["Instances"][0]["InstanceId"]
    say(f"launched {instance_id} ({instance_type}, {ami_id}, name {name})")
    return instance_id


def wait_running(ec2: Any, instance_id: str) -> Instance:
    wait(ec2, "instance_running", f"{instance_id} to run", INSTANCE_STATE_TIMEOUT_S, InstanceIds=[instance_id])
    return describe(ec2, instance_id)


def start(ec2: Any, instance: Instance) -> Instance:
    if instance.state in GONE_STATES:
        raise UsageError(f"instance {instance.id} is {instance.state}: it cannot be started again")
    if instance.state == "stopping":
        wait(ec2, "instance_stopped", f"{instance.id} to finish stopping", INSTANCE_STATE_TIMEOUT_S,
             InstanceIds=[instance.id])
    if instance.state != "running":
        if instance.state != "pending":
            ec2.start_instances(InstanceIds=[instance.id])
        instance = wait_running(ec2, instance.id)
    return instance


def stop(ec2: Any, instance: Instance) -> None:
    if instance.state in GONE_STATES:
        raise UsageError(f"instance {instance.id} is {instance.state}")
    if instance.state == "stopped":
        say(f"{instance.id} is already stopped")
        return
    if instance.state != "stopping":
        ec2.stop_instances(InstanceIds=[instance.id])
    wait(ec2, "instance_stopped", f"{instance.id} to stop", INSTANCE_STATE_TIMEOUT_S, InstanceIds=[instance.id])


def terminate(ec2: Any, instance_id: str) -> None:
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait(ec2, "instance_terminated", f"{instance_id} to terminate", INSTANCE_STATE_TIMEOUT_S,
         InstanceIds=[instance_id])
