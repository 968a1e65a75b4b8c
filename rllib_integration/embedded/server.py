"""The embedded server process: RPC and streaming sockets around one CarlaService.

Single-threaded asyncio: requests from all clients are handled in arrival order, so the
world needs no locks and a seeded run is reproducible. In asynchronous mode a ticker
advances the world in real time; in synchronous mode only tick_cue does.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TextIO

from .maps.town import load_town
from .maps.towns import default_town, find_town
from .protocol import rpc
from .protocol.streaming import StreamingServer
from .service import UNSUPPORTED_RPCS, CarlaService
from .world.world import World

ASYNC_VARIABLE_STEP_S = 0.05    # real-time period of asynchronous mode without fixed_delta_seconds
SYNC_IDLE_POLL_S = 0.02

logger = logging.getLogger(__name__)


class BindError(OSError):
    """A port the server cannot listen on; the message names the flag that chose it and the fix."""

    def __init__(self, setting: str, host: str, error: OSError) -> None:
        if error.errno == errno.EADDRINUSE:
            message = (f"{setting}: the port is already in use on {host} (another CARLA server?); choose free "
                       "ports with -carla-rpc-port=N -carla-streaming-port=M (0: any free port)")
        else:
            reason = os.strerror(error.errno) if (error.errno or 0) > 0 else (error.strerror or str(error))
            message = f"{setting}: cannot listen on {host}: {reason}; check -carla-host (default 127.0.0.1)"
        super().__init__(error.errno, message)


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    rpc_port: int = 2000
    streaming_port: int | None = None   # default: rpc_port + 1, as CarlaUE4.sh
    town: str | None = None   # None: DEFAULT_TOWNS, first found
    seed: int = 0
    maps_dirs: list[str] = field(default_factory=list)
    rpc_log: TextIO | None = None


class EmbeddedServer:
    """Owns the sockets and the asynchronous-mode ticker; the world lives in the service."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.streaming = StreamingServer()
        town = load_town(find_town(options.town or default_town(options.maps_dirs), options.maps_dirs))
        self.service = CarlaService(World(town, seed=options.seed), self.streaming, options.maps_dirs)
        self.dispatcher = rpc.Dispatcher(carla_metadata=True, wrap_responses=True, unsupported=UNSUPPORTED_RPCS)
        self.service.bind(self.dispatcher)
        if options.rpc_log is not None:
            self.dispatcher.log = rpc.RpcLog(options.rpc_log)
        self.service.traffic_manager.host = options.host         # Traffic Manager listeners bind
        self.service.traffic_manager.log = self.dispatcher.log   # where the RPC port does, same log
        self._servers: list[asyncio.base_events.Server] = []
        self._ticker: asyncio.Task | None = None
        self.rpc_port = 0

    async def start(self) -> None:
        streaming_port = self.options.streaming_port
        if streaming_port is None:
            streaming_port = self.options.rpc_port + 1 if self.options.rpc_port else 0
        try:
            self._servers.append(await self.streaming.serve(self.options.host, streaming_port))
        except OSError as error:
            default = " (default: RPC port + 1)" if self.options.streaming_port is None and streaming_port else ""
            raise BindError(f"-carla-streaming-port={streaming_port}{default}", self.options.host, error) from None
        try:
            rpc_server = await rpc.serve(self.dispatcher, self.options.host, self.options.rpc_port)
        except OSError as error:
            raise BindError(f"-carla-rpc-port={self.options.rpc_port}", self.options.host, error) from None
        self._servers.append(rpc_server)
        self.rpc_port = rpc_server.sockets[0].getsockname()[1]
        self.service.publish_snapshot()
        self._ticker = asyncio.create_task(self._tick_in_real_time())

    async def _tick_in_real_time(self) -> None:
        """Asynchronous mode: the world advances on its own, at wall-clock pace."""
        next_tick = time.monotonic()
        while True:
            settings = self.service.world.settings
            if settings.synchronous_mode:
                await asyncio.sleep(SYNC_IDLE_POLL_S)
                next_tick = time.monotonic()
                continue
            period = settings.fixed_delta_seconds or ASYNC_VARIABLE_STEP_S
            self.service.tick()
            next_tick = max(next_tick + period, time.monotonic())
            await asyncio.sleep(next_tick - time.monotonic())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.service.traffic_manager.close()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
