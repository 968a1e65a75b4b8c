"""A do-nothing CARLA 0.9.16 server: the baseline of benchmarks/server_throughput.py.

Why it exists: the official client's round trips (msgpack-rpc for tick_cue and
apply_control, a streamed snapshot per tick) cost something on their own, even with no
simulation behind them. To judge the embedded server's per-step cost we run the same
client loop against this server in the same benchmark run and compare.

To be a fair baseline it reuses the embedded server's transport unchanged (the asyncio
msgpack-rpc dispatcher, the streaming server and the wire encodings from
``rllib_integration.embedded.protocol``) and answers the RPCs the client loop needs with
constant values: no world, no physics, no town. Every tick only bumps the frame number
and streams a snapshot whose one car never moves.

Run: ``python benchmarks/null_server.py -carla-rpc-port=0 -carla-streaming-port=0``.
It prints the same ready line as the embedded server and stops on SIGTERM / SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from rllib_integration.embedded.protocol import encoding, rpc  # noqa: E402
from rllib_integration.embedded.protocol.streaming import EPISODE_STREAM_ID, StreamingServer  # noqa: E402

CARLA_VERSION = "0.9.16"
TOWN_NAME = "NullTown"
EPISODE_ID = 1
SPECTATOR_ID = 1
CAR_ID = 2
STILL_ACTOR_FIRST_ID = 1000
CAR_BLUEPRINT = "vehicle.tesla.model3"
CAR_EXTENT = (2.4, 1.0, 0.75)
CAR_SEMANTIC_TAG = 14   # CityScapes "car"
INT_ATTRIBUTE, STRING_ATTRIBUTE = 2, 4   # carla.ActorAttributeType on the wire
SPAWN_POINT = encoding.transform((10.0, 1.75, 0.3), (0.0, 0.0, 0.0))

DELTA_S = 0.05           # simulated seconds per frame the snapshots report
ASYNC_STEP_S = 0.05      # snapshot period in asynchronous mode
SYNC_IDLE_POLL_S = 0.02  # the embedded server's ticker polls at this period in synchronous mode

# One straight 100 m road with one driving lane: enough for the client's OpenDRIVE parser.
XODR = """<?xml version="1.0" standalone="yes"?>
<OpenDRIVE>
  <header revMajor="1" revMinor="4" name="NullTown" version="1">
    <geoReference><![CDATA[+proj=tmerc +lat_0=0 +lon_0=0]]></geoReference>
  </header>
  <road name="straight" length="100.0" id="1" junction="-1">
    <link/>
    <planView>
      <geometry s="0.0" x="0.0" y="0.0" hdg="0.0" length="100.0"><line/></geometry>
    </planView>
    <elevationProfile/>
    <lateralProfile/>
    <lanes>
      <laneSection s="0.0">
        <center><lane id="0" type="none" level="false"/></center>
        <right>
          <lane id="-1" type="driving" level="false">
            <width sOffset="0.0" a="3.5" b="0" c="0" d="0"/>
          </lane>
        </right>
      </laneSection>
    </lanes>
  </road>
