"""``common.broker``: kombu's Redis channel with one client per connection pool, and
leases on the messages a process holds."""

import time
from importlib.metadata import version

import pytest
from kombu import Connection
from kombu.message import Message
from kombu.transport import redis as kombu_redis
from redis import ConnectionError as RedisConnectionError
from redis import Redis

from common.broker import CHECKED_KOMBU, LEASES, TRANSPORT, Channel


def test_the_installed_kombu_is_the_release_the_override_was_checked_against():
    # On an upgrade: read kombu's Channel.conn_or_acquire, QoS.append and
    # QoS.restore_visible again, then move CHECKED_KOMBU.
    assert version("kombu") == CHECKED_KOMBU


def test_a_channel_reuses_one_client_until_its_pool_is_replaced(redis_url):
    with Connection(redis_url, transport=TRANSPORT) as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.ping()
        channel._disconnect_pools()  # what kombu does after a fork
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
            assert third.ping()


def consumed(connection: Connection, queue: str) -> Message:
    """Publish one message on ``queue`` and take it without acknowledging it."""
    connection.SimpleQueue(queue).put({"n": 1})
    return connection.SimpleQueue(queue).get(timeout=5)


def lease_times(redis: Redis) -> list[float]:
    return [score for _, score in redis.zrange("unacked_index", 0, -1, withscores=True)]


def test_a_held_message_is_leased_and_put_back_once_nobody_renews_it(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/10"
    redis = Redis.from_url(url)
    redis.flushdb()
    options = {"visibility_timeout": 3}
    with Connection(url, transport=TRANSPORT, transport_options=options) as connection:
        message = consumed(connection, "leased")
        (delivered_at,) = lease_times(redis)
        time.sleep(0.05)
        assert LEASES.renew() >= 1
        (renewed_at,) = lease_times(redis)
        assert renewed_at > delivered_at
        # Nobody renews it any more (its holder died): kombu's sweep puts it back once
        # the lease has run out, not before.
        channel = connection.default_channel
        channel.qos.restore_visible(interval=1)
        assert redis.llen("leased") == 0
        redis.zadd("unacked_index", {message.delivery_tag: time.time() - 4})
        channel.qos.restore_visible(interval=1)
        assert redis.llen("leased") == 1 and lease_times(redis) == []


def test_a_message_popped_while_redis_goes_away_is_kept_and_recorded_later(redis_url, monkeypatch):
    url = redis_url.rsplit("/", 1)[0] + "/11"
    redis = Redis.from_url(url)
    redis.flushdb()

    def redis_gone(*_: object) -> None:
        raise RedisConnectionError("Connection reset by peer")

    with Connection(url, transport=TRANSPORT) as connection:
        channel = connection.default_channel
        with monkeypatch.context() as patch:
            patch.setattr(kombu_redis.QoS, "append", redis_gone)
            message = consumed(connection, "popped")  # kombu would raise and drop it
        assert message.payload == {"n": 1}
        assert redis.hlen("unacked") == 0  # not recorded yet: only in hand
        assert message.delivery_tag in channel.qos._delivered
        LEASES.renew()  # Redis answers again: the lease is written
        assert redis.hexists("unacked", message.delivery_tag)
        message.ack()
        assert redis.hlen("unacked") == 0


def test_a_message_whose_putting_back_fails_is_let_go_and_comes_back_by_its_lease(
    redis_url, monkeypatch
):
    url = redis_url.rsplit("/", 1)[0] + "/12"
    redis = Redis.from_url(url)
    redis.flushdb()

    def redis_gone(*_: object, **__: object) -> None:
        raise RedisConnectionError("Connection reset by peer")

    with Connection(url, transport=TRANSPORT, transport_options={"visibility_timeout": 3}) as conn:
        message = consumed(conn, "refused")
        qos = conn.default_channel.qos
        with monkeypatch.context() as patch:
            patch.setattr(kombu_redis.QoS, "restore_by_tag", redis_gone)
            with pytest.raises(RedisConnectionError):
                message.requeue()
        assert qos.renew_leases() == 0, "no longer held, so its lease is not renewed"
        redis.zadd("unacked_index", {message.delivery_tag: time.time() - 4})  # it ran out
        qos.restore_visible(interval=1)
        assert redis.llen("refused") == 1
