"""How many photos each predict batch held, and how fast a worker answers them.

Batch sizes show how well requests are being gathered: a Redis hash of batch size to
count, written by the workers once per batch and read by operators and the
benchmark. A worker's capacity (photos per second of work) goes into its heartbeat:
the API sizes the photo queue's bound from it (``api/admission.py``).
"""

from __future__ import annotations

from redis import Redis

BATCH_SIZES_KEY = "ecosnap:stats:batch_sizes"


def count_batch(redis: Redis, size: int) -> None:
    redis.hincrby(BATCH_SIZES_KEY, str(size), 1)


class Capacity:
    """Photos answered per second of batch work (not of wall time, so an idle worker
    keeps what it showed), as a moving average over recent batches."""

    WEIGHT = 0.2

    def __init__(self) -> None:
        self.photos_per_s = 0.0

    def observe(self, photos: int, seconds: float) -> None:
        if photos <= 0 or seconds <= 0:
            return
        rate = photos / seconds
        seen = self.photos_per_s
        self.photos_per_s = rate if not seen else seen + self.WEIGHT * (rate - seen)


def batch_sizes(redis: Redis) -> dict[int, int]:
    """How many batches of each size the workers have answered."""
    raw = redis.hgetall(BATCH_SIZES_KEY)
    return dict(sorted((int(size), int(count)) for size, count in raw.items()))
