"""Launching a simulator server, waiting until it answers, and stopping it again.

One launcher for both backends: the embedded server (`python -m rllib_integration.embedded`)
and a real CARLA (`CarlaUE4.sh`) take the same flags, so only the executable differs. Each
server runs in its own process group, led by server_guard (which ends the group if this process
dies without cleaning up), and is stopped with os.killpg on that group alone: on stop(), at
interpreter exit and on SIGTERM/SIGINT. Nothing is ever killed by name, so other users' CARLA
servers on the same machine survive.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import carla

from . import ports
from .errors import ConfigError, NoFreePortError, ServerStartError

BACKENDS = ("embedded", "carla")
EMBEDDED_MODULE = "rllib_integration.embedded"
GUARD_MODULE = "rllib_integration.server_guard"   # leads the server's process group, ends it with us
CARLA_SCRIPT = "CarlaUE4.sh"
READY_POLL_S = 0.1            # pause between two readiness probes
VERSION_PROBE_TIMEOUT_S = 2.0  # client timeout of one get_server_version probe
CONNECT_PROBE_TIMEOUT_S = 0.5  # TCP connect timeout of one probe
STOP_GRACE_S = 5.0            # after SIGTERM, how long the server may take to exit before SIGKILL
STOP_POLL_S = 0.02
LOG_TAIL_LINES = 20           # lines of the server's output quoted in errors
PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchSettings:
    """What the command line of a server is made of (see BASE_CORE_CONFIG for each key)."""

    executable: tuple[str, ...]
    host: str
    quality_level: str
    resolution: tuple[int, int]
    enable_rendering: bool
    show_display: bool
    gpu: int | None
    startup_timeout_s: float
    rpc_port: int | None
    streaming_port: int | None
    is_embedded: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LaunchSettings":
        return cls(executable=server_executable(config), host=config["host"],
                   quality_level=config["quality_level"],
                   resolution=(int(config["resolution_x"]), int(config["resolution_y"])),
                   enable_rendering=bool(config["enable_rendering"]), show_display=bool(config["show_display"]),
                   gpu=assigned_gpu(config["gpu"]), startup_timeout_s=float(config["startup_timeout"]),
                   rpc_port=config["rpc_port"], streaming_port=config["streaming_port"],
                   is_embedded=config["backend"] == "embedded")


def server_executable(config: dict[str, Any]) -> tuple[str, ...]:
    """The command that starts a server of the configured backend, checked before any launch."""
    backend = config["backend"]
    if backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}' is unknown; set 'backend' in the 'carla' config to one of {BACKENDS}")
    if backend == "embedded":
        return sys.executable, "-m", EMBEDDED_MODULE
    if config["server_path"]:
        path = Path(config["server_path"]).expanduser()
        where = f"server_path '{config['server_path']}'"
    else:
        root = config["carla_root"] or os.environ.get("CARLA_ROOT")
        if not root:
            raise ConfigError("backend 'carla' needs a CARLA install: set 'carla_root' in the 'carla' config or the "
                              "CARLA_ROOT environment variable to the folder holding CarlaUE4.sh (or set "
                              "'server_path'), or use backend 'embedded'")
        path = Path(root).expanduser() / CARLA_SCRIPT
        where = f"carla_root / CARLA_ROOT '{root}'"
    if not path.is_file():
        raise ConfigError(f"{where}: {path} does not exist; point it at a CARLA install (the folder holding "
                          f"{CARLA_SCRIPT}) or use backend 'embedded'")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"{where}: {path} is not executable; run chmod +x {path}")
    return (str(path),)


def assigned_gpu(configured: int | None) -> int | None:
    """The GPU for -graphicsadapter: the configured one, else the one Ray gave this worker.

    Ray is looked up only if this process already imported it, so Ray-free programs
    (dqn_inference.py) never import it.
    """
    if configured is not None:
        return int(configured)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        gpu_ids = ray.get_gpu_ids()
        if gpu_ids:
            return int(gpu_ids[0])
    return None


def server_arguments(settings: LaunchSettings, rpc_port: int, streaming_port: int) -> list[str]:
    """CarlaUE4.sh's flags, which the embedded server takes as well."""
    arguments = [f"-carla-rpc-port={rpc_port}", f"-carla-streaming-port={streaming_port}",
                 f"-quality-level={settings.quality_level}",
                 f"-ResX={settings.resolution[0]}", f"-ResY={settings.resolution[1]}"]
    if not settings.enable_rendering:
        arguments.append("-nullrhi")
    elif not settings.show_display:
        arguments.append("-RenderOffScreen")
    if settings.gpu is not None:
        arguments.append(f"-graphicsadapter={settings.gpu}")
    if not settings.is_embedded:
        arguments.append("-carla-primary-port=0")   # CARLA's multi-GPU listener: any free port, never a clash
    return arguments


