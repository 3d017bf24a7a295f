"""``ecosnap up`` with no REDIS_URL: it starts its own Redis, two workers and the API."""

import os
import signal
import subprocess

import requests

from cli.up import Supervised
from common.processes import free_port, http_ok, wait_until
from tests.conftest import photo
from tests.faults import ecosnap_up
from tests.test_evaluate import dataset_zip
from tests.test_housekeeping import DAY_S, aged


def predicts(base: str) -> bool:
    try:
        response = requests.post(
            f"{base}/predict?wait=10", files={"file": ("p.jpg", photo())}, timeout=15
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


def flower_shows(flower: str, names: tuple[str, ...]) -> bool:
    try:
        page = requests.get(flower, timeout=5).text
    except requests.RequestException:
        return False
    return all(name in page for name in names)


def test_up_starts_everything_and_flower_restarts_what_dies_and_stops_when_its_terminal_closes(
    tmp_path,
):
    expired_upload = aged(tmp_path / "uploads" / f"{'e' * 32}.jpg", 2 * DAY_S)
    flower = f"http://127.0.0.1:{free_port()}"
    with ecosnap_up(tmp_path, "--flower", flower.rsplit(":", 1)[1]) as up:
        base, lines, process = up.base_url, up.lines, up.process
        assert any(base in line for line in lines)
        assert ":6379/" not in up.redis_url
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
        # Flower, asked for, shows both workers.
        wait_until(lambda: flower_shows(flower, ("predict@", "evaluate@")), 60, "Flower", process)
        # The evaluate worker sweeps old uploads; the photo worker leaves them alone.
        wait_until(lambda: not expired_upload.exists(), 30, "the upload sweep")
        sweep_line = "Removed 1 stored files"
        assert sweep_line in (tmp_path / "logs" / "evaluate-worker.log").read_text()
        assert sweep_line not in (tmp_path / "logs" / "worker.log").read_text()
        # A process that dies is started again; the stack goes on serving.
        for name, marker in (("The predict worker", "predict@"), ("Redis", "redis-server"),
                             ("The API", "gunicorn")):  # fmt: skip
            os.kill(up.child(marker), signal.SIGKILL)
            wait_until(lambda n=name: up.printed(f"{n} started again"),
                       60, f"{name} started again", process)  # fmt: skip
            wait_until(lambda: predicts(base), 120, f"a prediction after {name} died", process)
        assert len(requests.get(f"{base}/health", timeout=5).json()["workers"]) == 2
        process.send_signal(signal.SIGHUP)  # its terminal closed (SIGTERM: tests/faults.py)
        code = process.wait(90)
    assert code == 0, "".join(lines)
    assert lines[-1].strip() == "Stopped."
    assert not http_ok(f"{base}/health")


def test_a_start_that_fails_is_tried_again_after_its_delay():
    """A restart that fails (Redis slow to load its file, say) does not end the
    supervision: the next look tries again."""
    starts = [lambda: subprocess.Popen(["true"]), failing_start,
              lambda: subprocess.Popen(["sleep", "60"])]  # fmt: skip
    supervised = Supervised("A process", lambda: starts.pop(0)())
    supervised.process.wait()  # it died
    wait_until(lambda: supervised.look_after() or not starts, 30, "two restarts")
    assert supervised.process.poll() is None and supervised.failures == 2
    supervised.process.kill()
    supervised.process.wait()


def failing_start() -> subprocess.Popen:
    raise TimeoutError("redis-server: not ready after 60 s.")
