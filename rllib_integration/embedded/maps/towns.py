"""Town lookup: which OpenDRIVE text a town name means.

Search order: directories in ``CARLA_MAPS_PATH`` (os.pathsep-separated), then a CARLA
install's ``$CARLA_ROOT/CarlaUE4/Content/Carla/Maps/OpenDrive``, then the towns this
project generates itself, so a fresh install with neither variable set still has towns.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .generated import GENERATED_TOWN_NAMES, generate_town

OPT_SUFFIX = "_Opt"
CARLA_OPENDRIVE_SUBDIR = Path("CarlaUE4", "Content", "Carla", "Maps", "OpenDrive")


DEFAULT_TOWNS = ("Town01", "GridCity")   # CARLA's classic first town when installed, else our own


class UnknownTownError(LookupError):
    """A town name that no search directory nor generator provides."""


@dataclass(frozen=True)
class TownSource:
    name: str
    path: Path | None  # None for generated towns

    def read(self) -> str:
        if self.path is None:
            return generate_town(self.name)
        return self.path.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class InlineTownSource:
    """A town whose OpenDRIVE text a client sent (client.generate_opendrive_world)."""
    name: str
    text: str
    path: None = None

    def read(self) -> str:
        return self.text


def canonical_name(name: str) -> str:
    """'/Game/Carla/Maps/Town05_Opt' or 'Town05_Opt' -> 'Town05'."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if base.endswith(".xodr"):
        base = base[: -len(".xodr")]
    if base.endswith(OPT_SUFFIX):
        base = base[: -len(OPT_SUFFIX)]
    return base


def search_dirs(extra: list[str] | None = None) -> list[Path]:
    dirs = [Path(d) for d in (extra or [])]
    dirs += [Path(d) for d in os.environ.get("CARLA_MAPS_PATH", "").split(os.pathsep) if d]
    carla_root = os.environ.get("CARLA_ROOT")
    if carla_root:
        dirs.append(Path(carla_root) / CARLA_OPENDRIVE_SUBDIR)
    return [d for d in dirs if d.is_dir()]


def available_towns(extra_dirs: list[str] | None = None) -> dict[str, TownSource]:
    """All towns by canonical name; earlier directories win, generated towns come last."""
    towns: dict[str, TownSource] = {}
    for directory in search_dirs(extra_dirs):
        for path in sorted(directory.glob("*.xodr")):
            towns.setdefault(canonical_name(path.name), TownSource(canonical_name(path.name), path))
    for name in GENERATED_TOWN_NAMES:
        towns.setdefault(name, TownSource(name, None))
    return towns


def find_town(name: str, extra_dirs: list[str] | None = None) -> TownSource:
    towns = available_towns(extra_dirs)
    key = canonical_name(name)
    if key not in towns:
        raise UnknownTownError(
            f"unknown town '{name}'; available: {', '.join(sorted(towns))} "
            "(add directories of .xodr files to CARLA_MAPS_PATH or set CARLA_ROOT)")
    return towns[key]


def default_town(extra_dirs: list[str] | None = None) -> str:
    towns = available_towns(extra_dirs)
    return next(name for name in DEFAULT_TOWNS if name in towns)
