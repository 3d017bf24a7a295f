"""Background chores a worker process repeats: heartbeats, sweeping old uploads."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_every(interval_s: float, action: Callable[[], object], name: str) -> threading.Event:
    """Call ``action`` now and every ``interval_s`` in a daemon thread, until the
    returned event is set; ``action`` handles its own errors."""
    stop = threading.Event()

    def run() -> None:
        while True:
            action()
            if stop.wait(interval_s):
                return

    threading.Thread(target=run, name=name, daemon=True).start()
    return stop
