"""rpc Actor and sensor stream messages: the encodings both RPC answers and sensor streams carry.

Spawn replies, get_actors_by_id and the collision and obstacle events all describe actors the
same way, so the layout lives here, apart from the service that owns the streaming tokens.
"""
from __future__ import annotations

from typing import Any, Callable

import msgpack

from ..world.actors import ActorInfo
from ..world.blueprints import LIBRARY_BLUEPRINTS
from ..world.sensors import SensorReading
from . import encoding

# Actor definition uid of each blueprint, as get_actor_definitions numbers them (from 1).
UID_BY_TYPE = {blueprint.id: uid for uid, blueprint in enumerate(LIBRARY_BLUEPRINTS, start=1)}


def serialize_actor(info: ActorInfo, stream_token: bytes) -> list[Any]:
    """rpc Actor: [id, parent id, description [uid, type id, attributes], bounding box, tags bin, token bin]."""
    description = [UID_BY_TYPE.get(info.blueprint.id, 0), info.blueprint.id,
                   [[attr_id, attr_type, value] for attr_id, (attr_type, value) in info.attributes.items()]]
    box = encoding.bounding_box(info.blueprint.box_center, info.blueprint.extent, info.id)
    return [info.id, info.parent_id, description, box, info.semantic_tags, stream_token]


def sensor_message(reading: SensorReading, serialize: Callable[[ActorInfo], list[Any]]) -> bytes:
    """The 48-byte sensor header, then the msgpack body with actors serialized."""
    body = [serialize(value) if isinstance(value, ActorInfo) else value for value in reading.body]
    return (encoding.sensor_header(reading.sensor_type, reading.frame, reading.timestamp, reading.pose)
            + msgpack.packb(body))
