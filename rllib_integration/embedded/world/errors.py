"""The one error type the world raises for requests it refuses.

Why its own module: the world's parts (traffic lights, vehicle physics controls) raise it as
well as World itself, and the service answers exactly these (plus malformed-argument errors)
as normal RPC errors. Any other exception is a bug: the dispatcher logs its traceback.
"""
from __future__ import annotations


class WorldError(Exception):
    """A request the world refuses; the message is what the client shows its user."""
