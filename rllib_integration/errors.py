"""The errors this library raises, so callers (and Ray's env runners) can tell them apart.

Configuration mistakes are ValueErrors (fix the config, retrying will not help); everything
about the simulator process is a RuntimeError (a relaunch may help).
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


class ServerStartError(RuntimeError):
    """A launched server exited, or did not answer in time."""


class NoFreePortError(ServerStartError):
    """No free TCP port could be found for the server or the Traffic Manager."""


class SimulatorFailure(RuntimeError):
    """The simulator died, timed out or stopped sending data during an episode."""


class SensorTimeoutError(SimulatorFailure):
    """A sensor sent nothing for the frame that was just ticked."""


class TickTimeoutError(SimulatorFailure):
    """world.tick() did not return before the watchdog's deadline."""


class EpisodeInterrupted(RuntimeError):
    """The simulator failed mid-episode and was relaunched: the episode must be reset."""


class ServerUnavailableError(RuntimeError):
    """The simulator kept failing after every relaunch that retries_on_error allows."""
