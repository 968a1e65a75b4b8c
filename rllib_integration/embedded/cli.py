"""`python -m rllib_integration.embedded`: start the embedded CARLA server.

Takes CarlaUE4.sh's flags (``-carla-rpc-port=2000`` ...), so one launcher starts either
server; rendering flags are accepted and ignored since nothing is rendered here.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .maps.town import TownLoadError
from .maps.towns import UnknownTownError
from .server import BindError, EmbeddedServer, ServerOptions

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carla-embedded-server",
        description="CPU-only simulator speaking CARLA 0.9.16's protocol (drive it with the official carla client).")
    parser.add_argument("-carla-rpc-port", "--carla-rpc-port", dest="rpc_port", type=int, default=2000,
                        help="RPC port (default 2000)")
    parser.add_argument("-carla-streaming-port", "--carla-streaming-port", dest="streaming_port", type=int,
                        default=None, help="streaming port (default: RPC port + 1)")
    parser.add_argument("-carla-host", "--host", dest="host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("-quality-level", dest="quality_level", default="Epic", help="accepted, nothing is rendered")
    parser.add_argument("-ResX", dest="res_x", type=int, default=800, help="accepted, nothing is rendered")
    parser.add_argument("-ResY", dest="res_y", type=int, default=600, help="accepted, nothing is rendered")
    parser.add_argument("-RenderOffScreen", action="store_true", help="accepted, nothing is rendered")
    parser.add_argument("-nullrhi", action="store_true", help="accepted, nothing is rendered")
    parser.add_argument("-graphicsadapter", type=int, default=None, help="accepted, no GPU is used")
    parser.add_argument("-opengl", "-vulkan", dest="graphics_api", action="store_true", help="accepted")
    parser.add_argument("--town", default=None,
                        help="town to start with (default: Town01 when found, else the generated GridCity)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random in the world")
    parser.add_argument("--maps-path", action="append", default=[], metavar="DIR",
                        help="extra directory of .xodr towns (searched before CARLA_MAPS_PATH)")
    parser.add_argument("--log-rpc", metavar="FILE", help="append one line per RPC call to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="log server events to stderr")
    return parser


def _validate_port(parser: argparse.ArgumentParser, name: str, port: int | None) -> None:
    if port is not None and not 0 <= port <= 65535:
        parser.error(f"{name} must be between 0 and 65535 (got {port})")


async def _serve(options: ServerOptions) -> None:
    server = EmbeddedServer(options)
    await server.start()
    print(f"embedded CARLA server: rpc {options.host}:{server.rpc_port} streaming {server.streaming.port} "
          f"town {server.service.world.town.name}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate_port(parser, "-carla-rpc-port", args.rpc_port)
    _validate_port(parser, "-carla-streaming-port", args.streaming_port)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rpc_log = open(args.log_rpc, "a", encoding="utf-8") if args.log_rpc else None
    options = ServerOptions(host=args.host, rpc_port=args.rpc_port, streaming_port=args.streaming_port,
                            town=args.town, seed=args.seed, maps_dirs=args.maps_path, rpc_log=rpc_log)
    try:
        asyncio.run(_serve(options))
    except (UnknownTownError, TownLoadError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except BindError as error:
        print(f"error: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if rpc_log is not None:
            rpc_log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
