"""Accessors for the per-app services that ``create_app`` builds."""

from __future__ import annotations

import threading

from celery import Celery
from flask import current_app
from redis import Redis

from api.access import ApiKeys, identify
from api.admission import Admission
from api.sender import PhotoSender
from common.job_waiter import JobWaiter
from common.jobs import JobStore
from common.registry import ModelRegistry
from common.settings import Settings
from common.storage import Storage

# The waiter and the sender start threads: made on first use, after gunicorn forks.
# One lock each: the waiter's start talks to Redis, and must not hold up the sender.
_WAITER_LOCK = threading.Lock()
_SENDER_LOCK = threading.Lock()


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def health_redis() -> Redis:
    return current_app.extensions["ecosnap"]["health_redis"]


def jobs() -> JobStore:
    return current_app.extensions["ecosnap"]["jobs"]


def storage() -> Storage:
    return current_app.extensions["ecosnap"]["storage"]


def admission() -> Admission:
    return current_app.extensions["ecosnap"]["admission"]


def waiting_slots() -> threading.BoundedSemaphore:
    return current_app.extensions["ecosnap"]["waiting_slots"]


def waiter() -> JobWaiter:
    """The process's ``JobWaiter``, started on first use (after gunicorn forks)."""
    services = current_app.extensions["ecosnap"]
    with _WAITER_LOCK:
        if "waiter" not in services:
            services["waiter"] = JobWaiter(services["jobs"])
    return services["waiter"]


def sender() -> PhotoSender:
    """The process's ``PhotoSender``, started on first use (after gunicorn forks)."""
    services = current_app.extensions["ecosnap"]
    with _SENDER_LOCK:
        if "sender" not in services:
            services["sender"] = PhotoSender(
                services["jobs"], services["celery"], settings().batch_max_size
            )
    return services["sender"]


def api_keys() -> ApiKeys | None:
    return current_app.extensions["ecosnap"]["api_keys"]


def identify_caller() -> None:
    """The ``before_request`` of every route that makes or shows jobs (``api.access``)."""
    identify(api_keys(), settings().admin_api_key)


def registry() -> ModelRegistry:
    return current_app.extensions["ecosnap"]["registry"]


def celery() -> Celery:
    return current_app.extensions["ecosnap"]["celery"]
