"""Sending again the messages the broker lost.

Every job's record keeps the message that runs it (``common/jobs.py``). A job whose
message may still be only in the broker and that shows no progress for
``REDELIVER_AFTER_S`` is sent again from its record: a photo, an evaluation or a
validation still queued, and an evaluation whose chunks stopped being recorded (its
start, sent again, sends the chunks not yet recorded). Job states only move
forward and chunks count once, so a message that was only slow runs harmlessly
twice. Every worker looks every third of that time; a claim in Redis lets one of
them send each job. A job sent again says so in its record (``sent_again_at``), for
whoever looks into why it took long. Nothing is sent where the message may only
be waiting (``only_waiting``): copies would pile up behind it.
"""

from __future__ import annotations

import logging
import threading

from redis import Redis

from common.heartbeat import live_workers
from common.jobs import JobStore, utc_now
from common.messages import EVALUATE_QUEUE, TaskSender, recorded_queue, send_recorded
from common.periodic import run_every
from common.redis_client import REDIS_DOWN

log = logging.getLogger(__name__)


def redeliver_stale(jobs: JobStore, celery: TaskSender, quiet_s: float) -> int:
    """Send again the jobs pending with no progress for ``quiet_s``; how many."""
    sent, settled = 0, []
    served = {queue for worker in live_workers(jobs.redis) for queue in worker.get("queues", ())}
    for job_id, record in jobs.claim_stale(quiet_s):
        if record.get("status") in ("queued", "running") and "message" in record:
            if only_waiting(jobs.redis, recorded_queue(record["message"]), served):
                continue  # claimed for another quiet_s: looked at again then
            send_recorded(celery, record["message"])
            jobs.transition(job_id, ("queued", "running"), sent_again_at=utc_now())
            sent += 1
        else:  # finished meanwhile, or expired
            settled.append(job_id)
    jobs.forget_pending(settled)
    if sent:
        log.warning("Sent again %d jobs that made no progress for %g s: the broker may have "
                    "lost their messages.", sent, quiet_s)  # fmt: skip
    return sent


def only_waiting(redis: Redis, queue: str, served: set[str]) -> bool:
    """Whether a quiet job's message on ``queue`` may only be waiting: no live worker
    serves the queue, or, on the evaluate queue, messages are still ahead in it (an
    evaluation's chunks may keep the next one waiting for minutes). A photo waits at
    most what the admission bound lets queue, seconds, so a quiet one is lost however
    long its queue."""
    return queue not in served or (queue == EVALUATE_QUEUE and redis.llen(queue) > 0)


def start_redelivery(jobs: JobStore, celery: TaskSender, quiet_s: float) -> threading.Event:
    def look() -> None:
        try:
            redeliver_stale(jobs, celery, quiet_s)
        except REDIS_DOWN as exc:  # Redis is restarting: the next look sends them
            log.info("Could not look for lost messages: %s", exc)

    return run_every(quiet_s / 3, look, "ecosnap-redelivery", start_now=False)
