"""EC2 tooling behind ``aws_helper.py`` and ``run_aws.bash``: images, instances, SSH access and transfers."""
