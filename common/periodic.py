"""Background chores a worker process repeats: heartbeats, sweeping old uploads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def run_every(
    interval_s: float, action: Callable[[], object], name: str, start_now: bool = True
) -> threading.Event:
    """Call ``action`` every ``interval_s`` (first at once, unless ``start_now`` is
    false) in a daemon thread, until the returned event is set.

    A failing call is logged and the next one still runs: a chore that dies
    silently would leave a worker looking healthy while its disk fills.
    """
    stop = threading.Event()

    def call() -> None:
        try:
            action()
        except Exception:
            log.exception("%s failed; it runs again in %g s.", name, interval_s)

    def run() -> None:
        if start_now:
            call()
        while not stop.wait(interval_s):
            call()

    threading.Thread(target=run, name=name, daemon=True).start()
    return stop