class ServerLauncher:
    """One server process at a time: start() launches and waits for it, stop() ends its group."""

    def __init__(self, settings: LaunchSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen | None = None
        self.rpc_port = 0
        self.streaming_port = 0
        self.before_stop: Callable[[], None] | None = None   # e.g. shut the client's Traffic Manager down first
        self._ports: list[int] = []
        self._log_path: Path | None = None

    @property
    def description(self) -> str:
        if self.settings.is_embedded:
            return "embedded CARLA server"
        return f"CARLA server {self.settings.executable[0]}"

    def start(self) -> None:
        """Launches on free ports and returns once the server answers get_server_version."""
        self.stop()
        self._claim_ports()
        command = [*self.settings.executable, *server_arguments(self.settings, self.rpc_port, self.streaming_port)]
        descriptor, log_name = tempfile.mkstemp(prefix="carla-server-", suffix=".log")
        self._log_path = Path(log_name)
        environment = dict(os.environ)   # the guard (and the embedded server) import this package
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, environment.get("PYTHONPATH")]))
        with os.fdopen(descriptor, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", GUARD_MODULE, str(os.getpid()), *command],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=environment, start_new_session=True)
        _register(self)
        logger.info("launched %s (process group %d): %s", self.description, self.process.pid, " ".join(command))
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _claim_ports(self) -> None:
        """Configured ports if free (else an error naming the setting), free ones for the rest."""
        configured = [("rpc_port", self.settings.rpc_port), ("streaming_port", self.settings.streaming_port)]
        free = ports.claim_ports(sum(port is None for _, port in configured))
        self._ports = list(free)
        chosen = []
        try:
            for name, port in configured:
                if port is None:
                    chosen.append(free.pop())
                else:
                    chosen.append(ports.claim_port(port, name))
                    self._ports.append(port)
        except NoFreePortError:
            self._release()
            raise
        self.rpc_port, self.streaming_port = chosen

    def _wait_until_ready(self) -> None:
        timeout_s = self.settings.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        where = f"{self.settings.host}:{self.rpc_port}"
        while True:
            exit_status = self.exit_status()
            if exit_status is not None:
                raise ServerStartError(f"{self.description} {exit_status} before answering on {where}; "
                                       f"its last output:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(
                    f"{self.description} did not answer on {where} within {timeout_s:g} s; raise 'startup_timeout' "
                    f"in the 'carla' config if it is just slow to start; its last output:\n{self.log_tail()}")
            if self._answers(min(remaining, VERSION_PROBE_TIMEOUT_S)):
                return
            time.sleep(READY_POLL_S)

    def _answers(self, timeout_s: float) -> bool:
        """Whether the server answers get_server_version yet.

        A plain TCP connect first: it is cheap, and the carla client is only used once something listens.
        """
        try:
            socket.create_connection((self.settings.host, self.rpc_port), CONNECT_PROBE_TIMEOUT_S).close()
        except OSError:
            return False
        client = carla.Client(self.settings.host, self.rpc_port)
        client.set_timeout(max(timeout_s, READY_POLL_S))
        try:
            client.get_server_version()
        except RuntimeError:
            return False
        return True

    def exit_status(self) -> str | None:
        """None while the server runs, else how it ended ("exited with code 2", "was killed by SIGKILL").

        Uses WNOWAIT so the process stays unreaped: its pid, hence its process group id, cannot be
        reused by another program before stop() has signalled the group.
        """
        if self.process is None:
            return "was not started"
        try:
            info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:   # reaped behind our back (SIGCHLD ignored): gone all the same
            return "ended"
        if info is None:
            return None
        return _describe_exit(info.si_code, info.si_status)

    def wait_for_exit(self, timeout_s: float) -> str | None:
        """exit_status(), waiting up to timeout_s for the server to end (a connection it dropped
        is often seen a moment before its exit)."""
        deadline = time.monotonic() + timeout_s
        while (exit_status := self.exit_status()) is None and time.monotonic() < deadline:
            time.sleep(STOP_POLL_S)
        return exit_status

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no output)"
        text = self._log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text) or "(no output)"

    def stop(self) -> None:
        """Ends the server's process group (SIGTERM, then SIGKILL after STOP_GRACE_S); idempotent."""
        process = self.process
        if process is None:
            return
        if self.before_stop is not None and self.exit_status() is None:
            try:
                self.before_stop()
            except Exception as error:   # the server goes away regardless
                logger.warning("before stopping the %s: %s", self.description, error)
        _signal_group(process.pid, signal.SIGTERM)
        _signal_group(process.pid, signal.SIGCONT)   # a stopped (hung) server must run to act on SIGTERM
        self.wait_for_exit(STOP_GRACE_S)
        _signal_group(process.pid, signal.SIGKILL)   # what is left of the group: children of a shell script
        process.wait()
        self.process = None
        _unregister(self)
        self._release()

    def _release(self) -> None:
        """Gives the ports back and removes the output log."""
        ports.release_ports(self._ports)
        self._ports = []
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None


def _describe_exit(code: int, status: int) -> str:
    if code == os.CLD_EXITED:
        return f"exited with code {status}"
    if code in (os.CLD_KILLED, os.CLD_DUMPED):
        return f"was killed by {signal.Signals(status).name}"
    return f"ended (wait code {code}, status {status})"


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


# --- every server this process runs is stopped when it ends -------------------------------

_running: set[ServerLauncher] = set()
_registry_lock = threading.Lock()
_previous_handlers: dict[int, Any] = {}
_handlers_installed = threading.Event()
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _register(launcher: ServerLauncher) -> None:
    with _registry_lock:
        _running.add(launcher)
        if not _handlers_installed.is_set():
            _install_signal_handlers()


def _unregister(launcher: ServerLauncher) -> None:
    with _registry_lock:
        _running.discard(launcher)


def stop_all() -> None:
    """Stops every server this process launched (at exit and on SIGTERM/SIGINT)."""
    with _registry_lock:
        launchers = list(_running)
    for launcher in launchers:
        launcher.stop()


def _on_stop_signal(signum: int, frame: Any) -> None:
    stop_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    """Chains to the handlers already there; only the main thread may install handlers."""
    if threading.current_thread() is not threading.main_thread():
        logger.debug("servers launched outside the main thread are stopped at exit, not on signals")
        return
    _handlers_installed.set()
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if previous is None:   # a handler installed outside Python: left alone, atexit still stops servers
            continue
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_stop_signal)


atexit.register(stop_all)
