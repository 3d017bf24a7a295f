"""Does adding workers add throughput? Measured with a simulated accelerator.

This machine has 2 cores, so real inference cannot show scaling: 8 workers would
share the same 2 cores. Each worker here runs ``DEVICE=simulated:BATCH_MS:IMAGE_MS``
instead (``worker/devices.py``): its model call sleeps a fixed time per batch plus a
small time per image, as a CPU waits on a GPU, while everything else is real (the
API, Redis, the broker, each worker's decoding, job records and answers). Photos are
small, so what is measured is what the queue, broker and API cost per photo.

For 1, 2, 4 and 8 workers it reports throughput, scaling efficiency (throughput at N
/ (N x throughput at 1)), each worker's share of the photos, and the stack's CPU per
photo, from which the ceiling this machine puts on any number of workers follows:
usable cores x 1000 / CPU ms per photo.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis import Redis

from bench.load import Clients
from bench.procfs import cpu_seconds, descendants
from common.heartbeat import live_workers
from common.processes import (
    free_port,
    http_ok,
    start_api,
    start_predict_worker,
    start_redis,
    stop,
    wait_until,
)
from training.synthetic import draw_photo, jpeg_bytes

WORKER_COUNTS = (1, 2, 4, 8)
BATCH_MS, IMAGE_MS, BATCH = 400, 1, 16  # a slow "GPU" next to two CPU cores
WARM_UP_S, MEASURE_S = 4.0, 12.0


def photos(count: int) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(5)
    return [jpeg_bytes(draw_photo("Plastik", rng, (64, 48))) for _ in range(count)]


def one_size(workers: int, images: list[bytes], usable_cpus: int) -> dict[str, Any]:
    """Throughput, shares and CPU per photo of a stack with ``workers`` workers."""
    with tempfile.TemporaryDirectory() as var_dir:
        redis_process, redis_url = start_redis(Path(var_dir) / "redis")
        env = {
            "REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": var_dir,
            "DEVICE": f"simulated:{BATCH_MS}:{IMAGE_MS}", "GPU_BATCH_MAX_SIZE": str(BATCH),
            "RATE_LIMIT_PHOTOS": "", "MAX_QUEUED_PHOTOS": "100000", "API_THREADS": "200",
        }  # fmt: skip
        started = [start_predict_worker(env, Path(var_dir), n) for n in range(workers)]
        port = free_port()
        api = start_api(env, port, log_path=Path(var_dir) / "api.log")
        redis = Redis.from_url(redis_url)
        try:
            wait_until(
                lambda: http_ok(f"http://127.0.0.1:{port}/livez")
                and len(live_workers(redis)) == workers,
                300, "scaling stack", started[0],
            )  # fmt: skip
            servers = [api.pid, *descendants(api.pid), redis_process.pid, *(w.pid for w in started)]
            # Three batches' worth of clients per worker keep every one of them busy.
            result = measure(port, images, 3 * BATCH * workers, redis, servers)
        finally:
            for process in (api, *started, redis_process):
                stop(process)
    result["workers"] = workers
    result["ceiling_photos_per_s"] = round(usable_cpus * 1000 / result["cpu_ms_per_photo"], 1)
    return result


def measure(
    port: int, images: list[bytes], concurrency: int, redis: Redis, servers: list[int]
) -> dict[str, Any]:
    answered: list[float] = []
    stop_at = [float("inf")]

    def client(clients: Clients, index: int) -> None:
        while time.monotonic() < stop_at[0]:
            clients.post(index)
            answered.append(time.monotonic())

    with Clients(port, images, concurrency) as clients:
        threads = [threading.Thread(target=client, args=(clients, n), daemon=True)
                   for n in range(concurrency)]  # fmt: skip
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP_S)
        started, cpu_before = time.monotonic(), cpu_seconds(servers)
        jobs_before = set(redis.scan_iter("ecosnap:job:*", count=5000))
        time.sleep(MEASURE_S)
        ended, cpu_after = time.monotonic(), cpu_seconds(servers)
        stop_at[0] = time.monotonic()
        for thread in threads:
            thread.join(60)
    in_window = sum(1 for at in answered if started <= at < ended)
    shares = Counter(
        worker.decode().rsplit(":", 1)[1]
        for key in set(redis.scan_iter("ecosnap:job:*", count=5000)) - jobs_before
        if (worker := redis.hget(key, "worker"))
    )
    total = sum(shares.values()) or 1
    return {
        "photos_per_s": round(in_window / (ended - started), 1),
        "cpu_ms_per_photo": round((cpu_after - cpu_before) * 1000 / max(in_window, 1), 2),
        "worker_shares": sorted(
            (round(count / total, 3) for count in shares.values()), reverse=True
        ),
    }


def scaling(usable_cpus: int) -> dict[str, Any]:
    images = photos(64)
    rows = [one_size(workers, images, usable_cpus) for workers in WORKER_COUNTS]
    alone = rows[0]["photos_per_s"]
    for row in rows:
        row["efficiency"] = round(row["photos_per_s"] / (row["workers"] * alone), 3)
    return {
        "simulated_accelerator": {"batch_ms": BATCH_MS, "image_ms": IMAGE_MS, "batch": BATCH},
        "ideal_photos_per_s_per_worker": round(BATCH / (BATCH_MS + IMAGE_MS * BATCH) * 1000, 1),
        "rows": rows,
    }
