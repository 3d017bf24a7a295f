"""The frameworks with no work of ours: a Flask route and a celery-batches task.

``bench.floor`` serves this Flask app with the API's gunicorn command and consumes
this task with the predict worker's command and Celery settings, so their CPU per
request is what Flask, gunicorn, Celery, kombu and Redis cost before our code runs.
"""

from __future__ import annotations

from functools import cache

from celery import Celery
from celery_batches import SimpleRequest
from flask import Flask, request
from redis import Redis

from bench.floor import DONE_KEY
from common.settings import Settings
from worker.batching import predict_task_options
from worker.celery import celery_config

settings = Settings.from_env()

http_app = Flask(__name__)


@http_app.get("/health")
def health() -> dict[str, str]:
    """Lets the benchmark wait until gunicorn serves, as it does for the real API."""
    return {"status": "ok"}


@http_app.post("/predict")
def read_upload() -> dict[str, int]:
    """Parse the multipart upload, as the real route must, and answer at once."""
    return {"bytes": len(request.files["file"].read())}


celery_app = Celery("floor")
celery_app.conf.update(celery_config(settings))


@cache
def _redis() -> Redis:
    return Redis.from_url(settings.redis_url)


@celery_app.task(**predict_task_options(settings))
def count(requests: list[SimpleRequest]) -> None:
    """Only count the photos, so the benchmark knows when the queue has drained."""
    _redis().incrby(DONE_KEY, sum(len(request.kwargs["photos"]) for request in requests))
