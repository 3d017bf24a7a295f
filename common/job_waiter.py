"""Waiting for jobs to finish: what ``POST /predict?wait`` blocks on.

Workers announce each finished job on its channel (``common.jobs.done_channel``);
one pattern subscription per API process feeds every waiting request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from common.jobs import JobStore, done_channel


class JobWaiter:
    """Wakes requests waiting for jobs, over one pub/sub connection per process.

    A connection per waiting request would cost a connect, a handshake and a
    subscribe for every ``?wait``; here one pattern subscription feeds every waiter
    through ``threading.Event``. Create it after the process forks (the API creates
    it lazily, on the first wait).
    """

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self._waiters: dict[str, list[_Expectation]] = {}
        self._lock = threading.Lock()
        pubsub = jobs.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(**{done_channel("*"): self._on_message})
        # Read the subscribe confirmation now, so no publish after this returns is missed.
        pubsub.get_message(timeout=5)
        self._thread = pubsub.run_in_thread(
            sleep_time=1.0, daemon=True, exception_handler=self._on_error
        )

    def _on_message(self, message: dict[str, Any]) -> None:
        job_id = message["channel"].decode().split(":")[2]
        with self._lock:
            expectations = list(self._waiters.get(job_id, ()))
        if not expectations:
            return
        try:
            outcome = json.loads(message["data"])
        except ValueError:  # not an outcome: read the record instead
            outcome = {}
        for expectation in expectations:
            expectation.outcome = outcome if isinstance(outcome, dict) else {}
            expectation.event.set()

    @staticmethod
    def _on_error(exc: BaseException, pubsub: Any, thread: Any) -> None:
        """Redis went away: back off; redis-py resubscribes when it reconnects."""
        time.sleep(0.5)

    @contextmanager
    def expect(self, job_id: str) -> Iterator[Callable[[float], dict[str, Any] | None]]:
        """Listen for ``job_id`` finishing; yields ``wait(timeout_s)``.

        Enter it before the job's task is sent and the finish cannot be missed, so
        the outcome comes from the notice alone, with no read of the record. For a
        job that may already have finished, read the record after entering.
        """
        expectation = _Expectation()
        with self._lock:
            self._waiters.setdefault(job_id, []).append(expectation)

        def wait(timeout_s: float) -> dict[str, Any] | None:
            if not expectation.event.wait(timeout_s):
                return None
            outcome = expectation.outcome
            return outcome if "result" in outcome or "error" in outcome else self.jobs.get(job_id)

        try:
            yield wait
        finally:
            with self._lock:
                expectations = self._waiters[job_id]
                expectations.remove(expectation)
                if not expectations:
                    del self._waiters[job_id]


@dataclass
class _Expectation:
    event: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] = field(default_factory=dict)
