"""Who may reach an instance: one key pair, whose private key stays in keys/ (mode 0400), and a
security group that admits SSH from one address range and nothing else (a Ray cluster's group
also lets its own members reach each other).

Dashboards (TensorBoard, Ray) are never opened to the network: they go through SSH tunnels.
"""
from __future__ import annotations

import ipaddress
import os
import urllib.request
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from .ec2 import region
from .errors import UsageError
from .progress import say

SSH_PORT = 22
# Where the caller's public address is asked for: AWS's own echo service. Overridable because
# the address to admit is that of the network the user works from, which a proxy may hide.
CALLER_IP_URL_ENV = "CARLA_RLLIB_CALLER_IP_URL"
DEFAULT_CALLER_IP_URL = "https://checkip.amazonaws.com"
CALLER_IP_TIMEOUT_S = 10
SECURITY_GROUP_DESCRIPTION = "carla-rllib: SSH from one address range only (dashboards go through SSH tunnels)"
CLUSTER_GROUP_DESCRIPTION = "carla-rllib Ray cluster: SSH from one address range, all ports between its members"


def detect_public_ip() -> str:
    url = os.environ.get(CALLER_IP_URL_ENV, DEFAULT_CALLER_IP_URL)
    try:
        with urllib.request.urlopen(url, timeout=CALLER_IP_TIMEOUT_S) as response:
            return str(ipaddress.ip_address(response.read().decode().strip()))
    except (OSError, ValueError) as error:
        raise UsageError(f"could not detect your public IP address from {url} ({error}): "
                         "pass --ssh-cidr YOUR.ADDRESS/32") from None


def ssh_cidr(requested: str | None, allow_any_ip: bool) -> str:
    """The range SSH is admitted from: --ssh-cidr, else the caller's own address; never the whole internet by accident."""
    text = requested or detect_public_ip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"--ssh-cidr {text!r} is not an address range (example: 203.0.113.7/32)") from None
    if network.prefixlen == 0 and not allow_any_ip:
        raise UsageError(f"--ssh-cidr {network} would admit SSH from the whole internet: "
                         "give your own address range, or add --allow-any-ip if you really mean it")
    return str(network)


class KeyStore:
    """The local keys/ folder: private keys (0400) and, per instance, the pinned SSH host key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def pem(self, key_name: str) -> Path:
        return self.directory / f"{key_name}.pem"

    def known_hosts(self, instance_id: str) -> Path:
        folder = self.directory / "known_hosts"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder / instance_id

    def save_private_key(self, key_name: str, material: str) -> Path:
        """Writes the key readable by its owner only, from the first byte (no chmod window)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.pem(key_name)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(descriptor, "w") as file:
            file.write(material)
        return path


def ensure_key_pair(ec2: Any, key_name: str, keys: KeyStore) -> Path:
    """Reuses key pair `key_name` when its private key is here, else creates it and saves the key."""
    pem = keys.pem(key_name)
    try:
        ec2.describe_key_pairs(KeyNames=[key_name])
        exists = True
    except ClientError as error:
        if error.response["Error"]["Code"] != "InvalidKeyPair.NotFound":
            raise
        exists = False
    if exists and pem.exists():
        say(f"using key pair {key_name} ({pem})")
        return pem
    if exists:
        raise UsageError(f"key pair {key_name} exists in {region(ec2)} but its private key {pem} is not here: "
                         "copy it there (mode 0400) or pass another --key-name")
    if pem.exists():
        raise UsageError(f"{pem} exists but {region(ec2)} has no key pair {key_name}: "
                         "move the file away or pass another --key-name")
    material = ec2.create_key_pair(KeyName=key_name, KeyType="ed25519", KeyFormat="pem")["KeyMaterial"]
    try:
        keys.save_private_key(key_name, material)
    except OSError:
        ec2.delete_key_pair(KeyName=key_name)
        raise
    say(f"created key pair {key_name}; private key saved to {pem} (mode 0400)")
    return pem


def _default_vpc_id(ec2: Any) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UsageError(f"region {region(ec2)} has no default VPC: create one (`aws ec2 create-default-vpc`)")
    return vpcs[0]["VpcId"]


def _ssh_rule(cidr: str) -> dict[str, Any]:
    ranges = ({"Ipv6Ranges": [{"CidrIpv6": cidr}]} if ipaddress.ip_network(cidr).version == 6
              else {"IpRanges": [{"CidrIp": cidr}]})
    return {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT, **ranges}


def _is_ssh_rule(permission: dict[str, Any], cidr: str) -> bool:
    """True when `permission` admits exactly `cidr` on port 22 and nothing else."""
    sources = ([r["CidrIp"] for r in permission.get("IpRanges", [])]
               + [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])])
    return (permission.get("IpProtocol") == "tcp" and permission.get("FromPort") == SSH_PORT
            and permission.get("ToPort") == SSH_PORT and sources == [cidr]
            and not permission.get("UserIdGroupPairs") and not permission.get("PrefixListIds"))


def _members_rule(group_id: str) -> dict[str, Any]:
    return {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}


def _is_members_rule(permission: dict[str, Any], group_id: str) -> bool:
    """True when `permission` admits every port from members of `group_id` and nothing else."""
    return (permission.get("IpProtocol") == "-1" and not permission.get("IpRanges")
            and not permission.get("Ipv6Ranges") and not permission.get("PrefixListIds")
            and [pair.get("GroupId") for pair in permission.get("UserIdGroupPairs", [])] == [group_id])


def ensure_security_group(ec2: Any, group_name: str, cidr: str, *, cluster: bool = False) -> str:
    """Creates or reuses `group_name` and makes its ingress exactly SSH from `cidr` (and, for a
    Ray cluster, every port from the group's own members: the nodes talk to each other).

    An existing group is brought back to those rules: the caller's address changes, and a rule
    added by hand (a dashboard port, 0.0.0.0/0) must not survive unnoticed.
    """
    vpc_id = _default_vpc_id(ec2)
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [group_name]},
                                                   {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    if groups:
        group_id, permissions = groups[0]["GroupId"], groups[0]["IpPermissions"]
    else:
        description = CLUSTER_GROUP_DESCRIPTION if cluster else SECURITY_GROUP_DESCRIPTION
        group_id = ec2.create_security_group(GroupName=group_name, Description=description,
                                             VpcId=vpc_id)["GroupId"]
        permissions = []
    wanted = [(_ssh_rule(cidr), lambda permission: _is_ssh_rule(permission, cidr))]
    if cluster:
        wanted.append((_members_rule(group_id), lambda permission: _is_members_rule(permission, group_id)))
    stale = [permission for permission in permissions if not any(matches(permission) for _, matches in wanted)]
    if stale:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=stale)
    missing = [rule for rule, matches in wanted if not any(matches(permission) for permission in permissions)]
    if missing:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=missing)
    members = " and all ports between its members" if cluster else ""
    say(f"security group {group_name} ({group_id}): ingress only SSH (22/tcp) from {cidr}{members}")
    return group_id


def admit(ec2: Any, key_name: str, group_name: str, cidr: str, keys: KeyStore) -> str:
    """Key pair and security group for a new instance; returns the group's id."""
    ensure_key_pair(ec2, key_name, keys)
    return ensure_security_group(ec2, group_name, cidr)
