"""Signal handling: SIGTERM/SIGHUP behave like Ctrl-C, and clean-up steps cannot be cut short.

``kill PID`` must still terminate a builder instance or stop a training instance, so the
signals that end a process unwind the stack (running ``finally`` blocks) instead of killing it.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Iterator

_ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def end_signals_as_interrupts() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (subprocess.run then kills its child too)."""
    for signum in _ENDING_SIGNALS:
        signal.signal(signum, _interrupt)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ignores ending signals for the duration: a second Ctrl-C must not abandon a clean-up half done."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _ENDING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
