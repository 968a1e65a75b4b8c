"""Episode settings and weather as CARLA 0.9.16 sends them (msgpack arrays, fixed order)."""
from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields
from typing import Any

from ..protocol import encoding


class SettingsError(ValueError):
    """Settings the simulator cannot run with; the message names the setting and the fix."""


@dataclass
class EpisodeSettings:
    synchronous_mode: bool = False
    no_rendering_mode: bool = False
    fixed_delta_seconds: float | None = None
    substepping: bool = True
    max_substep_delta_time: float = 0.01
    max_substeps: int = 10
    max_culling_distance: float = 0.0
    deterministic_ragdolls: bool = True
    tile_stream_distance: float = 3000.0
    actor_active_distance: float = 2000.0
    spectator_as_ego: bool = True

    def to_wire(self) -> list[Any]:
        values = list(astuple(self))
        values[2] = encoding.optional(self.fixed_delta_seconds)
        return values

    @classmethod
    def from_wire(cls, values: list[Any]) -> "EpisodeSettings":
        if not isinstance(values, list) or len(values) < 3:
            raise SettingsError(f"malformed episode settings {values!r:.120}")
        settings = cls()
        for spec, value in zip(fields(cls), values):
            if spec.name == "fixed_delta_seconds":
                value = encoding.decode_optional(value)
            setattr(settings, spec.name, value)
        dt = settings.fixed_delta_seconds
        if dt is not None:
            if not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0.0:
                raise SettingsError(
                    f"fixed_delta_seconds must be a positive number of seconds (got {dt!r}); "
                    "use e.g. 0.05, or None for a variable time step")
            settings.fixed_delta_seconds = float(dt)
        return settings


WEATHER_FIELDS = (
    "cloudiness", "precipitation", "precipitation_deposits", "wind_intensity",
    "sun_azimuth_angle", "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff",
    "wetness", "scattering_intensity", "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm",
)
# CARLA's ClearNoon preset, the weather a fresh episode starts with.
CLEAR_NOON = (5.0, 0.0, 0.0, 10.0, -1.0, 45.0, 2.0, 0.75, 0.1, 0.0, 1.0, 0.03, 0.0331, 0.0)


def validate_weather(values: Any) -> list[float]:
    if not isinstance(values, list) or len(values) < len(WEATHER_FIELDS):
        raise SettingsError(f"malformed weather parameters {values!r:.120}")
    try:
        weather = [float(v) for v in values[: len(WEATHER_FIELDS)]]
    except (TypeError, ValueError):
        raise SettingsError(f"weather parameters must be numbers, got {values!r:.120}") from None
    return weather
