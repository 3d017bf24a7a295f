"""kombu's Redis transport with one change: each channel reuses one Redis client.

kombu 5.7.0's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` object (on
the channel's shared connection pool) for every publish, acknowledgement and
bookkeeping call; with redis-py 8 building one costs about a tenth of a millisecond
of CPU, several times per photo in the API and in the worker. A client on a pool is
safe to share between threads (each command takes a pooled connection), so one per
pool does. No upstream issue or setting was found for this (kombu 5.7.0 checked);
``tests/test_broker.py`` pins the version, so an upgrade re-checks this override.

Celery uses it through ``broker_transport`` in ``worker/celery.py``; the broker URL
stays a plain ``redis://`` URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis

CHECKED_KOMBU = "5.7.0"
TRANSPORT = "common.broker:Transport"


class Channel(kombu_redis.Channel):
    _shared_client: redis.Redis | None = None

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client:
            yield client
            return
        # The pool is replaced after a fork or a disconnect: a client follows it.
        pool = self.pool
        if self._shared_client is None or self._shared_client.connection_pool is not pool:
            self._shared_client = self._create_client()
        yield self._shared_client


class Transport(kombu_redis.Transport):
    Channel = Channel
