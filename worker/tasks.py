"""Celery tasks: each rebuilds its message and calls a plain function with the
worker's state. Models load once per process (``worker.state``)."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Task
from celery.exceptions import Reject
from celery.signals import celeryd_after_setup, setup_logging, worker_init, worker_shutdown
from celery.worker import WorkController
from celery_batches import SimpleRequest

from common.errors import Refusal
from common.logs import configure
from common.messages import EVALUATE_QUEUE, Evaluate, EvaluateChunk, ValidateModel
from common.redis_client import REDIS_DOWN
from common.settings import Settings
from worker import evaluation, inference, metrics, state, validation
from worker.batching import predict_task_options
from worker.celery import app

settings = Settings.from_env()
log = logging.getLogger(__name__)


@setup_logging.connect
def log_lines(**_: object) -> None:
    """Our log lines, JSON or text (common/logs.py): connected, Celery leaves its own
    logging alone and its lines go through the same handler."""
    configure("worker")


@worker_init.connect
def start_worker_state(sender: WorkController, **_: object) -> None:
    """Load the model and report in; a worker that cannot stops at once (Celery's
    logging is not set up yet here, and its signal would swallow the error), rather
    than take tasks it cannot run."""
    try:
        worker = state.begin(settings)
    except Refusal as exc:  # a model without metadata, a GPU asked for and missing
        print(f"The worker cannot start: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc()
        raise SystemExit(1) from None
    # A GPU batches more: the batch size and wait follow the device found.
    metrics.serve(settings.worker_metrics_port)
    predict.flush_every, predict.flush_interval = worker.batch_size, worker.batch_wait_s
    sender.prefetch_multiplier = 2 * worker.batch_size  # read when the consumer starts


@celeryd_after_setup.connect
def after_setup(instance: WorkController, **_: object) -> None:
    """Report the queues this worker consumes (``/readyz`` needs each one covered).

    Only a worker that takes evaluations sweeps old uploads: ``ecosnap up`` and
    compose run it under ``nice``, so a sweep of a large folder never holds the
    interpreter beside a batch of photos; a single worker serving both queues
    sweeps too.
    """
    worker = state.current()
    log.info("Computing on %s (%s), batches of up to %d.", worker.device,
             worker.device.reason, worker.batch_size)  # fmt: skip
    worker.consume(list(instance.app.amqp.queues.consume_from))
    if EVALUATE_QUEUE in worker.queues:
        worker.sweep_uploads()


@worker_shutdown.connect
def stop_worker_state(**_: object) -> None:
    state.current().stop()


@contextmanager
def requeued_if_redis_fails() -> Iterator[None]:
    """A task that meets Redis down goes back to the queue instead of being
    acknowledged as failed: its job could not even be marked failed, and an
    evaluation missing a chunk would never finish. Each task runs again harmlessly
    (job states move forward only; a chunk counts once)."""
    try:
        yield
    except REDIS_DOWN as exc:
        raise Reject(exc, requeue=True) from exc


@app.task(**predict_task_options(settings))
def predict(requests: list[SimpleRequest]) -> bool:
    worker, started = state.current(), time.perf_counter()
    recorded = inference.answer_batch(
        [(request.args, request.kwargs) for request in requests],
        # One reference for the whole batch: an activation meanwhile applies to the next.
        worker.models.active,
        worker.storage,
        worker.jobs,
        worker.image_limits,
        worker.batch_size,
    )
    worker.capacity.observe(photos_in(requests), time.perf_counter() - started)
    return recorded


def photos_in(requests: list[SimpleRequest]) -> int:
    """How many photos a batch's messages carried (a malformed one counts none)."""
    groups = [r.kwargs.get("photos") for r in requests if isinstance(r.kwargs, dict)]
    return sum(len(group) for group in groups if isinstance(group, list))


@app.task(name=Evaluate.task, bind=True)
def evaluate(self: Task, *args: object, **fields: object) -> None:
    worker, job_id = state.current(), self.request.id
    with requeued_if_redis_fails(), worker.jobs.failed_on_error(job_id):
        message = Evaluate.received(args, fields)
        evaluation.start(
            job_id, message, worker.storage, worker.jobs, settings,
            submit_chunk=lambda chunk: chunk.send(app),
            model_version=worker.models.active.metadata.version,
        )  # fmt: skip


@app.task(name=EvaluateChunk.task)
def evaluate_chunk(*args: object, **fields: object) -> None:
    # Photos first: a worker serving both queues answers the photos it holds
    # before this chunk occupies it.
    predict.answer_held()
    worker = state.current()
    message = EvaluateChunk.received(args, fields)
    with requeued_if_redis_fails(), worker.jobs.failed_on_error(message.job_id):
        evaluation.run_chunk(message, worker.models.runtime, worker.storage, worker.jobs, settings,
                             worker.image_limits)  # fmt: skip


@app.task(name=ValidateModel.task, bind=True)
def validate_model(self: Task, *args: object, **fields: object) -> None:
    predict.answer_held()
    worker, job_id = state.current(), self.request.id
    with requeued_if_redis_fails():
        with worker.jobs.failed_on_error(job_id):
            message = ValidateModel.received(args, fields)
        validation.run(job_id, message.version, worker.models.registry, worker.jobs)
