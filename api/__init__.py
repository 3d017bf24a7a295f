"""The HTTP API: validates requests, enqueues jobs, answers from job records.

It never imports TensorFlow or Keras; the model lives in the workers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask

from common.jobs import JobStore
from common.redis_client import bounded_redis
from common.registry import registry_from_settings
from common.settings import Settings
from common.storage import StorageUnavailable, storage_from_settings


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory; ``test_config`` may hold ``SETTINGS`` (a ``Settings``)."""
    from api import (
        errors,
        evaluate,
        health,
        jobs,
        model_info,
        models,
        openapi,
        page,
        predict,
        telemetry,
        uploads,
    )  # fmt: skip
    from api.access import ApiKeys
    from api.admission import Admission
    from api.forms import Request
    from api.inputs import MULTIPART_OVERHEAD_BYTES
    from api.rate_limits import start_rate_limits
    from worker.celery import app as celery_app
    from worker.celery import celery_config

    app = Flask(__name__)
    app.request_class = Request
    app.config.from_mapping(test_config or {})
    settings: Settings = app.config.setdefault("SETTINGS", Settings.from_env())
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set; `ecosnap up` starts a Redis and sets it.")

    # Werkzeug refuses a larger body with 413 before reading it; the exact limit on
    # the file itself is checked again in the predict blueprint.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    # A request that meets Redis down answers 503 within a few seconds.
    redis = bounded_redis(settings.redis_url, timeout_s=2.0, retries=2)
    job_store = JobStore(redis, settings.result_ttl_s)
    # /health must answer within a second even when Redis hangs.
    health_redis = bounded_redis(settings.redis_url, timeout_s=0.3, retries=0)
    celery_app.conf.update(celery_config(settings))
    storage = storage_from_settings(settings)
    registry = registry_from_settings(settings, storage)
    try:
        registry.import_configured(settings.model_path)
    except StorageUnavailable as exc:  # the workers import it too; the API still answers
        logging.getLogger(__name__).warning("The registry's bucket did not answer: %s", exc)
    app.extensions["ecosnap"] = {
        "api_keys": ApiKeys.from_settings(settings),
        "health_redis": health_redis,
        "jobs": job_store,
        "admission": Admission(job_store, health_redis, settings),
        # ?wait requests beyond these are answered 202 at once, so they never hold
        # every thread: health checks and quick requests always find one free.
        "waiting_slots": threading.BoundedSemaphore(settings.api_waiting_slots),
        "storage": storage,
        "celery": celery_app,
        "registry": registry,
    }

    errors.register(app)
    telemetry.register(app)
    for blueprint in (
        predict.bp, evaluate.bp, jobs.bp, model_info.bp, models.bp, health.bp, uploads.bp,
        openapi.bp, page.bp,
    ):  # fmt: skip
        app.register_blueprint(blueprint)
    start_rate_limits(
        app,
        settings,
        redis,
        {predict.bp: settings.rate_limit_photos, evaluate.bp: settings.rate_limit_datasets},
    )
    return app
