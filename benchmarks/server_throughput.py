"""Throughput of the embedded CARLA server against a do-nothing server, and Town04 load time.

Why: an RL training loop is bound by how many `apply_control + tick + get_transform +
get_velocity` steps per second one car gets. Part of each step is the official client's
own cost and the msgpack-rpc / streaming round trip, which no server can avoid, so an
absolute steps/s figure says little across machines. This script runs the same client
loop against the embedded server and against a do-nothing server built on the same
transport (benchmarks/null_server.py) in the same run, alternating, and reports the
ratio. Goals (issue): real >= 80% of the do-nothing figure (about 1,700 steps/s was seen
on a 2-core machine), and client.load_world('Town04') <= 1.5 s.

Every client runs in a subprocess (the carla client can abort its whole process) and every
server in its own process group; all are stopped on exit, Ctrl-C included.

Usage:  make bench, or
        CARLA_MAPS_PATH=../shared/carla-maps .venv/bin/python benchmarks/server_throughput.py
        [--steps 2000] [--warmup 200] [--repeats 3] [--json] [--profile]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _processes import (CHILDREN, REPO_ROOT, emit_result, parse_result, start_child, stop_all_children, stop_child,
                        synchronous, wait_ready)

sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing
NULL_SERVER_SCRIPT = Path(__file__).resolve().parent / "null_server.py"

GOAL_RATIO = 0.80          # real steps/s >= 80% of the do-nothing server's
GOAL_LOAD_S = 1.5          # client.load_world('Town04') wall time
FIXED_DELTA_S = 0.05
BLUEPRINT = "vehicle.tesla.model3"
TURN_BACK_M = 15.0         # the car drives back and forth within about this distance of its spawn point
CLIENT_TIMEOUT_S = 600.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per measurement (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps before timing (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per server, alternating (default 3)")
    parser.add_argument("--town", default="Town01", help="town of the embedded server's throughput runs")
    parser.add_argument("--load-town", default="Town04", help="town whose load time is measured")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument("--profile", action="store_true",
                        help="also run each server once under cProfile (timed steps only) and print where "
                             "the embedded server's time goes")
    # Internal: this file is also the client / server-load / profiled-server subprocess.
    parser.add_argument("--client", choices=["loop", "load", "server-load"], help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-pid", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- client side (runs in a subprocess: `--client loop` / `--client load`) -----------------------


def client_loop(host: str, port: int, steps: int, warmup: int, profile_pid: int = 0) -> dict[str, Any]:
    """The measured loop: one car, synchronous mode, fixed 0.05 s steps.

    With profile_pid, the (profiled) server process is told by signal when the timed steps
    start (SIGUSR1) and end (SIGUSR2), so its profile holds exactly those steps.
    """
    import carla

    client = carla.Client(host, port)
    client.set_timeout(30.0)
    world = client.get_world()
    synchronous(world, FIXED_DELTA_S)
    blueprint = world.get_blueprint_library().find(BLUEPRINT)
    spawn_point = world.get_map().get_spawn_points()[0]
    vehicle = world.spawn_actor(blueprint, spawn_point)
    world.tick()
    control = carla.VehicleControl()
    forward = spawn_point.get_forward_vector()

    def step(i: int) -> None:
        # A new action every step, as an agent's (the client skips sending a control equal to its
        # last one), from what the last step read: drive forward, reverse once 15 m past the
        # spawn point, forward again 15 m behind it, so the car stays on its road.
        control.throttle = 0.5 if i % 2 else 0.6
        vehicle.apply_control(control)
        world.tick()
        offset = (vehicle.get_transform().location - spawn_point.location).dot(forward)
        vehicle.get_velocity()
        if abs(offset) > TURN_BACK_M:
            control.reverse = offset > 0

    for i in range(warmup):
        step(i)
    if profile_pid:
        os.kill(profile_pid, signal.SIGUSR1)
        time.sleep(0.2)   # let the server enable its profiler while idle
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    elapsed = time.perf_counter() - start
    if profile_pid:
        os.kill(profile_pid, signal.SIGUSR2)
    location = vehicle.get_transform().location
    return {"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
            "distance_from_spawn_m": location.distance(spawn_point.location)}


def client_load(host: str, port: int, town: str) -> dict[str, Any]:
    """Wall time of client.load_world(town), then of the client fetching and parsing its map."""
    import carla

    client = carla.Client(host, port)
    client.set_timeout(120.0)
    client.get_world()
    start = time.perf_counter()
    world = client.load_world(town)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    carla_map = world.get_map()
    get_map_s = time.perf_counter() - start
    return {"load_world_s": load_s, "get_map_s": get_map_s, "map_name": carla_map.name,
            "spawn_points": len(carla_map.get_spawn_points())}


# --- servers and clients: child processes (see _processes), all stopped on exit ---------------


@dataclass
class Server:
    kind: str            # "null" or "real"
    process: subprocess.Popen
    host: str
    port: int
    stderr: Any          # temp file with the server's stderr, shown when something fails

    def stderr_tail(self, chars: int = 3000) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-chars:]


@functools.lru_cache(maxsize=None)
def map_actor_count(town: str) -> int:
    """Actors a fresh episode of the town already has besides the spectator (traffic lights, signs):
    the do-nothing server streams as many still records, so snapshots weigh the same on the wire."""
    from rllib_integration.embedded.maps.town import load_town
    from rllib_integration.embedded.maps.towns import find_town
    from rllib_integration.embedded.world.world import World

    return len(World(load_town(find_town(town))).actors) - 1


def start_server(kind: str, town: str, profile_path: Path | None = None) -> Server:
    """Starts the embedded ('real') or do-nothing ('null') server on free ports, waits for its ready line."""
    server_args = ["-carla-rpc-port=0", "-carla-streaming-port=0"]
    server_args += [f"--town={town}"] if kind == "real" else [f"--still-actors={map_actor_count(town)}"]
    if profile_path is not None:   # the same server inside this script's profiling wrapper
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-profiled", kind, str(profile_path)]
    elif kind == "null":
        command = [sys.executable, str(NULL_SERVER_SCRIPT)]
    else:
        command = [sys.executable, "-m", "rllib_integration.embedded"]
    command += server_args
    stderr = tempfile.TemporaryFile()
    process = start_child(command, stdout=subprocess.PIPE, stderr=stderr)
    match, line = wait_ready(process)
    if not match:
        stop_child(process)
        stderr.seek(0)
        raise RuntimeError(f"{kind} server did not start: {line!r}\n{stderr.read().decode(errors='replace')[-3000:]}")
    return Server(kind, process, match.group(1), int(match.group(2)), stderr)


def run_client(server: Server, role: str, *extra: str) -> dict[str, Any]:
    """Runs this script as `--client role` against the server; returns the JSON it printed."""
    command = [sys.executable, str(Path(__file__).resolve()), "--client", role,
               "--host", server.host, "--port", str(server.port), *extra]
    process = start_child(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=CLIENT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_child(process)
        raise RuntimeError(f"client '{role}' against the {server.kind} server timed out")
    CHILDREN.remove(process)
    result = parse_result(out)
    if process.returncode != 0 or result is None:
        raise RuntimeError(f"client '{role}' against the {server.kind} server exited with {process.returncode}\n"
                           f"client stderr:\n{err.decode(errors='replace')[-3000:]}\n"
                           f"server stderr:\n{server.stderr_tail()}")
    return result


def measure_steps(kind: str, town: str, steps: int, warmup: int, profile_path: Path | None = None) -> dict[str, Any]:
    """One fresh server, one client loop, server stopped: only this pair runs on the machine."""
    server = start_server(kind, town, profile_path)
    profile_pid = ["--profile-pid", str(server.process.pid)] if profile_path else []
    try:
        return run_client(server, "loop", "--steps", str(steps), "--warmup", str(warmup), *profile_pid)
    finally:
        stop_child(server.process, grace_s=60.0)   # cProfile writes its stats on the way out


# --- server-side town load (in a fresh process each time, as a server meets it on load_world) ----


def time_server_town_load(town: str) -> dict[str, Any]:
    """load_town() as the server calls it, then its main parts (parse, road surface, spawn points) one by one."""
    import carla
    from rllib_integration.embedded.maps import town as town_module
    from rllib_integration.embedded.maps.towns import find_town

    source = find_town(town)
    start = time.perf_counter()
    loaded = town_module.load_town(source)
    total = time.perf_counter() - start

    # The parts call load_town's own helpers; skipped (not failed) if the module is reorganised.
    parts: dict[str, float] = {}
    try:
        start = time.perf_counter()
        carla_map = carla.Map(source.name, source.read())
        parts["read_and_parse_s"] = time.perf_counter() - start
        start = time.perf_counter()
        town_module._road_surface(carla_map.generate_waypoints(town_module.SURFACE_SAMPLE_M))
        parts["road_surface_s"] = time.perf_counter() - start
        start = time.perf_counter()
        town_module.generate_spawn_points(carla_map)
        parts["spawn_points_s"] = time.perf_counter() - start
        parts["rest_s"] = max(total - sum(parts.values()), 0.0)   # XML check, hash, parse probe, ...
    except (AttributeError, TypeError) as error:
        log(f"server-side load breakdown skipped: {error}")
        parts = {}
    return {"load_town_s": total, "parts_s": parts, "path": str(source.path),
            "xodr_bytes": len(loaded.xodr), "spawn_points": len(loaded.spawn_points)}


def measure_server_town_load(town: str) -> dict[str, Any]:
    """Runs time_server_town_load in a fresh subprocess (`--client server-load`)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--client", "server-load", "--load-town", town]
    process = start_child(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=CLIENT_TIMEOUT_S)
    finally:
        stop_child(process)
    result = parse_result(out)
    if process.returncode != 0 or result is None:
        raise RuntimeError(f"server-side load of {town} failed ({process.returncode}):\n{err.decode()[-3000:]}")
    return result


