"""How many photos each predict batch held: shows how well requests are being gathered.

A Redis hash of batch size to count, written by the workers once per batch and read
by operators and the benchmark.
"""

from __future__ import annotations

from redis import Redis

BATCH_SIZES_KEY = "ecosnap:stats:batch_sizes"


def count_batch(redis: Redis, size: int) -> None:
    redis.hincrby(BATCH_SIZES_KEY, str(size), 1)


def batch_sizes(redis: Redis) -> dict[int, int]:
    """How many batches of each size the workers have answered."""
    raw = redis.hgetall(BATCH_SIZES_KEY)
    return dict(sorted((int(size), int(count)) for size, count in raw.items()))