</OpenDRIVE>
"""


def actor_record(actor_id: int, location: tuple[float, float, float]) -> bytes:
    """One 119-byte snapshot record of a still actor."""
    record = np.zeros((), encoding.ACTOR_RECORD)
    record["id"] = actor_id
    record["state"] = encoding.ACTOR_STATE_ACTIVE
    record["transform"][:3] = location
    return record.tobytes()


class NullService:
    """Constant answers to the client loop's RPCs; a tick is a frame counter and one stream write."""

    def __init__(self, streaming: StreamingServer, still_actors: int = 0) -> None:
        self.streaming = streaming
        # Records of still map actors (a town's traffic lights and signs), so the snapshot has the
        # same size as the embedded server's and only the simulation work differs.
        self.still_records = b"".join(actor_record(STILL_ACTOR_FIRST_ID + i, (0.0, 0.0, 0.0))
                                      for i in range(still_actors))
        self.frame = 0
        self.settings: list[Any] = [False, False, encoding.optional(None), True, 0.01, 10, 0.0, True,
                                    3000.0, 2000.0, True]
        self.car_description: list[Any] | None = None
        self.map_changed = True
        self.records = actor_record(SPECTATOR_ID, (0.0, 0.0, 50.0))
        spectator_box = encoding.bounding_box((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), SPECTATOR_ID)
        self.spectator = [SPECTATOR_ID, 0, [0, "spectator", []], spectator_box, b"", b""]
        self.definitions = [[1, CAR_BLUEPRINT, "vehicle,tesla,model3", [
            ["role_name", STRING_ATTRIBUTE, "autopilot", [], True, False],
            ["number_of_wheels", INT_ATTRIBUTE, "4", [], False, False],
        ]]]

    def bind(self, dispatcher: rpc.Dispatcher) -> None:
        value_methods = ["version", "get_episode_info", "get_sensor_token", "get_episode_settings",
                         "set_episode_settings", "get_map_info", "get_map_data", "get_required_files",
                         "query_lights_state", "get_actor_definitions", "get_spectator", "spawn_actor",
                         "get_actors_by_id", "destroy_actor", "get_actor_bounding_box", "tick_cue"]
        void_methods = ["apply_control_to_vehicle", "set_actor_simulate_physics", "load_map_layer"]
        for name in value_methods:
            dispatcher.register(name, getattr(self, name), void=False)
        for name in void_methods:
            dispatcher.register(name, getattr(self, name), void=True)

    def publish_snapshot(self) -> None:
        flags = encoding.MAP_CHANGED_FLAG if self.map_changed else 0
        self.map_changed = False
        payload = (encoding.sensor_header(encoding.EPISODE_STATE_SENSOR_TYPE, self.frame, self.frame * DELTA_S)
                   + encoding.episode_header(EPISODE_ID, time.monotonic(), DELTA_S, flags)
                   + self.records + self.still_records)
        self.streaming.publish(EPISODE_STREAM_ID, payload, keep=True)

    # --- RPC handlers: constants, no world ---------------------------------------

    def version(self) -> str:
        return CARLA_VERSION

    def get_episode_info(self) -> list[Any]:
        return [EPISODE_ID, [self.streaming.token(EPISODE_STREAM_ID)]]

    def get_sensor_token(self, stream_id: int) -> list[bytes]:
        return [self.streaming.token(stream_id)]

    def get_episode_settings(self) -> list[Any]:
        return self.settings

    def set_episode_settings(self, values: list[Any]) -> int:
        self.settings = values
        return self.frame

    def get_map_info(self) -> list[Any]:
        return [f"Carla/Maps/{TOWN_NAME}", [SPAWN_POINT]]

    def get_map_data(self) -> str:
        return XODR

    def get_required_files(self, folder: str = "") -> list[str]:
        return []

    def query_lights_state(self, client: str) -> list[Any]:
        return []

    def get_actor_definitions(self) -> list[Any]:
        return self.definitions

    def get_spectator(self) -> list[Any]:
        return self.spectator

    def spawn_actor(self, description: list[Any], transform: Any) -> list[Any]:
        if self.car_description is not None:
            raise rpc.RpcError("the null server holds one car; it is already spawned")
        uid, type_id, attributes = description[:3]
        box = encoding.bounding_box((0.0, 0.0, CAR_EXTENT[2]), CAR_EXTENT, CAR_ID)
        self.car_description = [CAR_ID, 0, [uid, type_id, attributes], box, bytes([CAR_SEMANTIC_TAG]), b""]
        loc, _ = encoding.decode_transform(transform)
        self.records = actor_record(SPECTATOR_ID, (0.0, 0.0, 50.0)) + actor_record(CAR_ID, loc)
        return self.car_description

    def get_actors_by_id(self, ids: list[int]) -> list[Any]:
        known = {SPECTATOR_ID: self.spectator, CAR_ID: self.car_description}
        return [known[i] for i in ids if known.get(i) is not None]

    def destroy_actor(self, actor_id: int) -> bool:
        return actor_id == CAR_ID

    def get_actor_bounding_box(self, actor_id: int) -> list[Any]:
        return encoding.bounding_box((0.0, 0.0, CAR_EXTENT[2]), CAR_EXTENT, actor_id)

    def tick_cue(self) -> int:
        self.frame += 1
        self.publish_snapshot()
        return self.frame

    def apply_control_to_vehicle(self, actor_id: int, control: list[Any]) -> None:
        pass

    def set_actor_simulate_physics(self, actor_id: int, enabled: bool) -> None:
        pass

    def load_map_layer(self, map_layers: int) -> None:
        pass


async def tick_while_asynchronous(service: NullService) -> None:
    """Asynchronous mode (the default) streams snapshots on its own, as a CARLA server does: the
    client's get_world waits for one. In synchronous mode this only polls, like the embedded server."""
    while True:
        synchronous = bool(service.settings[0]) if service.settings else False
        if synchronous:
            await asyncio.sleep(SYNC_IDLE_POLL_S)
        else:
            service.tick_cue()
            await asyncio.sleep(ASYNC_STEP_S)


async def serve(host: str, rpc_port: int, streaming_port: int, rpc_log: TextIO | None = None,
                still_actors: int = 0) -> None:
    streaming = StreamingServer()
    service = NullService(streaming, still_actors)
    dispatcher = rpc.Dispatcher(carla_metadata=True, wrap_responses=True)
    if rpc_log is not None:
        dispatcher.log = rpc.RpcLog(rpc_log)
    service.bind(dispatcher)
    servers = [await streaming.serve(host, streaming_port), await rpc.serve(dispatcher, host, rpc_port)]
    service.publish_snapshot()
    ticker = asyncio.create_task(tick_while_asynchronous(service))
    print(f"null CARLA server: rpc {host}:{servers[1].sockets[0].getsockname()[1]} "
          f"streaming {streaming.port} town {TOWN_NAME}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ticker.cancel()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-carla-rpc-port", "--carla-rpc-port", dest="rpc_port", type=int, default=0)
    parser.add_argument("-carla-streaming-port", "--carla-streaming-port", dest="streaming_port", type=int, default=0)
    parser.add_argument("-carla-host", "--host", dest="host", default="127.0.0.1")
    parser.add_argument("--log-rpc", metavar="FILE", help="append one line per RPC call to FILE")
    parser.add_argument("--still-actors", type=int, default=0,
                        help="extra still actors in every snapshot (match the town's traffic lights and signs)")
    args = parser.parse_args(argv)
    rpc_log = open(args.log_rpc, "a", encoding="utf-8") if args.log_rpc else None
    try:
        asyncio.run(serve(args.host, args.rpc_port, args.streaming_port, rpc_log, args.still_actors))
    finally:
        if rpc_log is not None:
            rpc_log.close()


if __name__ == "__main__":
    main()