# --- profiles of both servers ---------------------------------------------------------------


def serve_profiled(kind: str, profile_path: str, server_argv: list[str]) -> None:
    """A server, unchanged, with cProfile switched on by SIGUSR1 and off by SIGUSR2."""
    import cProfile

    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    try:
        if kind == "null":
            import null_server
            null_server.main(server_argv)
        else:
            from rllib_integration.embedded import cli
            cli.main(server_argv)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


def profile_summary(profile_path: Path, ticks: int, top: int = 25) -> dict[str, Any]:
    """Busy time per tick (all but the event loop's idle epoll wait for the client), and the top
    functions by own time, over the timed steps only, in microseconds per tick."""
    import pstats

    stats = pstats.Stats(str(profile_path))
    rows = []
    idle = 0.0
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "epoll" in name and "poll" in name:
            idle += tottime
        rows.append({"function": f"{Path(filename).name}:{line}({name})", "calls_per_tick": calls / ticks,
                     "own_us_per_tick": 1e6 * tottime / ticks, "cum_us_per_tick": 1e6 * cumtime / ticks})
    rows.sort(key=lambda row: row["own_us_per_tick"], reverse=True)
    return {"busy_us_per_tick": 1e6 * (stats.total_tt - idle) / ticks,  # type: ignore[attr-defined]
            "idle_us_per_tick": 1e6 * idle / ticks, "top_by_own_time": rows[:top]}


