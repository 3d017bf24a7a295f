"""``ecosnap up``: Redis (private unless ``REDIS_URL`` is set), the workers and the API."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from common.processes import http_ok, start_api, start_redis, start_workers, stop, wait_until
from common.settings import Settings


def up(port: int, startup_timeout_s: float = 180.0) -> int:
    settings = Settings.from_env()
    logs = settings.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            redis_process, redis_url = start_redis(settings.var_dir / "redis")
            children.append(redis_process)
            print(f"Started a private Redis at {redis_url} (data in {settings.var_dir / 'redis'})")
        env = {"REDIS_URL": redis_url, "ECOSNAP_VAR_DIR": str(settings.var_dir)}
        children.extend(start_workers(env, logs))
        children.append(start_api(env, port, log_path=logs / "api.log"))
        base_url = f"http://127.0.0.1:{port}"
        print(f"EcoSnap ML API at {base_url} (logs in {logs})")
        wait_until(
            lambda: stopping or http_ok(f"{base_url}/health"), startup_timeout_s, "the stack"
        )
        if not stopping:
            print(
                f"Ready: {base_url}  (try: curl -F file=@photo.jpg '{base_url}/predict?wait=10')",
                flush=True,
            )
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("A process of the stack exited; stopping the rest. See the logs.")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        for child in reversed(children):
            stop(child)
        print("Stopped.")


def default_port() -> int:
    return int(os.environ.get("PORT", "8080"))
