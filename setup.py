"""carla-rllib: train Ray RLlib driving agents on CARLA, or on the embedded CARLA-protocol simulator."""
from setuptools import find_packages, setup

setup(
    name="carla-rllib",
    version="0.1.0",
    description="Ray RLlib integration for CARLA 0.9.16, with an embedded CPU simulator speaking CARLA's protocol",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["rllib_integration", "rllib_integration.*", "dqn_example", "dqn_example.*",
                                    "aws", "aws.*"]),
    install_requires=[
        "carla==0.9.16",            # the official client; the server version is checked against it
        "ray[rllib]==2.60.0",
        "torch>=2.1",               # install the CPU build first (see README) or pip pulls a CUDA build
        "gymnasium",
        "msgpack>=1.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "numba>=0.60",              # compiles the simulator's per-actor tick loops
        "shapely>=2.1",             # walker navigation mesh: polygon overlay and constrained triangulation
        "pyyaml>=6.0",
        "opencv-python-headless>=4.8",  # the GUI-less build of opencv-python: no libGL needed on servers
        "boto3>=1.28",
        "rich>=13.0",
        "tensorboard>=2.14",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-timeout>=2.2", "moto[server]>=5.0"],
    },
    entry_points={
        "console_scripts": [
            "carla-embedded-server=rllib_integration.embedded.cli:main",
        ],
    },
)
