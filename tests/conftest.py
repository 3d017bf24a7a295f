"""Fixtures: a private Redis, the Flask app and client, and real running stacks.

Everything that touches the queue uses a real ``redis-server`` started here on a free
loopback port (never the machine's 6379) and real Celery worker processes started
with the same commands as ``ecosnap up``.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from redis import Redis

from api import create_app
from common.processes import free_port, start_api, start_redis, start_worker, stop, wait_until
from common.settings import DEFAULT_MODEL_PATH, Settings
from training.synthetic import draw_photo, jpeg_bytes

STACK_START_TIMEOUT_S = 180


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-report",
        metavar="PATH",
        help="write the fault-injection suite's table (docs/RELIABILITY.md) to PATH",
    )


@pytest.fixture(scope="session")
def reliability(request: pytest.FixtureRequest) -> Iterator[list]:
    """The rows the fault-injection suite measures, written out at the end if asked."""
    from tests.faults import render

    rows: list = []
    yield rows
    path = request.config.getoption("--reliability-report")
    if path and rows:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(render(rows))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(process)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """An in-process app's settings: a Redis database no test stack's worker consumes,
    so what the app enqueues stays queued for the test to see."""
    return Settings(
        redis_url=redis_url.rsplit("/", 1)[0] + "/8",
        var_dir=tmp_path,
        model_path=DEFAULT_MODEL_PATH,
    )


@pytest.fixture
def app(settings: Settings):
    return create_app({"TESTING": True, "SETTINGS": settings})


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class Stack:
    """A running API (gunicorn) and worker (Celery) on a private Redis."""

    base_url: str
    var_dir: Path
    logs: list[Path]
    redis_url: str

    def url(self, path: str) -> str:
        return self.base_url + path

    def live_workers(self) -> list[dict]:
        """The workers ``/health`` reports that consume their queues (none while the
        stack is starting)."""
        try:
            response = requests.get(self.url("/health"), timeout=2)
        except requests.RequestException:
            return []
        workers = response.json()["workers"] if response.status_code == 200 else []
        return [worker for worker in workers if worker.get("queues")]  # consuming already

    def log_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in self.logs
            if p.exists()
        )


# Test stacks take every request from one address, faster than any client would:
# rate limits are off unless a test sets them (tests/test_access.py does).
UNLIMITED = {"RATE_LIMIT_PHOTOS": "", "RATE_LIMIT_DATASETS": ""}


def run_stack(
    redis_url: str,
    var_dir: Path,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
    api_processes: int = 1,
):
    """Start ``workers`` Celery workers and the API; yield a ``Stack`` once all are up.

    Its database (of the tests' own Redis) starts empty: jobs other tests left queued
    there would otherwise reach this stack's workers and slow or confuse them.
    """
    Redis.from_url(redis_url).flushdb()
    env = {"REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": str(var_dir), **UNLIMITED,
           **(extra_env or {})}  # fmt: skip
    port = free_port()
    worker_logs = [var_dir / f"worker-{n}.log" for n in range(workers)]
    processes = [
        start_worker(env, name=f"test-{port}-{n}", log_path=log)
        for n, log in enumerate(worker_logs)
    ]
    api_log = var_dir / "api.log"
    processes.append(start_api(env, port, workers=api_processes, log_path=api_log))
    stack = Stack(f"http://127.0.0.1:{port}", var_dir, [*worker_logs, api_log], redis_url)
    try:
        wait_until(
            lambda: len(stack.live_workers()) == workers,
            STACK_START_TIMEOUT_S,
            "test stack",
            processes[0],
        )
    except (TimeoutError, RuntimeError) as exc:
        for process in processes:
            stop(process)
        raise RuntimeError(f"{exc}\n{stack.log_text()}") from exc
    try:
        yield stack
    finally:  # also when a test looping over this generator fails inside the loop
        for process in processes:
            stop(process)


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from run_stack(redis_url, tmp_path_factory.mktemp("stack"))


@dataclass
class Emulator:
    host: str
    bucket: str


@pytest.fixture(scope="session")
def gcs_emulator(monkeypatch_session) -> Iterator[Emulator]:
    """A real gcp-storage-emulator on loopback, with one bucket."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            "ecosnap-test",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    wait_until(lambda: _emulator_up(host), 30, "gcp-storage-emulator", process)
    monkeypatch_session.setenv("STORAGE_EMULATOR_HOST", host)
    yield Emulator(host, "ecosnap-test")
    stop(process)


def _emulator_up(host: str) -> bool:
    try:
        return requests.get(f"{host}/storage/v1/b", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def monkeypatch_session() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def gcs_stack(
    redis_url: str, gcs_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # Its own Redis database: a worker of the local-storage stack must never take
    # this stack's jobs.
    yield from run_stack(
        redis_url.rsplit("/", 1)[0] + "/1",
        tmp_path_factory.mktemp("gcs-stack"),
        {
            "GCS_BUCKET": gcs_emulator.bucket,
            "STORAGE_EMULATOR_HOST": gcs_emulator.host,
        },
    )


@pytest.fixture
def gcs_settings(settings: Settings, gcs_emulator: Emulator) -> Settings:
    return replace(settings, gcs_bucket=gcs_emulator.bucket)


def photo(label: str = "Plastik", seed: int = 1, size: tuple[int, int] = (256, 192)) -> bytes:
    """A synthetic JPEG photo of ``label``."""
    return jpeg_bytes(draw_photo(label, np.random.default_rng(seed), size))


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def damaged_png() -> bytes:
    """A PNG whose end is intact but whose compressed pixel data is garbage."""
    data = bytearray(encoded(Image.new("RGB", (400, 300), (255, 0, 0)), "PNG"))
    pixels = data.index(b"IDAT") + 4
    data[pixels : pixels + 64] = b"\xff" * 64
    return bytes(data)
