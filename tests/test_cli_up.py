"""``ecosnap up`` with no REDIS_URL: it starts its own Redis, two workers and the API."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

from bench.procfs import children
from common.processes import free_port, http_ok, wait_until
from common.settings import PROJECT_ROOT
from tests.conftest import photo
from tests.test_evaluate import dataset_zip
from tests.test_housekeeping import DAY_S, aged


def child_running(parent: int, marker: str) -> int:
    """The pid of the child of ``parent`` whose command line contains ``marker``."""
    for pid in children(parent):
        if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    raise LookupError(f"no child of {parent} runs {marker!r}")


def predicts(base: str) -> bool:
    try:
        response = requests.post(
            f"{base}/predict?wait=10", files={"file": ("p.jpg", photo())}, timeout=15
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


def test_up_starts_everything_restarts_what_dies_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "GCS_BUCKET"}}
    env |= {"ECOSNAP_VAR_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    expired_upload = aged(tmp_path / "uploads" / f"{'e' * 32}.jpg", 2 * DAY_S)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any(line.startswith("Ready:") for line in lines), 180, "ecosnap up", process
        )
        base = f"http://127.0.0.1:{port}"
        assert any(base in line for line in lines)
        redis_line = next(line for line in lines if "private Redis" in line)
        assert ":6379/" not in redis_line
        assert any((tmp_path / "redis").glob("appendonly*")), "Redis should persist to AOF"
        assert http_ok(f"{base}/health")
        # Ready once a worker with its model loaded consumes each queue.
        wait_until(lambda: http_ok(f"{base}/readyz"), 30, "readiness", process)
        response = requests.post(
            f"{base}/predict?wait=20", files={"file": ("p.jpg", photo())}, timeout=30
        )
        assert response.status_code == 200
        # Evaluations go to the second, lower-priority worker `up` starts.
        workers = requests.get(f"{base}/health", timeout=5).json()["workers"]
        assert len(workers) == 2
        job = requests.post(
            f"{base}/evaluate", files={"file": ("d.zip", dataset_zip())}, timeout=30
        ).json()
        wait_until(
            lambda: requests.get(job["status_url"], timeout=5).json()["status"] == "succeeded",
            60,
            "an evaluation through ecosnap up",
        )
        # The evaluate worker sweeps old uploads; the photo worker leaves them alone.
        wait_until(lambda: not expired_upload.exists(), 30, "the upload sweep")
        sweep_line = "Removed 1 stored files"
        assert sweep_line in (tmp_path / "logs" / "evaluate-worker.log").read_text()
        assert sweep_line not in (tmp_path / "logs" / "worker.log").read_text()
        # A process that dies is started again; the stack goes on serving.
        for name, marker in (("The predict worker", "predict@"), ("Redis", "redis-server")):
            os.kill(child_running(process.pid, marker), signal.SIGKILL)
            wait_until(lambda n=name: any(f"{n} started again" in line for line in lines),
                       60, f"{name} started again", process)  # fmt: skip
            wait_until(lambda: predicts(base), 120, f"a prediction after {name} died", process)
        assert len(requests.get(f"{base}/health", timeout=5).json()["workers"]) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        reader.join(5)
    assert code == 0, "".join(lines)
    assert lines[-1].strip() == "Stopped."
    assert not http_ok(f"http://127.0.0.1:{port}/health")
