"""Where sensor data meets the tick: one queue per sensor, read back frame by frame.

Why queues: CARLA delivers sensor data on its own streaming threads, after world.tick() has
returned, so the core waits here until every per-tick sensor has sent the frame it just ticked.
Event sensors (collision, lane invasion, obstacle) send only when something happens, so a frame
without an event is normal: they appear in the data only on frames where they reported.
"""
from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Any

from ..errors import SensorTimeoutError


@dataclass(frozen=True)
class SensorSlot:
    """What the interface knows of a registered sensor."""

    type_id: str
    is_event: bool
    data: "queue.Queue[tuple[int, Any]]"


class SensorInterface:
    """Collects (frame, data) per sensor name and hands out one frame's worth at a time."""

    def __init__(self) -> None:
        self._slots: dict[str, SensorSlot] = {}

    def register(self, name: str, type_id: str, is_event: bool) -> None:
        self._slots[name] = SensorSlot(type_id, is_event, queue.Queue())

    def unregister_all(self) -> None:
        self._slots = {}

    def put(self, name: str, frame: int, data: Any) -> None:
        """Called from CARLA's streaming threads (and for pseudo-sensors, from the tick)."""
        slot = self._slots.get(name)
        if slot is not None:   # data of a sensor being destroyed may still trickle in
            slot.data.put((frame, data))

    def get_data(self, frame: int, timeout_s: float) -> dict[str, tuple[int, Any]]:
        """{name: (frame, data)} for `frame`: every per-tick sensor, plus the events reported
        up to it (the last one when several arrived); older frames are dropped."""
        deadline = time.monotonic() + timeout_s
        collected: dict[str, tuple[int, Any]] = {}
        for name, slot in self._slots.items():
            if slot.is_event:
                event = self._latest_event(slot)
                if event is not None:
                    collected[name] = event
                continue
            collected[name] = self._wait_for_frame(name, slot, frame, deadline, timeout_s)
        return collected

    @staticmethod
    def _latest_event(slot: SensorSlot) -> tuple[int, Any] | None:
        latest = None
        while True:
            try:
                latest = slot.data.get_nowait()
            except queue.Empty:
                return latest

    @staticmethod
    def _wait_for_frame(name: str, slot: SensorSlot, frame: int, deadline: float,
                        timeout_s: float) -> tuple[int, Any]:
        while True:
            try:
                item = slot.data.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise SensorTimeoutError(
                    f"sensor '{name}' ({slot.type_id}) sent no data for frame {frame} within {timeout_s:g} s "
                    "(the 'timeout' setting): the simulator stopped streaming it") from None
            if item[0] >= frame:
                return item
