#!/usr/bin/env python3
"""Build a CARLA + RLlib AMI and drive EC2 instances made from it (see `aws_helper.py --help`)."""
import sys

from aws.cli import main

if __name__ == "__main__":
    sys.exit(main())
