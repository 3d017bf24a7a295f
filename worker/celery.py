"""The one Celery application; the API imports it to send tasks (it never loads tasks).

Configuration comes from ``common.settings`` through ``celery_config`` below.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from common.settings import Settings

PREDICT_QUEUE = "predict"
PREDICT_TASK = "ecosnap.predict"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings, each chosen for batched inference on a queue of photos."""
    return {
        "broker_url": settings.redis_url,
        # Outcomes live in common.jobs (status, timestamps, waiters); Celery's
        # result backend would only duplicate them.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": PREDICT_QUEUE,
        "task_routes": {PREDICT_TASK: {"queue": PREDICT_QUEUE}},
        # celery-batches buffers received messages until a batch is full or the
        # wait runs out, so each process must be allowed to hold two whole batches
        # unacknowledged: one being inferred, the next one gathering. More would let
        # one worker hoard jobs that an idle worker elsewhere could take.
        "worker_prefetch_multiplier": 2 * settings.batch_max_size,
        # Acknowledge after the batch is answered: if a worker dies mid-batch its
        # jobs go back to the queue (after the visibility timeout) instead of being
        # lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_transport_options": {"visibility_timeout": 300},
        # One process per worker: a model call already uses every core through
        # TensorFlow's own thread pool, and a second process would hold a second
        # copy of the model. Scale out with more workers instead.
        "worker_concurrency": 1,
        # The child loads TensorFlow and the model before it reports alive.
        "worker_proc_alive_timeout": 120.0,
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": False,
    }


app = Celery("ecosnap", include=["worker.tasks"])
app.conf.update(celery_config(Settings.from_env()))
