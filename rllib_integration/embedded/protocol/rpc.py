"""msgpack-rpc over TCP in rpclib's framing, the transport of CARLA's RPC port.

Requests are ``[0, msgid, method, params]`` and answers ``[1, msgid, error, result]``.
Every request gets an answer: the official client aborts its whole process when a
background thread's call fails, so unknown methods, bad arguments and handler bugs
all become CARLA-style error responses, never silence.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import msgpack

from . import encoding

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_BUFFER_BYTES = 256 * 1024 * 1024

logger = logging.getLogger(__name__)


class RpcError(Exception):
    """A handler's refusal; the client sees it as RuntimeError(message)."""


@dataclass(frozen=True)
class Method:
    func: Callable[..., Any]
    void: bool  # Response<void> vs Response<T> wrapping
    raw: bool = False  # returned as is (CARLA's apply_batch answers a bare vector)


class RpcLog:
    """One line per call: time, connection, method, arguments, outcome. For post-mortems."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, connection: int, method: str, params: Any, outcome: str) -> None:
        args = repr(params)
        if len(args) > 300:
            args = args[:300] + "..."
        self._stream.write(f"{time.time():.6f} conn={connection} {method} {args} -> {outcome}\n")
        self._stream.flush()


class Dispatcher:
    """Method table of one RPC port, with CARLA's Response wrapping (or plain rpclib replies)."""

    def __init__(self, *, carla_metadata: bool, wrap_responses: bool,
                 unsupported: dict[str, bool] | None = None) -> None:
        self._methods: dict[str, Method] = {}
        self._carla_metadata = carla_metadata
        self._wrap = wrap_responses
        self._unsupported = unsupported or {}
        self.log: RpcLog | None = None

    def register(self, name: str, func: Callable[..., Any], *, void: bool, raw: bool = False) -> None:
        self._methods[name] = Method(func, void, raw)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def call(self, connection: int, name: str, params: Any) -> tuple[Any, Any]:
        """Runs one request; returns (rpclib error field, result field)."""
        if not isinstance(params, list):
            params = []
        args = params[1:] if self._carla_metadata and params else params
        method = self._methods.get(name)
        try:
            if method is None:
                void = self._unsupported.get(name)
                if void is None:
                    raise LookupError(f"rpc::server: function '{name}' not found")
                raise RpcError(f"{name} is not supported by the embedded CARLA server; "
                               "use backend 'carla' (a real CARLA server) for it")
            value = method.func(*args)
        except LookupError as error:
            self._record(connection, name, args, "unknown method")
            return str(error.args[0]), None
        except RpcError as error:
            self._record(connection, name, args, f"error: {error}")
            void = method.void if method else self._unsupported.get(name, False)
            return self._error(str(error), void)
        except Exception as error:  # a bug or malformed arguments: answer, log, keep serving
            logger.exception("RPC %s failed", name)
            self._record(connection, name, args, f"internal error: {error!r}")
            return self._error(f"{name}: malformed arguments or internal error: {error!r}", method.void)
        self._record(connection, name, args, "ok")
        if not self._wrap or method.raw:
            return None, value
        return None, (encoding.VOID_OK if method.void else encoding.value_response(value))

    def _error(self, message: str, void: bool) -> tuple[Any, Any]:
        if not self._wrap:
            return message, None
        return None, (encoding.void_error(message) if void else encoding.value_error(message))

    def _record(self, connection: int, name: str, args: Any, outcome: str) -> None:
        if self.log is not None:
            self.log.write(connection, name, args, outcome)


_connection_ids = itertools.count(1)


class RpcConnection(asyncio.Protocol):
    """One client connection: decode requests as bytes arrive, answer each in order."""

    def __init__(self, dispatcher: Dispatcher, on_close: Callable[["RpcConnection"], None] | None = None) -> None:
        self._dispatcher = dispatcher
        self._on_close = on_close
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_BUFFER_BYTES)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._transport: asyncio.Transport | None = None
        self.id = next(_connection_ids)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
            for message in self._unpacker:
                self._handle(message)
        except Exception as error:  # garbage on the wire: drop this client, keep serving others
            logger.warning("closing RPC connection %d: %s", self.id, error)
            if self._dispatcher.log is not None:
                self._dispatcher.log.write(self.id, "<protocol>", repr(data[:64]), f"closed: {error}")
            if self._transport is not None:
                self._transport.close()

    def _handle(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            raise ValueError(f"not an rpclib message: {message!r:.80}")
        kind = message[0]
        if kind == REQUEST and len(message) == 4:
            _, msgid, method, params = message
            error, result = self._dispatcher.call(self.id, str(method), params)
            self._transport.write(self._packer.pack([RESPONSE, msgid, error, result]))
        elif kind == NOTIFICATION and len(message) == 3:
            self._dispatcher.call(self.id, str(message[1]), message[2])
        else:
            raise ValueError(f"not an rpclib request: {message!r:.80}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._on_close is not None:
            self._on_close(self)


async def serve(dispatcher: Dispatcher, host: str, port: int) -> asyncio.base_events.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: RpcConnection(dispatcher), host, port, reuse_address=True)
