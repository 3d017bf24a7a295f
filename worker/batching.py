"""How the predict task gathers photos into batches (``celery-batches``).

The predict task buffers the messages it receives and runs them as one batch as
soon as no further photo waits in the broker, at ``BATCH_MAX_SIZE`` messages, or
after ``BATCH_MAX_WAIT_MS``, whichever comes first. A lone photo therefore never
waits for a timer, and photos that queue up while a batch runs form the next batch.
The real task and the benchmark's no-op twin (``bench/frameworks.py``) both take
their options from ``predict_task_options``, so they batch the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from redis import Redis, RedisError

from common.messages import Predict
from common.redis_client import bounded_redis
from common.settings import Settings

# The celery-batches release whose private ``_do_flush`` ``PhotoBatches.answer_held``
# calls and whose ``flush`` ``PhotoBatches.flush`` replaces; tests/test_batching.py
# fails on any other, so an upgrade re-checks both.
CHECKED_CELERY_BATCHES = "0.11"


class PhotoBatches(Batches):
    """``Batches``, plus answering the photos it holds before other work takes the worker.

    A worker that consumes both queues runs an evaluation chunk or a model
    validation on its consumer thread (solo pool), where the batch buffer lives: the
    photos already received would wait for that whole task, then for the flush
    timer. And a lone photo should not wait for that timer at all. celery-batches
    has no public call for "flush now"; its timer callback ``_do_flush`` is exactly
    that (it takes every buffered request whose ETA has passed and hands them to the
    pool as one batch), so this class is the one place that calls it.
    """

    abstract = True
    _broker: Redis | None = None

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable[..., None]:
        """celery-batches' message handler, then a flush once the burst has arrived."""
        buffer_message = super().Strategy(task, app, consumer)
        burst = Burst()

        def handle(*args: Any, **kwargs: Any) -> None:
            buffer_message(*args, **kwargs)
            held = self._buffer.qsize()
            if held and burst.complete(held, self._waiting_in_broker):
                self._do_flush()

        return handle

    def _waiting_in_broker(self) -> int:
        """Messages of this task's queue not yet handed to any worker; none if the
        broker cannot say (the photos held are answered rather than kept waiting)."""
        if self._broker is None:
            self._broker = bounded_redis(self.app.conf.broker_url, timeout_s=1.0, retries=0)
        try:
            return self._broker.llen(Predict.queue)
        except RedisError:
            return 0

    def flush(self, requests: list[Any]) -> Any:
        """celery-batches' ``flush``, except that a batch the task could not record
        (it returns ``False``: the job store did not answer) goes back to the queue
        instead of being acknowledged. celery-batches acknowledges every batch, so
        its jobs would have stayed unanswered. Every task here acknowledges late
        (``worker/celery.py``), so there is no early acknowledgement to make.
        """
        batch = ([SimpleRequest.from_request(request) for request in requests],)

        def on_return(recorded: bool | None) -> None:
            for request in requests:
                if recorded is False:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        return self._pool.apply_async(apply_batches_task, (self, batch, 0, None),
                                      callback=on_return)  # fmt: skip

    def answer_held(self) -> None:
        """Run the photos received so far as one batch, now, if there are any."""
        if not self._buffer.empty() or not self._pending.empty():
            self._do_flush()


class Burst:
    """Tells when the messages received so far are all that is waiting.

    At the first message of a batch the broker is asked once how many more wait in
    the queue; the batch is complete when that many more have arrived (or none
    wait). Another worker may take some of them: the batch timer then ends the wait.
    """

    def __init__(self) -> None:
        self.expected = 0

    def complete(self, held: int, waiting: Callable[[], int]) -> bool:
        """Called after each message is buffered; ``held`` messages are buffered now."""
        self.expected = waiting() if held == 1 else self.expected - 1
        return self.expected <= 0


def predict_task_options(settings: Settings) -> dict[str, Any]:
    """The predict task's Celery options: its name and how it batches."""
    return {
        "base": PhotoBatches,
        "name": Predict.task,
        "flush_every": settings.batch_max_size,
        "flush_interval": settings.batch_max_wait_ms / 1000,
    }
