"""Redis clients whose every call is bounded: a timeout per attempt, a few retries.

redis-py's defaults wait up to 5 s per attempt and retry ten times, so a Redis that
stops answering would hold a request for close to a minute. Each process says how
long it may wait instead: the API a few seconds (then 503), a worker long enough to
ride out a restart of the private Redis.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError
from redis import Redis, RedisError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# What a Redis that does not answer raises: redis-py's errors, and kombu's when a
# message is being sent (it re-raises its transport's errors as its own).
REDIS_DOWN = (RedisError, OperationalError)


def bounded_redis(url: str, timeout_s: float, retries: int) -> Redis:
    """A client that gives up after ``retries + 1`` attempts of at most ``timeout_s``
    each, waiting 0.2 s, 0.4 s, ... (at most 1 s) between them.

    Every command the project sends through it may run twice (a reply lost after the
    command ran): job records only move forward and chunks are recorded once
    (``common.jobs``), so a repeat changes nothing.
    """
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries),
        health_check_interval=30,
    )
