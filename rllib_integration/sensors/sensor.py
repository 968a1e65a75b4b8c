"""The sensors attached to the hero: CARLA's own (CarlaSensor) and client-side ones (PseudoSensor).

Both feed the SensorInterface; the core destroys their actors in one batch with the hero's,
after stop() has cut the data flow.
"""
from __future__ import annotations

from typing import Any, Callable

import carla
import numpy as np

from .sensor_interface import SensorInterface


class CarlaSensor:
    """A carla sensor actor whose measurements, converted, go to the sensor interface."""

    def __init__(self, name: str, actor: carla.Sensor, convert: Callable[[Any], Any],
                 interface: SensorInterface, is_event: bool) -> None:
        self.name = name
        self.actor: carla.Sensor | None = actor
        interface.register(name, actor.type_id, is_event)
        actor.listen(lambda measurement: interface.put(name, measurement.frame, convert(measurement)))

    def tick(self, frame: int) -> None:
        """CARLA streams this sensor's data by itself."""

    def stop(self) -> None:
        """Stops listening (client side only, no RPC); the actor is destroyed by the core."""
        if self.actor is not None and self.actor.is_listening:
            self.actor.stop()


class PseudoSensor:
    """Data computed in the client after each tick (e.g. the birdview), not by the simulator."""

    actor = None

    def __init__(self, name: str, type_id: str, compute: Callable[[], np.ndarray], interface: SensorInterface) -> None:
        self.name = name
        self._compute = compute
        self._interface = interface
        interface.register(name, type_id, is_event=False)

    def tick(self, frame: int) -> None:
        self._interface.put(self.name, frame, self._compute())

    def stop(self) -> None:
        """Nothing streams to it."""