# --- main ------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    # 1. Steps/s, alternating null/real (and flipping the order each repeat) so drift hits both.
    runs: dict[str, list[dict[str, Any]]] = {"null": [], "real": []}
    for repeat in range(args.repeats):
        order = ["null", "real"] if repeat % 2 == 0 else ["real", "null"]
        for kind in order:
            result = measure_steps(kind, args.town, args.steps, args.warmup)
            runs[kind].append(result)
            log(f"repeat {repeat + 1}/{args.repeats} {kind:4s} server: {result['steps_per_s']:7.0f} steps/s")
    null_median = statistics.median(r["steps_per_s"] for r in runs["null"])
    real_median = statistics.median(r["steps_per_s"] for r in runs["real"])
    ratio = real_median / null_median

    # 2. Town load: client.load_world from a fresh server each time (the first switch is the cold one).
    loads = []
    for repeat in range(args.repeats):
        server = start_server("real", args.town)
        try:
            loads.append(run_client(server, "load", "--load-town", args.load_town))
        finally:
            stop_child(server.process)
        log(f"repeat {repeat + 1}/{args.repeats} load_world('{args.load_town}'): {loads[-1]['load_world_s']:.3f} s")
    load_median = statistics.median(r["load_world_s"] for r in loads)
    server_loads = [measure_server_town_load(args.load_town) for _ in range(args.repeats)]
    server_median = statistics.median(r["load_town_s"] for r in server_loads)
    log(f"server-side load_town('{args.load_town}') median: {server_median:.3f} s")

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "town": args.town,
        "throughput": {
            "null_steps_per_s": [r["steps_per_s"] for r in runs["null"]],
            "real_steps_per_s": [r["steps_per_s"] for r in runs["real"]],
            "null_median_steps_per_s": null_median,
            "real_median_steps_per_s": real_median,
            "null_median_us_per_step": 1e6 / null_median,
            "real_median_us_per_step": 1e6 / real_median,
            "ratio": ratio, "goal_ratio": GOAL_RATIO, "pass": ratio >= GOAL_RATIO,
        },
        "load": {
            "town": args.load_town,
            "client_load_world_s": [r["load_world_s"] for r in loads],
            "client_load_world_median_s": load_median,
            "client_get_map_median_s": statistics.median(r["get_map_s"] for r in loads),
            "server_load_town_s": [r["load_town_s"] for r in server_loads],
            "server_load_town_median_s": server_median,
            "server_parts_median_s": {name: statistics.median(r["parts_s"][name] for r in server_loads)
                                      for name in server_loads[0]["parts_s"]},
            "xodr_bytes": server_loads[0]["xodr_bytes"], "spawn_points": server_loads[0]["spawn_points"],
            "goal_s": GOAL_LOAD_S, "pass": load_median <= GOAL_LOAD_S,
        },
    }

    # 3. Optional: where each server's time goes, per tick, over the timed steps.
    if args.profile:
        report["profile"] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("null", "real"):
                profile_path = Path(tmp) / f"{kind}.prof"
                profiled = measure_steps(kind, args.town, args.steps, args.warmup, profile_path)
                log(f"profiled {kind} server: {profiled['steps_per_s']:.0f} steps/s (slowed by cProfile)")
                report["profile"][kind] = {"steps_per_s_under_profiler": profiled["steps_per_s"],
                                           "ticks": args.steps, **profile_summary(profile_path, args.steps)}
    return report


