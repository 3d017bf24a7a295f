"""The benchmark's framework floor: a no-op Flask app and a no-op Celery task, really run."""

from __future__ import annotations

from bench.floor import framework_floor
from tests.conftest import photo


def test_framework_floor_serves_every_upload_and_drains_every_task() -> None:
    # Each stage waits for its own completion (every HTTP answer a 200, the no-op
    # task's counter reaching the number sent), so a result means both really ran.
    photos = [photo(seed=seed) for seed in range(100)]

    floor = framework_floor(photos, concurrency=4, pipeline_cpu_ms=2.0)

    parts = floor["floor_cpu_ms_per_request"]
    assert set(parts) == {
        "http_server", "http_client", "send_task", "celery_worker", "redis", "pipeline",
    }  # fmt: skip
    # The server and the worker really did work for the measured requests.
    assert parts["http_server"] > 0 and parts["celery_worker"] > 0
