"""``PhotoBatches``: its calls into celery-batches (the private flush, and the flush
it replaces), checked here."""

from importlib.metadata import version
from types import SimpleNamespace

from celery import Celery

from worker.batching import CHECKED_CELERY_BATCHES, Burst, PhotoBatches


def test_the_installed_celery_batches_is_the_release_answer_held_was_checked_against():
    # On an upgrade: read Batches._do_flush again, then move CHECKED_CELERY_BATCHES.
    assert version("celery-batches") == CHECKED_CELERY_BATCHES


class RunAtOncePool:
    """A pool that runs a batch on the spot, as the solo pool does."""

    def apply_async(self, target, args, callback):
        callback(target(*args))


def received(task, job_id: str, acknowledged: list[str], requeued: list[str]) -> SimpleNamespace:
    """What celery-batches buffers for one message (the fields its flush reads)."""
    return SimpleNamespace(
        id=job_id, name=task.name, eta=None, task=task, _payload=((), {"n": job_id}, {}),
        delivery_info={}, hostname="h", reply_to=None, correlation_id=job_id, request_dict={},
        acknowledge=lambda: acknowledged.append(job_id),
        reject=lambda requeue: requeue and requeued.append(job_id),
    )  # fmt: skip


def test_answer_held_runs_the_buffered_photos_as_one_batch_at_once():
    app = Celery("batching-test", set_as_current=False)
    batches, acknowledged = [], []

    @app.task(base=PhotoBatches, flush_every=100, flush_interval=60, acks_late=True)
    def gather(requests):
        batches.append([request.kwargs["n"] for request in requests])

    gather._pool = RunAtOncePool()
    gather.answer_held()
    assert batches == []  # nothing held, nothing run
    for job_id in ("a", "b", "c"):
        gather._buffer.put(received(gather, job_id, acknowledged, []))
    gather.answer_held()
    assert batches == [["a", "b", "c"]]
    assert acknowledged == ["a", "b", "c"]
    assert gather._buffer.empty()


def test_a_batch_the_task_could_not_record_goes_back_to_the_queue_unacknowledged():
    app = Celery("batching-test", set_as_current=False)
    outcomes = iter([False, None])

    @app.task(base=PhotoBatches, flush_every=100, flush_interval=60, acks_late=True)
    def gather(requests):
        return next(outcomes)  # False: the job store did not answer

    gather._pool = RunAtOncePool()
    acknowledged, requeued = [], []
    for job_id in ("a", "b"):
        gather._buffer.put(received(gather, job_id, acknowledged, requeued))
    gather.answer_held()
    assert (acknowledged, requeued) == ([], ["a", "b"])
    gather._buffer.put(received(gather, "c", acknowledged, requeued))
    gather.answer_held()  # recorded (or failed for good): acknowledged as usual
    assert (acknowledged, requeued) == (["c"], ["a", "b"])


def test_a_burst_is_complete_once_the_messages_counted_in_the_broker_have_arrived():
    asked = []

    def waiting(count: int):
        return lambda: asked.append(count) or count

    alone = Burst()
    assert alone.complete(1, waiting(0))  # nothing else waits: run it now
    burst = Burst()
    assert not burst.complete(1, waiting(2))
    assert not burst.complete(2, waiting(99))  # the broker is asked once per batch
    assert burst.complete(3, waiting(99))
    assert asked == [0, 2]
