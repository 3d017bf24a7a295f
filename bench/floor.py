"""What the frameworks alone cost per request, and the ceiling that puts on ``e2e``.

Any service built from Flask under gunicorn, Celery with celery-batches and Redis
spends at least, per photo: the HTTP floor (a route that only parses the upload,
and the client that sends it), the queue floor (``send_task``, a worker receiving
and acknowledging the message, Redis) and the pipeline (decode, preprocess,
batched inference). Summed and spread over the machine's cores, that bounds
``e2e_images_per_s`` before any of the service's own work: checking the photo,
storing it, the job record, waking the waiting request.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from celery import Celery
from redis import Redis

from bench.load import Clients
from bench.procfs import children, cpu_ms_per_request
from common.messages import PREDICT_QUEUE, Photo, Predict
from common.processes import (
    API_PROCESSES,
    free_port,
    http_ok,
    start_api,
    start_redis,
    start_worker,
    stop,
    wait_until,
)
from common.settings import Settings
from worker.celery import celery_config

DONE_KEY = "bench:floor:done"


def usable_cpus() -> int:
    """The cores this process may run on, which can be fewer than the machine has."""
    return len(os.sched_getaffinity(0))


def http_floor(env: dict[str, str], photos: list[bytes], concurrency: int) -> dict[str, float]:
    """CPU per request of gunicorn + Flask parsing the upload, and of the client."""
    port = free_port()
    log_path = Path(env["ECOSNAP_VAR_DIR"]) / "floor-api.log"
    server = start_api(env, port, log_path=log_path, app="bench.frameworks:http_app")
    try:
        wait_until(
            lambda: (
                http_ok(f"http://127.0.0.1:{port}/health")
                and len(children(server.pid)) == API_PROCESSES
            ),
            30,
            "floor HTTP server",
            server,
        )
        with Clients(port, photos, concurrency) as load:
            load.run(concurrency)
            roles = {"server": [server.pid, *children(server.pid)]}
            return cpu_ms_per_request(roles, lambda: load.run(len(photos)), len(photos))
    finally:
        stop(server)


def queue_floor(env: dict[str, str], redis_pid: int, tasks: int) -> dict[str, float]:
    """CPU per task of ``send_task`` (here), a worker receiving a no-op task, and Redis."""
    sender = Celery("floor-sender", set_as_current=False)
    sender.conf.update(celery_config(Settings.from_env(env)))
    redis = Redis.from_url(env["REDIS_URL"])
    log_path = Path(env["ECOSNAP_VAR_DIR"]) / "floor-worker.log"
    worker = start_worker(
        env, "floor", log_path, queues=(PREDICT_QUEUE,), app="bench.frameworks:celery_app"
    )

    def send(count: int) -> None:
        target = int(redis.get(DONE_KEY) or 0) + count
        for _ in range(count):
            job_id = uuid.uuid4().hex
            photo = Photo(job_id, f"{job_id}.jpg", f"http://x/{job_id}.jpg", "id", "", "")
            Predict.of([photo]).send(sender)
        wait_until(lambda: int(redis.get(DONE_KEY) or 0) >= target, 120, "floor queue", worker)

    try:
        send(100)
        return cpu_ms_per_request(
            {"worker": [worker.pid], "redis": [redis_pid]}, lambda: send(tasks), tasks
        )
    finally:
        stop(worker)
        sender.close()
        redis.close()


def framework_floor(photos: list[bytes], concurrency: int, pipeline_cpu_ms: float) -> dict:
    """The floor's parts in CPU ms per photo, and the e2e rate they leave room for."""
    with tempfile.TemporaryDirectory() as var_dir:
        redis_process, redis_url = start_redis(Path(var_dir) / "redis")
        env = {"REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": var_dir}
        try:
            http = http_floor(env, photos, concurrency)
            queue = queue_floor(env, redis_process.pid, len(photos))
        finally:
            stop(redis_process)
    parts = {
        "http_server": http["server"],
        "http_client": http["bench"],
        "send_task": queue["bench"],
        "celery_worker": queue["worker"],
        "redis": queue["redis"],
        "pipeline": pipeline_cpu_ms,
    }
    total = sum(parts.values())
    return {
        "floor_cpu_ms_per_request": parts,
        "floor_cpu_ms_total": total,
        "ceiling_e2e_images_per_s": usable_cpus() * 1000 / total,
    }
