"""A Ray cluster configuration for EC2 (`ray up`), from dqn_example/dqn_autoscaler.yaml.

Why not hand the template to `ray up` as it is: Ray would make its own security group, which
admits SSH from 0.0.0.0/0. Here every node type gets the group `access` prepares (SSH from one
address range, all ports between the cluster's members), the key pair whose private key stays
in keys/, the training AMI and its root device, so the file is ready to use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

REMOTE_PROJECT_DIR = "~/carla-rllib"


@dataclass(frozen=True)
class ClusterRequest:
    region: str
    ami_id: str
    root_device_name: str
    key_name: str
    private_key: Path
    ssh_user: str
    security_group_id: str
    head_instance_type: str
    worker_instance_type: str
    max_workers: int
    project_dir: Path


def cluster_config(template: Path, request: ClusterRequest) -> dict[str, Any]:
    """The template with the request's values in every place that names them."""
    config = yaml.safe_load(template.read_text())
    config["provider"]["region"] = request.region
    config["auth"].update(ssh_user=request.ssh_user, ssh_private_key=str(request.private_key))
    config["max_workers"] = request.max_workers
    config["file_mounts"] = {REMOTE_PROJECT_DIR: str(request.project_dir)}
    node_types = config["available_node_types"]
    node_types[config["head_node_type"]]["node_config"]["InstanceType"] = request.head_instance_type
    for name, node_type in node_types.items():
        node = node_type["node_config"]
        if name != config["head_node_type"]:
            node["InstanceType"] = request.worker_instance_type
            node_type["max_workers"] = request.max_workers
        node.update(ImageId=request.ami_id, KeyName=request.key_name, SecurityGroupIds=[request.security_group_id])
        for mapping in node["BlockDeviceMappings"]:
            mapping["DeviceName"] = request.root_device_name
    return config


class _PlainDumper(yaml.SafeDumper):
    """Writes values shared by several node types in full rather than as YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def cluster_yaml(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=110)


def write_file(path: Path, text: str) -> None:
    """Writes the whole file or nothing: a half-written configuration would start a broken cluster."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        partial.replace(path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(f"cannot write --output {path}: {error.strerror}") from None
