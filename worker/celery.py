"""The one Celery application; the API imports it to send tasks (it never loads tasks).

Configuration comes from ``common.settings`` through ``celery_config`` below; the
tasks' names and queues come from their messages (``common.messages``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from common.broker import TRANSPORT
from common.messages import MESSAGES, PREDICT_QUEUE, QUEUES
from common.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings, each chosen for batched inference on a queue of photos."""
    return {
        "broker_url": settings.redis_url,
        # kombu's Redis transport, reusing one Redis client per channel (see there).
        "broker_transport": TRANSPORT,
        # Outcomes live in common.jobs (status, timestamps, waiters); Celery's
        # result backend would only duplicate them.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": PREDICT_QUEUE,
        "task_queues": tuple(Queue(name) for name in QUEUES),
        "task_routes": {message.task: {"queue": message.queue} for message in MESSAGES},
        # celery-batches buffers received messages until a batch is full or the
        # wait runs out, so a worker must be allowed to hold at least one whole
        # batch unacknowledged; two let it take the next full batch straight after
        # answering one. More would let one worker hoard jobs that an idle worker
        # elsewhere could take.
        "worker_prefetch_multiplier": 2 * settings.batch_max_size,
        # Acknowledge after the batch is answered: if a worker dies mid-batch its
        # jobs go back to the queue (after the visibility timeout) instead of being
        # lost.
        "task_acks_late": True,
        # "priority" makes every fetch ask the predict queue before the evaluate
        # queue (in QUEUES order), so a worker serving both takes photos first.
        # `ecosnap up` and docker-compose go further: one worker per queue, the
        # evaluate one at a lower CPU priority (common/processes.py: start_workers).
        "broker_transport_options": {"visibility_timeout": 300, "queue_order_strategy": "priority"},
        # One process per worker, running batches in the consumer itself (solo
        # pool): a model call already uses every core through the runtime's thread
        # pool and the decoders run on a thread per core, so a child process would
        # only add a second copy of the model and a pickle-and-pipe hop per batch
        # (the README's performance section has the measurement). Scale out with
        # more workers instead.
        "worker_pool": "solo",
        "worker_concurrency": 1,
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": False,
    }


app = Celery("ecosnap", include=["worker.tasks"])
app.conf.update(celery_config(Settings.from_env()))
