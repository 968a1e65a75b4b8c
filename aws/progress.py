"""Progress lines on stderr (stdout carries only results: ids, field values, remote output)."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.console import Console

console = Console(stderr=True, highlight=False)


def say(message: str) -> None:
    console.print(message, markup=False, soft_wrap=True)  # no wrapping: printed commands must paste whole


@contextlib.contextmanager
def step(description: str, timeout_s: float | None = None) -> Iterator[None]:
    """Announces a slow step, shows a spinner on a terminal, and reports how long it took."""
    limit = f" (up to {timeout_s:.0f} s)" if timeout_s else ""
    say(f"{description}{limit}...")
    started = time.monotonic()
    with console.status(description):
        yield
    say(f"{description}: done in {time.monotonic() - started:.0f} s")
