"""``ecosnap up``: Redis (private unless ``REDIS_URL`` is set), the workers and the API,
each started again when it dies."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.model_metadata import ModelMetadata
from common.processes import (
    free_port,
    http_ok,
    start_api,
    start_evaluate_worker,
    start_flower,
    start_predict_worker,
    start_redis,
    stop,
    wait_until,
)
from common.settings import Settings
from worker.devices import visible_gpus

# Seconds before the 1st, 2nd, ... restart of a process that keeps dying.
RESTART_DELAYS_S = (1, 2, 4, 8, 16, 30)
# A process that ran this long starts its delays over when it dies.
STABLE_S = 60.0


@dataclass
class Supervised:
    """One process of the stack, and how to start it again when it dies."""

    name: str
    start: Callable[[], subprocess.Popen]
    process: subprocess.Popen = field(init=False)
    started_at: float = field(init=False)
    failures: int = 0
    restart_at: float | None = None

    def __post_init__(self) -> None:
        self.process = self.start()
        self.started_at = time.monotonic()

    def look_after(self) -> None:
        """Notice a death, wait out its delay, start the process again."""
        now = time.monotonic()
        if self.process.poll() is None:
            if now - self.started_at > STABLE_S:
                self.failures = 0
            return
        if self.restart_at is None:
            delay = RESTART_DELAYS_S[min(self.failures, len(RESTART_DELAYS_S) - 1)]
            print(f"{self.name} exited with code {self.process.returncode}; "
                  f"starting it again in {delay} s.", flush=True)  # fmt: skip
            self.restart_at = now + delay
        elif now >= self.restart_at:
            self.failures, self.restart_at = self.failures + 1, None
            try:
                self.process, self.started_at = self.start(), time.monotonic()
            except (OSError, RuntimeError, TimeoutError) as exc:  # the next look tries again
                print(f"{self.name} did not start again: {exc}", flush=True)
                return
            print(f"{self.name} started again (pid {self.process.pid}).", flush=True)


def up(
    port: int, workers: int = 1, flower_port: int | None = None, startup_timeout_s: float = 180.0
) -> int:
    """The whole stack; ``workers`` photo workers, one per GPU when GPUs are visible
    (each sees only its own, through ``CUDA_VISIBLE_DEVICES``); Flower on
    ``flower_port`` when one is given."""
    settings = Settings.from_env()
    ModelMetadata.for_model(settings.model_path)  # a model without metadata: said at once
    logs = settings.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack: list[Supervised] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Its children run in sessions of their own: a closed terminal (SIGHUP) must stop
    # them through this process too.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_dir, redis_port = settings.var_dir / "redis", free_port()
            # Started again on the same port and append-only file: nothing else changes.
            stack.append(Supervised("Redis", lambda: start_redis(redis_dir, redis_port)[0]))
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            print(f"Started a private Redis at {redis_url} (data in {redis_dir})")
        env = {"REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": str(settings.var_dir)}
        metrics_ports = [free_port() for _ in range(workers + 1)]  # the evaluate one last
        # One at a time: if a start fails, the ones before it are still stopped below.
        gpus = visible_gpus()
        for index in range(workers):
            worker_env = env | {"WORKER_METRICS_PORT": str(metrics_ports[index])}
            worker_env |= {"CUDA_VISIBLE_DEVICES": str(index % gpus)} if gpus else {}
            name = "The predict worker" + (f" {index}" if index else "")
            stack.append(Supervised(
                name, lambda e=worker_env, i=index: start_predict_worker(e, logs, i)
            ))  # fmt: skip
        evaluate_env = env | {"WORKER_METRICS_PORT": str(metrics_ports[-1])}
        stack.append(Supervised("The evaluate worker",
                                lambda: start_evaluate_worker(evaluate_env, logs)))  # fmt: skip
        stack.append(Supervised("The API", lambda: start_api(env, port, log_path=logs / "api.log")))
        if flower_port is not None:
            stack.append(Supervised("Flower", lambda: start_flower(
                env, flower_port, logs / "flower.log")))  # fmt: skip
            print(f"Flower at http://127.0.0.1:{flower_port}")
        base_url = f"http://127.0.0.1:{port}"
        print(f"EcoSnap ML API at {base_url} (logs in {logs})")
        scraped = [f"http://127.0.0.1:{port}/metrics" for port in metrics_ports]
        print(f"Metrics: {base_url}/metrics and the workers' at {', '.join(scraped)}")
        wait_until(
            lambda: stopping or http_ok(f"{base_url}/health"), startup_timeout_s, "the stack"
        )
        if not stopping:
            print(
                f"Ready: {base_url}  (try: curl -F file=@photo.jpg '{base_url}/predict?wait=10')",
                flush=True,
            )
        while not stopping:
            for supervised in stack:
                supervised.look_after()
            time.sleep(0.5)
        return 0
    finally:
        for supervised in reversed(stack):
            stop(supervised.process)
        print("Stopped.")


def default_port() -> int:
    return Settings.from_env().port
