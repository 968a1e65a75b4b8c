"""`python -m rllib_integration.server_guard PARENT_PID COMMAND...`: runs a server and ends it with its parent.

Why: atexit and signal handlers never run when the training process is killed with SIGKILL, or
aborted by the carla client (it calls std::terminate on some failures), and the server would be
left behind with its ports and CPU. The guard leads the server's process group; when its parent
process is gone (it is re-parented) or it receives SIGTERM, it ends the whole group (a
CarlaUE4.sh script and the engine it starts). It exits as the server did, so the launcher reads
the server's own exit status.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

PARENT_POLL_S = 0.5    # how often the guard checks that its parent still runs
STOP_GRACE_S = 5.0     # after SIGTERM, how long the server may take to exit before SIGKILL
EXIT_CANNOT_RUN = 127  # as a shell reports a command it cannot run


def end_group(server: subprocess.Popen) -> None:
    """SIGTERM to the group (the guard ignores it from now on), SIGKILL to what outlives the grace."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        server.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    try:
        server = subprocess.Popen(command)
    except OSError as error:
        print(f"cannot run {command[0]}: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    signal.signal(signal.SIGTERM, lambda signum, frame: end_group(server))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})   # after Popen: the server keeps a clean mask
    while (returncode := server.poll()) is None:
        signal.sigtimedwait({signal.SIGCHLD}, PARENT_POLL_S)    # sleeps until the server ends, or the next check
        if os.getppid() != parent:
            end_group(server)
    if returncode < 0:   # killed by a signal: die of the same one
        if -returncode not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
