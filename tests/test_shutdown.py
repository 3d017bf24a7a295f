"""SIGTERM to the API: it stops accepting work and answers every request in hand."""

import signal
import threading

import requests
from redis import Redis

from common.jobs import MAX_WAIT_S
from common.processes import API_GRACEFUL_TIMEOUT_S, free_port, http_ok, start_api, wait_until
from tests.conftest import photo

WAIT_S = 12  # longer than gunicorn's graceful timeout before this was fixed (10 s)


def test_requests_waiting_when_the_api_is_stopped_get_their_job_ids(redis_url, tmp_path):
    assert API_GRACEFUL_TIMEOUT_S > MAX_WAIT_S
    url = redis_url.rsplit("/", 1)[0] + "/9"  # no worker consumes it: every wait runs out
    redis = Redis.from_url(url)
    redis.flushdb()
    port = free_port()
    api = start_api({"REDIS_URL": url, "ECOSNAP_VAR_DIR": str(tmp_path)}, port, workers=1,
                    threads=16, log_path=tmp_path / "api.log")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{base}/livez"), 60, "the API", api)
        answers: list[requests.Response | Exception] = []

        def post() -> None:
            files = {"file": ("p.jpg", photo())}
            try:
                answers.append(
                    requests.post(f"{base}/predict?wait={WAIT_S}", files=files, timeout=60)
                )
            except requests.RequestException as exc:
                answers.append(exc)

        clients = [threading.Thread(target=post) for _ in range(4)]
        for client in clients:
            client.start()
        wait_until(lambda: len(list(redis.scan_iter("ecosnap:job:*"))) == 4, 30, "4 jobs")
        api.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(60)
        assert api.wait(60) == 0
    finally:
        if api.poll() is None:
            api.kill()
    assert len(answers) == 4
    assert all(isinstance(a, requests.Response) and a.status_code == 202 for a in answers), answers
    job_ids = {answer.json()["job_id"] for answer in answers}
    assert {key.decode().split(":")[2] for key in redis.scan_iter("ecosnap:job:*")} == job_ids
