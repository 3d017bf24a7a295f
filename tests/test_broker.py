"""``common.broker``: kombu's Redis channel with one client per connection pool."""

from importlib.metadata import version

from kombu import Connection

from common.broker import CHECKED_KOMBU, TRANSPORT, Channel


def test_the_installed_kombu_is_the_release_the_override_was_checked_against():
    # On an upgrade: read kombu's Channel.conn_or_acquire again, then move CHECKED_KOMBU.
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
