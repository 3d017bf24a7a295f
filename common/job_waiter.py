"""Waiting for jobs to finish: what ``POST /predict?wait`` blocks on.

Workers announce the photos an API process waits for on that process's own reply
channel, a batch's outcomes in one notice; other finished jobs on their own channel
(``common.jobs.done_channel``). One subscription per API process feeds every
waiting request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis import RedisError

from common.jobs import JobStore, done_channel, reply_channel


class JobWaiter:
    """Wakes requests waiting for jobs, over one pub/sub connection per process.

    A connection per waiting request would cost a connect, a handshake and a
    subscribe for every ``?wait``; here one pattern subscription feeds every waiter
    through ``threading.Event``. Create it after the process forks (the API creates
    it lazily, on the first wait).
    """

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        # Name this channel in a job's message and its outcome comes here.
        self.reply_channel = reply_channel()
        self._waiters: dict[str, list[_Expectation]] = {}
        self._lock = threading.Lock()
        pubsub = jobs.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(**{done_channel("*"): self._on_done})
        pubsub.subscribe(**{self.reply_channel: self._on_replies})
        # Read the subscribe confirmations now, so no publish after this returns is missed.
        for _ in range(2):
            pubsub.get_message(timeout=5)
        self._thread = pubsub.run_in_thread(
            sleep_time=1.0, daemon=True, exception_handler=self._on_error
        )

    def _on_done(self, message: dict[str, Any]) -> None:
        """One job's notice on its own channel: every API process hears every one, so
        a notice nobody here waits for is dropped before it is decoded."""
        job_id = message["channel"].decode().split(":")[2]
        if job_id in self._waiters:  # a racy look is enough: _wake looks again, locked
            self._wake(job_id, _decoded(message["data"]))

    def _on_replies(self, message: dict[str, Any]) -> None:
        """Outcomes by job id, of a batch's jobs that this process waits for."""
        for job_id, outcome in _decoded(message["data"]).items():
            self._wake(job_id, outcome if isinstance(outcome, dict) else {})

    def _wake(self, job_id: str, outcome: dict[str, Any]) -> None:
        with self._lock:
            expectations = list(self._waiters.get(job_id, ()))
        for expectation in expectations:
            expectation.outcome = outcome
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
            """The finished job's record, or None if it has not finished (or its
            record cannot be read now: the caller answers with the job id)."""
            if not expectation.event.wait(timeout_s):
                return None
            outcome = expectation.outcome
            if "result" in outcome or "error" in outcome:
                return outcome
            try:
                return self.jobs.get(job_id)
            except RedisError:
                return None

        try:
            yield wait
        finally:
            with self._lock:
                expectations = self._waiters[job_id]
                expectations.remove(expectation)
                if not expectations:
                    del self._waiters[job_id]


def _decoded(data: bytes) -> dict[str, Any]:
    """A notice's JSON object; anything else wakes with no outcome (the record is read)."""
    try:
        decoded = json.loads(data)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


@dataclass
class _Expectation:
    event: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] = field(default_factory=dict)
