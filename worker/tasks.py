"""Celery tasks: thin wrappers over ``worker.inference``; the model loads once per worker."""

from __future__ import annotations

import os
import socket

from celery.signals import worker_init, worker_shutdown
from celery_batches import Batches, SimpleRequest
from redis import Redis

from common.heartbeat import start_heartbeat
from common.jobs import WORKER_ERROR, JobStore
from common.settings import Settings
from common.storage import Storage, storage_from_settings
from worker import evaluation
from worker.celery import EVALUATE_CHUNK_TASK, EVALUATE_TASK, PREDICT_TASK, app
from worker.conversion import accelerate
from worker.inference import PredictJob, classify
from worker.runtime import ModelRuntime, load_runtime

settings = Settings.from_env()


class _Process:
    """What one worker process holds: the model, storage, job store, heartbeat."""

    runtime: ModelRuntime
    storage: Storage
    jobs: JobStore
    stop_heartbeat = None


@worker_init.connect
def load_model(**_: object) -> None:
    """Load and warm the model once per process, then announce it in the heartbeat."""
    runtime = load_runtime(settings.model_path)
    if settings.accelerate == "onnx":
        runtime = accelerate(runtime, settings.var_dir / "model-cache")
    _Process.runtime = runtime
    _Process.storage = storage_from_settings(settings)
    redis = Redis.from_url(settings.redis_url)
    _Process.jobs = JobStore(redis, settings.result_ttl_s)
    _Process.stop_heartbeat = start_heartbeat(
        redis,
        f"{socket.gethostname()}:{os.getpid()}",
        {
            "pid": os.getpid(),
            "model_version": runtime.metadata.version,
            "runtime": type(runtime).__name__,
        },
        settings.heartbeat_interval_s,
    )


@worker_shutdown.connect
def stop_heartbeat(**_: object) -> None:
    if _Process.stop_heartbeat is not None:
        _Process.stop_heartbeat.set()


@app.task(
    base=Batches,
    name=PREDICT_TASK,
    flush_every=settings.batch_max_size,
    flush_interval=settings.batch_max_wait_ms / 1000,
)
def predict(requests: list[SimpleRequest]) -> None:
    jobs = [PredictJob(job_id=request.id, **request.kwargs) for request in requests]
    _Process.jobs.mark_running([job.job_id for job in jobs])
    try:
        results, errors = classify(
            jobs, _Process.runtime, _Process.storage, settings.max_image_pixels
        )
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
            _Process.runtime, _Process.storage, _Process.jobs, settings,
        )  # fmt: skip