def print_report(report: dict[str, Any]) -> None:
    t, load = report["throughput"], report["load"]
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print(f"\nClient loop apply_control + tick + get_transform + get_velocity, one car, synchronous, "
          f"dt {FIXED_DELTA_S} s\n{report['steps']} timed steps after {report['warmup']} warm-up, "
          f"{report['repeats']} alternating repeats, {report['machine']['cpus']} CPUs, town {report['town']}")
    print(f"  (the do-nothing server streams the same {map_actor_count(report['town'])} still map actors "
          "as the town's traffic lights and signs, so only the simulation work differs)")
    print(f"  do-nothing server: median {t['null_median_steps_per_s']:7.0f} steps/s "
          f"({t['null_median_us_per_step']:.0f} us/step)  runs {', '.join(f'{v:.0f}' for v in t['null_steps_per_s'])}")
    print(f"  embedded server:   median {t['real_median_steps_per_s']:7.0f} steps/s "
          f"({t['real_median_us_per_step']:.0f} us/step)  runs {', '.join(f'{v:.0f}' for v in t['real_steps_per_s'])}")
    print(f"  ratio {t['ratio']:.1%} (goal >= {GOAL_RATIO:.0%}): {verdict(t['pass'])}")
    print(f"\nclient.load_world('{load['town']}') from {report['town']}, fresh server each run: median "
          f"{load['client_load_world_median_s']:.3f} s (runs {', '.join(f'{v:.3f}' for v in load['client_load_world_s'])}; "
          f"goal <= {GOAL_LOAD_S} s): {verdict(load['pass'])}")
    print(f"  then world.get_map() (client fetches and parses the map): median {load['client_get_map_median_s']:.3f} s")
    print(f"  server side, load_town() in a fresh process: median {load['server_load_town_median_s']:.3f} s "
          f"(runs {', '.join(f'{v:.3f}' for v in load['server_load_town_s'])}; {load['xodr_bytes'] / 1e6:.1f} MB xodr, "
          f"{load['spawn_points']} spawn points)")
    if load["server_parts_median_s"]:
        print("    parts: " + ", ".join(f"{name[:-2].replace('_', ' ')} {value:.3f} s"
                                        for name, value in load["server_parts_median_s"].items()))
    if "profile" in report:
        null, real = report["profile"]["null"], report["profile"]["real"]
        print(f"\nUnder cProfile, over the {real['ticks']} timed ticks (times inflated by the profiler): busy "
              f"{real['busy_us_per_tick']:.0f} us/tick embedded vs {null['busy_us_per_tick']:.0f} us/tick do-nothing "
              f"({real['steps_per_s_under_profiler']:.0f} vs {null['steps_per_s_under_profiler']:.0f} steps/s)")
        print("Embedded server, top functions by own time (epoll poll = idle, waiting for the client):")
        print(f"  {'own us':>8} {'cum us':>8} {'calls':>6}  function")
        for row in real["top_by_own_time"]:
            print(f"  {row['own_us_per_tick']:8.1f} {row['cum_us_per_tick']:8.1f} {row['calls_per_tick']:6.2f}  "
                  f"{row['function']}")


def main() -> None:
    if sys.argv[1:2] == ["--serve-profiled"]:   # internal: a profiled server subprocess
        serve_profiled(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    args = parse_args()
    if args.client == "loop":
        emit_result(client_loop(args.host, args.port, args.steps, args.warmup, args.profile_pid))
        return
    if args.client == "load":
        emit_result(client_load(args.host, args.port, args.load_town))
        return
    if args.client == "server-load":
        emit_result(time_server_town_load(args.load_town))
        return

    shared_maps = REPO_ROOT.parent / "shared" / "carla-maps"
    if not os.environ.get("CARLA_MAPS_PATH") and shared_maps.is_dir():
        os.environ["CARLA_MAPS_PATH"] = str(shared_maps)   # as the Makefile does
    # Stop the children on SIGTERM too, not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        report = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; stopping the servers and clients started here")
        sys.exit(130)
    finally:
        stop_all_children()

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
