"""Backpressure: a bounded photo queue, and a few evaluations at a time.

The photo queue holds at most ``MAX_QUEUED_PHOTOS`` photos or, by default, what the
live predict workers answer in ``QUEUE_BACKLOG_S`` seconds (each heartbeat carries
its worker's capacity), and never fewer than ``MIN_PHOTO_BOUND``. Past it,
``/predict`` answers 503 ``overloaded`` with ``Retry-After`` (about the time the
queue takes to drain) before the upload is read or stored. While the queue is under
half its bound, each API process reads its length at most every 0.1 s, so the check
costs a photo no Redis call of its own; nearer the bound it reads it for every photo,
so the bound is overshot by at most the photos being accepted at that moment. The
workers' capacity is read every 2 s. ``/evaluate`` refuses with 429 past
``MAX_EVALUATIONS`` evaluations queued or running (``JobStore.create``'s limit).
"""

from __future__ import annotations

import math
import time

from redis import Redis

from api.errors import APIError
from common.heartbeat import live_workers
from common.jobs import JobStore
from common.messages import PREDICT_QUEUE
from common.settings import Settings

MIN_PHOTO_BOUND = 128
QUEUE_LENGTH_AGE_S = 0.1
CAPACITY_AGE_S = 2.0
# What a refused evaluation is told to wait: evaluations take minutes.
EVALUATION_RETRY_AFTER_S = 30


class Admission:
    """This API process's view of the photo queue: its length and its bound."""

    def __init__(self, jobs: JobStore, health_redis: Redis, settings: Settings) -> None:
        self._jobs = jobs
        self._health_redis = health_redis
        self._settings = settings
        self._queued, self._queued_at = 0, -math.inf
        self._capacity, self._capacity_at = 0.0, -math.inf

    def photo_bound(self) -> int:
        fixed = self._settings.max_queued_photos
        if fixed:
            return fixed
        return max(MIN_PHOTO_BOUND, int(self._capacity_now() * self._settings.queue_backlog_s))

    def refuse_photo_if_full(self) -> None:
        bound = self.photo_bound()
        queued = self._queued_now()
        if queued >= bound // 2:  # near the bound: the queue's length now, not 0.1 s ago
            queued = self._queued_now(fresh=True)
        if queued < bound:
            return
        capacity = self._capacity_now()
        drain_s = math.ceil(queued / capacity) if capacity else 5
        raise APIError(
            503,
            "overloaded",
            f"{queued} photos are waiting already; try again shortly.",
            retry_after_s=min(max(drain_s, 1), 30),
        )

    # No lock around the reads: with Redis slow to answer, a request waits for its own
    # read, not for every read queued before it. Two threads may read at once; either
    # value is as fresh.
    def _queued_now(self, fresh: bool = False) -> int:
        if fresh or time.monotonic() - self._queued_at > QUEUE_LENGTH_AGE_S:
            self._queued, self._queued_at = self._jobs.pending("predict"), time.monotonic()
        return self._queued

    def _capacity_now(self) -> float:
        """Photos per second the live predict workers answer, all together."""
        if time.monotonic() - self._capacity_at > CAPACITY_AGE_S:
            workers = live_workers(self._health_redis)
            self._capacity = sum(
                worker.get("photos_per_s") or 0.0
                for worker in workers
                if PREDICT_QUEUE in worker.get("queues", ())
            )
            self._capacity_at = time.monotonic()
        return self._capacity
