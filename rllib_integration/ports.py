"""Free TCP ports for the servers this process launches, checked by binding them.

Why: the original derived ports from a random number and a formula (TM port = port // 10 +
port % 10), so two env runners could pick clashing ports. Here every port is bound once to
prove it is free, drawn from below Linux's ephemeral range (32768-60999) so the client's own
outgoing connections never hold it, and remembered as claimed by this process until released,
so two CarlaCores of one process never get the same one.
"""
from __future__ import annotations

import random
import socket
import threading
from typing import Iterable

from .errors import NoFreePortError

PORT_RANGE = (2000, 32767)      # inclusive; CARLA's customary 2000 up to the ephemeral range
MAX_DRAWS = 2000                # random draws before concluding the range is full

_claimed: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()   # independent of every seeded RNG, so seeding never makes runs collide


def is_free(port: int) -> bool:
    """Whether a server could listen on `port` on every interface right now.

    SO_REUSEADDR, as CARLA's and the embedded server's listeners set it: connections of a server
    that just stopped (TIME_WAIT) do not block its relaunch on the same port; a listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def claim_ports(count: int, port_range: tuple[int, int] = PORT_RANGE) -> list[int]:
    """`count` distinct free ports, claimed for this process until release_ports()."""
    low, high = port_range
    chosen: list[int] = []
    if count == 0:
        return chosen
    with _lock:
        for _ in range(MAX_DRAWS):
            port = _random.randint(low, high)
            if port in _claimed or port in chosen or not is_free(port):
                continue
            chosen.append(port)
            if len(chosen) == count:
                _claimed.update(chosen)
                return chosen
    raise NoFreePortError(
        f"no {count} free TCP ports found in {low}-{high} after {MAX_DRAWS} tries; free some ports "
        "or set rpc_port / streaming_port / tm_port in the 'carla' config to ports you know are free")


def claim_port(port: int, setting: str) -> int:
    """A port the user configured: claimed if free, else an error naming the setting."""
    with _lock:
        if port in _claimed or not is_free(port):
            raise NoFreePortError(f"port {port} ('{setting}' in the 'carla' config) is in use; "
                                  f"choose another or set '{setting}' to None to pick a free one")
        _claimed.add(port)
    return port


def release_ports(ports: Iterable[int]) -> None:
    with _lock:
        _claimed.difference_update(ports)
