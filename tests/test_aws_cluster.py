"""aws_helper.py cluster-config against a real moto EC2/IAM server: the Ray cluster configuration it
writes passes Ray's own validation and AWS bootstrap (what `ray up` does before it launches a node),
and every node type gets the training AMI, the key pair, IMDSv2, encrypted volumes and a security
group that admits SSH from one range and all ports between the cluster's members, nothing else."""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Iterator

import boto3
import pytest
import yaml

from aws_harness import NEWEST_BASE_AMI, REGION, MotoServer, aws_env, run_helper, start_moto, stop_group

CIDR = "198.51.100.7/32"
RAY_DEFAULT_PROFILE = "ray-autoscaler-v1"   # the instance profile Ray's bootstrap looks for first
EXIT_USAGE = 2


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    stop_group(server.process)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    return folder


def cluster_config(moto: MotoServer, keys_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_helper("cluster-config", *args, env=aws_env(moto, keys_dir))


def ingress(moto: MotoServer, group_id: str) -> list[dict]:
    return moto.ec2().describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissions"]


def an_account_where_ray_ran_before(moto: MotoServer) -> None:
    """Ray's default head-node role and profile exist, so its bootstrap reuses them instead of
    creating them (and waiting 30 s for IAM to propagate)."""
    iam = boto3.client("iam", endpoint_url=moto.url, region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    if iam.list_instance_profiles()["InstanceProfiles"]:
        return
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                    "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=RAY_DEFAULT_PROFILE, AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName=RAY_DEFAULT_PROFILE)
    iam.add_role_to_instance_profile(InstanceProfileName=RAY_DEFAULT_PROFILE, RoleName=RAY_DEFAULT_PROFILE)


def test_cluster_config_passes_ray_bootstrap_with_the_restricted_group(moto: MotoServer, keys_dir: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    ec2 = moto.ec2()
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    widened = ec2.create_security_group(GroupName="trial-ray-cluster", Description="opened by hand", VpcId=vpc_id)
    ec2.authorize_security_group_ingress(GroupId=widened["GroupId"], IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    output = tmp_path / "cluster.yaml"
    result = cluster_config(moto, keys_dir, "--name", "trial", "--ami-id", NEWEST_BASE_AMI, "--ssh-cidr", CIDR,
                            "--max-workers", "3", "--worker-instance-type", "c5.9xlarge", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "ray up" in result.stderr and "ray down" in result.stderr

    config = yaml.safe_load(output.read_text())
    group_id = widened["GroupId"]
    nodes = config["available_node_types"]
    assert config["provider"] == {"type": "aws", "region": REGION, "cache_stopped_nodes": False}
    assert config["auth"]["ssh_private_key"] == str(keys_dir / "trial.pem")
    assert (keys_dir / "trial.pem").stat().st_mode & 0o777 == 0o400
    assert config["max_workers"] == 3 and nodes["worker"]["max_workers"] == 3
    assert nodes["worker"]["node_config"]["InstanceType"] == "c5.9xlarge"
    for node_type in nodes.values():
        node = node_type["node_config"]
        assert node["ImageId"] == NEWEST_BASE_AMI and node["KeyName"] == "trial"
        assert node["SecurityGroupIds"] == [group_id]
        assert node["MetadataOptions"]["HttpTokens"] == "required"
        assert all(mapping["Ebs"]["Encrypted"] for mapping in node["BlockDeviceMappings"])
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])

    # What `ray up` does before launching: fill in defaults, validate, bootstrap the AWS side.
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.util import prepare_config, validate_config
    for name, value in aws_env(moto, keys_dir).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    an_account_where_ray_ran_before(moto)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    bootstrapped = bootstrap_aws(prepared)
    head = bootstrapped["available_node_types"]["head"]["node_config"]
    assert head["SecurityGroupIds"] == [group_id] and head["SubnetIds"]
    # Ray's role for launching workers goes to the head node only
    assert bootstrapped["head_node"]["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{RAY_DEFAULT_PROFILE}")

    rules = ingress(moto, group_id)   # the hand-opened dashboard rule is gone; Ray added nothing
    assert sorted((rule["IpProtocol"], rule.get("FromPort")) for rule in rules) == [("-1", None), ("tcp", 22)]
    ssh = next(rule for rule in rules if rule["IpProtocol"] == "tcp")
    assert [r["CidrIp"] for r in ssh["IpRanges"]] == [CIDR]
    members = next(rule for rule in rules if rule["IpProtocol"] == "-1")
    assert not members["IpRanges"] and [pair["GroupId"] for pair in members["UserIdGroupPairs"]] == [group_id]


@pytest.mark.parametrize(("args", "fragment"), [
    (("--ssh-cidr", "0.0.0.0/0"), "--allow-any-ip"),
    (("--ssh-cidr", CIDR, "--ami-id", "ami-0000000000missing"), "AMI ami-0000000000missing not found"),
    (("--ssh-cidr", CIDR, "--max-workers", "-1"), "--max-workers must be 0 or more"),
    (("--ssh-cidr", CIDR, "--output", "/nonexistent/folder/cluster.yaml"), "cannot write --output"),
])
def test_cluster_config_refuses_bad_input_in_one_line(moto: MotoServer, keys_dir: Path, args: tuple[str, ...],
                                                      fragment: str) -> None:
    if "--ami-id" not in args:
        args = (*args, "--ami-id", NEWEST_BASE_AMI)
    result = cluster_config(moto, keys_dir, "--name", "refused", *args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("aws_helper.py: error: ") and fragment in last, last
    assert not list(Path("/nonexistent").glob("**/*cluster.yaml*"))
