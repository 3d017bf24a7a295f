"""Celery tasks: thin wrappers over plain functions; models load once per worker."""

from __future__ import annotations

import json
import os
import socket

from celery.signals import celeryd_after_setup, worker_init, worker_shutdown
from celery.worker import WorkController
from celery_batches import SimpleRequest
from redis import Redis

from common.heartbeat import start_heartbeat
from common.jobs import WORKER_ERROR, JobStore, utc_now
from common.registry import ModelRegistry
from common.settings import Settings
from common.storage import Storage, storage_from_settings
from worker import evaluation
from worker.celery import (
    EVALUATE_CHUNK_TASK,
    EVALUATE_QUEUE,
    EVALUATE_TASK,
    VALIDATE_MODEL_TASK,
    app,
    predict_task_options,
)
from worker.housekeeping import start_upload_sweeper
from worker.inference import PredictJob, classify
from worker.models import ServedModels, watch_activations
from worker.validation import InvalidModel, validate

settings = Settings.from_env()


class _Process:
    """What one worker process holds: its models, storage, job store, background threads."""

    models: ServedModels
    storage: Storage
    jobs: JobStore
    stop_threads: tuple = ()


@worker_init.connect
def load_model(**_: object) -> None:
    """Load and warm the active model once per process, then follow activations."""
    registry = ModelRegistry(settings.registry_dir, settings.model_name)
    registry.import_configured(settings.model_path)
    models = ServedModels(
        registry, settings.var_dir / "model-cache", accelerated=settings.accelerate == "onnx"
    )
    models.refresh()
    _Process.models = models
    _Process.storage = storage_from_settings(settings)
    redis = Redis.from_url(settings.redis_url)
    _Process.jobs = JobStore(redis, settings.result_ttl_s)
    _Process.stop_threads = (
        start_heartbeat(
            redis,
            f"{socket.gethostname()}:{os.getpid()}",
            lambda: {
                "pid": os.getpid(),
                "model_version": models.active.metadata.version,
                "runtime": type(models.active).__name__,
                "load_error": models.load_error,
            },
            settings.heartbeat_interval_s,
        ),
        watch_activations(redis, models, settings.heartbeat_interval_s),
    )


@celeryd_after_setup.connect
def sweep_uploads_on_evaluate_workers(instance: WorkController, **_: object) -> None:
    """Only a worker that takes evaluations sweeps old uploads.

    ``ecosnap up`` and compose run it under ``nice``, so a sweep of a large folder
    never holds the interpreter beside a batch of photos; a single worker serving
    both queues sweeps too. ``UPLOAD_RETENTION_S=0`` keeps uploads forever.
    """
    if settings.upload_retention_s and EVALUATE_QUEUE in instance.app.amqp.queues.consume_from:
        _Process.stop_threads += (start_upload_sweeper(_Process.storage, settings),)


@worker_shutdown.connect
def stop_threads(**_: object) -> None:
    for stop in _Process.stop_threads:
        stop.set()


@app.task(**predict_task_options(settings))
def predict(requests: list[SimpleRequest]) -> None:
    jobs = [PredictJob(job_id=request.id, **request.kwargs) for request in requests]
    # One reference for the whole batch: an activation meanwhile applies to the next.
    runtime = _Process.models.active
    _Process.jobs.mark_running([job.job_id for job in jobs])
    try:
        results, errors = classify(jobs, runtime, _Process.storage, settings.max_image_pixels)
    except Exception:
        # A failure of the model or storage itself: answer every waiting client
        # rather than leave its job "running" until it expires, then let Celery log it.
        _Process.jobs.finish({}, {job.job_id: WORKER_ERROR for job in jobs})
        raise
    _Process.jobs.finish(results, errors)


@app.task(name=EVALUATE_TASK)
def evaluate(job_id: str, dataset_key: str, split: str | None) -> None:
    with evaluation.failing_job_on_error(_Process.jobs, job_id):
        evaluation.start(
            job_id, dataset_key, split, _Process.storage, _Process.jobs, settings,
            submit_chunk=lambda *args: evaluate_chunk.apply_async(args=args),
            model_version=_Process.models.active.metadata.version,
        )  # fmt: skip


@app.task(name=EVALUATE_CHUNK_TASK)
def evaluate_chunk(job_id: str, dataset_key: str, items: list[list]) -> None:
    # Photos first: answer any predictions celery-batches is still holding for its
    # next timer tick before this chunk occupies the worker. The solo pool runs
    # this task on the consumer's own thread, where the buffer lives.
    predict._do_flush()
    with evaluation.failing_job_on_error(_Process.jobs, job_id):
        evaluation.run_chunk(
            job_id, dataset_key, [(name, label) for name, label in items],
            _Process.models.runtime, _Process.storage, _Process.jobs, settings,
        )  # fmt: skip


@app.task(name=VALIDATE_MODEL_TASK)
def validate_model(job_id: str, version: str) -> None:
    """Validate an uploaded version: the registry and the job both get the outcome."""
    predict._do_flush()
    registry, jobs = _Process.models.registry, _Process.jobs
    jobs.transition(job_id, ("queued",), status="running", started_at=utc_now())
    try:
        checks = validate(registry, version)
        registry.set_status(version, "valid", checks=checks, validated_at=utc_now())
    except Exception as exc:
        invalid = isinstance(exc, InvalidModel)
        error = {"code": "invalid_model", "message": str(exc)} if invalid else WORKER_ERROR
        # The registry first, so a client that sees the job end sees the state too;
        # the job ends even if the registry cannot be written. Invalid either way:
        # POST /models/<version>/validate tries again.
        try:
            registry.set_status(version, "invalid", error=error)
        finally:
            jobs.fail(job_id, **error)
        if not invalid:
            raise
        return
    result = {"version": version, "valid": True, "checks": checks}
    jobs.transition(job_id, ("running",), status="succeeded", result=json.dumps(result),
                    finished_at=utc_now())  # fmt: skip
