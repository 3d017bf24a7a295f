"""``python -m worker.probe``: an orchestrator's probe of the worker on this host.

It succeeds while a worker process on this host (its heartbeat is named
``<hostname>:<pid>``) beats in Redis with its model loaded: a dead or frozen worker
stops beating within three heartbeats (6 s by default), and a worker still loading
its model has not begun. It reads one Redis key pattern and imports nothing heavy,
so it answers in well under a second.
"""

from __future__ import annotations

import socket
import sys

from redis import RedisError

from common.heartbeat import beating_on
from common.redis_client import bounded_redis
from common.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    try:
        redis = bounded_redis(settings.redis_url or "", timeout_s=2.0, retries=0)
        alive = beating_on(redis, socket.gethostname())
    except RedisError as exc:
        print(f"Redis does not answer: {exc}", file=sys.stderr)
        return 1
    if not alive:
        print(f"No worker on {socket.gethostname()} beats with its model loaded.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
