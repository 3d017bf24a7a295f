"""kombu's Redis transport with two changes: a channel reuses one Redis client, and a
message a worker holds is leased rather than timed.

**One client.** kombu 5.7.0's ``Channel.conn_or_acquire`` builds a new
``redis.Redis`` object (on the channel's shared connection pool) for every publish,
acknowledgement and bookkeeping call; with redis-py 8 building one costs about a
tenth of a millisecond of CPU, several times per photo in the API and in the worker.
A client on a pool is safe to share between threads (each command takes a pooled
connection), so one per pool does.

**Leases.** The Redis transport keeps every delivered, unacknowledged message in a
hash, with its delivery time in a sorted set, and every worker puts back into its
queue the messages delivered longer ago than the visibility timeout. Alone, that
timeout must outlast the longest task (a live worker's message would otherwise run
twice), so a killed worker's photos waited minutes. Here each process renews, every
third of the timeout, the time of every message its open channels hold (``ZADD
XX``): the timeout then only has to outlast a missed renewal, and a message comes
back within one timeout of the death, freeze or lost connection of the process that
held it, however long its task runs. The putting back is kombu's own sweep
(``QoS.restore_visible``), run every second (``broker_transport_options`` in
``worker/celery.py``).

No upstream setting or issue was found for either (kombu 5.7.0 checked);
``tests/test_broker.py`` pins the version, so an upgrade re-checks this module.
Celery uses it through ``broker_transport`` in ``worker/celery.py``; the broker URL
stays a plain ``redis://`` URL.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from common.periodic import run_every

CHECKED_KOMBU = "5.7.0"
TRANSPORT = "common.broker:Transport"
RENEWALS_PER_LEASE = 3

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    """kombu's acknowledgement emulation, with the leases of the messages held renewed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._unrecorded: dict[str, object] = {}

    def append(self, message: object, delivery_tag: str) -> None:
        """Record a delivered message as unacknowledged (kombu's ``append``).

        kombu pops the message off its queue, then records it here in a second
        command: if Redis goes away in between, kombu raises and the message, in
        this process's memory only, is dropped, lost for good. Here it is kept,
        handed to the task as usual, and recorded by the next renewal once Redis
        answers.
        """
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors as exc:
            log.warning("Could not record a delivered message (%s); it is kept in hand.", exc)
            virtual.QoS.append(self, message, delivery_tag)
            self._unrecorded[delivery_tag] = message
        LEASES.hold(self)

    def ack(self, delivery_tag: str) -> None:
        with self._let_go_if_redis_fails(delivery_tag):
            super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        with self._let_go_if_redis_fails(delivery_tag):
            super().reject(delivery_tag, requeue)

    @contextmanager
    def _let_go_if_redis_fails(self, delivery_tag: str) -> Iterator[None]:
        """An acknowledgement or a putting back that Redis did not take: the message
        stops being held here (and renewed), so its lease runs out and kombu's sweep
        puts it back; a copy of a finished job is then dropped. Held, it would be
        renewed for as long as the channel lives, and its job never run again."""
        try:
            yield
        except self.channel.connection_errors:
            virtual.QoS.ack(self, delivery_tag)
            raise

    def renew_leases(self) -> int:
        """Mark every message this channel holds as delivered now; how many it holds."""
        for tag, message in list(self._unrecorded.items()):
            if tag in self._delivered and tag not in self._dirty:
                super().append(message, tag)
            del self._unrecorded[tag]
        held = [tag for tag in list(self._delivered) if tag not in self._dirty]
        if held:
            with self.channel.conn_or_acquire() as client:
                client.zadd(self.unacked_index_key, dict.fromkeys(held, time.time()), xx=True)
        return len(held)


class Leases:
    """The channels of this process that have held messages, and the thread renewing
    their leases (started with the first message received)."""

    def __init__(self) -> None:
        self._holders: weakref.WeakSet[QoS] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._renewer: threading.Event | None = None

    def hold(self, qos: QoS) -> None:
        if qos in self._holders:
            return
        with self._lock:
            self._holders.add(qos)
            if self._renewer is None:
                interval_s = qos.visibility_timeout / RENEWALS_PER_LEASE
                self._renewer = run_every(interval_s, self.renew, "ecosnap-leases")

    def renew(self) -> int:
        """Renew every open channel's leases; how many messages they hold."""
        held = 0
        for qos in list(self._holders):
            if qos.channel.closed:  # kombu put its messages back, or could not
                self._holders.discard(qos)
                continue
            try:
                held += qos.renew_leases()
            except redis.RedisError as exc:  # Redis is restarting: the next round renews
                log.debug("Could not renew the leases of held messages: %s", exc)
        return held


LEASES = Leases()


class Channel(kombu_redis.Channel):
    QoS = QoS
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
