"""OpenDRIVE records that CARLA's Python map API does not expose: road speed limits and
traffic-signal controllers.

Why a regular-expression scan and not an XML parser: these records are a few hundred
short tags in files of up to several megabytes, and building a full element tree of a
large town costs a tenth of a second that a town switch should not pay. The scan reads
only tags whose layout the OpenDRIVE 1.4 schema fixes (attributes in any order).
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

MPH_TO_MPS = 0.44704
KMH_TO_MPS = 1.0 / 3.6
SPEED_UNIT_TO_MPS = {"mph": MPH_TO_MPS, "km/h": KMH_TO_MPS, "m/s": 1.0}

_ROAD = re.compile(r"<road\b([^>]*)>")
_ROAD_TYPE_SPEED = re.compile(r"<type\b([^>]*)>\s*<speed\b([^>]*)/>")
_JUNCTION = re.compile(r"<junction\b([^>]*)>(.*?)</junction>", re.DOTALL)
_JUNCTION_CONTROLLER = re.compile(r"<controller\b([^>]*)/>")
_CONTROLLER = re.compile(r"<controller\b([^>]*[^/])>(.*?)</controller>", re.DOTALL)
_CONTROL = re.compile(r"<control\b([^>]*)/>")
_ATTRIBUTE = re.compile(r"""([\w:]+)\s*=\s*["']([^"']*)["']""")


def _attributes(text: str) -> dict[str, str]:
    return dict(_ATTRIBUTE.findall(text))


@dataclass
class XodrRecords:
    """Speed limits per road (m/s from a road s on) and signal controllers per junction."""

    road_speeds: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    controller_signals: dict[str, list[str]] = field(default_factory=dict)   # controller id -> signal ids
    junction_controllers: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # (sequence, id)

    def speed_at(self, road_id: int, s: float) -> float | None:
        """The road's speed limit (m/s) in force at s, or None when the road declares none."""
        records = self.road_speeds.get(road_id)
        if not records:
            return None
        index = bisect.bisect_right([start for start, _ in records], s + 1e-6) - 1
        return records[max(index, 0)][1]

    def signal_phases(self) -> dict[str, tuple[int, int]]:
        """Signal id -> (junction id, phase): signals of one controller share a phase, and a
        junction's phases run in its controllers' sequence order."""
        phases: dict[str, tuple[int, int]] = {}
        for junction_id, controllers in self.junction_controllers.items():
            for phase, (_, controller_id) in enumerate(sorted(controllers)):
                for signal_id in self.controller_signals.get(controller_id, []):
                    phases.setdefault(signal_id, (junction_id, phase))
        return phases


def scan(xodr: str) -> XodrRecords:
    records = XodrRecords()
    road_starts: list[int] = []
    road_ids: list[int] = []
    for match in _ROAD.finditer(xodr):
        road_id = _attributes(match.group(1)).get("id")
        if road_id is not None and road_id.lstrip("-").isdigit():
            road_starts.append(match.start())
            road_ids.append(int(road_id))
    for match in _ROAD_TYPE_SPEED.finditer(xodr):
        owner = bisect.bisect_right(road_starts, match.start()) - 1
        if owner < 0:
            continue
        road_type, speed = _attributes(match.group(1)), _attributes(match.group(2))
        unit = SPEED_UNIT_TO_MPS.get(speed.get("unit", "m/s").strip(), 1.0)
        try:
            value = float(speed["max"]) * unit
            start = float(road_type.get("s", "0"))
        except (KeyError, ValueError):
            continue   # "no limit" or "undefined" records leave the road without a limit
        records.road_speeds.setdefault(road_ids[owner], []).append((start, value))
    for speeds in records.road_speeds.values():
        speeds.sort()
    for match in _CONTROLLER.finditer(xodr):
        controller_id = _attributes(match.group(1)).get("id")
        if controller_id is None:
            continue
        signals = [_attributes(c.group(1)).get("signalId") for c in _CONTROL.finditer(match.group(2))]
        records.controller_signals[controller_id] = list(dict.fromkeys(s for s in signals if s))
    for match in _JUNCTION.finditer(xodr):
        junction_id = _attributes(match.group(1)).get("id", "")
        if not junction_id.lstrip("-").isdigit():
            continue
        controllers = []
        for controller in _JUNCTION_CONTROLLER.finditer(match.group(2)):
            values = _attributes(controller.group(1))
            if "id" in values:
                controllers.append((int(float(values.get("sequence", "0"))), values["id"]))
        if controllers:
            records.junction_controllers[int(junction_id)] = controllers
    return records
