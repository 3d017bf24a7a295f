"""Rate limits per API key (per client address with keys off), counted in Redis so
that every API process shares them (Flask-Limiter, sliding-window counters).

Photos and datasets have their own limits (``RATE_LIMIT_PHOTOS``,
``RATE_LIMIT_DATASETS``, in Flask-Limiter's notation such as ``50 per second`` or
``20 per hour;200 per day``; an empty value turns one off). A request over a limit
gets 429 ``rate_limited`` with ``Retry-After`` before its upload is read or stored.
A request with an unknown key is counted by its address, so guessing keys is
limited too.
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many
from redis import Redis

from api import services
from api.access import bearer_token
from api.errors import error_response
from common.settings import Settings


def rate_key() -> str:
    """Whom a request counts against: its key's name, else its address."""
    keys, token = services.api_keys(), bearer_token()
    name = keys.name_of(token) if keys is not None and token is not None else None
    return f"key:{name}" if name else f"address:{request.remote_addr}"


def start_rate_limits(
    app: Flask, settings: Settings, redis: Redis, limited: dict[Blueprint, str]
) -> None:
    """Limit each blueprint's routes as ``limited`` says; a malformed limit stops the
    API at start, not at its first request."""
    for value in limited.values():
        if value:
            parse_many(value)
    app.config.update(
        RATELIMIT_STORAGE_URI=settings.redis_url,
        # The API's own bounded client: a Redis that does not answer is a 503 in seconds.
        RATELIMIT_STORAGE_OPTIONS={"connection_pool": redis.connection_pool},
        RATELIMIT_KEY_PREFIX="ecosnap:rate",
        RATELIMIT_STRATEGY="sliding-window-counter",
        # Retry-After goes on the 429 alone (api/errors.py), not on every answer.
        RATELIMIT_HEADERS_ENABLED=False,
    )
    limiter = Limiter(rate_key, app=app)
    for blueprint, value in limited.items():
        if value:
            limiter.limit(value)(blueprint)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        response, status = error_response(
            429, "rate_limited", f"Over the rate limit of {exc.description}; try again later."
        )
        limit = limiter.current_limit  # the one this request broke
        wait_s = math.ceil(limit.reset_at - time.time()) if limit else 1
        response.headers["Retry-After"] = str(max(1, wait_s))
        return response, status
