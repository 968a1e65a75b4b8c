"""Shared fixtures: CARLA's towns on CARLA_MAPS_PATH and embedded server processes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from harness import ServerProcess, start_server

SHARED_MAPS = Path(__file__).resolve().parents[2] / "shared" / "carla-maps"
os.environ.setdefault("CARLA_MAPS_PATH", str(SHARED_MAPS))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One embedded server (Town01) per test module, stopped at the end."""
    process = start_server(tmp_path_factory.mktemp("server"), town="Town01")
    yield process
    process.stop()
