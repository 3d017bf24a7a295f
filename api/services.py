"""Accessors for the per-app services that ``create_app`` builds."""

from __future__ import annotations

from celery import Celery
from flask import current_app
from redis import Redis

from common.jobs import JobStore
from common.settings import Settings
from common.storage import Storage


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def redis() -> Redis:
    return current_app.extensions["ecosnap"]["redis"]


def health_redis() -> Redis:
    return current_app.extensions["ecosnap"]["health_redis"]


def jobs() -> JobStore:
    return current_app.extensions["ecosnap"]["jobs"]


def storage() -> Storage:
    return current_app.extensions["ecosnap"]["storage"]


def celery() -> Celery:
    return current_app.extensions["ecosnap"]["celery"]
