"""Worker liveness through Redis keys that expire.

Each worker process that has its model loaded refreshes
``ecosnap:worker:<name>`` every ``interval`` seconds with a time-to-live of three
intervals. ``/health`` only has to look for such keys, which answers in
milliseconds, where a Celery ``inspect ping`` broadcast waits a full timeout and
cannot tell whether the model is loaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from redis import Redis, RedisError

from common.periodic import run_every

_PREFIX = "ecosnap:worker:"


def beat(redis: Redis, name: str, info: dict[str, Any], interval_s: float) -> None:
    redis.set(_PREFIX + name, json.dumps(info), px=int(interval_s * 3000))


def retire(redis: Redis, name: str) -> None:
    """Remove a stopping worker's heartbeat; if Redis is down it expires anyway."""
    try:
        redis.delete(_PREFIX + name)
    except RedisError:
        return


def start_heartbeat(
    redis: Redis, name: str, info: Callable[[], dict[str, Any]], interval_s: float
) -> threading.Event:
    """Beat now, then in a daemon thread until the returned event is set.

    ``info`` is called at every beat, so a worker that switches models says so.
    """
    beat(redis, name, info(), interval_s)
    return run_every(interval_s, lambda: beat_unless_redis_is_down(redis, name, info(), interval_s),
                     "ecosnap-heartbeat", start_now=False)  # fmt: skip


def beat_unless_redis_is_down(
    redis: Redis, name: str, info: dict[str, Any], interval_s: float
) -> None:
    """A beat, or none while Redis restarts (expected: not worth a log line); the
    next one says it."""
    try:
        beat(redis, name, info, interval_s)
    except RedisError:
        return


def beating_on(redis: Redis, host: str) -> bool:
    """Whether a worker process on ``host`` beats (with its model loaded)."""
    return next(redis.scan_iter(match=f"{_PREFIX}{host}:*", count=1000), None) is not None


def live_workers(redis: Redis, limit: int = 100) -> list[dict[str, Any]]:
    """Info of the workers whose heartbeat has not expired (at most ``limit``)."""
    keys = []
    for key in redis.scan_iter(match=_PREFIX + "*", count=limit):
        keys.append(key)
        if len(keys) >= limit:
            break
    values = redis.mget(keys) if keys else []
    return [json.loads(value) for value in values if value is not None]
