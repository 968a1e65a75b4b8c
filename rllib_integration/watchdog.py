"""Blocking simulator calls with a deadline, so a stuck tick cannot hang training forever.

Why: carla's C++ calls cannot be interrupted from Python. The client timeout bounds most of
them, but not all (CARLA's in-client Traffic Manager can deadlock inside world.tick(), and a
server that died mid-call costs the whole client timeout). So the call runs on a worker
thread while the caller waits with a deadline and watches the server process; on expiry the
caller gets an exception it can act on, and the stuck worker is abandoned (a daemon thread,
it never blocks interpreter exit) in favour of a fresh one.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, TypeVar

from .errors import SimulatorFailure, TickTimeoutError

T = TypeVar("T")
POLL_S = 0.1   # how often the waiting caller checks that the server still runs


class _Job:
    __slots__ = ("func", "done", "result", "error")

    def __init__(self, func: Callable[[], object]) -> None:
        self.func = func
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None


def _work(jobs: "queue.SimpleQueue[_Job | None]") -> None:
    while (job := jobs.get()) is not None:
        try:
            job.result = job.func()
        except BaseException as error:   # handed to the waiting caller
            job.error = error
        job.done.set()


class CallWatchdog:
    """Runs calls on one worker thread; run() raises when a call overstays its deadline."""

    def __init__(self, name: str = "carla-call") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def run(self, func: Callable[[], T], deadline_s: float, server_exit: Callable[[], str | None],
            what: str) -> T:
        """func() or an exception: its own, TickTimeoutError past the deadline, SimulatorFailure if
        server_exit() reports the server ended while waiting (as "exited with code 1" etc.)."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_work, args=(self._jobs,), name=self.name, daemon=True).start()
        job = _Job(func)
        self._jobs.put(job)
        deadline = time.monotonic() + deadline_s
        while not job.done.wait(POLL_S):
            exit_status = server_exit()
            if exit_status is not None:
                self._abandon()
                raise SimulatorFailure(f"the server {exit_status} during {what}")
            if time.monotonic() > deadline:
                self._abandon()
                raise TickTimeoutError(
                    f"{what} did not return within {deadline_s:g} s (the 'timeout' setting plus a margin): the "
                    "simulator or the client's Traffic Manager is stuck; the server is stopped and relaunched")
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _abandon(self) -> None:
        """Leaves the stuck worker behind; it exits once its call returns (the sentinel waits for it)."""
        if self._jobs is not None:
            self._jobs.put(None)
        self._jobs = None

    def close(self) -> None:
        self._abandon()
