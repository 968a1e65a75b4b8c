"""aws_helper.py against a real moto EC2 server and a real sshd: security settings of what it creates,
instance lifecycle, put/get/exec over SSH, and one clear line (exit 2) for every bad input."""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from aws_harness import NEWEST_BASE_AMI, AwsWorld, aws_world, echo_server, free_port, tree_digests

EXIT_USAGE = 2
CIDR = "198.51.100.7/32"


@pytest.fixture(scope="module")
def world() -> Iterator[AwsWorld]:
    yield from aws_world("h")


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, no traceback, and a last stderr line saying what is wrong."""
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("aws_helper.py: error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last


def describe(world: AwsWorld, instance_id: str) -> dict:
    return world.moto.ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def ingress(world: AwsWorld, group_name: str) -> list[tuple]:
    group = world.moto.ec2().describe_security_groups(GroupNames=[group_name])["SecurityGroups"][0]
    return [(rule["IpProtocol"], rule["FromPort"], rule["ToPort"],
             tuple(r["CidrIp"] for r in rule["IpRanges"]), tuple(r["CidrIpv6"] for r in rule["Ipv6Ranges"]))
            for rule in group["IpPermissions"]]


def stop(world: AwsWorld, instance_id: str) -> None:
    result = world.helper("stop", "--instance-id", instance_id)
    assert result.returncode == 0, result.stderr


def test_launch_admits_only_ssh_from_the_given_cidr_with_imdsv2_encryption_and_a_0400_key(world: AwsWorld) -> None:
    result = world.helper("launch", "--name", "secure", "--ami-id", NEWEST_BASE_AMI, "--ssh-cidr", CIDR, "--debug")
    assert result.returncode == 0, result.stderr
    instance_id = result.stdout.strip()
    described = describe(world, instance_id)
    assert ingress(world, "secure") == [("tcp", 22, 22, (CIDR,), ())]  # no dashboard port: tunnels instead
    assert "-L 6006:localhost:6006 -L 8265:localhost:8265" in result.stderr
    assert described["MetadataOptions"]["HttpTokens"] == "required"
    volume_id = described["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    assert world.moto.ec2().describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Encrypted"] is True
    pem = world.keys_dir / "secure.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o400
    assert "PRIVATE KEY" not in result.stdout + result.stderr  # the key was created here, --debug on
    pinned = subprocess.run(["ssh-keygen", "-F", instance_id, "-f", str(world.keys_dir / "known_hosts" / instance_id)],
                            capture_output=True, text=True)
    assert "ssh-ed25519" in pinned.stdout  # the host key is pinned under the instance id
    tunnel = world.helper("info", "--instance-id", instance_id, "--field", "tunnel_command")
    assert tunnel.stdout.startswith("ssh -N -L 6006:localhost:6006 -L 8265:localhost:8265")
    stop(world, instance_id)


def test_reused_security_group_is_brought_back_to_the_single_ssh_rule(world: AwsWorld) -> None:
    ec2 = world.moto.ec2()
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group_id = ec2.create_security_group(GroupName="widened", Description="opened by hand", VpcId=vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        for port in (22, 6006, 8265)])
    instance_id = world.launch("reuse", NEWEST_BASE_AMI, "--security-group-name", "widened")
    assert ingress(world, "widened") == [("tcp", 22, 22, (CIDR,), ())]
    stop(world, instance_id)


def test_ssh_cidr_defaults_to_the_detected_public_address(world: AwsWorld) -> None:
    url, stop_echo = echo_server("203.0.113.9\n")
    try:
        result = world.helper("launch", "--name", "detected", "--ami-id", NEWEST_BASE_AMI,
                              env=world.env(CARLA_RLLIB_CALLER_IP_URL=url))
    finally:
        stop_echo()
    assert result.returncode == 0, result.stderr
    assert ingress(world, "detected") == [("tcp", 22, 22, ("203.0.113.9/32",), ())]
    stop(world, result.stdout.split()[-1])


def test_whole_internet_is_refused_unless_allow_any_ip(world: AwsWorld) -> None:
    before = world.moto.instances()
    refused = world.helper("launch", "--name", "open", "--ami-id", NEWEST_BASE_AMI, "--ssh-cidr", "0.0.0.0/0")
    assert_one_error_line(refused, "0.0.0.0/0", "--allow-any-ip")
    assert world.moto.instances() == before
    allowed = world.helper("launch", "--name", "open", "--ami-id", NEWEST_BASE_AMI, "--ssh-cidr", "0.0.0.0/0",
                           "--allow-any-ip")
    assert allowed.returncode == 0, allowed.stderr
    assert ingress(world, "open") == [("tcp", 22, 22, ("0.0.0.0/0",), ())]
    stop(world, allowed.stdout.split()[-1])


def test_stop_start_and_info_fields(world: AwsWorld) -> None:
    instance_id = world.launch("cycle")
    stop(world, instance_id)
    assert world.helper("info", "--instance-id", instance_id, "--field", "state").stdout.strip() == "stopped"
    started = world.helper("start", "--instance-id", instance_id)
    assert started.returncode == 0, started.stderr
    fields = dict(line.split(": ", 1) for line in
                  world.helper("info", "--instance-id", instance_id).stdout.strip().splitlines())
    assert fields["state"] == "running"
    assert fields["instance_type"] == "g5.xlarge"
    assert fields["ami_id"] == NEWEST_BASE_AMI
    assert fields["pem_file"] == str(world.keys_dir / "cycle.pem")
    assert fields["public_ip"] and fields["private_ip"]
    stop(world, instance_id)


def test_put_get_round_trip_sends_only_what_changed_and_never_keys(world: AwsWorld, tmp_path: Path) -> None:
    instance_id = world.launch("transfer")
    source = tmp_path / "data"
    for relative, content in {"a.txt": "alpha", "sub/b.bin": "\x00\x01" * 5000, "sub/deep/c.txt": "gamma",
                              "skip.log": "no", "__pycache__/x.pyc": "no", "id.pem": "secret",
                              "keys/known_hosts/i-1": "pinned"}.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(content)
    put = ("put", "--instance-id", instance_id, "--source", f"{source}/", "--target", "round/trip",
           "--exclude", "*.log")
    first = world.helper(*put)
    assert first.returncode == 0, first.stderr
    assert "put: 3 files sent" in first.stderr
    remote = world.user.home / "round" / "trip"
    expected = {name: digest for name, digest in tree_digests(source).items()
                if name in ("a.txt", "sub/b.bin", "sub/deep/c.txt")}
    assert tree_digests(remote) == expected
    assert "put: 0 files sent" in world.helper(*put).stderr
    (source / "a.txt").write_text("alpha, changed")
    assert "put: 1 files sent" in world.helper(*put).stderr
    back = tmp_path / "back"
    got = world.helper("get", "--instance-id", instance_id, "--source", "round/trip/", "--target", str(back))
    assert got.returncode == 0, got.stderr
    assert tree_digests(back) == {**expected, "a.txt": tree_digests(source)["a.txt"]}
    stop(world, instance_id)


def test_exec_streams_remote_output_and_returns_its_exit_code(world: AwsWorld, tmp_path: Path) -> None:
    instance_id = world.launch("exec")
    script = tmp_path / "remote.sh"
    script.write_text('#!/usr/bin/env bash\necho "on $(hostname) as $(id -un): $1 $2"\nexit "$3"\n')
    for code in (0, 3):
        result = world.helper("exec", "--instance-id", instance_id, "--script", str(script),
                              "--script-args", f"'two words' second {code}")
        assert result.returncode == code, result.stderr
        assert f"as {world.user.name}: two words second" in result.stdout
    missing = world.helper("exec", "--instance-id", instance_id, "--script", str(tmp_path / "nope.sh"))
    assert_one_error_line(missing, "nope.sh")
    stop(world, instance_id)


def test_changed_host_key_is_refused(world: AwsWorld, tmp_path: Path) -> None:
    instance_id = world.launch("pinned")
    known_hosts = world.keys_dir / "known_hosts" / instance_id
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts.write_text(f"{instance_id} {Path(f'{other}.pub').read_text()}")
    result = world.helper("info", "--instance-id", instance_id, "--field", "state")
    assert result.stdout.strip() == "running"
    refused = world.helper("exec", "--instance-id", instance_id, "--script", "/bin/true")
    assert_one_error_line(refused, "host key", str(known_hosts))
    stop(world, instance_id)


def test_missing_credentials_or_region_get_one_line(world: AwsWorld) -> None:
    no_credentials = world.env()
    del no_credentials["AWS_ACCESS_KEY_ID"], no_credentials["AWS_SECRET_ACCESS_KEY"]
    assert_one_error_line(world.helper("info", "--instance-id", "i-0123456789abcdef0", env=no_credentials),
                          "no AWS credentials")
    no_region = world.env()
    del no_region["AWS_DEFAULT_REGION"]
    assert_one_error_line(world.helper("info", "--instance-id", "i-0123456789abcdef0", env=no_region),
                          "no AWS region")


def test_unknown_instance_gets_one_line(world: AwsWorld) -> None:
    for command in ("info", "start", "stop", "exec", "put", "get"):
        extra = ("--script", "/bin/true") if command == "exec" else ()
        assert_one_error_line(world.helper(command, "--instance-id", "i-0123456789abcdef0", *extra),
                              "i-0123456789abcdef0 not found")


def test_terminated_instance_gets_one_line(world: AwsWorld) -> None:
    instance_id = world.launch("gone")
    world.moto.ec2().terminate_instances(InstanceIds=[instance_id])
    for command in ("start", "stop", "exec", "put"):
        extra = ("--script", "/bin/true") if command == "exec" else ()
        assert_one_error_line(world.helper(command, "--instance-id", instance_id, *extra), "terminated")


def test_unreachable_ssh_times_out_and_stops_the_instance(world: AwsWorld) -> None:
    instance_id = world.launch("unreachable")
    stop(world, instance_id)
    closed = world.env(CARLA_RLLIB_SSH_PORT=str(free_port()), CARLA_RLLIB_SSH_TIMEOUT_S="3")
    result = world.helper("start", "--instance-id", instance_id, env=closed)
    assert_one_error_line(result, "cannot reach", "within 3 s", f"instance {instance_id} stopped")
    assert world.moto.state(instance_id) == "stopped"


def test_missing_private_key_and_unknown_ami_get_one_line(world: AwsWorld) -> None:
    before = world.moto.instances()
    assert_one_error_line(world.helper("launch", "--name", "noami", "--ssh-cidr", CIDR), "no AMI named noami")
    assert_one_error_line(world.helper("launch", "--name", "badami", "--ami-id", "ami-0000000000000dead",
                                       "--ssh-cidr", CIDR), "ami-0000000000000dead not found")
    world.moto.ec2().create_key_pair(KeyName="elsewhere")
    assert_one_error_line(world.helper("launch", "--name", "elsewhere", "--ami-id", NEWEST_BASE_AMI,
                                       "--ssh-cidr", CIDR), "elsewhere.pem", "not here")
    assert world.moto.instances() == before
