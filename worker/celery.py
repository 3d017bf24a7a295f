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

# The longest a broker call waits for Redis before it fails (and is retried).
BROKER_TIMEOUT_S = 3.0


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
        # jobs go back to the queue instead of being lost. A batch whose outcomes
        # could not be recorded is put back too (worker/batching.py), and so is a
        # task that met Redis down (worker/tasks.py).
        "task_acks_late": True,
        "broker_transport_options": {
            # A held message is leased (common/broker.py): it comes back this long after
            # the worker holding it stopped renewing, i.e. died, froze or lost Redis.
            "visibility_timeout": settings.broker_lease_s,
            # kombu's sweep that puts expired messages back, every second in every
            # worker (by default only every 100 s).
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # The sweep's lock: a worker killed while holding it blocks the others for
            # this long (kombu's default is 5 minutes).
            "unacked_mutex_expire": settings.broker_lease_s,
            # Every broker call is bounded; kombu waits forever by default.
            "socket_timeout": BROKER_TIMEOUT_S,
            "socket_connect_timeout": BROKER_TIMEOUT_S,
            # "priority" makes every fetch ask the predict queue before the evaluate
            # queue (in QUEUES order), so a worker serving both takes photos first.
            # `ecosnap up` and docker-compose go further: one worker per queue, the
            # evaluate one at a lower CPU priority (common/processes.py: start_workers).
            "queue_order_strategy": "priority",
        },
        # A publish that fails is tried twice more, 0.2 s apart, then the API answers 503.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        # One process per worker, running batches in the consumer itself (solo
        # pool): a model call already uses every core through the runtime's thread
        # pool and the decoders run on a thread per core, so a child process would
        # only add a second copy of the model and a pickle-and-pipe hop per batch
        # (the README's performance section has the measurement). Scale out with
        # more workers instead.
        "worker_pool": "solo",
        "worker_concurrency": 1,
        "broker_connection_retry_on_startup": True,
        # A worker waits out a Redis outage however long it lasts (Celery's default
        # gives up after 100 attempts and stops the worker).
        "broker_connection_max_retries": None,
        "worker_send_task_events": False,
    }


app = Celery("ecosnap", include=["worker.tasks"])
app.conf.update(celery_config(Settings.from_env()))
