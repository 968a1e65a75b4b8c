"""CARLA's streaming port: a client connects, sends a u32 stream id, then receives frames.

Each frame is ``[u32 LE size][payload]``. A new subscriber immediately gets the last
message of its stream, so a client that connects between ticks still sees the
current world state (the client waits for one before get_world returns).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct

from . import encoding

STREAM_ID = struct.Struct("<I")
EPISODE_STREAM_ID = 1
# Unsent bytes one subscriber may hold. A client that stopped reading (suspended process,
# vanished host whose connection never closed) would otherwise grow the server's memory by
# a snapshot per tick forever; it is disconnected instead, and CARLA's client reconnects.
MAX_BACKLOG_BYTES = 64 * 1024 * 1024

logger = logging.getLogger(__name__)


class StreamingServer:
    """Fan-out of binary messages to the subscribers of each stream id."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Transport]] = {}
        self._latest: dict[int, bytes] = {}
        self._ids = itertools.count(EPISODE_STREAM_ID + 1)
        self.port = 0
        self.host = "127.0.0.1"

    def new_stream_id(self) -> int:
        return next(self._ids)

    def token(self, stream_id: int) -> bytes:
        return encoding.stream_token(stream_id, self.port, self.host)

    def has_subscribers(self, stream_id: int) -> bool:
        return bool(self._subscribers.get(stream_id))

    def publish(self, stream_id: int, payload: bytes, *, keep: bool = False) -> None:
        """Sends payload to every subscriber; keep=True remembers it for late subscribers."""
        message = encoding.frame_message(payload)
        if keep:
            self._latest[stream_id] = message
        for transport in tuple(self._subscribers.get(stream_id, ())):
            if transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
                logger.warning("dropping a streaming subscriber of stream %d: it stopped reading "
                               "(%d bytes unsent)", stream_id, transport.get_write_buffer_size())
                self._unsubscribe(stream_id, transport)
                transport.abort()   # discards the backlog; close() would keep it until sent
                continue
            transport.write(message)

    def close_stream(self, stream_id: int) -> None:
        self._latest.pop(stream_id, None)
        for transport in self._subscribers.pop(stream_id, ()):
            transport.close()

    def _subscribe(self, stream_id: int, transport: asyncio.Transport) -> None:
        self._subscribers.setdefault(stream_id, set()).add(transport)
        latest = self._latest.get(stream_id)
        if latest is not None:
            transport.write(latest)

    def _unsubscribe(self, stream_id: int, transport: asyncio.Transport) -> None:
        subscribers = self._subscribers.get(stream_id)
        if subscribers is not None:
            subscribers.discard(transport)

    async def serve(self, host: str, port: int) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Session(self), host, port, reuse_address=True)
        self.port = server.sockets[0].getsockname()[1]
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return server


class _Session(asyncio.Protocol):
    """One streaming connection: reads the 4-byte stream id, then only writes."""

    def __init__(self, server: StreamingServer) -> None:
        self._server = server
        self._buffer = b""
        self._stream_id: int | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._stream_id is not None:
            return  # clients never send after the id; ignore anything else
        self._buffer += data
        if len(self._buffer) >= STREAM_ID.size:
            (self._stream_id,) = STREAM_ID.unpack_from(self._buffer)
            self._server._subscribe(self._stream_id, self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stream_id is not None:
            self._server._unsubscribe(self._stream_id, self._transport)
