"""How the predict task gathers photos into batches (``celery-batches``).

The predict task buffers the messages it receives and runs them as one batch at
``BATCH_MAX_SIZE`` messages or after ``BATCH_MAX_WAIT_MS``, whichever comes first.
The real task and the benchmark's no-op twin (``bench/frameworks.py``) both take
their options from ``predict_task_options``, so they batch the same way.
"""

from __future__ import annotations

from typing import Any

from celery_batches import Batches

from common.messages import Predict
from common.settings import Settings

# The celery-batches release whose private flush ``PhotoBatches.answer_held`` calls;
# tests/test_batching.py fails on any other, so an upgrade re-checks that call.
CHECKED_CELERY_BATCHES = "0.11"


class PhotoBatches(Batches):
    """``Batches``, plus answering the photos it holds before other work takes the worker.

    A worker that consumes both queues runs an evaluation chunk or a model
    validation on its consumer thread (solo pool), where the batch buffer lives: the
    photos already received would wait for that whole task, then for the flush
    timer. celery-batches has no public call for "flush now"; its timer callback
    ``_do_flush`` is exactly that (it takes every buffered request whose ETA has
    passed and hands them to the pool as one batch), so this is the one place that
    calls it.
    """

    abstract = True

    def answer_held(self) -> None:
        """Run the photos received so far as one batch, now, if there are any."""
        if not self._buffer.empty() or not self._pending.empty():
            self._do_flush()


def predict_task_options(settings: Settings) -> dict[str, Any]:
    """The predict task's Celery options: its name and how it batches."""
    return {
        "base": PhotoBatches,
        "name": Predict.task,
        "flush_every": settings.batch_max_size,
        "flush_interval": settings.batch_max_wait_ms / 1000,
    }
